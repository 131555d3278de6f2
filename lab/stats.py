"""Paired bootstrap confidence intervals and the three-way verdicts every claim is decided by.

A claim compares per-example values (a metric of method A minus method B on the same examples, say). The
interval is a percentile bootstrap over examples; with ``clusters`` (e.g. the seed each value came from) it
resamples clusters first and examples within each drawn cluster, so seed-to-seed variation widens the interval.

    iv = paired_difference(aopc_mask_lrp, aopc_gae)          # Interval(estimate, low, high, n)
    decide(iv, margin=0.0, kind="greater")                    # "holds" | "fails" | "inconclusive"

Verdicts: for ``kind="greater"`` (the statistic exceeds ``margin``) the claim *holds* when the whole interval lies
above the margin, *fails* when it lies at or below it, and is *inconclusive* when it straddles it; ``"less"`` is the
mirror image; ``"within"`` (|statistic| ≤ margin) holds when the interval lies inside [-margin, margin] and fails
when it lies wholly outside.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

VERDICTS = ("holds", "fails", "inconclusive", "not evaluated")
KINDS = ("greater", "less", "within")
N_BOOT = 2000
LEVEL = 0.95
MIN_N = 2  # fewer examples than this leave every claim inconclusive


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval over ``n`` examples (``clusters`` groups)."""
    estimate: float
    low: float
    high: float
    n: int
    level: float = LEVEL
    clusters: int | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def __str__(self) -> str:
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}] (n={self.n})"


class StatsInputError(ValueError):
    """Values a bootstrap cannot use (empty, NaN, mismatched pairs, unknown verdict kind)."""


def _as_rows(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise StatsInputError(f"{name}: need at least one value, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise StatsInputError(f"{name}: {int(np.sum(~np.isfinite(arr)))} values are NaN or infinite")
    return arr


def _resample_indices(n: int, clusters: np.ndarray | None, rng: np.random.Generator, n_boot: int):
    """Index arrays of ``n_boot`` bootstrap samples (rows; or clusters, then rows within each drawn cluster)."""
    if clusters is None:
        return rng.integers(0, n, size=(n_boot, n))
    groups = [np.flatnonzero(clusters == c) for c in np.unique(clusters)]
    samples = []
    for _ in range(n_boot):
        drawn = rng.integers(0, len(groups), size=len(groups))
        samples.append(np.concatenate([rng.choice(groups[g], size=len(groups[g])) for g in drawn]))
    return samples


def bootstrap(values, statistic: Callable[[np.ndarray], float] = np.mean, *, clusters: Sequence | None = None,
              n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of ``statistic(values)``; rows of ``values`` (axis 0) are resampled together,
    so a statistic over paired columns (``values[:, 0]`` vs ``values[:, 1]``) stays paired."""
    arr = _as_rows(values, "bootstrap")
    if not 0 < level < 1:
        raise StatsInputError(f"bootstrap: level must be in (0, 1), got {level}")
    cl = None
    if clusters is not None:
        cl = np.asarray(clusters)
        if cl.shape[0] != arr.shape[0]:
            raise StatsInputError(f"bootstrap: {cl.shape[0]} cluster labels for {arr.shape[0]} values")
    rng = np.random.default_rng(seed)
    samples = _resample_indices(arr.shape[0], cl, rng, n_boot)
    if statistic is np.mean and arr.ndim == 1 and cl is None:  # the common case, vectorised: one gather
        stats = arr[samples].mean(axis=1)
    else:
        stats = np.array([statistic(arr[idx]) for idx in samples])
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return Interval(float(statistic(arr)), float(low), float(high), int(arr.shape[0]), level,
                    None if cl is None else int(len(np.unique(cl))))


def paired_difference(a, b, statistic: Callable[[np.ndarray], float] = np.mean, **kw) -> Interval:
    """Interval of ``statistic(a - b)`` over paired examples (the same examples scored two ways)."""
    a, b = _as_rows(a, "paired_difference: a"), _as_rows(b, "paired_difference: b")
    if a.shape != b.shape:
        raise StatsInputError(f"paired_difference: a has shape {a.shape}, b {b.shape}; pairs must match")
    return bootstrap(a - b, statistic, **kw)


def proportion(rate: float, n: int, **kw) -> Interval:
    """Interval of a rate measured on ``n`` independent examples (an accuracy, a top-5 hit rate) when only the rate
    was kept: the bootstrap of the 0/1 indicator with round(rate * n) ones."""
    if rate is None or not n or n < 1 or not 0 <= rate <= 1:
        raise StatsInputError(f"proportion: need a rate in [0, 1] and n >= 1, got rate={rate}, n={n}")
    hits = int(round(rate * n))
    return bootstrap(np.r_[np.ones(hits), np.zeros(int(n) - hits)], **kw)


def unpaired_difference(a, b) -> Interval:
    """Interval of mean(a) − mean(b) for two independent samples (rows of both resampled together; a resample
    lacking either sample scores 0, which can only widen the interval)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) == 0 or len(b) == 0:
        raise StatsInputError(f"unpaired_difference: samples of {len(a)} and {len(b)} values")
    rows = np.concatenate([np.stack([a, np.ones(len(a))], 1), np.stack([b, np.zeros(len(b))], 1)])

    def gap(t):
        x, y = t[t[:, 1] == 1, 0], t[t[:, 1] == 0, 0]
        return float(x.mean() - y.mean()) if len(x) and len(y) else 0.0

    return bootstrap(rows, gap)


def decide(interval: Interval, margin: float = 0.0, kind: str = "greater") -> str:
    """'holds' | 'fails' | 'inconclusive' for the claim that the statistic is greater than / less than ``margin``
    or within ±``margin`` (see the module docstring); always inconclusive on fewer than ``MIN_N`` examples."""
    if kind not in KINDS:
        raise StatsInputError(f"decide: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if interval.n < MIN_N:  # one example cannot vary: its bootstrap interval is a point and decides nothing
        return "inconclusive"
    lo, hi = interval.low, interval.high
    if kind == "greater":
        return "holds" if lo > margin else "fails" if hi <= margin else "inconclusive"
    if kind == "less":
        return "holds" if hi < margin else "fails" if lo >= margin else "inconclusive"
    m = abs(margin)  # "within"
    return "holds" if -m <= lo and hi <= m else "fails" if lo > m or hi < -m else "inconclusive"


def combine(verdicts: Iterable[str]) -> str:
    """A claim made of parts ("on every dataset"): fails if any part fails; else 'not evaluated' if any part was
    not evaluated; else inconclusive if any part is; holds only if every part holds."""
    verdicts = list(verdicts)
    unknown = set(verdicts) - set(VERDICTS)
    if unknown or not verdicts:
        raise StatsInputError(f"combine: need verdicts from {VERDICTS}, got {verdicts}")
    for v in ("fails", "not evaluated", "inconclusive"):
        if v in verdicts:
            return v
    return "holds"


def majority(verdicts: Iterable[str]) -> str:
    """A claim about most parts ("on most datasets"): holds when more than half the parts hold, fails when even
    the inconclusive parts holding could not make a majority, else inconclusive ('not evaluated' if any part was)."""
    verdicts = list(verdicts)
    if set(verdicts) - set(VERDICTS) or not verdicts:
        raise StatsInputError(f"majority: need verdicts from {VERDICTS}, got {verdicts}")
    if "not evaluated" in verdicts:
        return "not evaluated"
    half = len(verdicts) / 2
    if verdicts.count("holds") > half:
        return "holds"
    return "fails" if verdicts.count("holds") + verdicts.count("inconclusive") <= half else "inconclusive"
