"""Evaluation metrics for text explanations (notebooks 02–07), as pure functions.

- `perturbation`: model-facing faithfulness metrics — AOPC / LOdds (Mask-LRP Eqs. 12–13), ERASER comprehensiveness /
  sufficiency, the Wu & Ong deletion curve and Kim et al.'s AUC_rep — for any HF sequence classifier (through its
  adapter) or any `predict_fn(input_ids, attention_mask) -> probabilities` (RNN/CNN models).
- `rationales`: agreement with human rationales — ERASER token-F1@k (per document and micro), IOU-F1, Precision@k.
- `agreement`: Kendall τ / Pearson / Spearman per instance, fraction significant, TVD, JSD, metric-ranking
  correlations (Jain & Wallace, Wu & Ong, the benchmark notebook).

`METRICS` lists every metric with its direction ("higher"/"lower" is better) and the paper it comes from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


class MetricInputError(ValueError):
    """Bad input to a metric; the message says what is wrong and how to fix it."""


# The submodules import MetricInputError from here, so it is defined before they are imported.
from lab.metrics.agreement import (  # noqa: E402
    Correlation,
    fraction_significant,
    jsd,
    kendall_tau,
    pearson,
    rank_correlation_matrix,
    spearman,
    tvd,
)
from lab.metrics.perturbation import (  # noqa: E402
    ERASER_BINS,
    MASK_LRP_FRACTIONS,
    aopc_lodds,
    auc_rep,
    comprehensiveness_sufficiency,
    deletion_curve,
    groups_from_word_ids,
    merge_wordpieces,
    random_scores,
    replace_top_k,
    top_k_mask,
    word_groups,
)
from lab.metrics.rationales import iou_f1, precision_at_k, token_f1_at_k, token_f1_curve  # noqa: E402


@dataclass(frozen=True)
class MetricSpec:
    name: str
    fn: Callable
    direction: str  # "higher" | "lower" | "" (no better side)
    reference: str
    description: str


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("aopc", aopc_lodds, "higher", "Mask-LRP Eq. 12", "mean_k [f_y(x) - f_y(x with top-k% replaced)]"),
        MetricSpec("lodds", aopc_lodds, "lower", "Mask-LRP Eq. 13", "mean_k log[f_y(x with top-k% replaced) / f_y(x)]"),
        MetricSpec("comprehensiveness", comprehensiveness_sufficiency, "higher", "ERASER (DeYoung et al. 2020)",
                   "AOPC over bins of p(y|x) - p(y|x without top-k%)"),
        MetricSpec("sufficiency", comprehensiveness_sufficiency, "lower", "ERASER (DeYoung et al. 2020)",
                   "AOPC over bins of p(y|x) - p(y|only top-k%)"),
        MetricSpec("deletion_accuracy", deletion_curve, "lower", "Wu & Ong Fig. 1",
                   "accuracy on initially-correct examples vs words deleted (area: mean accuracy; steeper = better)"),
        MetricSpec("auc_rep", auc_rep, "lower", "Kim et al. 2020 Sec. 3.1.4",
                   "area under p(y_hat | x with most-important tokens -> [PAD]) up to a stop fraction"),
        MetricSpec("token_f1", token_f1_at_k, "higher", "Chefer Fig. 5 / ERASER", "token-level F1 of the top-k tokens"),
        MetricSpec("precision_at_k", precision_at_k, "higher", "Mask-LRP Precision@20",
                   "sum |top-k ∩ answer| / sum |answer|"),
        MetricSpec("kendall_tau", kendall_tau, "higher", "Jain & Wallace Table 2", "per-instance Kendall τ"),
        MetricSpec("pearson", pearson, "higher", "Wu & Ong Table 1", "Pearson r"),
        MetricSpec("tvd", tvd, "", "Jain & Wallace Sec. 2", "½ Σ|p - q|"),
        MetricSpec("jsd", jsd, "", "Jain & Wallace Sec. 2", "½ KL(p‖m) + ½ KL(q‖m), natural log (≤ ln 2)"),
    )
}


def describe_metrics() -> str:
    return "\n".join(f"{s.name:18s} {s.direction or '-':6s} {s.description} [{s.reference}]" for s in METRICS.values())


def __getattr__(name):
    if name == "images":  # owned by another module; imported lazily so text metrics work without it
        import importlib

        return importlib.import_module("lab.metrics.images")
    raise AttributeError(f"module 'lab.metrics' has no attribute {name!r}")


__all__ = [
    "METRICS", "MetricInputError", "MetricSpec", "describe_metrics",
    "ERASER_BINS", "MASK_LRP_FRACTIONS", "aopc_lodds", "auc_rep", "comprehensiveness_sufficiency", "deletion_curve",
    "groups_from_word_ids", "merge_wordpieces", "random_scores", "replace_top_k", "top_k_mask", "word_groups",
    "iou_f1", "precision_at_k", "token_f1_at_k", "token_f1_curve",
    "Correlation", "fraction_significant", "jsd", "kendall_tau", "pearson", "rank_correlation_matrix", "spearman", "tvd",
]
