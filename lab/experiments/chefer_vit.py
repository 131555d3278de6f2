"""Chefer, Gur & Wolf 2021 on a Vision Transformer: Tables 1-3 and Figures 1-2, on procedural images.

Paper constants, the notebook's steps (`settings`, `setup`, `compute_maps` through `explain_many`, Tables 1-3, Fig. 2
measured, `build_results`) and the claims; the protocols (AUC, fills, random-order / mask-oracle bounds, segmentation)
are in `lab.metrics.images`, the figures in `lab.viz.chefer_vit`. Sizes come from the model's config, so a checkpoint
such as "google/vit-base-patch16-224" runs the same code. Where the paper is silent: "target class" = the
ground-truth label (the authors' `--vis-class target`); removed pixels get the test set's mean colour (`fill`).
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Mapping, Sequence

import torch

import lab
from lab import stats
from lab.data import images as img_data
from lab.experiments import ExperimentError, ExperimentSettings
from lab.explainers.batch import explain_many
from lab.metrics import images as mi
from lab.models import vit as vit_models
from lab.results import Results
from lab.viz.chefer_vit import CAPTIONS

NOTEBOOK = "01_chefer_vit"
SETTINGS = ("predicted", "target")
DIRECTIONS = ("negative", "positive")
METHODS = ("rollout", "raw_attention", "attn_gradcam", "lrp", "partial_lrp", "chefer")
CLASS_SPECIFIC_IN_PAPER = ("attn_gradcam", "chefer")  # Fig. 2: the only maps that change with the class
SHIFT_THRESHOLD = 0.02  # |shift_to_object| above this counts as a class-dependent map (see class_specificity)
ABLATIONS = {f"chefer_{a}": ("chefer", {"ablation": a})  # Table 3 variants: name -> (explainer, parameters)
             for a in ("no_gradient", "last_block", "second_block")}

TABLE1_DIRECTION = {"negative_predicted": "higher", "negative_target": "higher", "positive_predicted": "lower",
                    "positive_target": "lower"}
TABLE2_DIRECTION = {"pixel_accuracy": "higher", "mAP": "higher", "mIoU": "higher"}
SEGMENTATION = tuple(TABLE2_DIRECTION)
TABLE3_DIRECTION = {**TABLE2_DIRECTION, "positive_predicted": "lower", "negative_predicted": "higher"}
# Paper numbers (000_chefer2021 text, Tables 1-3, in the columns' order above; None where the paper gives "–").
PAPER_TABLE1 = {m: dict(zip(TABLE1_DIRECTION, v)) for m, v in {
    "rollout": (53.1, None, 20.05, None), "raw_attention": (45.55, None, 23.99, None),
    "attn_gradcam": (41.52, 42.02, 34.06, 33.56), "lrp": (43.49, 43.49, 41.94, 41.93),
    "partial_lrp": (50.49, 50.49, 19.64, 19.64), "chefer": (54.16, 55.04, 17.03, 16.04)}.items()}
PAPER_TABLE2 = {m: dict(zip(TABLE2_DIRECTION, v)) for m, v in {
    "rollout": (73.54, 84.76, 55.42), "raw_attention": (67.84, 80.24, 46.37), "attn_gradcam": (64.44, 71.60, 40.82),
    "lrp": (51.09, 55.68, 32.89), "partial_lrp": (76.31, 84.67, 57.94), "chefer": (79.70, 86.03, 61.95)}.items()}
PAPER_TABLE3 = {m: dict(zip(TABLE3_DIRECTION, v)) for m, v in {  # "Ours" mAP: 86.06 here, 86.03 in Table 2 (sic)
    "chefer_no_gradient": (77.66, 85.66, 59.88, 18.23, 52.88), "chefer_last_block": (78.32, 85.25, 59.93, 18.01, 52.43),
    "chefer_second_block": (60.30, 73.63, 39.06, 27.33, 37.42), "chefer": (79.70, 86.06, 61.95, 17.03, 54.16)}.items()}
ATTENTION_DERIVED = ("rollout", "raw_attention", "partial_lrp", "chefer")  # the methods the benchmark must separate

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(model_profile="smoke", n_examples=16, n_pairs=2, n_figure=2, batch_size=16),
    "default": dict(model_profile="default", n_examples=500, n_pairs=48, n_figure=6, batch_size=50),
    "paper": dict(model_profile="paper", n_examples=2000, n_pairs=200, n_figure=8, batch_size=50),
}
# reading= of chefer / partial_lrp / lrp: "code" = the authors' released code (the paper's numbers), "text" = as printed
COMMON = dict(methods=METHODS, ablations=tuple(ABLATIONS), seed=0, fill="mean", start_layer=0, checkpoint=None,
              reading="code", fractions=mi.FRACTIONS, extra_fractions=mi.EXTENDED_FRACTIONS[len(mi.FRACTIONS):],
              partial_lrp_close=3.0, use_cache=True, progress=True, scene=None)  # scene: None = the ViT profile's


def _check(cfg: dict) -> None:
    bad = [a for a in cfg["ablations"] if a not in ABLATIONS]
    if bad:
        raise ExperimentError(f"unknown ablation(s) {bad}; choose from {', '.join(ABLATIONS)}")
    if not (cfg["fill"] in ("mean", "zero", "blur") or isinstance(cfg["fill"], (int, float))):
        raise ExperimentError(f"fill must be 'mean', 'zero', 'blur' or a number, got {cfg['fill']!r}")
    if len(cfg["fractions"]) < 2 or any(f <= max(cfg["fractions"]) for f in cfg["extra_fractions"]):
        raise ExperimentError(f"fractions (the AUC's steps) need at least two values and extra_fractions (curve only) "
                              f"must lie beyond them, got {list(cfg['fractions'])} and {list(cfg['extra_fractions'])}")


settings = ExperimentSettings(PROFILES, COMMON, methods=("methods",), choices={"reading": ("code", "text")},
                              positive=("n_examples", "n_pairs", "batch_size"), check=_check)


@dataclass
class Context:
    model: torch.nn.Module
    test: img_data.ImageDataset
    pairs: img_data.ImageDataset
    cfg: dict
    model_info: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)


def setup(cfg: Mapping, model: torch.nn.Module | None = None) -> Context:
    """Train or load the profile's ViT (or take `model`, or load `cfg["checkpoint"]`: any Hugging Face ViT
    classifier), and build the test set and two-object set at its resolution, of the scene it was trained on."""
    start = time.perf_counter()
    model, info = (model.eval(), {}) if model is not None else vit_models.load_model(
        cfg["model_profile"], cfg["seed"], cfg.get("checkpoint"), cfg["progress"], cfg.get("scene"))
    data = dict(image_size=vit_models.describe(model)["image_size"], scene=info.get("scene", img_data.DEFAULT_SCENE))
    test = img_data.make_dataset("test", cfg["n_examples"], cfg["seed"], **data)
    pairs = img_data.make_dataset("test", cfg["n_pairs"], cfg["seed"], two_objects=True, **data)
    info["accuracy_on_examples"] = vit_models.accuracy(model, test)
    info.setdefault("test_accuracy", info["accuracy_on_examples"])
    info.update(vit_models.describe(model))
    return Context(model, test, pairs, dict(cfg), info, {"setup_s": round(time.perf_counter() - start, 1)}, start)


def fill_value(ctx: Context) -> torch.Tensor:
    """What removed pixels get under `cfg["fill"]` (`mi.fill_value`: the test set's mean colour, black, blur, ...)."""
    return mi.fill_value(ctx.cfg["fill"], ctx.test.images, ctx.test.mean, ctx.test.std)


def method_params(name: str, start_layer: int = 0, reading: str = "code") -> tuple[str, dict]:
    """(registered explainer, parameters) of a method or a Table 3 variant: `reading` and the rollout's first
    block `start_layer` where the explainer takes them."""
    if name not in ABLATIONS and name not in lab.EXPLAINERS:
        raise ExperimentError(f"unknown method {name!r}; registered: {', '.join(lab.EXPLAINERS)}")
    method, params = ABLATIONS.get(name, (name, {}))
    params, accepted = dict(params), inspect.signature(lab.EXPLAINERS[method].fn).parameters
    if "reading" in accepted:
        params.setdefault("reading", reading)
    if "start_layer" in accepted and params.get("ablation") not in ("last_block", "second_block"):  # no rollout
        params.setdefault("start_layer", int(start_layer))
    return method, params


def explain_pixels(ctx: Context, images: torch.Tensor, name: str, targets=None, progress: bool = False,
                   **params) -> tuple[torch.Tensor, Any]:
    """(pixel maps [N, H, W], the `ExplanationSet`) of `images` by a method or variant (`explain_many`, memoised
    under `use_cache`; the patch grid upsampled bilinearly); `params` add to or override `method_params`."""
    method, base = method_params(name, ctx.cfg["start_layer"], ctx.cfg["reading"])
    es = explain_many(ctx.model, images, method, targets, batch_size=ctx.cfg["batch_size"], progress=progress,
                      use_cache=bool(ctx.cfg.get("use_cache")), **{**base, **params})
    return mi.pixel_maps(es.scores, tuple(images.shape[-2:])), es


def compute_maps(ctx: Context, names: Sequence[str], setting: str = "predicted") -> dict[str, torch.Tensor]:
    """Pixel maps of the test set for each method/variant, explaining the predicted or the target (true) class;
    in the target setting class-agnostic methods are skipped (their map does not depend on the class)."""
    if setting not in SETTINGS:
        raise ExperimentError(f"setting must be 'predicted' or 'target', got {setting!r}")
    out = {}
    for name in names:
        if setting == "target" and not lab.EXPLAINERS[method_params(name)[0]].class_specific:
            continue
        out[name], es = explain_pixels(ctx, ctx.test.images, name, ctx.test.labels if setting == "target" else None,
                                       ctx.cfg["progress"])
        ctx.timings[f"maps_{setting}_{name}_s_per_image"] = round(es.total_seconds / len(ctx.test), 4)
    return out


def perturbation_results(ctx: Context, maps: Mapping[str, Mapping[str, torch.Tensor]], timing: str = "table1",
                         bounds: bool = True) -> dict:
    """Table 1 (`mi.perturbation_protocol`) of maps {"predicted": {method: maps}, "target": {...}}: rows, curves,
    per-image AUCs, fractions; with `bounds` also the random / oracle rows and every AUC normalised between them."""
    start, cfg = time.perf_counter(), ctx.cfg
    run = partial(mi.perturbation_protocol, ctx.model, ctx.test.images, ctx.test.labels, fractions=cfg["fractions"],
                  extra_fractions=cfg["extra_fractions"], fill=fill_value(ctx), batch_size=cfg["batch_size"],
                  directions=DIRECTIONS)
    out = run(maps)
    for row in out["rows"].values():  # class-agnostic methods: no target entries (as in the paper)
        row.update({c: None for c in TABLE1_DIRECTION if c not in row})
    out["fractions"] = [*cfg["fractions"], *cfg["extra_fractions"]]
    if bounds:
        b = run({"predicted": mi.bound_maps(ctx.test.masks, cfg["seed"])})
        out.update(bound_rows=b["rows"], bound_curves=b["curves"], bound_per_image=b["per_image"],
                   normalised=mi.normalised_rows(out["rows"], b["rows"]))
    ctx.timings[f"{timing}_perturbation_s"] = round(time.perf_counter() - start, 1)
    return out


def segmentation_results(ctx: Context, maps: Mapping[str, torch.Tensor], timing: str = "table2") -> dict:
    """Table 2: pixel accuracy, mAP, mIoU (%) of each method's predicted-class map against the object masks."""
    start = time.perf_counter()
    out = mi.segmentation_protocol(maps, ctx.test.masks, SEGMENTATION)
    ctx.timings[f"{timing}_segmentation_s"] = round(time.perf_counter() - start, 1)
    return out


def ablation_results(ctx: Context, table1: Mapping, table2: Mapping, names: Sequence[str] | None = None) -> dict:
    """Table 3: the variants' segmentation and predicted-class perturbation, next to the full method (reused)."""
    names = list(ctx.cfg["ablations"] if names is None else names)
    maps = compute_maps(ctx, names, "predicted")
    t1 = perturbation_results(ctx, {"predicted": maps}, timing="table3", bounds=False)
    t2 = segmentation_results(ctx, maps, timing="table3")
    rows, per_image = {}, {}
    for name in names + ["chefer"]:
        src1, src2 = (table1, table2) if name == "chefer" else (t1, t2)
        if name in src1["rows"] and name in src2["rows"]:
            rows[name] = {**src2["rows"][name], **{c: src1["rows"][name][c] for c in TABLE3_DIRECTION
                                                   if c not in SEGMENTATION}}
            per_image[name] = mi.per_image_values(src1, src2, name)
    return {"rows": rows, "curves": t1["curves"], "maps": maps, "per_image": per_image}


def class_specificity(ctx: Context, names: Sequence[str]) -> dict:
    """Figure 2: each two-object image explained for each of its two classes; per method the mean map change and
    shift of map mass onto the explained object (`mi.class_shift`), the per-pair shifts and the maps."""
    rows, maps, per_pair = {}, {}, {}
    for name in names:
        maps[name] = [explain_pixels(ctx, ctx.pairs.images, name, ctx.pairs.labels[:, k].tolist())[0] for k in range(2)]
        change, shift = mi.class_shift(*maps[name], ctx.pairs.masks)
        per_pair[name] = shift.numpy()
        rows[name] = {"map_change": float(change.mean()), "shift_to_object": float(shift.mean())}
    return {"rows": rows, "maps": maps, "per_pair": per_pair}


def _claim(text: str, parts: Mapping, margin: float = 0.0, kind: str | Mapping = "greater",
           fmt: str = "{k}: {iv} → {v}", head: str = "", summary: bool = False) -> dict:
    """One claim from named intervals decided against `margin` (`kind`: greater / within, or one per part); detail:
    `head`, then each part by `fmt` (name k, interval iv, verdict v), or with `summary` a count and the open parts."""
    verdicts = {k: stats.decide(iv, margin, kind if isinstance(kind, str) else kind[k]) for k, iv in parts.items()}
    body = "; ".join(fmt.format(k=k, iv=parts[k], v=v) for k, v in verdicts.items() if not summary or v != "holds")
    head = f"{len(parts)} paired comparisons (advantage in points, 95 % interval over images); " if summary else head
    return {"claim": text, "verdict": stats.combine(verdicts.values()) if parts else None,
            "detail": head + (body or "all hold")}


def _beats(text: str, per: Mapping, pairs: Sequence[tuple[str, str, str]], directions: Mapping) -> dict:
    """A claim that a beats b on col (`mi.advantage` over images) for every (a, b, col) of `pairs` with values."""
    parts = {(a, b, c): mi.advantage(per[a][c], per[b][c], c, directions[c]) for a, b, c in pairs
             if c in per.get(a, {}) and c in per.get(b, {})}
    return _claim(text, parts, fmt="{k[0]} vs {k[1]} on {k[2]}: {iv} → {v}", summary=True)


def table_claims(table1: Mapping, table2: Mapping, tolerance: float = 3.0) -> list[dict]:
    """Tables 1–2: Chefer best everywhere; LRP / GradCAM worst; partial LRP ≈ rollout; target vs predicted class."""
    r1, r2, per1 = table1["rows"], table2["rows"], table1["per_image"]
    per = {m: mi.per_image_values(table1, table2, m) for m in {*r1, *r2}}
    dirs = {**TABLE1_DIRECTION, **TABLE2_DIRECTION}

    def others(rows, name, col):
        return [m for m, r in rows.items() if m != name and r.get(col) is not None]

    out = [_beats(f"Chefer is best on every column of {name}", per,
                  [("chefer", m, c) for c in cols for m in others(rows, "chefer", c)], dirs)
           for name, rows, cols in (("Table 1 (perturbation)", r1, TABLE1_DIRECTION),
                                    ("Table 2 (segmentation)", r2, TABLE2_DIRECTION)) if "chefer" in rows]
    if "lrp" in r2:
        out.append(_beats("LRP is worst on segmentation (all three metrics)", per,
                          [(m, "lrp", c) for c in SEGMENTATION for m in others(r2, "lrp", c)], dirs))
    for bad, col, text in (("lrp", "positive_predicted", "LRP is worst on positive perturbation"),
                           ("attn_gradcam", "negative_predicted", "GradCAM is worst on negative perturbation")):
        if bad in r1:
            out.append(_beats(f"{text} (predicted class)", per, [(m, bad, col) for m in others(r1, bad, col)], dirs))
    if "partial_lrp" in per1 and "rollout" in per1:  # the paired difference within ±tolerance on both columns
        out.append(_claim(f"partial LRP ≈ rollout on predicted-class perturbation (within {tolerance:g} AUC points)",
                          {c: stats.paired_difference(per1["partial_lrp"][c], per1["rollout"][c])
                           for c in ("negative_predicted", "positive_predicted")}, tolerance, "within",
                          "{k}: partial LRP − rollout {iv} → {v}"))
    if "negative_target" in (ch := per1.get("chefer", {})):  # Chefer's AUCs improve from predicted to target class
        out.append(_claim("Chefer improves from the predicted to the target class on both perturbation tests",
                          {"negative": stats.paired_difference(ch["negative_target"], ch["negative_predicted"]),
                           "positive": stats.paired_difference(ch["positive_predicted"], ch["positive_target"])},
                          fmt="{k}: gain {iv} → {v} (positive = better)"))
    return out


def ablation_claims(table1: Mapping, table2: Mapping, table3: Mapping) -> list[dict]:
    """Table 3: the full method beats every ablation; the second-block variant is worst; the last block alone
    beats raw attention and GradCAM."""
    r3, per = table3["rows"], dict(table3["per_image"])
    if "chefer" not in r3:
        return []
    out = [_beats("Table 3: the full method beats every ablation on every column", per,
                  [("chefer", v, c) for v in r3 if v != "chefer" for c in TABLE3_DIRECTION], TABLE3_DIRECTION)]
    if "chefer_second_block" in r3:
        out.append(_beats("Table 3: the second-block variant is the worst variant", per,
                          [(v, "chefer_second_block", c) for v in r3 if v != "chefer_second_block"
                           for c in TABLE3_DIRECTION], TABLE3_DIRECTION))
    baselines = [m for m in ("raw_attention", "attn_gradcam") if m in table1["rows"] and m in table2["rows"]]
    if "chefer_last_block" in r3 and len(baselines) == 2:
        per.update({m: mi.per_image_values(table1, table2, m) for m in baselines})
        out.append(_beats("Table 3: the last block alone (∇A(1)R(n1)) already beats raw attention and GradCAM", per,
                          [("chefer_last_block", m, c) for m in baselines for c in TABLE3_DIRECTION],
                          TABLE3_DIRECTION))
    return out


def specificity_claims(specificity: Mapping) -> list[dict]:
    """Fig. 2: the class-specific methods move their map onto the explained object (shift > SHIFT_THRESHOLD), the
    others do not (|shift| within it); intervals over the two-object images."""
    ivs = {m: stats.bootstrap(v) for m, v in specificity.get("per_pair", {}).items()}
    if not ivs:
        return []
    out = [_claim("Fig. 2: only Chefer and GradCAM give class-dependent maps", ivs, SHIFT_THRESHOLD,
                  {m: "greater" if m in CLASS_SPECIFIC_IN_PAPER else "within" for m in ivs}, "{k} {iv} → {v}",
                  f"shift of map mass onto the explained object; class-dependent = shift > {SHIFT_THRESHOLD}, else "
                  f"within ±{SHIFT_THRESHOLD}: ")]
    if "chefer" in ivs:
        out.append({"claim": "Fig. 2: Chefer's map moves onto the object of the explained class",
                    "interval": ivs["chefer"], "margin": SHIFT_THRESHOLD, "kind": "greater",
                    "detail": "mean shift of map mass onto the explained object over the two-object images"})
    return out


def build_results(ctx: Context, table1: Mapping, table2: Mapping, table3: Mapping, specificity: Mapping):
    """The `lab.results.Results` of the notebook: Tables 1-3 (paper vs ours; Table 1 with its bounds, normalised
    between them, gaps to the oracle, interval widths), the Fig. 2 measurements and the claims."""
    def pair(paper, ours):
        return {m: {c: (paper.get(m, {}).get(c), v) for c, v in cols.items()} for m, cols in ours.items()}

    cfg, n = ctx.cfg, len(ctx.test)
    meta = {"model": f"ViTForImageClassification trained here ({cfg['model_profile']} profile)", "n_examples": n,
            "n_pairs": len(ctx.pairs), "seed": cfg["seed"], "accuracy": ctx.model_info.get("test_accuracy"),
            "model_info": ctx.model_info, "fill": cfg["fill"], "start_layer": cfg["start_layer"],
            "fractions": table1["fractions"], "target_class": "ground-truth label", "timings": ctx.timings,
            "auc": "trapezoid over fractions 0.1..0.9 divided by 0.8, percent (mean accuracy over the curve)",
            "elapsed_s": round(time.perf_counter() - ctx.started, 1)}
    res = Results(NOTEBOOK, cfg["profile"], meta=meta)
    checks, normalised = mi.benchmark_checks(table1, ATTENTION_DERIVED), "normalised" in table1
    if normalised:
        res.meta["attention_spread_negative"] = checks["attention_spread"]
    bounds = {m: {c: r.get(c) for c in TABLE1_DIRECTION} for m, r in table1.get("bound_rows", {}).items()}
    ivs = {m: {c: stats.bootstrap(v) for c, v in cols.items()} for m, cols in table1["per_image"].items()}
    tables = {"table1_perturbation": (pair(PAPER_TABLE1, {**table1["rows"], **bounds}), TABLE1_DIRECTION),
              "table1_normalised": (table1.get("normalised"), None),
              "table1_oracle_gap": (checks["rows"] if normalised else None, None),
              "table1_interval_half_widths": ({m: {c: (iv.high - iv.low) / 2 for c, iv in r.items()}
                                               for m, r in ivs.items()}, None),
              "table2_segmentation": (pair(PAPER_TABLE2, table2["rows"]), TABLE2_DIRECTION),
              "table3_ablation": (pair(PAPER_TABLE3, table3["rows"]), TABLE3_DIRECTION),
              "figure2_class_specificity": ({m: dict(r) for m, r in specificity["rows"].items()}, None)}
    for name, (rows, direction) in tables.items():
        if rows is not None:
            res.add_table(name, CAPTIONS[name].format(n=n, n_pairs=len(ctx.pairs), gap=checks["oracle_gap"],
                                                      spread=checks["attention_spread"] or 0), rows, direction)
    for c in (table_claims(table1, table2, cfg["partial_lrp_close"]) + ablation_claims(table1, table2, table3)
              + specificity_claims(specificity)):  # decided by paired bootstrap intervals over the images
        res.add_claim(**c)
    return res


def explain_example(ctx: Context, index: int, method: str, target_class: str = "predicted",
                    start_layer: int = 0) -> dict:
    """One test image explained by `method` for the chosen class ("predicted", "ground truth" or a class name):
    what `lab.viz.chefer_vit.example_figure` draws."""
    if not 0 <= index < len(ctx.test):
        raise ExperimentError(f"index must be in 0..{len(ctx.test) - 1}, got {index}")
    label, names = int(ctx.test.labels[index]), vit_models.label_names(ctx.model, ctx.test.class_names)
    targets = {"predicted": None, "ground truth": label, **{c: i for i, c in enumerate(ctx.test.class_names)}}
    if target_class not in targets:
        raise ExperimentError(f"target_class must be one of {list(targets)}, got {target_class!r}")
    name, params = method_params(method, start_layer, ctx.cfg["reading"])
    e = lab.explain(ctx.model, ctx.test.images[index:index + 1], name, target=targets[target_class], **params)
    probs, explained = e.probabilities[0], int(e.target[0])
    return {"image": ctx.test.pixels(index).permute(1, 2, 0).numpy(), "mask": ctx.test.masks[index].numpy(),
            "map": e.patch_map(0), "method": method, "true": names[label], "explained": names[explained],
            "p": float(probs[explained]), "predicted": names[int(probs.argmax())]}
