"""Agreement of token scores with human rationales (ERASER) and answer spans (Mask-LRP Precision@20); word-level
pooling of word-piece scores; how alike two maps of the same inputs are (class support); mass on special tokens.

The predicted rationale of a document is its top-k content tokens (Chefer Sec. 4, k = 10, 20, ..., 80: no
threshold to tune); ties are broken by position. Token-level precision / recall / F1 follow ERASER's
`score_hard_rationale_predictions` (DeYoung et al. 2020):

- per document ("macro", ERASER's `instance_macro`): P, R and F1 of each document, then averaged over documents
  that have a rationale or a prediction. **The notebooks report this one** (it is what Chefer's copy of the
  ERASER scorer prints);
- pooled ("micro", ERASER's `instance_micro`): P = Σ TP / Σ |pred|, R = Σ TP / Σ |truth|, F1 of those.

`scores`, `rationale_mask`, `valid_mask`, `special_mask` are [B, S] aligned token by token (`scores` may be an
Explanation, whose valid and special masks are then used). Only content tokens (valid, not special) count.
"""
from __future__ import annotations

import numpy as np
import torch

from lab.metrics import MetricInputError
from lab.metrics.agreement import spearman
from lab.metrics.perturbation import top_k_mask


def _masks(scores, rationale_mask, valid_mask, special_mask):
    raw = torch.as_tensor(scores.scores if hasattr(scores, "scores") else scores)
    shape = raw.reshape(-1, raw.shape[-1]).shape
    if hasattr(scores, "valid"):
        valid_mask = scores.valid if valid_mask is None else valid_mask
        special_mask = scores.special if special_mask is None else special_mask

    def as_mask(m, name, default):
        if m is None:
            return torch.full(shape, default, dtype=torch.bool)
        t = torch.as_tensor(m).bool()
        if t.numel() != shape[0] * shape[1]:
            raise MetricInputError(f"{name} has shape {list(t.shape)} but scores have {list(shape)}")
        return t.reshape(shape).cpu()

    valid = as_mask(valid_mask, "valid_mask", True)
    special = as_mask(special_mask, "special_mask", False)
    truth = as_mask(rationale_mask, "rationale_mask", False)
    return valid, special, truth


def _prf(tp, n_pred, n_true):
    p = torch.where(n_pred > 0, tp / n_pred.clamp_min(1), torch.zeros_like(tp))
    r = torch.where(n_true > 0, tp / n_true.clamp_min(1), torch.zeros_like(tp))
    f1 = torch.where(p + r > 0, 2 * p * r / (p + r).clamp_min(1e-300), torch.zeros_like(tp))
    return p, r, f1


def token_f1_at_k(scores, rationale_mask, valid_mask=None, k: int = 10, *, special_mask=None) -> dict:
    """ERASER token-level F1 between each document's top-k content tokens and its human rationale tokens.

    Returns dict: k, precision / recall / f1 [B] (per document), macro_precision / macro_recall / macro_f1 (mean
    over documents with a rationale or a prediction — reported by the notebooks), micro_precision / micro_recall /
    micro_f1 (pooled counts), n_documents.
    """
    if int(k) < 0:
        raise MetricInputError(f"k must be >= 0, got {k}")
    valid, special, truth = _masks(scores, rationale_mask, valid_mask, special_mask)
    content = valid & ~special
    raw = scores.scores if hasattr(scores, "scores") else scores
    pred = top_k_mask(torch.as_tensor(raw).reshape(content.shape), special_mask=~content, k=int(k))
    truth = truth & content
    tp = (pred & truth).sum(1).double()
    n_pred, n_true = pred.sum(1).double(), truth.sum(1).double()
    p, r, f1 = _prf(tp, n_pred, n_true)
    counted = (n_pred > 0) | (n_true > 0)  # ERASER scores the union of documents with truth or prediction
    mp, mr, mf = _prf(tp.sum(), n_pred.sum(), n_true.sum())
    mean = (lambda v: float(v[counted].mean())) if counted.any() else (lambda v: float("nan"))
    return {"k": int(k), "precision": p, "recall": r, "f1": f1, "macro_precision": mean(p), "macro_recall": mean(r),
            "macro_f1": mean(f1), "micro_precision": float(mp), "micro_recall": float(mr), "micro_f1": float(mf),
            "n_documents": int(counted.sum())}


