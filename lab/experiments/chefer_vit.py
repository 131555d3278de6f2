"""Chefer, Gur & Wolf 2021 on a Vision Transformer: Tables 1-3 and Figures 1-2, on procedural images.

Everything the notebook `01_chefer_vit` computes lives here, as small functions it calls in order:

    cfg = settings("default")                       # profile -> sizes, methods, fill value, start_layer ...
    ctx = setup(cfg)                                # trains/loads the ViT, builds the test and two-object sets
    maps = {s: compute_maps(ctx, cfg["methods"], s) for s in SETTINGS}   # predicted / target class
    t1 = perturbation_results(ctx, maps)            # Table 1 (+ curves)
    t2 = segmentation_results(ctx, maps["predicted"])                    # Table 2
    t3 = ablation_results(ctx, t1, t2)              # Table 3
    spec = class_specificity(ctx, cfg["methods"])   # Figure 2, measured
    res = build_results(ctx, t1, t2, t3, spec)      # paper vs ours + claims -> results/01_chefer_vit.json

Nothing here knows the model's size: the patch grid, image size and number of blocks come from the model's
config, so `settings(profile, checkpoint="google/vit-base-patch16-224")` (or `setup(cfg, model=...)`) runs the same
code on ViT-B/16 (the procedural images are then rendered at the model's resolution; accuracy against our labels
only means something for a model trained on them).

Paper protocol (REPRODUCTION_SPEC 000.3), and our choices where the paper is silent:
- "target class" = the ground-truth class (the authors' `--vis-class target` passes the dataset label as the class
  to explain); "predicted" = the model's top-1 class. Accuracy is always measured against the ground truth.
  Class-agnostic methods (rollout, raw attention) give the same map for any class, so, as in the paper, they
  have no target-class entries.
- Removed pixels are set to the test set's per-channel mean (`fill="mean"`); "zero" reproduces the authors'
  black (0 in [0, 1] space), "blur" takes each removed pixel from a Gaussian blur of the image. Curves run on to
  95 % and 99 % (`extra_fractions`); the AUC stays the paper's: mean accuracy over the `fractions` 10 %...90 %
  (trapezoid / 0.8), see `lab.metrics.images`.
- Bounds: pixels removed in random order (`random`) and by the object mask (`oracle`: object last under negative,
  first under positive perturbation) are Table 1 rows of their own; `normalised` places each method between them
  (0 = random, 100 = oracle). They never enter the paper's claims.
- Segmentation: patch maps upsampled bilinearly, min–max normalised, thresholded at the mean; the class explained
  is the predicted one (authors' code).
"""
from __future__ import annotations

from lab.experiments import ExperimentError, merge_settings
import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

import lab
import lab.viz
from lab import stats
from lab.data import images as img_data
from lab.metrics import images as mi
from lab.models import vit as vit_models
from lab.models.adapters import ViTAdapter

NOTEBOOK = "01_chefer_vit"
SETTINGS = ("predicted", "target")
DIRECTIONS = ("negative", "positive")
METHODS = ("rollout", "raw_attention", "attn_gradcam", "lrp", "partial_lrp", "chefer")
CLASS_AGNOSTIC = ("rollout", "raw_attention")
CLASS_SPECIFIC_IN_PAPER = ("attn_gradcam", "chefer")  # Fig. 2: the only maps that change with the class
SHIFT_THRESHOLD = 0.02  # |shift_to_object| above this counts as a class-dependent map (see class_specificity)
# Table 3 variants: name -> (registered explainer, parameters)
ABLATIONS: dict[str, tuple[str, dict]] = {
    "chefer_no_gradient": ("chefer", {"ablation": "no_gradient"}),
    "chefer_last_block": ("chefer", {"ablation": "last_block"}),
    "chefer_second_block": ("chefer", {"ablation": "second_block"}),
}
LABELS = {"rollout": "rollout", "raw_attention": "raw attention", "attn_gradcam": "GradCAM", "lrp": "LRP",
          "partial_lrp": "partial LRP", "chefer": "Ours (Chefer)", "chefer_no_gradient": "Ours w/o ∇A",
          "chefer_last_block": "∇A(1)R(n1)", "chefer_second_block": "∇A(B-1)R(n_B-1)"}

