"""Agreement between explanations and between output distributions (Jain & Wallace; Wu & Ong; the benchmark).

- `kendall_tau`, `pearson`, `spearman`: one correlation per instance (with its p-value, scipy.stats), or one pooled
  correlation (`per_instance=False`). Inputs: two 1-D sequences; two [B, S] arrays with an optional `mask` [B, S]
  selecting each row's positions; or two lists of 1-D sequences of varying lengths.
  A row with fewer than 2 positions or a constant side gives NaN (scipy's convention), and NaN p-values count as
  not significant in `fraction_significant`.
- `tvd`, `jsd`: batched distances between distributions over the last axis (Jain & Wallace Sec. 2);
  `differentiable=True` is the form Jain & Wallace's attention tests optimise through (see `jsd`).
- `rank_correlation_matrix`: do metrics rank the methods alike? (Kendall / Spearman between metric columns.)
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch
from scipy import stats

from lab.metrics import MetricInputError

LN2 = math.log(2.0)
TINY = 1e-12  # floor of the entries inside `jsd(..., differentiable=True)`'s logarithms


class Correlation(NamedTuple):
    statistic: np.ndarray | float  # [B] per instance, or a float
    pvalue: np.ndarray | float


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=float)


def _pairs(a, b, mask) -> tuple[list[tuple[np.ndarray, np.ndarray]], bool]:
    """Rows to correlate and whether the input was a single pair of 1-D sequences."""
    ragged = isinstance(a, (list, tuple)) and len(a) > 0 and np.ndim(a[0]) == 1
    if ragged:
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            raise MetricInputError("a and b must be lists of the same number of 1-D sequences")
        rows = [(_np(x).reshape(-1), _np(y).reshape(-1)) for x, y in zip(a, b)]
        if mask is not None:
            rows = [(x[np.asarray(m, bool)], y[np.asarray(m, bool)]) for (x, y), m in zip(rows, mask)]
        for i, (x, y) in enumerate(rows):
            if x.shape != y.shape:
                raise MetricInputError(f"row {i}: a has {x.size} values and b has {y.size}")
        return rows, False
    x, y = _np(a), _np(b)
    if x.shape != y.shape:
        raise MetricInputError(f"a has shape {list(x.shape)} and b has {list(y.shape)}")
    if x.ndim == 1:
        keep = np.ones(x.shape, bool) if mask is None else _np(mask).astype(bool).reshape(x.shape)
        return [(x[keep], y[keep])], True
    if x.ndim != 2:
        raise MetricInputError(f"expected 1-D or [B, S] inputs, got shape {list(x.shape)}")
    keep = np.ones(x.shape, bool) if mask is None else _np(mask).astype(bool).reshape(x.shape)
    return [(x[i][keep[i]], y[i][keep[i]]) for i in range(x.shape[0])], False


def _correlate(fn, a, b, mask, per_instance, **kw) -> Correlation:
    rows, single = _pairs(a, b, mask)
    if not per_instance:
        rows, single = [(np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows]))], True
    stat, pval = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input -> NaN, documented
        for i, (x, y) in enumerate(rows):
            if x.size >= 2:
                res = fn(x, y, **kw)
                stat[i], pval[i] = float(res.statistic), float(res.pvalue)
    if single:
        return Correlation(float(stat[0]), float(pval[0]))
    return Correlation(stat, pval)


def kendall_tau(a, b, mask=None, *, per_instance: bool = True, variant: str = "b") -> Correlation:
    """Kendall τ (scipy.stats.kendalltau, τ-b by default) with its two-sided p-value, per instance
    (Jain & Wallace Alg. 1: τ between attention and gradient / leave-one-out scores)."""
    return _correlate(stats.kendalltau, a, b, mask, per_instance, variant=variant)


def pearson(a, b, mask=None, *, per_instance: bool = True) -> Correlation:
    """Pearson r with its p-value (Wu & Ong Table 1: use per_instance=False to pool all tokens)."""
    return _correlate(stats.pearsonr, a, b, mask, per_instance)


def spearman(a, b, mask=None, *, per_instance: bool = True) -> Correlation:
    """Spearman ρ with its p-value."""
    return _correlate(stats.spearmanr, a, b, mask, per_instance)


def fraction_significant(pvalues, level: float = 0.05) -> float:
    """Share of instances with p < level (Jain & Wallace "Sig. Frac."; the level is not in the paper, 0.05 is our
    choice). NaN p-values (undefined correlations) count as not significant; the denominator is all instances."""
    p = _np(pvalues).reshape(-1)
    if p.size == 0:
        raise MetricInputError("fraction_significant: no p-values")
    if not 0 < level < 1:
        raise MetricInputError(f"level must be in (0, 1), got {level}")
    return float(np.mean(np.nan_to_num(p, nan=1.0) < level))


# ---- distances between distributions ---------------------------------------------------------------------


def _distributions(p, q, name: str, check: bool):
    was_numpy = not isinstance(p, torch.Tensor) and not isinstance(q, torch.Tensor)
    tp = torch.as_tensor(_np(p) if was_numpy or not isinstance(p, torch.Tensor) else p).double()
    tq = torch.as_tensor(_np(q) if was_numpy or not isinstance(q, torch.Tensor) else q).double().to(tp.device)
    if tp.shape != tq.shape:
        raise MetricInputError(f"{name}: p has shape {list(tp.shape)} and q has {list(tq.shape)}")
    if tp.dim() == 0 or tp.shape[-1] == 0:
        raise MetricInputError(f"{name}: distributions need at least one outcome on the last axis")
    if check:
        for t, label in ((tp, "p"), (tq, "q")):
            if (t < -1e-9).any():
                raise MetricInputError(f"{name}: {label} has negative entries; pass probabilities")
            sums = t.sum(-1)
            if not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
                bad = float(sums.flatten()[(sums - 1).abs().flatten().argmax()])
                raise MetricInputError(f"{name}: rows of {label} must sum to 1 (one sums to {bad:.4g}); normalise first")
    return tp, tq, was_numpy


def _out(t: torch.Tensor, was_numpy: bool):
    if was_numpy:
        return float(t) if t.dim() == 0 else t.cpu().numpy()
    return t


def tvd(p, q, check: bool = True, *, differentiable: bool = False):
    """Total variation distance ½ Σ_i |p_i − q_i| over the last axis (batched; in [0, 1]).
    ``differentiable=True``: torch tensors taken as they are (their own dtype, broadcast, unchecked)."""
    if differentiable:
        return 0.5 * (p - q).abs().sum(-1)
    tp, tq, was_numpy = _distributions(p, q, "tvd", check)
    return _out(0.5 * (tp - tq).abs().sum(-1), was_numpy)


def jsd(p, q, check: bool = True, *, differentiable: bool = False):
    """Jensen–Shannon divergence ½ KL(p‖m) + ½ KL(q‖m), m = (p+q)/2, natural log (so 0 ≤ JSD ≤ ln 2 ≈ 0.693),
    over the last axis (batched). Zero entries are handled exactly (0·log 0 = 0); rounding is clipped to [0, ln 2].

    ``differentiable=True`` (Jain & Wallace's adversary optimises through it): torch tensors taken as they are (their
    own dtype, not float64; broadcast; unchecked) and each log's argument floored at `TINY` instead of `xlogy`, whose
    gradient is not finite where an entry is 0 (padding, a softmax's -inf logits)."""
    if differentiable:
        return _jsd_floored(p, q)
    tp, tq, was_numpy = _distributions(p, q, "jsd", check)
    tp, tq = tp.clamp_min(0), tq.clamp_min(0)
    m = 0.5 * (tp + tq)

    def kl(a):  # Σ a log(a/m); where a > 0, m > 0 too
        return (torch.special.xlogy(a, a) - torch.special.xlogy(a, m)).sum(-1)

    return _out((0.5 * kl(tp) + 0.5 * kl(tq)).clamp(0.0, LN2), was_numpy)


def _jsd_floored(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    m = 0.5 * (p + q)
    log_m = m.clamp_min(TINY).log()

    def kl(a):
        return (a * (a.clamp_min(TINY).log() - log_m)).sum(-1)

    return (0.5 * kl(p) + 0.5 * kl(q)).clamp(0.0, LN2)


# ---- do metrics rank methods alike? ----------------------------------------------------------------------


def _table_frame(table, value_key):
    import pandas as pd

    if isinstance(table, pd.DataFrame):
        frame = table.copy()
    elif isinstance(table, Mapping):
        rows = {}
        for method, cells in table.items():
            if not isinstance(cells, Mapping):
                raise MetricInputError(f"table[{method!r}] must map metric -> value")
            row = {}
            for metric, cell in cells.items():
                if isinstance(cell, Mapping):
                    if value_key is None:
                        raise MetricInputError(f"table[{method!r}][{metric!r}] is a dict; pass value_key (e.g. 'ours')")
                    cell = cell.get(value_key)
                row[metric] = np.nan if cell is None else float(cell)
            rows[method] = row
        frame = pd.DataFrame.from_dict(rows, orient="index")
    else:
        raise MetricInputError("table must be a pandas DataFrame (rows = methods) or {method: {metric: value}}")
    return frame.astype(float)


def rank_correlation_matrix(table, method: str = "kendall", directions: Mapping[str, str] | None = None,
                            value_key: str | None = None):
    """Correlation between the method rankings induced by each pair of metrics: a metrics × metrics DataFrame.

    table: DataFrame with methods as rows and metrics as columns, or {method: {metric: value}} (cells may be
    results-file dicts such as {"paper": .., "ours": ..} with value_key="ours").
    directions: {metric: "higher" | "lower"} (is better); "lower" metrics are negated first so that +1 means the
    two metrics agree on which methods are better. Methods missing a value are dropped pairwise.
    """
    if method not in ("kendall", "spearman"):
        raise MetricInputError(f"method must be 'kendall' or 'spearman', got {method!r}")
    frame = _table_frame(table, value_key)
    for metric, direction in (directions or {}).items():
        if direction not in ("higher", "lower"):
            raise MetricInputError(f"direction of {metric!r} must be 'higher' or 'lower', got {direction!r}")
        if metric not in frame.columns:
            raise MetricInputError(f"directions names {metric!r}, which is not a column ({', '.join(frame.columns)})")
        if direction == "lower":
            frame[metric] = -frame[metric]
    fn = stats.kendalltau if method == "kendall" else stats.spearmanr
    cols = list(frame.columns)
    out = np.full((len(cols), len(cols)), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, a in enumerate(cols):
            for j, b in enumerate(cols):
                x, y = frame[a].to_numpy(), frame[b].to_numpy()
                both = ~(np.isnan(x) | np.isnan(y))
                if both.sum() >= 2:
                    out[i, j] = float(fn(x[both], y[both]).statistic)
    import pandas as pd

    return pd.DataFrame(out, index=cols, columns=cols)