def token_f1_curve(scores, rationale_mask, valid_mask=None, ks=range(10, 90, 10), *, special_mask=None) -> dict:
    """token_f1_at_k for each k (default 10, 20, ..., 80 as Chefer Fig. 5).

    Returns dict: ks [K], macro_f1 [K] (reported), micro_f1 [K], per_k {k: token_f1_at_k result}.
    """
    ks = [int(k) for k in ks]
    if not ks:
        raise MetricInputError("ks is empty")
    per_k = {k: token_f1_at_k(scores, rationale_mask, valid_mask, k, special_mask=special_mask) for k in ks}
    return {"ks": ks, "macro_f1": np.array([per_k[k]["macro_f1"] for k in ks]),
            "micro_f1": np.array([per_k[k]["micro_f1"] for k in ks]), "per_k": per_k}


def f1_by_k(scores, rationale_mask, valid_mask, ks, *, special_mask=None, words=None) -> dict:
    """Token-F1 of one method's maps [n, S] at each k, for tables and paired intervals: macro / micro (F1),
    precision / recall (macro) and se (standard error of the per-document mean, NaN for one document) as lists [K],
    and per_doc [n, K] (numpy). With `words` [n, S] (word index per token, -1 special / padding) the units are
    words scored by the max over their pieces (`word_level`), else the content word pieces."""
    ks = [int(k) for k in ks]
    if words is not None:
        w = scores.shape[1]
        curve = token_f1_curve(*word_level(scores, words[:, :w], rationale_mask[:, :w]), ks)
    else:
        curve = token_f1_curve(scores, rationale_mask, valid_mask, ks, special_mask=special_mask)
    docs = [curve["per_k"][k]["f1"].double() for k in ks]
    return {"macro": curve["macro_f1"].tolist(), "micro": curve["micro_f1"].tolist(),
            "se": [float(d.std() / len(d) ** 0.5) if len(d) > 1 else float("nan") for d in docs],
            "precision": [curve["per_k"][k]["macro_precision"] for k in ks],
            "recall": [curve["per_k"][k]["macro_recall"] for k in ks], "per_doc": torch.stack(docs, 1).numpy()}


def _spans(row: torch.Tensor) -> list[tuple[int, int]]:
    """Maximal runs of True as [start, end) spans."""
    spans, start = [], None
    for i, v in enumerate(row.tolist() + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            spans.append((start, i))
            start = None
    return spans


def iou_f1(predicted_mask, rationale_mask, valid_mask=None, threshold: float = 0.5) -> dict:
    """ERASER IOU-F1 (partial match): predicted and human rationales are contiguous spans; a predicted span is a
    true positive when its best IOU with a human span of the same document is >= threshold; micro-averaged.

    predicted_mask: hard [B, S] rationale (e.g. `top_k_mask(...)`). Returns dict: precision, recall, f1.
    """
    pred = torch.as_tensor(predicted_mask).bool()
    pred = pred.reshape(-1, pred.shape[-1])
    truth = torch.as_tensor(rationale_mask).bool().reshape(pred.shape)
    if valid_mask is not None:
        valid = torch.as_tensor(valid_mask).bool().reshape(pred.shape)
        pred, truth = pred & valid, truth & valid
    tp = n_pred = n_true = 0
    for prow, trow in zip(pred, truth):
        ps, ts = _spans(prow), _spans(trow)
        n_pred, n_true = n_pred + len(ps), n_true + len(ts)
        for a, b in ps:
            best = max((max(0, min(b, d) - max(a, c)) / (max(b, d) - min(a, c)) for c, d in ts), default=0.0)
            tp += best >= threshold
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r > 0 else 0.0, "threshold": threshold}


