"""Metric protocols: one method's explanations of a set of examples (+ the model) -> {metric: mean} and
{metric: [n] per-example values}.

A text protocol reads a `TextUnits` (trimmed model inputs, the method's scores over them, the masks, the gold
labels, the replacement and padding ids); an image protocol reads an `ImageUnits`. `text_protocols` /
`image_protocols` run the protocols that compute the requested columns; the per-example values are those the
means average (NaN where a metric is undefined for an example), so a caller can bootstrap intervals over examples.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from lab.metrics.agreement import kendall_tau, spearman
from lab.metrics.perturbation import aopc_lodds, auc_rep, comprehensiveness_sufficiency, deletion_curve
from lab.metrics.rationales import token_f1_curve
from lab.models.adapters import get_adapter

Rows = tuple[dict[str, float], dict[str, np.ndarray]]


@dataclass
class TextUnits:
    """What a text protocol needs (n examples, S word pieces): the classifier, its trimmed inputs, one method's
    scores [n, S] (float64), special [n, S] (never perturbed), content [n, S] (real non-special tokens), valid
    [n, S], gold labels [n], rationale [n, S] (or None), a reference map [n, S] for τ (or None), the replacement
    token id and the padding id; `batch_size` rows per forward pass."""

    model: Any
    rows: dict
    scores: torch.Tensor
    special: torch.Tensor
    content: torch.Tensor
    valid: torch.Tensor
    labels: torch.Tensor
    token_id: int
    pad_id: int
    batch_size: int = 64
    rationale: torch.Tensor | None = None
    reference: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def from_explanations(cls, explanations, model, inputs: Mapping[str, torch.Tensor], labels, token_id: int,
                          pad_id: int, batch_size: int = 64, rationale: torch.Tensor | None = None,
                          reference: torch.Tensor | None = None) -> "TextUnits":
        """Units of an `ExplanationSet` (`lab.explainers.batch.explain_many`) of the padded `inputs`, cut to their
        longest real sequence."""
        w = max(int(explanations.valid.sum(1).max()), 1)
        return cls(model, {k: v[:, :w] for k, v in inputs.items()}, explanations.scores[:, :w].double(),
                   explanations.special[:, :w], explanations.content[:, :w], explanations.valid[:, :w],
                   torch.as_tensor(labels), token_id, pad_id, batch_size,
                   None if rationale is None else rationale[:, :w], None if reference is None else reference[:, :w])

    @property
    def common(self) -> dict:
        return dict(special_mask=self.special, batch_size=self.batch_size, progress=False)


def as_numpy(x) -> np.ndarray:
    """A flat float64 array of a tensor or array-like."""
    return np.asarray(x.detach().cpu().double() if hasattr(x, "detach") else x, dtype=float).reshape(-1)


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def aopc_protocol(u: TextUnits, fractions: Sequence[float]) -> Rows:
    """Mask-LRP Eqs. 12-13: AOPC and LOdds of p(ŷ) as the top fractions of the units are replaced."""
    r = aopc_lodds(u.model, u.rows, u.scores, fractions=fractions, token_id=u.token_id, label="predicted",
                   **u.common)
    return {"aopc": r["aopc_mean"], "lodds": r["lodds_mean"]}, {"aopc": as_numpy(r["aopc"]),
                                                                 "lodds": as_numpy(r["lodds"])}


def eraser_protocol(u: TextUnits, bins: Sequence[float], mode: str) -> Rows:
    """ERASER comprehensiveness and sufficiency (AOPC over `bins`; `mode` replace or delete)."""
    r = comprehensiveness_sufficiency(u.model, u.rows, u.scores, bins=bins, mode=mode, token_id=u.token_id,
                                      pad_id=u.pad_id, **u.common)
    return ({"comprehensiveness": r["comprehensiveness_mean"], "sufficiency": r["sufficiency_mean"]},
            {"comprehensiveness": as_numpy(r["comprehensiveness"]), "sufficiency": as_numpy(r["sufficiency"])})


def deletion_protocol(u: TextUnits, max_words: int, mode: str) -> Rows:
    """Wu & Ong Fig. 1: accuracy on the initially correct examples as 0..max_words units are removed (area = mean
    accuracy; NaN for the misclassified examples, and overall when none is correct)."""
    with warnings.catch_warnings():  # no correctly classified example: the area is NaN (shown as missing)
        warnings.simplefilter("ignore", UserWarning)
        r = deletion_curve(u.model, u.rows, u.scores, u.labels, max_words=max_words, mode=mode, token_id=u.token_id,
                           pad_id=u.pad_id, **u.common)
    per = np.full(len(u), np.nan)
    per[as_numpy(r["examples"]).astype(int)] = as_numpy(r["correct"].double().mean(1))
    return {"deletion_accuracy": r["auc"]}, {"deletion_accuracy": per}


def auc_rep_protocol(u: TextUnits, stop: float) -> Rows:
    """Kim et al. AUC_rep: area under p(ŷ) as the top units are replaced, up to `stop` of them (normalised)."""
    r = auc_rep(u.model, u.rows, u.scores, stop=stop, token_id=u.token_id, **u.common)
    return {"auc_rep": r["auc_mean"]}, {"auc_rep": as_numpy(r["auc"])}


def kendall_protocol(u: TextUnits) -> Rows:
    """Jain & Wallace: per-example Kendall τ over the content tokens between the scores and `reference`."""
    if u.reference is None:
        return {}, {}
    tau = kendall_tau(u.scores, u.reference.double(), mask=u.content).statistic
    return {"kendall_loo": _nanmean(tau)}, {"kendall_loo": as_numpy(tau)}


def token_f1_protocol(u: TextUnits, ks: Sequence[int]) -> Rows:
    """Chefer Fig. 5 / ERASER: token-F1 of the top-k word pieces against the rationale, averaged over `ks`
    (per example: its F1 averaged over k, whose mean is the macro-F1 when every example has a rationale)."""
    if u.rationale is None:
        return {}, {}
    curve = token_f1_curve(u.scores, u.rationale, u.valid, ks, special_mask=u.special)
    return ({"token_f1": float(np.mean(curve["macro_f1"]))},
            {"token_f1": np.mean([as_numpy(v["f1"]) for v in curve["per_k"].values()], axis=0)})


# column -> protocol computing it (with the settings it reads from `settings`)
TEXT_PROTOCOLS: dict[str, Callable[[TextUnits, Mapping], Rows]] = {
    "aopc": lambda u, s: aopc_protocol(u, s["fractions"]),
    "eraser": lambda u, s: eraser_protocol(u, s["bins"], s["mode"]),
    "deletion": lambda u, s: deletion_protocol(u, s["deletion_max"], s["mode"]),
    "auc_rep": lambda u, s: auc_rep_protocol(u, s["auc_rep_stop"]),
    "loo": lambda u, s: kendall_protocol(u),
    "f1": lambda u, s: token_f1_protocol(u, s["ks"]),
}
TEXT_COLUMNS = {"aopc": "aopc", "lodds": "aopc", "comprehensiveness": "eraser", "sufficiency": "eraser",
                "deletion_accuracy": "deletion", "auc_rep": "auc_rep", "kendall_loo": "loo", "token_f1": "f1"}


def text_protocols(u: TextUnits, metrics: Sequence[str], settings: Mapping) -> Rows:
    """The columns `metrics` (keys of `TEXT_COLUMNS`) of one method: ({metric: mean}, {metric: [n] values}), in the
    order of `metrics`; a column whose inputs are missing (no rationale, no reference) is left out."""
    means: dict[str, float] = {}
    per: dict[str, np.ndarray] = {}
    needed = {TEXT_COLUMNS[m] for m in metrics}
    for name in (n for n in TEXT_PROTOCOLS if n in needed):  # a fixed order, whatever the order of `metrics`
        m, p = TEXT_PROTOCOLS[name](u, settings)
        means.update(m)
        per.update(p)
    keep = [m for m in metrics if m in means]
    return {m: means[m] for m in keep}, {m: per[m] for m in keep}


# ---- images ---------------------------------------------------------------------------------------------------
IMAGE_COLUMNS = ("positive_auc", "negative_auc", "pixel_accuracy", "mAP", "mIoU", "kendall_loo")
SEGMENTATION_COLUMNS = ("pixel_accuracy", "mAP", "mIoU")


@dataclass
class ImageUnits:
    """What an image protocol needs: the classifier, images [n, C, H, W], labels [n], object masks [n, H, W], one
    method's native maps [n, h, w] (patch grid or pixels), the patch grid, the fill value of removed pixels, the
    perturbation fractions, `batch_size` images per forward pass (each with all its fractions: `batch_size` ×
    fractions copies) and a reference map [n, h, w] for τ (or None)."""

    model: Any
    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    maps: torch.Tensor
    grid: tuple[int, int]
    fill: Any
    fractions: Sequence[float]
    batch_size: int
    reference: torch.Tensor | None = None


def patch_level(maps: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[N, gh, gw]: maps at the patch grid (pixel-level maps are averaged per patch)."""
    if tuple(maps.shape[-2:]) == tuple(grid):
        return maps
    return torch.nn.functional.adaptive_avg_pool2d(maps[:, None].float(), grid)[:, 0]


