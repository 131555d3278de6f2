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
config, so `setup(cfg, model=ViTForImageClassification.from_pretrained("google/vit-base-patch16-224"))`
runs the same code (the procedural images are then rendered at the model's resolution).

Paper protocol (REPRODUCTION_SPEC 000.3), and our choices where the paper is silent:
- "target class" = the ground-truth class (the authors' `--vis-class target` passes the dataset label as the class
  to explain); "predicted" = the model's top-1 class. Accuracy is always measured against the ground truth.
  Class-agnostic methods (rollout, raw attention) give the same map for any class, so, as in the paper, they
  have no target-class entries.
- Removed pixels are set to the test set's per-channel mean (`fill="mean"`); "zero" reproduces the authors'
  black (0 in [0, 1] space). AUC = mean accuracy over 10 %...90 % (trapezoid / 0.8), see `lab.metrics.images`.
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
TABLE3_DIRECTION = {**TABLE2_DIRECTION, "positive_predicted": "lower", "negative_predicted": "higher"}

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(model_profile="smoke", n_examples=16, n_pairs=2, n_figure=2, batch_size=16),
    "default": dict(model_profile="default", n_examples=500, n_pairs=48, n_figure=6, batch_size=50),
    "paper": dict(model_profile="paper", n_examples=2000, n_pairs=200, n_figure=8, batch_size=50),
}
COMMON = dict(methods=METHODS, ablations=tuple(ABLATIONS), seed=0, fill="mean", start_layer=0,
              fractions=mi.FRACTIONS, partial_lrp_close=3.0, progress=True)
FILLS = ("mean", "zero")


def settings(profile: str = "default", **overrides) -> dict:
    """The profile's sizes plus the shared protocol settings; `None` overrides keep the profile's value."""
    cfg = merge_settings(PROFILES, COMMON, profile, overrides)
    bad = [m for m in cfg["methods"] if m not in lab.EXPLAINERS]
    if bad:
        raise ExperimentError(f"unknown method(s) {bad}; registered: {', '.join(lab.EXPLAINERS)}")
    bad = [a for a in cfg["ablations"] if a not in ABLATIONS]
    if bad:
        raise ExperimentError(f"unknown ablation(s) {bad}; choose from {', '.join(ABLATIONS)}")
    if not (cfg["fill"] in FILLS or isinstance(cfg["fill"], (int, float))):
        raise ExperimentError(f"fill must be 'mean', 'zero' or a number, got {cfg['fill']!r}")
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
    """Train or load the profile's ViT (or take `model`), and build the test set and two-object set at its size."""
    start = time.perf_counter()
    info: dict[str, Any] = {}
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
    """Per-channel value (in the model's normalised input space) that removed pixels get."""
    fill = ctx.cfg["fill"]
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


def _params_for(method: str, params: dict, start_layer: int) -> dict:
    out = dict(params)
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
        out[name] = explain_maps(ctx.model, ctx.test.images, method, targets, ctx.cfg["batch_size"],
                                 ctx.cfg["progress"], **_params_for(method, params, ctx.cfg["start_layer"]))
        ctx.timings[f"maps_{setting}_{name}_s_per_image"] = round((time.perf_counter() - start) / len(ctx.test), 4)
    return out


# ---- Table 1: perturbation ------------------------------------------------------------------------------


def perturbation_results(ctx: Context, maps: Mapping[str, Mapping[str, torch.Tensor]], timing: str = "table1") -> dict:
    """Table 1: AUC (%) of accuracy vs fraction removed, per method, for {negative, positive} x {predicted, target}.

    maps: {"predicted": {method: maps}, "target": {method: maps}}. Returns rows, curves and the fractions.
    """
    start = time.perf_counter()
    rows: dict[str, dict[str, float | None]] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    per_image: dict[str, dict[str, np.ndarray]] = {}  # per-example AUCs, for standard errors of differences
    fill = fill_value(ctx)
    forward_batch = ctx.cfg["batch_size"] * len(ctx.cfg["fractions"])  # every fraction of a batch in one pass
    for setting, by_method in maps.items():
        for name, m in by_method.items():
            for direction in DIRECTIONS:
                hits = mi.perturbation_hits(ctx.model, ctx.test.images, ctx.test.labels, m, direction,
                                            ctx.cfg["fractions"], fill, forward_batch)
                col = f"{direction}_{setting}"
                per_image.setdefault(name, {})[col] = mi.perturbation_auc(ctx.cfg["fractions"], hits)
                rows.setdefault(name, {})[col] = float(per_image[name][col].mean())
                curves.setdefault(col, {})[name] = hits.mean(1).tolist()
    for name in rows:  # class-agnostic methods: no target entries (as in the paper)
        for col in TABLE1_DIRECTION:
            rows[name].setdefault(col, None)
    ctx.timings[f"{timing}_perturbation_s"] = round(time.perf_counter() - start, 1)
    return {"rows": rows, "curves": curves, "per_image": per_image, "fractions": list(ctx.cfg["fractions"]),
            "clean_accuracy": ctx.model_info["accuracy_on_examples"]}


