"""Tables over methods: which method is better on each metric, whether the metrics agree, and claims decided by
paired bootstrap intervals over the examples.

Every function reads the output of the metric protocols (`lab.metrics.protocols`) for several methods:
``quality`` {method: {metric: mean}} and ``per_example`` {method: {metric: [n] values}} (NaN where undefined).
"Better" follows `direction(metric)`; `oriented` flips "lower is better" metrics so that higher is always better.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from lab import stats
from lab.metrics import MetricInputError
from lab.metrics.agreement import kendall_tau, rank_correlation_matrix

METRIC_SOURCES = dict(line.split(" | ") for line in """\
aopc | Mask-LRP Eq. 12 (AOPC, top 1/9..9/9 replaced)
lodds | Mask-LRP Eq. 13 (LOdds)
comprehensiveness | ERASER comprehensiveness (AOPC over 1/5/10/20/50 %)
sufficiency | ERASER sufficiency
deletion_accuracy | Wu & Ong Fig. 1: mean accuracy as 0..k units are removed
auc_rep | Kim et al. AUC_rep (p(ŷ) as units are replaced, up to 20 %)
kendall_loo | Jain & Wallace: Kendall τ with leave-one-out
token_f1 | Chefer Fig. 5 / ERASER: token-F1 of the top-k vs rationales (mean over k)
positive_auc | Chefer Table 1: accuracy AUC, most relevant pixels removed first
negative_auc | Chefer Table 1: accuracy AUC, least relevant pixels removed first
pixel_accuracy | Chefer Table 2: segmentation pixel accuracy
mAP | Chefer Table 2: segmentation mAP
mIoU | Chefer Table 2: segmentation mIoU""".splitlines())
LOWER_IS_BETTER = ("lodds", "sufficiency", "deletion_accuracy", "auc_rep", "positive_auc")
# metric -> (direction, where it comes from); "higher"/"lower" is better
METRICS = {m: ("lower" if m in LOWER_IS_BETTER else "higher", s) for m, s in METRIC_SOURCES.items()}


def direction(metric: str) -> str:
    """"higher" or "lower" (is better) of a protocol column."""
    if metric not in METRICS:
        raise MetricInputError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    return METRICS[metric][0]


def directions(metrics: Sequence[str]) -> dict[str, str]:
    return {m: direction(m) for m in metrics}


def oriented(values, metric: str) -> np.ndarray:
    """Values with "higher is better" for every metric."""
    v = np.asarray(values, float)
    return v if direction(metric) == "higher" else -v


# ---- rankings ----------------------------------------------------------------------------------------------


def quality_frame(quality: Mapping[str, Mapping[str, float]]):
    """Methods × metrics DataFrame (NaN where a metric does not apply)."""
    import pandas as pd

    return pd.DataFrame.from_dict({m: dict(r) for m, r in quality.items()}, orient="index").astype(float)


def rank_frame(quality: Mapping[str, Mapping[str, float]]):
    """Rank of every method on every metric (1 = best; ties share the mean rank) and the mean rank, sorted."""
    frame = quality_frame(quality)
    ranks = frame.copy()
    for col in frame.columns:
        ranks[col] = frame[col].rank(ascending=direction(col) == "lower", method="average")
    ranks["mean_rank"] = ranks.mean(axis=1, skipna=True)
    return ranks.sort_values("mean_rank")


def ranked_table(quality: Mapping[str, Mapping[str, float]], metric: str):
    """One metric's ranking: rank, method, value (best first)."""
    import pandas as pd

    higher = direction(metric) == "higher"
    vals = {m: r[metric] for m, r in quality.items() if metric in r and np.isfinite(r[metric])}
    if not vals:
        raise MetricInputError(f"no method has a value for {metric!r}")
    order = sorted(vals, key=vals.get, reverse=higher)
    frame = pd.DataFrame({"method": order, metric: [vals[m] for m in order]}, index=range(1, len(order) + 1))
    frame.index.name = "rank"
    return frame


def ranking_overview(quality: Mapping[str, Mapping[str, float]]):
    """The ranked table of every metric side by side: rows = rank (1 = best), columns = metrics, cells = method
    (metrics without any value are left out)."""
    import pandas as pd

    frame = quality_frame(quality)
    ranked = {c: ranked_table(quality, c) for c in frame.columns if frame[c].notna().any()}
    out = pd.DataFrame({c: pd.Series(list(r["method"]), index=r.index) for c, r in ranked.items()})
    out.index.name = "rank"
    return out.fillna("")


def metric_agreement(quality: Mapping[str, Mapping[str, float]], method: str = "kendall"):
    """Metrics × metrics Kendall τ between the method rankings the metrics induce (+1: same ranking)."""
    frame = quality_frame(quality)
    return rank_correlation_matrix(frame, method=method, directions=directions(list(frame.columns)))