# Paper numbers (000_chefer2021 text, Tables 1-3; None where the paper gives "–").
PAPER_TABLE1 = {
    "rollout": {"negative_predicted": 53.1, "negative_target": None, "positive_predicted": 20.05,
                "positive_target": None},
    "raw_attention": {"negative_predicted": 45.55, "negative_target": None, "positive_predicted": 23.99,
                      "positive_target": None},
    "attn_gradcam": {"negative_predicted": 41.52, "negative_target": 42.02, "positive_predicted": 34.06,
                     "positive_target": 33.56},
    "lrp": {"negative_predicted": 43.49, "negative_target": 43.49, "positive_predicted": 41.94,
            "positive_target": 41.93},
    "partial_lrp": {"negative_predicted": 50.49, "negative_target": 50.49, "positive_predicted": 19.64,
                    "positive_target": 19.64},
    "chefer": {"negative_predicted": 54.16, "negative_target": 55.04, "positive_predicted": 17.03,
               "positive_target": 16.04},
}
PAPER_TABLE2 = {
    "rollout": {"pixel_accuracy": 73.54, "mAP": 84.76, "mIoU": 55.42},
    "raw_attention": {"pixel_accuracy": 67.84, "mAP": 80.24, "mIoU": 46.37},
    "attn_gradcam": {"pixel_accuracy": 64.44, "mAP": 71.60, "mIoU": 40.82},
    "lrp": {"pixel_accuracy": 51.09, "mAP": 55.68, "mIoU": 32.89},
    "partial_lrp": {"pixel_accuracy": 76.31, "mAP": 84.67, "mIoU": 57.94},
    "chefer": {"pixel_accuracy": 79.70, "mAP": 86.03, "mIoU": 61.95},
}
PAPER_TABLE3 = {  # "Ours" mAP is 86.06 here but 86.03 in Table 2 (an inconsistency of the paper)
    "chefer_no_gradient": {"pixel_accuracy": 77.66, "mAP": 85.66, "mIoU": 59.88, "positive_predicted": 18.23,
                           "negative_predicted": 52.88},
    "chefer_last_block": {"pixel_accuracy": 78.32, "mAP": 85.25, "mIoU": 59.93, "positive_predicted": 18.01,
                          "negative_predicted": 52.43},
    "chefer_second_block": {"pixel_accuracy": 60.30, "mAP": 73.63, "mIoU": 39.06, "positive_predicted": 27.33,
                            "negative_predicted": 37.42},
    "chefer": {"pixel_accuracy": 79.70, "mAP": 86.06, "mIoU": 61.95, "positive_predicted": 17.03,
               "negative_predicted": 54.16},
}
TABLE1_DIRECTION = {"negative_predicted": "higher", "negative_target": "higher", "positive_predicted": "lower",
                    "positive_target": "lower"}
TABLE2_DIRECTION = {"pixel_accuracy": "higher", "mAP": "higher", "mIoU": "higher"}
SEGMENTATION = tuple(TABLE2_DIRECTION)
TABLE3_DIRECTION = {**TABLE2_DIRECTION, "positive_predicted": "lower", "negative_predicted": "higher"}

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(model_profile="smoke", n_examples=16, n_pairs=2, n_figure=2, batch_size=16),
    "default": dict(model_profile="default", n_examples=500, n_pairs=48, n_figure=6, batch_size=50),
    "paper": dict(model_profile="paper", n_examples=2000, n_pairs=200, n_figure=8, batch_size=50),
}
# reading= of chefer / partial_lrp / lrp (lab.explainers.relevance.READINGS): "code" = Chefer et al.'s released code,
# which produced the paper's numbers (pinned by tests/test_reference_chefer.py); "text" = the rules as printed.
READING_CHOICES = ("code", "text")
COMMON = dict(methods=METHODS, ablations=tuple(ABLATIONS), seed=0, fill="mean", start_layer=0, checkpoint=None,
              reading="code",
              fractions=mi.FRACTIONS, extra_fractions=mi.EXTENDED_FRACTIONS[len(mi.FRACTIONS):],
              partial_lrp_close=3.0, progress=True)
FILLS = ("mean", "zero", "blur")
BOUNDS = ("random", "oracle")  # perturbation orders that bound every map (never part of the paper's claims)
ATTENTION_DERIVED = ("rollout", "raw_attention", "partial_lrp", "chefer")  # the methods the benchmark must separate


def settings(profile: str = "default", **overrides) -> dict:
    """The profile's sizes plus the shared protocol settings; `None` overrides keep the profile's value."""
    cfg = merge_settings(PROFILES, COMMON, profile, overrides)
    bad = [m for m in cfg["methods"] if m not in lab.EXPLAINERS]
    if bad:
        raise ExperimentError(f"unknown method(s) {bad}; registered: {', '.join(lab.EXPLAINERS)}")
    bad = [a for a in cfg["ablations"] if a not in ABLATIONS]
    if bad:
        raise ExperimentError(f"unknown ablation(s) {bad}; choose from {', '.join(ABLATIONS)}")
    if cfg["reading"] not in READING_CHOICES:
        raise ExperimentError(f"reading must be one of {READING_CHOICES}, got {cfg['reading']!r}")
    if not (cfg["fill"] in FILLS or isinstance(cfg["fill"], (int, float))):
        raise ExperimentError(f"fill must be 'mean', 'zero', 'blur' or a number, got {cfg['fill']!r}")
    if len(cfg["fractions"]) < 2 or any(f <= max(cfg["fractions"]) for f in cfg["extra_fractions"]):
        raise ExperimentError(f"fractions (the AUC's steps) need at least two values and extra_fractions (curve only) "
                              f"must lie beyond them, got {list(cfg['fractions'])} and {list(cfg['extra_fractions'])}")
    return cfg


# ---- context: model + data ------------------------------------------------------------------------------


@dataclass
class Context:
    model: torch.nn.Module
    test: img_data.ImageDataset
    pairs: img_data.ImageDataset
    cfg: dict
    model_info: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.test.images.shape[-2:])

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.test.class_names