def paired_se(table1: Mapping, a: str, b: str, col: str) -> float:
    """Standard error of the difference of two methods' AUCs on the same images (paired over examples)."""
    d = table1["per_image"][a][col] - table1["per_image"][b][col]
    return float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")


# ---- Table 2: segmentation ------------------------------------------------------------------------------


def segmentation_results(ctx: Context, maps: Mapping[str, torch.Tensor], timing: str = "table2") -> dict:
    """Table 2: pixel accuracy, mAP, mIoU (%) of each method's predicted-class map against the object masks."""
    start = time.perf_counter()
    rows = {}
    for name, m in maps.items():
        s = mi.segmentation_scores(m, ctx.test.masks)
        rows[name] = {k: s[k] for k in ("pixel_accuracy", "mAP", "mIoU")}
    ctx.timings[f"{timing}_segmentation_s"] = round(time.perf_counter() - start, 1)
    return {"rows": rows}


# ---- Table 3: ablations ---------------------------------------------------------------------------------


def ablation_results(ctx: Context, table1: Mapping, table2: Mapping, names: Sequence[str] | None = None) -> dict:
    """Table 3: the variants' segmentation and predicted-class perturbation, next to the full method (reused)."""
    names = list(ctx.cfg["ablations"] if names is None else names)
    maps = compute_maps(ctx, names, "predicted")
    t1 = perturbation_results(ctx, {"predicted": maps}, timing="table3")
    t2 = segmentation_results(ctx, maps, timing="table3")
    rows = {}
    for name in names + ["chefer"]:
        src1, src2 = (table1["rows"], table2["rows"]) if name == "chefer" else (t1["rows"], t2["rows"])
        if name not in src1 or name not in src2:
            continue
        rows[name] = {**src2[name], "positive_predicted": src1[name]["positive_predicted"],
                      "negative_predicted": src1[name]["negative_predicted"]}
    return {"rows": rows, "curves": t1["curves"], "maps": maps}


# ---- Figure 2: class specificity ------------------------------------------------------------------------


def class_specificity(ctx: Context, names: Sequence[str]) -> dict:
    """Explain each two-object image for each of its two classes and measure how much the map changes.

    map_change: mean |m_A - m_B| of the min–max normalised pixel maps (0 = identical maps).
    shift_to_object: how much more of the map's mass lies on an object when that object's class is explained than
      when the other class is (mean over both objects; 0 = not class-specific, > 0 = follows the class).
    """
    rows, maps = {}, {}
    pairs = ctx.pairs
    for name in names:
        method, params = method_spec(name)
        params = _params_for(method, params, ctx.cfg["start_layer"])
        m = [explain_maps(ctx.model, pairs.images, method, pairs.labels[:, k], ctx.cfg["batch_size"], **params)
             for k in range(2)]
        maps[name] = m
        change = (mi.minmax(m[0]) - mi.minmax(m[1])).abs().flatten(1).mean(1)
        shift = [mi.mask_mass(m[k], pairs.masks[:, k]) - mi.mask_mass(m[1 - k], pairs.masks[:, k]) for k in range(2)]
        rows[name] = {"map_change": float(change.mean()), "shift_to_object": float(torch.stack(shift).mean())}
    return {"rows": rows, "maps": maps}


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
    """Accuracy vs fraction of pixels removed, one panel per (direction, setting), AUC in the legend."""
    from matplotlib.figure import Figure

    cols = [c for c in TABLE1_DIRECTION if c in table1["curves"]]
    names = list(dict.fromkeys(k for c in cols for k in table1["curves"][c]))
    colour = {k: lab.viz.COLORBLIND[i % len(lab.viz.COLORBLIND)] for i, k in enumerate(names)}
    fig = Figure(figsize=(4.2 * len(cols), 3.2), layout="constrained")
    axes = fig.subplots(1, len(cols), squeeze=False)[0]
    for ax, col in zip(axes, cols):
        curves = {LABELS.get(k, k): v for k, v in table1["curves"][col].items()}
        aucs = {LABELS.get(k, k): table1["rows"][k][col] for k in table1["curves"][col]}
        lab.viz.perturbation_curves(table1["fractions"], curves, ax=ax, ylabel="top-1 accuracy",
                                    xlabel="fraction of pixels removed", title=col.replace("_", ", "),
                                    legend_values=aucs, legend_fmt="{name} ({value:.1f})")
        for line, k in zip(ax.get_lines(), table1["curves"][col]):  # one colour per method in every panel
            line.set_color(colour[k])
        ax.legend()
    return fig