def precision_at_k(scores, answer_mask, valid_mask=None, k: int = 20, *, special_mask=None) -> float:
    """Mask-LRP Precision@k [CODE]: Σ_examples |top-k tokens ∩ answer span| / Σ_examples |answer span|
    (a fraction; the paper reports ×100). For QA pass scores = start explanation + end explanation."""
    valid, special, truth = _masks(scores, answer_mask, valid_mask, special_mask)
    content = valid & ~special
    raw = scores.scores if hasattr(scores, "scores") else scores
    top = top_k_mask(torch.as_tensor(raw).reshape(content.shape), special_mask=~content, k=int(k))
    truth = truth & content
    total = int(truth.sum())
    if total == 0:
        raise MetricInputError("precision_at_k: no answer tokens in answer_mask")
    return int((top & truth).sum()) / total


def word_level(scores: torch.Tensor, words: torch.Tensor, rationale: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(word scores, word rationale, word valid) [N, W] from token scores [N, S]: a word's score is the max over its
    pieces, it is rationale when any piece is; tokens with word index -1 are ignored."""
    n_words = int(words.max()) + 1 if words.numel() else 0
    keep = words >= 0
    idx = words.clamp(min=0)
    out = torch.full((len(scores), max(n_words, 1)), -float("inf"), dtype=torch.float64)
    out = out.scatter_reduce(1, idx, scores.double().masked_fill(~keep, -float("inf")), "amax")
    rat = torch.zeros_like(out, dtype=torch.long).scatter_reduce(1, idx, (rationale & keep).long(), "amax").bool()
    valid = torch.zeros_like(out, dtype=torch.long).scatter_reduce(1, idx, keep.long(), "amax").bool()
    return out.masked_fill(~valid, 0.0), rat, valid


def pair_agreement(gt: torch.Tensor, cf: torch.Tensor, content: torch.Tensor, top: int = 20) -> dict:
    """How alike two maps [n, S] of the same inputs are (e.g. the ground-truth and the counterfactual class map).

    rho [n]: Spearman correlation over content tokens (NaN where a map is constant, e.g. all zero); overlap [n]:
    |top-`top` tokens of gt ∩ of cf| / top (or / the content size when smaller); cf_constant [n]: cf is constant
    over the content tokens (e.g. all zero after a ReLU).
    """
    rho = np.asarray(spearman(gt, cf, content).statistic, dtype=float).reshape(-1)
    top_gt = top_k_mask(gt, special_mask=~content, k=top)
    top_cf = top_k_mask(cf, special_mask=~content, k=top)
    size = torch.minimum(content.sum(1), torch.tensor(top)).clamp_min(1)
    overlap = ((top_gt & top_cf).sum(1).double() / size).numpy()
    big, small = cf.masked_fill(~content, -float("inf")).amax(1), cf.masked_fill(~content, float("inf")).amin(1)
    return {"rho": rho, "overlap": overlap, "cf_constant": (big <= small).numpy()}


def cls_sep_masks(valid: torch.Tensor, special: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """([CLS] mask, [SEP] mask) [n, S] of BERT-style inputs: [CLS] is position 0, [SEP] every other valid special
    token."""
    cls = torch.zeros_like(valid)
    cls[:, 0] = True
    return cls & valid, special & valid & ~cls


def special_token_mass(scores: torch.Tensor, valid: torch.Tensor, special: torch.Tensor) -> dict:
    """Where a map's positive mass lies, per example [n]: sep_share / cls_share (of the mass on valid tokens),
    sep_share_without_cls (of the mass off [CLS]), uniform_share (what a uniform map would put on one token:
    1 / (content + 1)) and sep_top (is [SEP] the highest-scoring token other than [CLS]?)."""
    cls, sep = cls_sep_masks(valid, special)
    pos = scores.clamp(min=0) * valid
    total = pos.sum(1).clamp_min(1e-30)
    top = scores.masked_fill(cls | ~valid, -float("inf")).argmax(1)
    content = (valid & ~special).sum(1).double()
    without_cls = (pos * ~cls).sum(1).clamp_min(1e-30)
    return {"sep_share": (pos * sep).sum(1) / total, "cls_share": (pos * cls).sum(1) / total,
            "sep_share_without_cls": (pos * sep).sum(1) / without_cls, "uniform_share": 1 / (content + 1),
            "sep_top": sep[torch.arange(len(scores)), top]}