def _image_size(model) -> int:
    size = model.config.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def setup(cfg: Mapping, model: torch.nn.Module | None = None) -> Context:
    """Train or load the profile's ViT (or take `model`, or load `cfg["checkpoint"]`: any Hugging Face ViT
    classifier), and build the test set and two-object set at its resolution."""
    start = time.perf_counter()
    info: dict[str, Any] = {}
    if model is None and cfg.get("checkpoint"):
        model = vit_models.load_checkpoint(cfg["checkpoint"])
        info["checkpoint"] = str(cfg["checkpoint"])
    if model is None:
        trained = vit_models.train_vit(cfg["model_profile"], seed=cfg["seed"], progress=cfg["progress"])
        model, info = trained.model, dict(trained.metrics, checkpoint=str(trained.path))
    model.eval()
    size = _image_size(model)
    test = img_data.make_dataset("test", cfg["n_examples"], cfg["seed"], image_size=size)
    pairs = img_data.make_dataset("test", cfg["n_pairs"], cfg["seed"], two_objects=True, image_size=size)
    info["accuracy_on_examples"] = vit_models.accuracy(model, test)
    info.setdefault("test_accuracy", info["accuracy_on_examples"])
    info.update(image_size=size, patch_size=model.config.patch_size, grid=ViTAdapter(model).grid,
                num_layers=model.config.num_hidden_layers, hidden_size=model.config.hidden_size,
                num_heads=model.config.num_attention_heads)
    return Context(model, test, pairs, dict(cfg), info, {"setup_s": round(time.perf_counter() - start, 1)}, start)


def class_name(ctx: Context, index: int) -> str:
    """Name of class `index`: the dataset's, else the model's own label (a model with another label set)."""
    if 0 <= index < len(ctx.class_names):
        return ctx.class_names[index]
    return str(getattr(ctx.model.config, "id2label", {}).get(index, index))


def fill_value(ctx: Context) -> torch.Tensor:
    """Per-channel value (in the model's normalised input space) that removed pixels get, or with "blur" the
    blurred test images (sigma = 1/32 of the image side) whose pixels replace the removed ones."""
    fill = ctx.cfg["fill"]
    if fill == "blur":
        return mi.blur(ctx.test.images, sigma=ctx.image_size[0] / 32)
    if fill == "mean":
        return ctx.test.channel_mean()
    mean, std = torch.tensor(ctx.test.mean), torch.tensor(ctx.test.std)
    if fill == "zero":  # black in [0, 1] space, as in the authors' code
        return (0 - mean) / std
    return torch.full((3,), float(fill))


# ---- relevance maps -------------------------------------------------------------------------------------


def method_spec(name: str) -> tuple[str, dict]:
    """(registered explainer, parameters) for a method or a Table 3 variant name."""
    if name in ABLATIONS:
        method, params = ABLATIONS[name]
        return method, dict(params)
    if name not in lab.EXPLAINERS:
        raise ExperimentError(f"unknown method {name!r}; registered: {', '.join(lab.EXPLAINERS)}")
    return name, {}


def accepts(method: str, param: str) -> bool:
    return param in inspect.signature(lab.EXPLAINERS[method].fn).parameters


def explain_maps(model, images: torch.Tensor, method: str, targets: torch.Tensor | None = None,
                 batch_size: int = 32, progress: bool = False, **params) -> torch.Tensor:
    """[N, H, W] pixel-resolution maps: `lab.explain` per batch, patch grid (from the config) upsampled bilinearly."""
    from tqdm.auto import tqdm

    maps = []
    starts = range(0, images.shape[0], batch_size)
    for start in tqdm(starts, desc=method, disable=not progress, leave=False):
        t = None if targets is None else targets[start:start + batch_size]
        e = lab.explain(model, images[start:start + batch_size], method, target=t, **params)
        maps.append(e.patch_map().float())
    return mi.pixel_maps(torch.cat(maps), tuple(images.shape[-2:]))


SINGLE_BLOCK = ("last_block", "second_block")  # ablations without a rollout: start_layer does not apply


def _params_for(method: str, params: dict, start_layer: int, reading: str = "code") -> dict:
    out = dict(params)
    if accepts(method, "reading"):
        out.setdefault("reading", reading)
    if accepts(method, "start_layer") and out.get("ablation") not in SINGLE_BLOCK:
        out.setdefault("start_layer", int(start_layer))
    return out


def compute_maps(ctx: Context, names: Sequence[str], setting: str = "predicted") -> dict[str, torch.Tensor]:
    """Pixel maps of the test set for each method/variant, explaining the predicted or the target (true) class.

    In the target setting class-agnostic methods are skipped (their map does not depend on the class).
    """
    if setting not in SETTINGS:
        raise ExperimentError(f"setting must be 'predicted' or 'target', got {setting!r}")
    targets = ctx.test.labels if setting == "target" else None
    out = {}
    for name in names:
        method, params = method_spec(name)
        if setting == "target" and not lab.EXPLAINERS[method].class_specific:
            continue
        start = time.perf_counter()
        params = _params_for(method, params, ctx.cfg["start_layer"], ctx.cfg["reading"])
        out[name] = explain_maps(ctx.model, ctx.test.images, method, targets, ctx.cfg["batch_size"],
                                 ctx.cfg["progress"], **params)
        ctx.timings[f"maps_{setting}_{name}_s_per_image"] = round((time.perf_counter() - start) / len(ctx.test), 4)
    return out


# ---- Table 1: perturbation ------------------------------------------------------------------------------


def curve_fractions(cfg: Mapping) -> list[float]:
    """Every fraction removed along a curve: the AUC's steps, then the extra ones (95 %, 99 %)."""
    return [*cfg["fractions"], *cfg["extra_fractions"]]


