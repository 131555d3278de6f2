"""Image metrics of Chefer et al. 2021 (Sec. 4): positive/negative perturbation and segmentation from relevance maps.

Pure functions on tensors; the model enters only through a `predict` callable (or a classifier module).

Perturbation (Table 1): pixels are removed in order of relevance, highest first (*positive*: a good map makes the
accuracy drop fast, lower AUC is better) or lowest first (*negative*: higher is better), for 10 %, 20 %, ..., 90 %
of the pixels (`EXTENDED_FRACTIONS` adds 95 % and 99 %); a removed pixel gets `fill`: one value per channel (the
authors' code sets pixels to 0 in [0, 1] space, i.e. black; or the dataset's mean) or, per pixel, an image of
replacement values such as `blur(images)`. Top-1 accuracy against the ground-truth label is measured at each step.
Bounds: `random_map` removes pixels in random order, `oracle_map` removes the object last (negative) or first
(positive); `normalised_auc` places a method between the two (0 = random order, 100 = the mask oracle).
AUC normalisation (the paper does not state it): the trapezoidal area under accuracy-vs-fraction over
[0.1, 0.9], divided by the width 0.8, times 100, i.e. the mean accuracy over the curve in percent; this is what
the paper's values behave like (54.16 for a model whose clean accuracy is ~81 %).

Segmentation (Table 2), following the authors' `imagenet_seg_eval.py`: each map is bilinearly upsampled to the
image size and min–max normalised per image; thresholded at its mean (foreground = above the mean) for pixel
accuracy and IoU, both pooled over the whole dataset (total correct / total pixels; per class total intersection
/ total union, mIoU = mean of the background and foreground IoU); mAP = mean over images of the average
precision of the soft two-channel prediction (1 - map for background, map for foreground) against the one-hot
mask, with scikit-learn's step-wise definition. All values are in percent, like the paper's tables.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lab import stats
from lab.metrics import MetricInputError

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
EXTENDED_FRACTIONS = FRACTIONS + (0.95, 0.99)
DIRECTIONS = ("positive", "negative")


# ---- maps -----------------------------------------------------------------------------------------------


def pixel_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N, h, w] patch (or pixel) maps -> [N, H, W] by bilinear upsampling (align_corners=False, as
    `F.interpolate(scale_factor=16, mode='bilinear')` in the authors' code); pixel-level maps pass unchanged."""
    maps = torch.as_tensor(maps).float()
    if maps.dim() != 3:
        raise MetricInputError(f"maps must be [N, h, w], got shape {list(maps.shape)}")
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min–max normalisation to [0, 1] (a constant map becomes all zeros)."""
    flat = maps.reshape(maps.shape[0], -1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    span = hi - lo
    return ((flat - lo) / torch.where(span > 0, span, torch.ones_like(span))).reshape(maps.shape)


# ---- perturbation ---------------------------------------------------------------------------------------


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise MetricInputError(f"direction must be 'positive' or 'negative', got {direction!r}")


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    f = np.asarray(fractions, dtype=float)
    if f.ndim != 1 or f.size == 0 or (f < 0).any() or (f > 1).any() or (np.diff(f) <= 0).any():
        raise MetricInputError(f"fractions must be increasing values in [0, 1], got {list(fractions)}")
    return f


def removal_order(relevance: torch.Tensor, direction: str = "positive") -> torch.Tensor:
    """[N, H*W] pixel indices in removal order: most relevant first (positive) or least relevant first (negative).

    Ties keep pixel order (stable sort), so the result is deterministic.
    """
    _check_direction(direction)
    flat = relevance.reshape(relevance.shape[0], -1).float()
    return torch.argsort(flat, dim=1, descending=direction == "positive", stable=True)


def remove_pixels(images: torch.Tensor, order: torch.Tensor, k: int, fill) -> torch.Tensor:
    """Copy of images [N, C, H, W] with the first k pixels of `order` set to `fill`: a scalar, one value per
    channel, or replacement images [N, C, H, W] (e.g. `blur(images)`) whose pixel is taken at each removed one."""
    n, c, h, w = images.shape
    out = images.clone().reshape(n, c, h * w)
    fill = torch.as_tensor(fill, dtype=images.dtype, device=images.device)
    idx = order[:, :k].to(images.device)[:, None, :].expand(n, c, k)
    if fill.dim() == 4:
        if fill.shape != images.shape:
            raise MetricInputError(f"fill images {list(fill.shape)} must match images {list(images.shape)}")
        values = fill.reshape(n, c, h * w).gather(2, idx)
    elif fill.numel() in (1, c):
        values = fill.reshape(1, -1, 1).expand(n, c, k)
    else:
        raise MetricInputError(f"fill must be a scalar, one value per channel ({c}) or images like the input, got "
                               f"shape {list(fill.shape)}")
    out.scatter_(2, idx, values)
    return out.reshape(n, c, h, w)


def blur(images: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Gaussian blur of images [N, C, H, W] (separable, reflect padding, radius 3 sigma): a `fill` that keeps the
    low frequencies of what is removed."""
    if sigma <= 0:
        raise MetricInputError(f"blur: sigma must be positive, got {sigma}")
    radius = max(1, min(int(3 * sigma), images.shape[-1] - 1, images.shape[-2] - 1))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    out = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def fill_value(fill, images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """What removed pixels get, in the model's normalised input space (images normalised by `mean` / `std`):
    "mean" the images' per-channel mean, "zero" black (0 in [0, 1] space, the authors' code), "blur" the images
    blurred with sigma = 1/32 of their side (a per-pixel fill), or a number in every channel."""
    if fill == "blur":
        return blur(images, sigma=images.shape[-2] / 32)
    if fill == "mean":
        return images.mean(dim=(0, 2, 3))
    if fill == "zero":
        return (0 - torch.tensor(mean)) / torch.tensor(std)
    return torch.full((images.shape[1],), float(fill))


def random_map(shape, seed: int = 0) -> torch.Tensor:
    """Uniform noise maps of `shape` [N, H, W]: removing pixels in random order (the lower bound)."""
    return torch.rand(tuple(shape), generator=torch.Generator().manual_seed(seed))


def oracle_map(masks: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The mask oracle [N, H, W]: every object pixel above every other, in random order within each region."""
    masks = torch.as_tensor(masks)
    return masks.float() + 0.5 * random_map(masks.shape, seed)


def normalised_auc(auc, random, oracle):
    """Where an AUC lies between the random-order bound (0) and the mask-oracle bound (100); the same formula
    serves both directions (positive perturbation: the oracle's AUC is the lowest, and lower is better). NaN where
    the bounds coincide (a model at chance): the benchmark cannot rank maps there."""
    auc, random, oracle = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (auc, random, oracle)))
    gap = oracle - random
    out = np.divide(100 * (auc - random), gap, out=np.full(gap.shape, np.nan), where=gap != 0)
    return float(out) if out.ndim == 0 else out


def _predictor(predict) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(predict, torch.nn.Module):
        model = predict

        def run(x):
            return model(pixel_values=x).logits

        return run
    if not callable(predict):
        raise MetricInputError("predict must be a classifier module or a callable images -> logits")
    return predict


@torch.no_grad()
def perturbation_hits(predict, images: torch.Tensor, labels: torch.Tensor, relevance: torch.Tensor,
                      direction: str = "positive", fractions: Sequence[float] = FRACTIONS, fill=0.0,
                      batch_size: int = 256) -> np.ndarray:
    """[F, N] booleans: is the top-1 prediction still the ground-truth label after removing each fraction?

    relevance: [N, H, W] at pixel resolution (see `pixel_maps`); images [N, C, H, W] as the model takes them.
    batch_size: images per forward pass, counting each image once per fraction (all fractions of an image are
    predicted in the same pass).
    """
    fr = _check_fractions(fractions)
    if relevance.shape[0] != images.shape[0] or tuple(relevance.shape[-2:]) != tuple(images.shape[-2:]):
        raise MetricInputError(f"relevance {list(relevance.shape)} does not match images {list(images.shape)}: "
                               "upsample patch maps with pixel_maps(maps, image size) first")
    run = _predictor(predict)
    n_pixels = images.shape[-1] * images.shape[-2]
    hits = np.zeros((len(fr), images.shape[0]), dtype=bool)
    step = max(1, batch_size // len(fr))  # images per forward pass; each contributes one copy per fraction
    for start in range(0, images.shape[0], step):
        x, y = images[start:start + step], torch.as_tensor(labels[start:start + step]).cpu()
        order = removal_order(relevance[start:start + step], direction)
        f_batch = fill[start:start + step] if torch.is_tensor(fill) and fill.dim() == 4 else fill
        batch = torch.cat([remove_pixels(x, order, int(round(f * n_pixels)), f_batch) for f in fr])
        pred = run(batch).argmax(-1).cpu().reshape(len(fr), len(x))
        hits[:, start:start + len(x)] = (pred == y[None]).numpy()
    return hits


def perturbation_curve(predict, images, labels, relevance, direction: str = "positive",
                       fractions: Sequence[float] = FRACTIONS, fill=0.0, batch_size: int = 256) -> np.ndarray:
    """Top-1 accuracy (fraction in [0, 1]) after removing each fraction of pixels, [F]."""
    return perturbation_hits(predict, images, labels, relevance, direction, fractions, fill, batch_size).mean(1)


def perturbation_auc(fractions: Sequence[float], accuracy) -> float | np.ndarray:
    """Area under accuracy vs fraction, trapezoidal, divided by the fraction range, in percent.

    For the paper's 0.1 ... 0.9 this is the mean accuracy over the curve (end points weighted half).
    `accuracy` is one curve [F] (returns a float) or one curve per example [F, N], e.g. `perturbation_hits`
    (returns [N]; their mean is the AUC of the mean curve, since the AUC is linear).
    """
    f = _check_fractions(fractions)
    a = np.asarray(accuracy, dtype=float)
    if a.shape[:1] != f.shape or a.ndim > 2:
        raise MetricInputError(f"accuracy has shape {a.shape}; expected ({f.size},) or ({f.size}, N)")
    if f.size == 1:
        area = a[0]
    else:
        w = np.diff(f).reshape(-1, *([1] * (a.ndim - 1)))
        area = np.sum((a[1:] + a[:-1]) / 2 * w, axis=0) / float(f[-1] - f[0])
    return float(100 * area) if a.ndim == 1 else 100 * area


# ---- segmentation ---------------------------------------------------------------------------------------


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Average precision of 1-D `scores` for binary `targets`: Σ_n (R_n − R_{n−1}) P_n over distinct
    thresholds (scikit-learn's `average_precision_score`); 0 when there are no positives."""
    s = torch.as_tensor(scores).reshape(-1).double()
    t = torch.as_tensor(targets).reshape(-1).double()
    n_pos = t.sum()
    if n_pos <= 0:
        return 0.0
    s_sorted, order = torch.sort(s, descending=True, stable=True)
    tp = torch.cumsum(t[order], 0)
    fp = torch.cumsum(1 - t[order], 0)
    last = torch.ones_like(s_sorted, dtype=torch.bool)
    last[:-1] = s_sorted[1:] != s_sorted[:-1]  # last index of each distinct score = one threshold
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / n_pos
    steps = torch.diff(recall, prepend=torch.zeros(1, dtype=recall.dtype))
    return float((steps * precision).sum())


def _check_maps_masks(maps: torch.Tensor, masks: torch.Tensor) -> None:
    if maps.dim() != 3 or tuple(maps.shape) != tuple(masks.shape):
        raise MetricInputError(f"maps {list(maps.shape)} and masks {list(masks.shape)} must both be [N, H, W]: "
                               "upsample patch maps with pixel_maps(maps, image size) first")


SEGMENTATION_COUNTS = ("correct", "pixels", "ap", "inter_bg", "union_bg", "inter_fg", "union_fg")


def segmentation_counts(maps: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    """[N, 7] per-image counts behind `segmentation_scores` (columns `SEGMENTATION_COUNTS`), so that a bootstrap
    over images can recompute the pooled scores with `segmentation_from_counts`."""
    maps, masks = torch.as_tensor(maps).float(), torch.as_tensor(masks).bool()
    _check_maps_masks(maps, masks)
    m = minmax(maps)
    pred = m > m.reshape(m.shape[0], -1).mean(1).view(-1, 1, 1)  # threshold at each map's mean
    rows = []
    for i in range(m.shape[0]):
        p, t = pred[i], masks[i]
        ap = average_precision(torch.cat([1 - m[i].reshape(-1), m[i].reshape(-1)]),
                               torch.cat([~t.reshape(-1), t.reshape(-1)]).float())
        rows.append([(p == t).sum().item(), t.numel(), ap, (~p & ~t).sum().item(), (~p | ~t).sum().item(),
                     (p & t).sum().item(), (p | t).sum().item()])
    return np.asarray(rows, dtype=float)


def segmentation_from_counts(counts: np.ndarray) -> dict[str, float]:
    """Pixel accuracy, mIoU (background/foreground, pooled over the images) and mAP, in percent, from
    `segmentation_counts` rows; also the two per-class IoUs."""
    return segmentation_from_sums(counts.sum(0), counts.shape[0])


def segmentation_from_sums(c: np.ndarray, n: int) -> dict[str, float]:
    """`segmentation_from_counts` from the column sums of the counts of `n` images (cheap inside a bootstrap)."""
    iou = [c[3] / c[4] if c[4] else 0.0, c[5] / c[6] if c[6] else 0.0]
    return {"pixel_accuracy": 100.0 * c[0] / c[1], "mIoU": 50.0 * (iou[0] + iou[1]), "mAP": 100.0 * c[2] / n,
            "iou_background": 100.0 * iou[0], "iou_foreground": 100.0 * iou[1]}


def segmentation_scores(maps: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """Pixel accuracy, mIoU (background/foreground, pooled over the dataset) and mAP, in percent.

    maps: [N, H, W] pixel-resolution relevance (min–max normalised here); masks: [N, H, W] booleans (foreground).
    Also returns the two per-class IoUs.
    """
    return segmentation_from_counts(segmentation_counts(maps, masks))


def mask_mass(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """[N]: share of each (min–max normalised) map's total mass that lies on the mask (pointing-game style)."""
    maps, masks = torch.as_tensor(maps).float(), torch.as_tensor(masks).bool()
    _check_maps_masks(maps, masks)
    m = minmax(maps)
    total = m.reshape(m.shape[0], -1).sum(1)
    on = (m * masks).reshape(m.shape[0], -1).sum(1)
    return torch.where(total > 0, on / total.clamp_min(1e-12), torch.zeros_like(total))


# ---- protocols: one call per table of Chefer et al. -----------------------------------------------------------


def perturbation_protocol(model, images: torch.Tensor, labels: torch.Tensor, maps: dict, fractions: Sequence[float],
                          extra_fractions: Sequence[float] = (), fill=0.0, batch_size: int = 50,
                          directions: Sequence[str] = ("negative", "positive")) -> dict:
    """Table 1: `maps` {setting: {name: pixel maps [N, H, W]}} -> {"rows": {name: {f"{direction}_{setting}": AUC}},
    "curves": {column: {name: accuracy [F]}}, "per_image": {name: {column: AUC [N]}}}. The AUC is taken over
    `fractions`; the curves run on over `extra_fractions`; every fraction of `batch_size` images is predicted in one
    forward pass."""
    fr = [*fractions, *extra_fractions]
    out: dict[str, dict] = {"rows": {}, "curves": {}, "per_image": {}}
    for setting, by_name in maps.items():
        for name, m in by_name.items():
            for direction in directions:
                col = f"{direction}_{setting}"
                hits = perturbation_hits(model, images, labels, m, direction, fr, fill, batch_size * len(fr))
                auc = perturbation_auc(fr[:len(fractions)], hits[:len(fractions)])
                out["per_image"].setdefault(name, {})[col] = auc
                out["rows"].setdefault(name, {})[col] = float(auc.mean())
                out["curves"].setdefault(col, {})[name] = hits.mean(1).tolist()
    return out


def bound_maps(masks: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """The maps that bound every method on Table 1: {"random": random order, "oracle": the object mask}."""
    return {"random": random_map(masks.shape, seed), "oracle": oracle_map(masks, seed)}


def segmentation_protocol(maps: dict, masks: torch.Tensor,
                          columns: Sequence[str] = ("pixel_accuracy", "mAP", "mIoU")) -> dict:
    """Table 2: `maps` {name: pixel maps [N, H, W]} -> {"rows": {name: {column: %}}, "counts": {name: [N, 7]}} (the
    per-image counts from which a bootstrap recomputes the pooled scores, see `advantage`)."""
    counts = {name: segmentation_counts(m, masks) for name, m in maps.items()}
    rows = {name: {k: segmentation_from_counts(c)[k] for k in columns} for name, c in counts.items()}
    return {"rows": rows, "counts": counts}


def advantage(a, b, column: str, direction: str = "higher") -> stats.Interval:
    """Paired bootstrap interval over images of how much method a beats method b on `column` (positive = a better;
    `direction`: "higher" or "lower" is better) from their per-image values: AUCs [N] (the mean), or
    `segmentation_counts` [N, 7] (the pooled score recomputed from each resample's counts)."""
    x, y = np.asarray(a), np.asarray(b)
    sign = 1.0 if direction == "higher" else -1.0
    if x.ndim == 1:
        return stats.paired_difference(sign * x, sign * y)
    k = x.shape[1]

    def statistic(rows):
        sums = rows.sum(0)
        return sign * (segmentation_from_sums(sums[:k], len(rows))[column]
                       - segmentation_from_sums(sums[k:], len(rows))[column])

    return stats.bootstrap(np.hstack([x, y]), statistic)


def class_shift(first: torch.Tensor, second: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fig. 2 on two-object images: the pixel maps [N, H, W] explaining each image's first and second class and the
    objects' masks [N, 2, H, W] -> (map change [N]: mean |m_A − m_B| of the min–max normalised maps; shift [N]: how
    much more of the map's mass lies on an object when its class is explained than when the other one is, averaged
    over the two objects; 0 = the map ignores the class)."""
    maps = (first, second)
    change = (minmax(first) - minmax(second)).abs().flatten(1).mean(1)
    shift = torch.stack([mask_mass(maps[k], masks[:, k]) - mask_mass(maps[1 - k], masks[:, k]) for k in range(2)])
    return change, shift.mean(0)


def oracle_gaps(per_image: dict, oracle: np.ndarray, column: str) -> dict[str, dict[str, float]]:
    """{method: {gap_to_oracle, gap_low, gap_high}}: the paired interval over images of the mask oracle's AUC minus
    each method's on `column` (per-image AUCs `per_image[method][column]`; gaps near 0: a saturated benchmark)."""
    out = {}
    for name, per in per_image.items():
        if column in per:
            iv = stats.paired_difference(oracle, per[column])
            out[name] = {"gap_to_oracle": iv.estimate, "gap_low": iv.low, "gap_high": iv.high}
    return out


def normalised_rows(rows: dict, bounds: dict, setting: str = "predicted") -> dict:
    """`perturbation_protocol` rows {name: {f"{direction}_{s}": AUC}} placed between the bounds' rows (`bound_maps`
    under `setting`: {"random": ..., "oracle": ...}) of the same direction (`normalised_auc`); None where there is
    no value or the bounds coincide."""
    def one(value, col):
        bound = col.split("_")[0] + f"_{setting}"
        x = None if value is None else normalised_auc(value, bounds["random"][bound], bounds["oracle"][bound])
        return None if x is None or np.isnan(x) else x

    return {name: {col: one(v, col) for col, v in r.items()} for name, r in rows.items()}


def per_image_values(perturbation: dict, segmentation: dict, name: str) -> dict[str, np.ndarray]:
    """{column: per-image values} of method `name` in a `perturbation_protocol` and a `segmentation_protocol` result:
    its AUCs [N], and for each segmentation column its counts [N, 7] (from which `advantage` resamples the score)."""
    counts = segmentation.get("counts", {})
    return {**perturbation["per_image"].get(name, {}),
            **{c: counts[name] for c in segmentation["rows"].get(name, {}) if name in counts}}


def benchmark_checks(perturbation: dict, separate: Sequence[str], oracle_gap: float = 2.0, spread: float = 5.0,
                     column: str = "negative_predicted") -> dict:
    """Does a Table 1 (`perturbation_protocol` with `bound_per_image`) separate the maps? Per method the paired
    interval of (oracle − method) AUC on `column` (`oracle_gaps`; its low end should stay above `oracle_gap` points),
    and the spread (max − min) of the methods `separate` on it (should reach `spread` points)."""
    oracle = perturbation.get("bound_per_image", {}).get("oracle", {}).get(column)
    values = [perturbation["rows"][m][column] for m in separate if m in perturbation["rows"]]
    return {"rows": {} if oracle is None else oracle_gaps(perturbation["per_image"], oracle, column),
            "attention_spread": (max(values) - min(values)) if len(values) > 1 else None, "oracle_gap": oracle_gap,
            "spread_target": spread}