def image_protocols(u: ImageUnits, metrics: Sequence[str]) -> Rows:
    """Chefer Tables 1-2 (positive/negative perturbation AUC, segmentation pixel accuracy / mAP / mIoU) and τ with
    the reference: ({metric: mean}, {metric: [n] per image}), through `lab.metrics.images.perturbation_protocol`
    and `segmentation_protocol` (notebook 01's); mIoU per image is each image's own IoU, whereas the mean pools
    the intersections and unions over the images."""
    from lab.metrics import images as mi

    metrics = [m for m in metrics if m in IMAGE_COLUMNS]
    pixel = mi.pixel_maps(u.maps, tuple(u.images.shape[-2:]))
    out: dict[str, float] = {}
    pe: dict[str, np.ndarray] = {}
    directions = [d for d in ("positive", "negative") if f"{d}_auc" in metrics]
    if directions:  # setting "auc": the columns are f"{direction}_auc"
        r = mi.perturbation_protocol(u.model, u.images, u.labels, {"auc": {"m": pixel}}, u.fractions, fill=u.fill,
                                     batch_size=u.batch_size, directions=directions)
        out.update(r["rows"]["m"])
        pe.update({k: as_numpy(v) for k, v in r["per_image"]["m"].items()})
    if set(SEGMENTATION_COLUMNS) & set(metrics):
        seg = mi.segmentation_protocol({"m": pixel}, u.masks, SEGMENTATION_COLUMNS)
        counts = seg["counts"]["m"]
        out.update(seg["rows"]["m"])
        iou = [np.divide(counts[:, i], counts[:, i + 1], out=np.zeros(len(counts)), where=counts[:, i + 1] > 0)
               for i in (3, 5)]
        pe.update(pixel_accuracy=100 * counts[:, 0] / counts[:, 1], mAP=100 * counts[:, 2], mIoU=50 * (iou[0] + iou[1]))
    if "kendall_loo" in metrics and u.reference is not None:
        a = patch_level(u.maps, u.grid).flatten(1).double()
        b = patch_level(u.reference, u.grid).flatten(1).double()
        tau = kendall_tau(a, b).statistic
        out["kendall_loo"], pe["kendall_loo"] = _nanmean(tau), as_numpy(tau)
    keep = [m for m in metrics if m in out]
    return {m: out[m] for m in keep}, {m: pe[m] for m in keep}