def _perturb(ctx: Context, maps: torch.Tensor, direction: str, fill) -> tuple[np.ndarray, np.ndarray]:
    """(per-image AUC over `fractions` [N], accuracy curve over `curve_fractions` [F])."""
    fr = curve_fractions(ctx.cfg)
    forward_batch = ctx.cfg["batch_size"] * len(fr)  # every fraction of a batch in one pass
    hits = mi.perturbation_hits(ctx.model, ctx.test.images, ctx.test.labels, maps, direction, fr, fill,
                                forward_batch)
    k = len(ctx.cfg["fractions"])
    return mi.perturbation_auc(fr[:k], hits[:k]), hits.mean(1)


def perturbation_results(ctx: Context, maps: Mapping[str, Mapping[str, torch.Tensor]], timing: str = "table1",
                         bounds: bool = True) -> dict:
    """Table 1: AUC (%) of accuracy vs fraction removed, per method, for {negative, positive} x {predicted, target}.

    maps: {"predicted": {method: maps}, "target": {method: maps}}. Returns rows, curves, per-image AUCs and the
    fractions; with `bounds` also the random / oracle rows (`bound_rows`, `bound_curves`, `bound_per_image`) and
    every method's AUC normalised between them (`normalised`).
    """
    start = time.perf_counter()
    rows: dict[str, dict[str, float | None]] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    per_image: dict[str, dict[str, np.ndarray]] = {}  # per-example AUCs, for paired intervals
    fill = fill_value(ctx)
    for setting, by_method in maps.items():
        for name, m in by_method.items():
            for direction in DIRECTIONS:
                col = f"{direction}_{setting}"
                per_image.setdefault(name, {})[col], curve = _perturb(ctx, m, direction, fill)
                rows.setdefault(name, {})[col] = float(per_image[name][col].mean())
                curves.setdefault(col, {})[name] = curve.tolist()
    for name in rows:  # class-agnostic methods: no target entries (as in the paper)
        for col in TABLE1_DIRECTION:
            rows[name].setdefault(col, None)
    out = {"rows": rows, "curves": curves, "per_image": per_image, "fractions": curve_fractions(ctx.cfg),
           "clean_accuracy": ctx.model_info["accuracy_on_examples"]}
    if bounds:
        out.update(bound_results(ctx, fill, rows))
    ctx.timings[f"{timing}_perturbation_s"] = round(time.perf_counter() - start, 1)
    return out


def bound_results(ctx: Context, fill, rows: Mapping) -> dict:
    """Random-order and mask-oracle AUCs (predicted-class columns: neither depends on the class) and each row of
    `rows` normalised between them (0 = random, 100 = oracle; target columns use the same bounds; None where the
    bounds coincide)."""
    seed = ctx.cfg["seed"]
    bound_maps = {"random": mi.random_map(ctx.test.masks.shape, seed), "oracle": mi.oracle_map(ctx.test.masks, seed)}
    b_rows, b_curves, b_per = {}, {}, {}
    for name, m in bound_maps.items():
        for direction in DIRECTIONS:
            col = f"{direction}_predicted"
            b_per.setdefault(name, {})[col], curve = _perturb(ctx, m, direction, fill)
            b_rows.setdefault(name, {})[col] = float(b_per[name][col].mean())
            b_curves.setdefault(col, {})[name] = curve.tolist()
    def normalise(v, col):
        bound = col.split("_")[0] + "_predicted"
        x = None if v is None else mi.normalised_auc(v, b_rows["random"][bound], b_rows["oracle"][bound])
        return None if x is None or np.isnan(x) else x  # None: no value, or bounds that coincide

    normalised = {name: {col: normalise(v, col) for col, v in r.items()} for name, r in rows.items()}
    return {"bound_rows": b_rows, "bound_curves": b_curves, "bound_per_image": b_per, "normalised": normalised}


def benchmark_checks(table1: Mapping, oracle_gap: float = 2.0, spread: float = 5.0) -> dict:
    """Does the benchmark separate the maps? Per method, the paired interval of (oracle − method) negative-
    perturbation AUC (its low end should stay above `oracle_gap` points), and the spread (max − min) of the
    attention-derived methods' negative AUCs (should reach `spread` points)."""
    col = "negative_predicted"
    oracle = table1.get("bound_per_image", {}).get("oracle", {}).get(col)
    per = table1["per_image"]
    rows = {}
    if oracle is not None:
        for name in per:
            if col in per[name]:
                iv = stats.paired_difference(oracle, per[name][col])
                rows[name] = {"gap_to_oracle": iv.estimate, "gap_low": iv.low, "gap_high": iv.high}
    att = {m: table1["rows"][m][col] for m in ATTENTION_DERIVED if m in table1["rows"]}
    return {"rows": rows, "attention_spread": (max(att.values()) - min(att.values())) if len(att) > 1 else None,
            "oracle_gap": oracle_gap, "spread_target": spread}


# ---- Table 2: segmentation ------------------------------------------------------------------------------