# ---- results and claims ---------------------------------------------------------------------------------


def _best(rows: Mapping[str, Mapping], col: str, direction: str) -> tuple[str, float]:
    vals = {m: r[col] for m, r in rows.items() if r.get(col) is not None}
    pick = max if direction == "higher" else min
    name = pick(vals, key=vals.get)
    return name, vals[name]


def _is_worst(rows, col, direction, name) -> bool:
    opposite = "lower" if direction == "higher" else "higher"
    return name in rows and _best(rows, col, opposite)[1] == rows[name][col]


def _fmt(rows, col) -> str:
    return ", ".join(f"{m} {r[col]:.1f}" for m, r in rows.items() if r.get(col) is not None)


def claims(table1: Mapping, table2: Mapping, table3: Mapping, specificity: Mapping, tolerance: float = 3.0) -> list:
    """The paper's claims evaluated on our numbers: list of (claim, holds, detail)."""
    out = []
    r1, r2, r3 = table1["rows"], table2["rows"], table3["rows"]
    for name, rows, dirs in (("Table 1 (perturbation)", r1, TABLE1_DIRECTION), ("Table 2 (segmentation)", r2,
                                                                                 TABLE2_DIRECTION)):
        lost = []
        for c, d in dirs.items():
            best, value = _best(rows, c, d)
            if "chefer" in rows and value != rows["chefer"][c]:
                se = f" (paired SE {paired_se(table1, best, 'chefer', c):.2f})" if rows is r1 else ""
                lost.append(f"{c}: {best} {value:.2f} vs chefer {rows['chefer'][c]:.2f}{se}")
        out.append((f"Chefer is best on every column of {name}", not lost and "chefer" in rows,
                    "; ".join(lost) if lost else "best everywhere"))
    seg_worst = [c for c in TABLE2_DIRECTION if "lrp" in r2 and not _is_worst(r2, c, "higher", "lrp")]
    out.append(("LRP is worst on segmentation (all three metrics)", "lrp" in r2 and not seg_worst,
                "; ".join(f"{c}: {_fmt(r2, c)}" for c in TABLE2_DIRECTION)))
    out.append(("LRP is worst on positive perturbation (predicted class)",
                "lrp" in r1 and _is_worst(r1, "positive_predicted", "lower", "lrp"), _fmt(r1, "positive_predicted")))
    out.append(("GradCAM is worst on negative perturbation (predicted class)",
                "attn_gradcam" in r1 and _is_worst(r1, "negative_predicted", "higher", "attn_gradcam"),
                _fmt(r1, "negative_predicted")))
    if "partial_lrp" in r1 and "rollout" in r1:
        gaps = {c: abs(r1["partial_lrp"][c] - r1["rollout"][c]) for c in ("negative_predicted", "positive_predicted")}
        out.append((f"partial LRP ≈ rollout on predicted-class perturbation (within {tolerance:g} AUC points)",
                    all(g <= tolerance for g in gaps.values()),
                    ", ".join(f"{c} gap {g:.2f} (paired SE {paired_se(table1, 'partial_lrp', 'rollout', c):.2f})"
                              for c, g in gaps.items())))
    gains = {m: (r1[m]["negative_target"] - r1[m]["negative_predicted"],
                 r1[m]["positive_predicted"] - r1[m]["positive_target"])
             for m in r1 if r1[m].get("negative_target") is not None}
    if "chefer" in gains:
        out.append(("Chefer improves from the predicted to the target class on both perturbation tests",
                    gains["chefer"][0] >= 0 and gains["chefer"][1] >= 0,
                    "; ".join(f"{m}: negative {g[0]:+.2f}, positive {g[1]:+.2f} (positive = better)"
                              for m, g in gains.items())))
    if "chefer" in r3:
        variants = [v for v in r3 if v != "chefer"]
        lost = [f"{v} {c}" for v in variants for c, d in TABLE3_DIRECTION.items()
                if (r3[v][c] > r3["chefer"][c]) == (d == "higher") and r3[v][c] != r3["chefer"][c]]
        out.append(("Table 3: the full method beats every ablation on every column", not lost,
                    "beaten on: " + ", ".join(lost) if lost else "beats all"))
        if "chefer_second_block" in r3:
            worst = [c for c, d in TABLE3_DIRECTION.items() if not _is_worst(r3, c, d, "chefer_second_block")]
            out.append(("Table 3: the second-block variant is the worst variant", not worst,
                        "not worst on: " + ", ".join(worst) if worst else "worst on every column"))
        baselines = ("raw_attention", "attn_gradcam")
        if "chefer_last_block" in r3 and all(m in r2 and m in r1 for m in baselines):
            ref = {m: {**r2[m], "positive_predicted": r1[m]["positive_predicted"],
                       "negative_predicted": r1[m]["negative_predicted"]} for m in baselines}
            v = r3["chefer_last_block"]
            beaten = {c: all((v[c] > ref[m][c]) == (d == "higher") and v[c] != ref[m][c] for m in baselines)
                      for c, d in TABLE3_DIRECTION.items()}
            out.append(("Table 3: the last block alone (∇A(1)R(n1)) already beats raw attention and GradCAM",
                        all(beaten.values()),
                        ", ".join(f"{c} {v[c]:.1f} vs {ref['raw_attention'][c]:.1f} / {ref['attn_gradcam'][c]:.1f}"
                                  for c in TABLE3_DIRECTION)))
    s = specificity["rows"]
    if s:
        shifts = ", ".join(f"{m} {r['shift_to_object']:+.3f}" for m, r in s.items())
        dependent = sorted(m for m, r in s.items() if abs(r["shift_to_object"]) > SHIFT_THRESHOLD)
        expected = sorted(m for m in s if m in CLASS_SPECIFIC_IN_PAPER)
        out.append(("Fig. 2: only Chefer and GradCAM give class-dependent maps", dependent == expected,
                    f"|shift of map mass onto the explained object| > {SHIFT_THRESHOLD} counts as class-dependent: "
                    + shifts))
        if "chefer" in s:
            out.append(("Fig. 2: Chefer's map moves onto the object of the explained class",
                        s["chefer"]["shift_to_object"] > SHIFT_THRESHOLD, shifts + " (negative: moves to the other "
                        "object)"))
    return out