# ---- a study's examples (`lab.explainers.batch.Examples`) -----------------------------------------------------
TEXT_METRICS = tuple(TEXT_COLUMNS)


def columns(examples) -> tuple[str, ...]:
    """The protocol columns that apply to the examples (token-F1 only with rationales)."""
    if examples.modality == "vision":
        return IMAGE_COLUMNS
    return tuple(m for m in TEXT_METRICS if m != "token_f1" or examples.rationale is not None)


def examples_protocols(ex, scores: torch.Tensor, settings: Mapping, token_id: int | None = None,
                       pad_id: int | None = None, n: int | None = None, metrics: Sequence[str] | None = None,
                       reference: torch.Tensor | None = None) -> Rows:
    """The protocols of one method's scores (text [N, S], vision native maps [N, h, w]) on the first n examples
    (default all): ({metric: mean}, {metric: [n] values}). metrics: which columns (default all that apply);
    reference: the scores τ is measured against; text: the replacement and padding ids, the settings of
    `TEXT_PROTOCOLS` and `perturb_batch`; vision: `image_fractions` and `batch_size` (images per forward pass,
    each with all its fractions)."""
    n = min(len(ex) if n is None else int(n), scores.shape[0])
    metrics = [m for m in (metrics or columns(ex)) if m in columns(ex)]
    if ex.modality == "vision":
        test, fractions = ex.images[:n], settings["image_fractions"]
        return image_protocols(ImageUnits(ex.model, test.images, test.labels, test.masks, scores[:n],
                                          get_adapter(ex.model).grid, ex.fill, fractions, settings["batch_size"],
                                          None if reference is None else reference[:n]), metrics)
    idx = torch.arange(n)
    rows = ex.rows(idx)
    w = rows["input_ids"].shape[1]
    cut = [None if x is None else x[idx][:, :w] for x in (ex.special, ex.content, ex.valid, ex.rationale, reference)]
    units = TextUnits(ex.model, rows, scores[:n, :w].double(), *cut[:3], ex.labels[idx], token_id, pad_id,
                      settings["perturb_batch"], *cut[3:])
    return text_protocols(units, metrics, settings)


def map_agreement(ex, a: torch.Tensor, b: torch.Tensor, n: int) -> np.ndarray:
    """Per-example Spearman ρ between two score sets (two methods, or two models) of the first n examples, over
    the content tokens (text) or the patches (vision)."""
    if ex.modality == "vision":
        grid = get_adapter(ex.model).grid
        a, b, mask = patch_level(a[:n], grid).flatten(1).double(), patch_level(b[:n], grid).flatten(1).double(), None
    else:
        a, b, mask = a[:n].double(), b[:n].double(), ex.content[:n, :a.shape[1]]
    return as_numpy(spearman(a, b[:, :a.shape[1]], mask=mask).statistic)