def segmentation_results(ctx: Context, maps: Mapping[str, torch.Tensor], timing: str = "table2") -> dict:
    """Table 2: pixel accuracy, mAP, mIoU (%) of each method's predicted-class map against the object masks."""
    start = time.perf_counter()
    rows, counts = {}, {}
    for name, m in maps.items():
        counts[name] = mi.segmentation_counts(m, ctx.test.masks)
        s = mi.segmentation_from_counts(counts[name])
        rows[name] = {k: s[k] for k in SEGMENTATION}
    ctx.timings[f"{timing}_segmentation_s"] = round(time.perf_counter() - start, 1)
    return {"rows": rows, "counts": counts}


# ---- Table 3: ablations ---------------------------------------------------------------------------------


def ablation_results(ctx: Context, table1: Mapping, table2: Mapping, names: Sequence[str] | None = None) -> dict:
    """Table 3: the variants' segmentation and predicted-class perturbation, next to the full method (reused)."""
    names = list(ctx.cfg["ablations"] if names is None else names)
    maps = compute_maps(ctx, names, "predicted")
    t1 = perturbation_results(ctx, {"predicted": maps}, timing="table3", bounds=False)
    t2 = segmentation_results(ctx, maps, timing="table3")
    rows, per_image = {}, {}
    for name in names + ["chefer"]:
        src1, src2 = (table1, table2) if name == "chefer" else (t1, t2)
        if name not in src1["rows"] or name not in src2["rows"]:
            continue
        rows[name] = {**src2["rows"][name], "positive_predicted": src1["rows"][name]["positive_predicted"],
                      "negative_predicted": src1["rows"][name]["negative_predicted"]}
        per_image[name] = per_image_values(src1, src2, name)
    return {"rows": rows, "curves": t1["curves"], "maps": maps, "per_image": per_image}


def per_image_values(table1: Mapping, table2: Mapping, name: str) -> dict[str, np.ndarray]:
    """{column: per-image values} of one method: perturbation AUCs, and each segmentation column's per-image
    counts (`mi.SEGMENTATION_COUNTS`, from which a resample recomputes the pooled score)."""
    return {**table1["per_image"].get(name, {}), **{c: table2["counts"][name] for c in SEGMENTATION
                                                     if name in table2.get("counts", {})}}


# ---- Figure 2: class specificity ------------------------------------------------------------------------


def class_specificity(ctx: Context, names: Sequence[str]) -> dict:
    """Explain each two-object image for each of its two classes and measure how much the map changes.

    map_change: mean |m_A - m_B| of the min–max normalised pixel maps (0 = identical maps).
    shift_to_object: how much more of the map's mass lies on an object when that object's class is explained than
      when the other class is (mean over both objects; 0 = not class-specific, > 0 = follows the class).
    """
    rows, maps, per_pair = {}, {}, {}
    pairs = ctx.pairs
    for name in names:
        method, params = method_spec(name)
        params = _params_for(method, params, ctx.cfg["start_layer"], ctx.cfg["reading"])
        m = [explain_maps(ctx.model, pairs.images, method, pairs.labels[:, k], ctx.cfg["batch_size"], **params)
             for k in range(2)]
        maps[name] = m
        change = (mi.minmax(m[0]) - mi.minmax(m[1])).abs().flatten(1).mean(1)
        shift = torch.stack([mi.mask_mass(m[k], pairs.masks[:, k]) - mi.mask_mass(m[1 - k], pairs.masks[:, k])
                             for k in range(2)]).mean(0)  # [pairs]: mean over the two objects of each image
        per_pair[name] = shift.numpy()
        rows[name] = {"map_change": float(change.mean()), "shift_to_object": float(shift.mean())}
    return {"rows": rows, "maps": maps, "per_pair": per_pair}


# ---- figures --------------------------------------------------------------------------------------------


def figure1(ctx: Context, maps: Mapping[str, torch.Tensor], n: int | None = None):
    """Fig. 1: examples (rows) x methods (columns), predicted class; row titles = true / predicted class."""
    n = min(n or ctx.cfg["n_figure"], len(ctx.test))
    with torch.no_grad():
        pred = ctx.model(pixel_values=ctx.test.images[:n]).logits.argmax(-1)
    titles = [f"{class_name(ctx, int(y))}\n→ {class_name(ctx, int(p))}" for y, p in zip(ctx.test.labels[:n], pred)]
    return lab.viz.image_grid(list(ctx.test.pixels()[:n]), {LABELS.get(k, k): v[:n] for k, v in maps.items()},
                              row_titles=titles)