def mean_off_diagonal(matrix) -> float:
    m = np.asarray(matrix, dtype=float)
    off = m[~np.eye(m.shape[0], dtype=bool)]
    off = off[np.isfinite(off)]
    return float(off.mean()) if off.size else float("nan")


def ranking_stability(values: Mapping[str, Mapping[str, Mapping[str, float]]], metrics: Sequence[str]):
    """How rankings move between conditions (e.g. replacement tokens): values {condition: {method: {metric: v}}}
    -> (tau {metric: {"a~b": Kendall τ between the method rankings under a and b}}, best {metric: {condition:
    best method}})."""
    conditions = list(values)
    methods = list(values[conditions[0]])
    tau, best = {}, {}
    for metric in metrics:
        vecs = {c: oriented([values[c][m][metric] for m in methods], metric) for c in conditions}
        best[metric] = {c: methods[int(np.argmax(v))] for c, v in vecs.items()}
        tau[metric] = {f"{a}~{b}": float(kendall_tau(vecs[a], vecs[b]).statistic)
                       for i, a in enumerate(conditions) for b in conditions[i + 1:]}
    return tau, best


# ---- intervals over examples -------------------------------------------------------------------------------


def half_widths(per_example: Mapping) -> dict:
    """{method: {metric: half-width}} of the 95 % bootstrap interval of each mean (NaN values left out; None
    below two values)."""
    out = {}
    for m, cols in per_example.items():
        out[m] = {}
        for c, v in cols.items():
            v = np.asarray(v, float)[np.isfinite(v)]
            iv = stats.bootstrap(v) if v.size > 1 else None
            out[m][c] = None if iv is None else (iv.high - iv.low) / 2
    return out


def paired_advantage(per_example: Mapping, a: str, b: str, metric: str) -> stats.Interval | None:
    """Interval of how much method a beats b on `metric` (positive = a better), paired over the examples where
    both are defined; None when fewer than two are."""
    x, y = oriented(per_example[a][metric], metric), oriented(per_example[b][metric], metric)
    keep = np.isfinite(x) & np.isfinite(y)
    return stats.paired_difference(x[keep], y[keep]) if keep.sum() > 1 else None


def paired_rows(per_example: Mapping, methods: Sequence[str], baselines: Sequence[str]) -> dict:
    """{"a vs b | metric": {estimate, low, high, n}}: the paired advantage (positive = a better) of each present
    method over each present baseline, per shared metric."""
    rows = {}
    for a in (m for m in methods if m in per_example):
        for b in (m for m in baselines if m in per_example):
            for c in (c for c in per_example[a] if c in per_example[b]):
                iv = paired_advantage(per_example, a, b, c)
                if iv is not None:
                    rows[f"{a} vs {b} | {c}"] = {"estimate": iv.estimate, "low": iv.low, "high": iv.high, "n": iv.n}
    return rows


def _matrix(per_example: Mapping, columns: Sequence[tuple[str, str]]) -> np.ndarray:
    """[n, 2 × len(columns)]: oriented per-example values (NaN → 0) and their NaN mask, so a bootstrap keeps rows."""
    v = np.stack([oriented(per_example[m][c], c) for m, c in columns], 1)
    return np.hstack([np.nan_to_num(v), np.isnan(v).astype(float)])


def _masked_means(rows: np.ndarray) -> np.ndarray:
    k = rows.shape[1] // 2
    ok = 1.0 - rows[:, k:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rows[:, :k] * ok).sum(0) / ok.sum(0)


def _kendall(a: np.ndarray, b: np.ndarray) -> float:
    keep = np.isfinite(a) & np.isfinite(b)
    return float(kendall_tau(a[keep], b[keep]).statistic) if keep.sum() > 2 else float("nan")


def agreement_interval(per_example: Mapping, n_boot: int = 200) -> stats.Interval:
    """The mean pairwise Kendall τ between the metrics' rankings of the methods, examples resampled."""
    methods = list(per_example)
    metrics = list(dict.fromkeys(c for cols in per_example.values() for c in cols))
    nan = np.full(len(next(iter(next(iter(per_example.values())).values()))), np.nan)
    per = {m: {c: per_example[m].get(c, nan) for c in metrics} for m in methods}

    def statistic(rows):
        means = _masked_means(rows).reshape(len(metrics), len(methods))
        taus = [_kendall(means[i], means[j]) for i in range(len(metrics)) for j in range(i + 1, len(metrics))]
        taus = [t for t in taus if np.isfinite(t)]
        return float(np.mean(taus)) if taus else 0.0

    return stats.bootstrap(_matrix(per, [(m, c) for c in metrics for m in methods]), statistic, n_boot=n_boot)