def build_results(ctx: Context, table1: Mapping, table2: Mapping, table3: Mapping, specificity: Mapping):
    """The `lab.results.Results` of the notebook: three tables (paper vs ours), the Fig. 2 measurements, claims."""
    from lab.results import Results

    def pair(paper, ours):
        return {m: {c: (paper.get(m, {}).get(c), v) for c, v in cols.items()} for m, cols in ours.items()}

    meta = {"model": f"ViTForImageClassification trained here ({ctx.cfg['model_profile']} profile)",
            "n_examples": len(ctx.test), "n_pairs": len(ctx.pairs), "seed": ctx.cfg["seed"],
            "accuracy": ctx.model_info.get("test_accuracy"), "model_info": ctx.model_info,
            "fill": ctx.cfg["fill"], "start_layer": ctx.cfg["start_layer"],
            "auc": "trapezoid over fractions 0.1..0.9 divided by 0.8, percent (mean accuracy over the curve)",
            "target_class": "ground-truth label", "timings": ctx.timings,
            "elapsed_s": round(time.perf_counter() - ctx.started, 1)}
    res = Results(NOTEBOOK, ctx.cfg["profile"], meta=meta)
    res.add_table("table1_perturbation", "Positive / negative perturbation AUC (%), predicted and target class; "
                  "positive: lower is better, negative: higher is better", pair(PAPER_TABLE1, table1["rows"]),
                  TABLE1_DIRECTION)
    se = {m: {c: float(v.std(ddof=1) / np.sqrt(len(v))) for c, v in cols.items()}
          for m, cols in table1["per_image"].items()}
    res.add_table("table1_standard_errors", "Standard error of each Table 1 AUC over the test images "
                  "(std of per-image AUCs / sqrt(N)); differences between methods have paired SEs in the claims", se)
    res.add_table("table2_segmentation", "Segmentation against the object masks (%), higher is better",
                  pair(PAPER_TABLE2, table2["rows"]), TABLE2_DIRECTION)
    res.add_table("table3_ablation", "Ablations: segmentation and predicted-class perturbation (%)",
                  pair(PAPER_TABLE3, table3["rows"]), TABLE3_DIRECTION)
    res.add_table("figure2_class_specificity", "Two-object images explained for each class: mean |map_A - map_B| "
                  "and shift of map mass onto the explained object (no paper numbers: Fig. 2 is qualitative)",
                  {m: dict(r) for m, r in specificity["rows"].items()})
    for claim, holds, detail in claims(table1, table2, table3, specificity, ctx.cfg["partial_lrp_close"]):
        res.add_claim(claim, holds, detail)
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
    params = _params_for(name, params, start_layer)
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