def figure2(ctx: Context, specificity: Mapping, n: int | None = None):
    """Fig. 2: each two-object image explained for each of its classes (two rows per image)."""
    n = min(n or max(1, ctx.cfg["n_figure"] // 2), len(ctx.pairs))
    images, rows, titles = [], [], []
    names = list(specificity["maps"])
    for i in range(n):
        for k in range(2):
            images.append(ctx.pairs.pixels(i))
            rows.append([specificity["maps"][name][k][i] for name in names])
            titles.append(f"{ctx.class_names[int(ctx.pairs.labels[i, k])]} →")
    return lab.viz.image_grid(images, rows, row_titles=titles, col_titles=[LABELS.get(k, k) for k in names])


def curves_figure(table1: Mapping):
    """Accuracy vs fraction of pixels removed, one panel per (direction, setting), AUC in the legend; the random-order
    and mask-oracle bounds dashed in grey on the predicted-class panels."""
    from matplotlib.figure import Figure

    cols = [c for c in TABLE1_DIRECTION if c in table1["curves"]]
    names = list(dict.fromkeys(k for c in cols for k in table1["curves"][c]))
    colour = {k: lab.viz.COLORBLIND[i % len(lab.viz.COLORBLIND)] for i, k in enumerate(names)}
    fig = Figure(figsize=(5.6 * len(cols), 3.2), layout="constrained")
    axes = fig.subplots(1, len(cols), squeeze=False)[0]
    for ax, col in zip(axes, cols):
        bounds = table1.get("bound_curves", {}).get(col, {})
        curves = {LABELS.get(k, k): v for k, v in {**table1["curves"][col], **bounds}.items()}
        aucs = {LABELS.get(k, k): {**table1["rows"], **table1.get("bound_rows", {})}[k][col] for k in
                [*table1["curves"][col], *bounds]}
        lab.viz.perturbation_curves(table1["fractions"], curves, ax=ax, ylabel="top-1 accuracy",
                                    xlabel="fraction of pixels removed", title=col.replace("_", ", "),
                                    legend_values=aucs, legend_fmt="{name} ({value:.1f})")
        for line, k in zip(ax.get_lines(), [*table1["curves"][col], *bounds]):  # one colour per method
            line.set_color(colour.get(k, "0.5"))
            if k in BOUNDS:
                line.set_linestyle("--")
                line.set_marker("")
        lab.viz.legend_outside(ax)  # re-drawn with the new colours, off the curves
    return fig


# ---- results and claims ---------------------------------------------------------------------------------


def advantage(per_image: Mapping, a: str, b: str, col: str, direction: str) -> stats.Interval:
    """Paired interval over images of how much method a beats b on `col` (positive = a better): perturbation AUCs
    are per-image means; a segmentation score is recomputed from the resampled images' counts."""
    x, y = np.asarray(per_image[a][col]), np.asarray(per_image[b][col])
    sign = 1.0 if direction == "higher" else -1.0
    if col in SEGMENTATION:
        k = x.shape[1]

        def statistic(rows):
            sums = rows.sum(0)
            return sign * (mi.segmentation_from_sums(sums[:k], len(rows))[col]
                           - mi.segmentation_from_sums(sums[k:], len(rows))[col])

        return stats.bootstrap(np.hstack([x, y]), statistic)
    return stats.paired_difference(sign * x, sign * y)


def _beats(text: str, per_image: Mapping, pairs: Sequence[tuple[str, str, str]], directions: Mapping) -> dict:
    """A claim that a beats b on col for every (a, b, col) in `pairs`, combined; the detail lists the parts that do
    not hold."""
    parts = {(a, b, c): advantage(per_image, a, b, c, directions[c]) for a, b, c in pairs
             if c in per_image.get(a, {}) and c in per_image.get(b, {})}
    verdicts = {k: stats.decide(iv, 0.0, "greater") for k, iv in parts.items()}
    open_ = [f"{a} vs {b} on {c}: {parts[a, b, c]} → {v}" for (a, b, c), v in verdicts.items() if v != "holds"]
    detail = (f"{len(parts)} paired comparisons (advantage in points, 95 % interval over images); "
              + ("; ".join(open_) if open_ else "all hold"))
    return {"claim": text, "verdict": stats.combine(verdicts.values()) if parts else None, "detail": detail}


def _others(rows: Mapping, name: str, col: str) -> list[str]:
    return [m for m, r in rows.items() if m != name and r.get(col) is not None]


def table_claims(table1: Mapping, table2: Mapping, tolerance: float = 3.0) -> list[dict]:
    """Tables 1–2: Chefer best everywhere; LRP / GradCAM worst; partial LRP ≈ rollout; target vs predicted class."""
    r1, r2 = table1["rows"], table2["rows"]
    per = {m: per_image_values(table1, table2, m) for m in {*r1, *r2}}
    dirs = {**TABLE1_DIRECTION, **TABLE2_DIRECTION}
    out = []
    for name, rows, cols in (("Table 1 (perturbation)", r1, TABLE1_DIRECTION), ("Table 2 (segmentation)", r2,
                                                                                 TABLE2_DIRECTION)):
        if "chefer" in rows:
            out.append(_beats(f"Chefer is best on every column of {name}", per,
                              [("chefer", m, c) for c in cols for m in _others(rows, "chefer", c)], dirs))
    if "lrp" in r2:
        out.append(_beats("LRP is worst on segmentation (all three metrics)", per,
                          [(m, "lrp", c) for c in SEGMENTATION for m in _others(r2, "lrp", c)], dirs))
    for method, col, text in (("lrp", "positive_predicted", "LRP is worst on positive perturbation"),
                              ("attn_gradcam", "negative_predicted", "GradCAM is worst on negative perturbation")):
        if method in r1:
            out.append(_beats(f"{text} (predicted class)", per, [(m, method, col) for m in _others(r1, method, col)],
                              dirs))
    out += partial_lrp_claim(table1, tolerance) + target_claim(table1)
    return out


def partial_lrp_claim(table1: Mapping, tolerance: float) -> list[dict]:
    """'partial LRP ≈ rollout': the paired difference within ±tolerance AUC points on both predicted columns."""
    per = table1["per_image"]
    if "partial_lrp" not in per or "rollout" not in per:
        return []
    cols = ("negative_predicted", "positive_predicted")
    parts = {c: stats.paired_difference(per["partial_lrp"][c], per["rollout"][c]) for c in cols}
    verdicts = {c: stats.decide(iv, tolerance, "within") for c, iv in parts.items()}
    return [{"claim": f"partial LRP ≈ rollout on predicted-class perturbation (within {tolerance:g} AUC points)",
             "verdict": stats.combine(verdicts.values()),
             "detail": "; ".join(f"{c}: partial LRP − rollout {iv} → {verdicts[c]}" for c, iv in parts.items())}]


def target_claim(table1: Mapping) -> list[dict]:
    """Chefer's AUCs improve from the predicted to the target class (paired over images, both tests)."""
    per = table1["per_image"].get("chefer", {})
    if "negative_target" not in per:
        return []
    parts = {"negative": stats.paired_difference(per["negative_target"], per["negative_predicted"]),
             "positive": stats.paired_difference(per["positive_predicted"], per["positive_target"])}
    verdicts = {k: stats.decide(iv, 0.0, "greater") for k, iv in parts.items()}
    return [{"claim": "Chefer improves from the predicted to the target class on both perturbation tests",
             "verdict": stats.combine(verdicts.values()),
             "detail": "; ".join(f"{k}: gain {iv} → {verdicts[k]} (positive = better)" for k, iv in parts.items())}]


def ablation_claims(table1: Mapping, table2: Mapping, table3: Mapping) -> list[dict]:
    """Table 3: the full method beats every ablation; the second-block variant is worst; the last block alone
    beats raw attention and GradCAM."""
    r3, per = table3["rows"], dict(table3["per_image"])
    if "chefer" not in r3:
        return []
    variants = [v for v in r3 if v != "chefer"]
    out = [_beats("Table 3: the full method beats every ablation on every column", per,
                  [("chefer", v, c) for v in variants for c in TABLE3_DIRECTION], TABLE3_DIRECTION)]
    if "chefer_second_block" in r3:
        out.append(_beats("Table 3: the second-block variant is the worst variant", per,
                          [(v, "chefer_second_block", c) for v in r3 if v != "chefer_second_block"
                           for c in TABLE3_DIRECTION], TABLE3_DIRECTION))
    baselines = [m for m in ("raw_attention", "attn_gradcam") if m in table1["rows"] and m in table2["rows"]]
    if "chefer_last_block" in r3 and len(baselines) == 2:
        per.update({m: per_image_values(table1, table2, m) for m in baselines})
        out.append(_beats("Table 3: the last block alone (∇A(1)R(n1)) already beats raw attention and GradCAM", per,
                          [("chefer_last_block", m, c) for m in baselines for c in TABLE3_DIRECTION],
                          TABLE3_DIRECTION))
    return out


def specificity_claims(specificity: Mapping) -> list[dict]:
    """Fig. 2: the class-specific methods move their map onto the explained object (shift > SHIFT_THRESHOLD), the
    others do not (|shift| within it); intervals over the two-object images."""
    per = specificity.get("per_pair", {})
    if not per:
        return []
    ivs = {m: stats.bootstrap(v) for m, v in per.items()}
    verdicts = {m: stats.decide(iv, SHIFT_THRESHOLD, "greater" if m in CLASS_SPECIFIC_IN_PAPER else "within")
                for m, iv in ivs.items()}
    shifts = "; ".join(f"{m} {iv} → {verdicts[m]}" for m, iv in ivs.items())
    out = [{"claim": "Fig. 2: only Chefer and GradCAM give class-dependent maps", "verdict":
            stats.combine(verdicts.values()), "detail": f"shift of map mass onto the explained object; class-"
            f"dependent = shift > {SHIFT_THRESHOLD}, else within ±{SHIFT_THRESHOLD}: {shifts}"}]
    if "chefer" in ivs:
        out.append({"claim": "Fig. 2: Chefer's map moves onto the object of the explained class",
                    "interval": ivs["chefer"], "margin": SHIFT_THRESHOLD, "kind": "greater",
                    "detail": "mean shift of map mass onto the explained object over the two-object images"})
    return out


def claims(table1: Mapping, table2: Mapping, table3: Mapping, specificity: Mapping, tolerance: float = 3.0) -> list:
    """The paper's claims on our numbers: dicts of `Results.add_claim` arguments, decided by paired bootstrap
    intervals over the test images (Fig. 2: over the two-object images)."""
    return (table_claims(table1, table2, tolerance) + ablation_claims(table1, table2, table3)
            + specificity_claims(specificity))


def _half_width(iv: stats.Interval) -> float:
    return (iv.high - iv.low) / 2


def build_results(ctx: Context, table1: Mapping, table2: Mapping, table3: Mapping, specificity: Mapping):
    """The `lab.results.Results` of the notebook: three tables (paper vs ours), the Fig. 2 measurements, claims."""
    from lab.results import Results

    def pair(paper, ours):
        return {m: {c: (paper.get(m, {}).get(c), v) for c, v in cols.items()} for m, cols in ours.items()}

    meta = {"model": f"ViTForImageClassification trained here ({ctx.cfg['model_profile']} profile)",
            "n_examples": len(ctx.test), "n_pairs": len(ctx.pairs), "seed": ctx.cfg["seed"],
            "accuracy": ctx.model_info.get("test_accuracy"), "model_info": ctx.model_info,
            "fill": ctx.cfg["fill"], "start_layer": ctx.cfg["start_layer"], "fractions": curve_fractions(ctx.cfg),
            "auc": "trapezoid over fractions 0.1..0.9 divided by 0.8, percent (mean accuracy over the curve)",
            "target_class": "ground-truth label", "timings": ctx.timings,
            "elapsed_s": round(time.perf_counter() - ctx.started, 1)}
    res = Results(NOTEBOOK, ctx.cfg["profile"], meta=meta)
    bounds = {m: {c: r.get(c) for c in TABLE1_DIRECTION} for m, r in table1.get("bound_rows", {}).items()}
    res.add_table("table1_perturbation", "Positive / negative perturbation AUC (%), predicted and target class; "
                  f"positive: lower is better, negative: higher is better; n = {len(ctx.test)} test images; "
                  "rows random / oracle: pixels removed in random order / by the object mask (bounds, not methods)",
                  pair(PAPER_TABLE1, {**table1["rows"], **bounds}), TABLE1_DIRECTION)
    if "normalised" in table1:
        res.add_table("table1_normalised", "Table 1 AUCs normalised between the random-order (0) and mask-oracle "
                      "(100) bounds; higher is better in every column", table1["normalised"])
        checks = benchmark_checks(table1)
        res.meta["attention_spread_negative"] = checks["attention_spread"]
        res.add_table("table1_oracle_gap", "Negative-perturbation AUC points below the mask oracle (paired 95 % "
                      f"interval over images; a saturated benchmark has gap_low under {checks['oracle_gap']:g}); the "
                      f"attention-derived methods spread over {checks['attention_spread'] or 0:.1f} points",
                      checks["rows"])
    half = {m: {c: _half_width(stats.bootstrap(v)) for c, v in cols.items()}
            for m, cols in table1["per_image"].items()}
    res.add_table("table1_interval_half_widths", f"Half-width of the 95 % bootstrap interval of each Table 1 AUC "
                  f"over the {len(ctx.test)} test images; differences between methods have paired intervals in the "
                  "claims", half)
    res.add_table("table2_segmentation", f"Segmentation against the object masks (%), higher is better; "
                  f"n = {len(ctx.test)} test images (claims: paired bootstrap intervals over images)",
                  pair(PAPER_TABLE2, table2["rows"]), TABLE2_DIRECTION)
    res.add_table("table3_ablation", "Ablations: segmentation and predicted-class perturbation (%); "
                  f"n = {len(ctx.test)} test images",
                  pair(PAPER_TABLE3, table3["rows"]), TABLE3_DIRECTION)
    res.add_table("figure2_class_specificity", "Two-object images explained for each class: mean |map_A - map_B| "
                  f"and shift of map mass onto the explained object (no paper numbers: Fig. 2 is qualitative); n = "
                  f"{len(ctx.pairs)} two-object images",
                  {m: dict(r) for m, r in specificity["rows"].items()})
    for c in claims(table1, table2, table3, specificity, ctx.cfg["partial_lrp_close"]):
        res.add_claim(**c)
    return res


# ---- interactive view -----------------------------------------------------------------------------------


def target_choices(ctx: Context) -> list[str]:
    return ["predicted", "ground truth", *ctx.class_names]


def example_renderer(ctx: Context):
    """render(index, method, target_class, start_layer, alpha) -> Figure, for `lab.widgets.controls`."""

    def render(index: int = 0, method: str = "chefer", target_class: str = "predicted", start_layer: int = 0,
               alpha: float = 0.5):
        return render_example(ctx, index, method, target_class, start_layer, alpha)

    return render


def render_example(ctx: Context, index: int, method: str, target_class: str = "predicted", start_layer: int = 0,
                   alpha: float = 0.5):
    """One test image: the input with its mask outline, and `method`'s map for the chosen class."""
    from matplotlib.figure import Figure

    if not 0 <= index < len(ctx.test):
        raise ExperimentError(f"index must be in 0..{len(ctx.test) - 1}, got {index}")
    name, params = method_spec(method)
    label = int(ctx.test.labels[index])
    target = {"predicted": None, "ground truth": label}.get(target_class)
    if target_class not in ("predicted", "ground truth"):
        if target_class not in ctx.class_names:
            raise ExperimentError(f"target_class must be one of {target_choices(ctx)}, got {target_class!r}")
        target = ctx.class_names.index(target_class)
    params = _params_for(name, params, start_layer, ctx.cfg["reading"])
    e = lab.explain(ctx.model, ctx.test.images[index:index + 1], name, target=target, **params)
    fig = Figure(figsize=(6.4, 3.3), layout="constrained")
    ax_in, ax_map = fig.subplots(1, 2)
    image = ctx.test.pixels(index).permute(1, 2, 0).numpy()
    ax_in.imshow(image)
    ax_in.contour(ctx.test.masks[index].numpy(), levels=[0.5], colors="white", linewidths=0.8)
    ax_in.set_axis_off()
    ax_in.set_title(f"true: {ctx.class_names[label]}")
    lab.viz.overlay(image, e.patch_map(0), ax=ax_map, alpha=alpha)
    probs = e.probabilities[0]
    explained = int(e.target[0])
    ax_map.set_title(f"{LABELS.get(method, method)} → {class_name(ctx, explained)} (p={probs[explained]:.2f})\n"
                     f"predicted: {class_name(ctx, int(probs.argmax()))}")
    return fig