def stability_interval(per_condition: Mapping, metrics: Sequence[str], n_boot: int = 200) -> stats.Interval:
    """The lowest Kendall τ (over metrics and pairs of conditions) between the method rankings under two
    conditions, examples resampled; per_condition {condition: {method: {metric: [n]}}}."""
    conditions = list(per_condition)
    methods = list(per_condition[conditions[0]])
    cols = [(f"{t}/{m}", c) for t in conditions for m in methods for c in metrics]
    flat = {f"{t}/{m}": per_condition[t][m] for t in conditions for m in methods}

    def statistic(rows):
        means = _masked_means(rows).reshape(len(conditions), len(methods), len(metrics))
        return min(_kendall(means[i, :, c], means[j, :, c]) for c in range(len(metrics))
                   for i in range(len(conditions)) for j in range(i + 1, len(conditions)))

    return stats.bootstrap(_matrix(flat, cols), statistic, n_boot=n_boot)


# ---- claims over methods -------------------------------------------------------------------------------------


def no_single_best_claim(subject: str, quality: Mapping, per_example: Mapping) -> dict:
    """'No single method is best on every metric': each method against the best other method (point estimate) on
    every metric; a method is shown not best once one such interval lies below 0, best everywhere when all lie
    above it."""
    verdicts, shown = {}, []
    for m in per_example:
        ivs = {}
        for c in per_example[m]:
            others = {o: oriented([quality[o][c]], c)[0] for o in per_example if o != m and c in per_example[o]
                      and np.isfinite(quality[o][c])}
            if others:
                ivs[c] = paired_advantage(per_example, m, max(others, key=others.get), c)
        decided = [stats.decide(iv, 0.0, "greater") for iv in ivs.values() if iv is not None]
        verdicts[m] = ("holds" if "fails" in decided else "fails" if decided and set(decided) == {"holds"}
                       else "inconclusive")
        if verdicts[m] != "holds":
            shown.append(f"{m} ({verdicts[m]})")
    return {"claim": f"{subject}: no single method is best on every metric",
            "verdict": stats.combine(verdicts.values()),
            "detail": "each method vs the best other method per metric, paired intervals over examples; not shown "
                      "to be beaten somewhere: " + (", ".join(shown) or "none")}


def beats_random_claim(subject: str, per_example: Mapping, control: str = "random") -> dict:
    """'Every method beats the random explainer on a majority of metrics': per method, the paired advantage over
    the control on each metric decides that metric; a majority of metrics decides the method."""
    verdicts, weak = {}, []
    for m in (m for m in per_example if m != control):
        ivs = [paired_advantage(per_example, m, control, c) for c in per_example[m] if c in per_example[control]]
        parts = [stats.decide(iv, 0.0, "greater") for iv in ivs if iv is not None]
        if parts:
            verdicts[m] = stats.majority(parts)
            if verdicts[m] != "holds":
                weak.append(f"{m} ({verdicts[m]}: beats random on {parts.count('holds')} of {len(parts)})")
    return {"claim": f"{subject}: every method beats the random explainer on a majority of metrics",
            "verdict": stats.combine(verdicts.values()) if verdicts else None,
            "detail": "paired intervals over examples; not shown: " + (", ".join(weak) or "none")}


def metric_agreement_claim(subject: str, per_example: Mapping, n_boot: int = 200) -> dict:
    """'The metrics agree on the ranking of methods': mean pairwise Kendall τ > 0.5 (`agreement_interval`)."""
    n_metrics = len(dict.fromkeys(c for cols in per_example.values() for c in cols))
    return {"claim": f"{subject}: the metrics agree on the ranking of methods (mean pairwise Kendall τ > 0.5)",
            "interval": agreement_interval(per_example, n_boot), "margin": 0.5, "kind": "greater",
            "detail": f"mean τ between the {n_metrics} metrics' rankings, examples resampled ({n_boot} draws)"}


def randomisation_claims(subject: str, rho: Mapping[str, np.ndarray], layers: int, untouched: bool,
                         control: str = "random") -> list[dict]:
    """Model randomisation (Adebayo et al.): re-initialising the top `layers` blocks changes every model-dependent
    method's explanations (mean per-example Spearman ρ < 0.5, interval over examples); and the original model is
    untouched (an exact check)."""
    parts = {m: stats.bootstrap(v[np.isfinite(v)]) for m, v in rho.items() if m != control and np.isfinite(v).sum() > 1}
    verdicts = {m: stats.decide(iv, 0.5, "less") for m, iv in parts.items()}
    stuck = [f"{m} {parts[m]} → {v}" for m, v in verdicts.items() if v != "holds"]
    return [{"claim": f"{subject}: re-initialising the top {layers} blocks changes every model-dependent method's "
                      "explanations (mean Spearman ρ < 0.5)",
             "verdict": stats.combine(verdicts.values()) if verdicts else None,
             "detail": "not shown: " + ("; ".join(stuck) or "none")},
            {"claim": f"{subject}: the original model is left untouched by the randomisation check",
             "holds": bool(untouched), "detail": "torch.equal on every parameter", "exact": True}]
