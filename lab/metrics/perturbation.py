"""Perturbation (faithfulness) metrics for token-level text explanations.

Every metric perturbs the most (or least) relevant *units* of each example and asks the model again:

- a unit is a content token (not [CLS]/[SEP]/padding: `special_mask`), or a word when `groups` maps tokens to
  words (see `word_groups` / `groups_from_word_ids`); a word's score is the sum (or max/mean) of its pieces;
- units are ranked by score, ties broken by position (earlier first), so results are deterministic;
- a fraction f of an example with n units perturbs k = round(f·n) units (round half to even, like NumPy);
- perturbing means replacing the token id (`mode="replace"`, default id [PAD]; the attention mask is unchanged) or
  deleting the token (`mode="delete"`: the sequence gets shorter and is re-padded on the right).

The model is either a supported Hugging Face sequence classifier (called through `lab.models.adapters`; its log
probabilities come from `log_softmax(logits)`) or any `predict_fn(input_ids, attention_mask) -> probabilities
[batch, classes]` (RNN/CNN models of later notebooks; log probabilities are `log(max(p, 1e-12))`). Perturbed copies
go through the model in chunks of `batch_size` rows, with a tqdm bar when there is more than one chunk.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lab.metrics import MetricInputError
from lab.metrics.words import groups_from_word_ids, merge_wordpieces, word_groups  # noqa: F401 (public here)
from lab.progress import progress as progress_bar

# Mask-LRP [CODE] `evaluate_explanability.py`: k = round(linspace(0, 1, 10) * len)[1:], i.e. 1/9, 2/9, ..., 1.
MASK_LRP_FRACTIONS = tuple(i / 9 for i in range(1, 10))
# ERASER (DeYoung et al. 2020) AOPC bins for comprehensiveness and sufficiency: 1, 5, 10, 20, 50 %.
ERASER_BINS = (0.01, 0.05, 0.1, 0.2, 0.5)
MODES = ("replace", "delete")
ORDERS = ("desc", "asc")
REDUCES = {"sum": "sum", "max": "amax", "mean": "mean"}
LABELS = ("predicted", "gold")
PROB_FLOOR = 1e-12  # predict_fn path: probabilities are clamped here before the log (LOdds of a zero probability)


# ---- inputs ----------------------------------------------------------------------------------------------


def _as_long(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2:
        raise MetricInputError(f"{name} must be [batch, seq], got shape {list(t.shape)}")
    return t.long()


def _text_inputs(inputs) -> dict:
    """input_ids / attention_mask (ones if absent) / token_type_ids (if present) as [B, S] long tensors."""
    if isinstance(inputs, torch.Tensor):
        inputs = {"input_ids": inputs}
    if not isinstance(inputs, Mapping) and not hasattr(inputs, "keys"):
        raise MetricInputError("inputs must be a tokenizer output (a mapping with 'input_ids', 'attention_mask')")
    if "input_ids" not in inputs:
        raise MetricInputError("inputs has no 'input_ids'; pass a tokenizer output or dict(input_ids=..., attention_mask=...)")
    ids = _as_long(inputs["input_ids"], "input_ids")
    if ids.numel() == 0:
        raise MetricInputError("empty input: the batch has no tokens")
    out = {"input_ids": ids}
    mask = inputs.get("attention_mask")
    out["attention_mask"] = torch.ones_like(ids) if mask is None else _as_long(mask, "attention_mask").to(ids.device)
    types = inputs.get("token_type_ids")
    if types is not None:
        out["token_type_ids"] = _as_long(types, "token_type_ids").to(ids.device)
    for key, value in out.items():
        if value.shape != ids.shape:
            raise MetricInputError(f"{key} has shape {list(value.shape)} but input_ids has {list(ids.shape)}")
    return out


def _scores_and_special(scores, special_mask, shape) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scores [B, S] (from a tensor or an Explanation) and its special mask if it carries one."""
    special = special_mask
    if hasattr(scores, "scores") and hasattr(scores, "special"):  # an Explanation
        if getattr(scores, "unit", "token") not in ("token",):
            raise MetricInputError(f"text metrics need token scores; got a {scores.unit} explanation "
                                   "(use lab.metrics.images for patches and pixels)")
        if special is None:
            special = scores.special
        scores = scores.scores
    scores = torch.as_tensor(scores)
    if scores.dim() == 1:
        scores = scores.unsqueeze(0)
    if tuple(scores.shape) != tuple(shape):
        raise MetricInputError(f"scores have shape {list(scores.shape)} but input_ids have {list(shape)}; "
                               "explain exactly the inputs you evaluate (same padding and truncation)")
    scores = scores.detach().cpu().to(torch.float64)  # metrics rank on the CPU; the model gets its own device
    if torch.isnan(scores).any():
        raise MetricInputError("scores contain NaN; rankings are undefined")
    if special is not None:
        special = torch.as_tensor(special).bool().cpu()
        if special.dim() == 1:
            special = special.unsqueeze(0)
        if tuple(special.shape) != tuple(shape):
            raise MetricInputError(f"special_mask has shape {list(special.shape)}, expected {list(shape)}")
    return scores, special


def _content_mask(attention_mask: torch.Tensor, special: torch.Tensor | None) -> torch.Tensor:
    content = attention_mask.bool()
    if special is not None:
        content = content & ~special.to(content.device)
    return content


def _check_choice(value, choices, name):
    if value not in choices:
        raise MetricInputError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


# ---- ranking and selection -------------------------------------------------------------------------------


def _unit_ranks(scores: torch.Tensor, content: torch.Tensor, groups=None, order: str = "desc",
                reduce: str = "sum") -> tuple[torch.Tensor, torch.Tensor]:
    """(rank [B, S], n_units [B]): the 0-based rank of each content position's unit within its example
    (by score, `order`; ties by unit index), and the number of units. Non-content positions get rank S + G."""
    _check_choice(order, ORDERS, "order")
    _check_choice(reduce, tuple(REDUCES), "reduce")
    b, s = scores.shape
    if groups is None:
        groups = torch.arange(s, device=scores.device).expand(b, s)
    else:
        groups = _as_long(groups, "groups").to(scores.device)
        if groups.shape != scores.shape:
            raise MetricInputError(f"groups has shape {list(groups.shape)}, expected {list(scores.shape)}")
    content = content & (groups >= 0)
    n_groups = int(groups[content].max()) + 1 if content.any() else 1
    index = torch.where(content, groups, n_groups)  # non-content positions go to a dummy last group
    group_scores = torch.zeros(b, n_groups + 1, dtype=scores.dtype, device=scores.device).scatter_reduce(
        1, index, scores, reduce=REDUCES[reduce], include_self=False)[:, :n_groups]
    exists = torch.zeros(b, n_groups + 1, device=scores.device).scatter_add(
        1, index, content.to(torch.float32))[:, :n_groups] > 0
    key = group_scores if order == "desc" else -group_scores
    # lexicographic sort: existing units first, then by key (descending), ties by unit index (stable sorts)
    by_key = torch.sort(key, dim=1, descending=True, stable=True).indices
    by_exists = torch.sort((~exists).gather(1, by_key).to(torch.int8), dim=1, stable=True).indices
    ranking = by_key.gather(1, by_exists)
    group_rank = torch.empty_like(ranking).scatter_(1, ranking, torch.arange(n_groups, device=scores.device).expand(b, -1))
    rank = torch.where(content, group_rank.gather(1, index.clamp_max(n_groups - 1)), torch.full_like(index, s + n_groups))
    return rank, exists.sum(1)


def _counts(n_units: torch.Tensor, fraction=None, k=None) -> torch.Tensor:
    """Units to perturb per example: round(fraction · n) (half to even) or min(k, n)."""
    if (fraction is None) == (k is None):
        raise MetricInputError("give exactly one of fraction= (share of content tokens) or k= (number of tokens)")
    if fraction is not None:
        f = float(fraction)
        if not 0.0 <= f <= 1.0:
            raise MetricInputError(f"fraction must be in [0, 1], got {fraction}")
        return torch.round(n_units.to(torch.float64) * f).long().clamp(0, None).minimum(n_units)
    k = torch.as_tensor(k, device=n_units.device).long()
    if (k < 0).any():
        raise MetricInputError(f"k must be >= 0, got {k.tolist()}")
    if k.dim() == 0:
        return k.expand_as(n_units).minimum(n_units)
    if k.numel() != n_units.numel():
        raise MetricInputError(f"k has {k.numel()} entries for a batch of {n_units.numel()}")
    return k.reshape(n_units.shape).minimum(n_units)


def _selected(rank: torch.Tensor, content: torch.Tensor, counts: torch.Tensor, complement: bool) -> torch.Tensor:
    top = rank < counts[:, None]
    return content & (~top if complement else top)


def top_k_mask(scores, special_mask=None, valid_mask=None, *, fraction=None, k=None, order: str = "desc",
               groups=None, reduce: str = "sum") -> torch.Tensor:
    """Boolean [B, S] mask of the top-k (or top fraction of) content units of each example.

    Content = valid (default: all) and not special. Ties are broken by position (earlier first).
    With `groups` (word index per token, -1 for none) whole words are selected, ranked by the `reduce` of their
    token scores, and `fraction`/`k` count words.
    """
    raw = torch.as_tensor(scores.scores if hasattr(scores, "scores") else scores)
    if valid_mask is None and hasattr(scores, "valid"):
        valid_mask = scores.valid
    scores, special = _scores_and_special(scores, special_mask, raw.reshape(-1, raw.shape[-1]).shape)
    valid = torch.ones_like(scores, dtype=torch.bool) if valid_mask is None else \
        torch.as_tensor(valid_mask).bool().cpu().reshape(scores.shape)
    content = _content_mask(valid, special)
    rank, n_units = _unit_ranks(scores, content, groups, order, reduce)
    return _selected(rank, content, _counts(n_units, fraction, k), complement=False)


# ---- applying a perturbation -----------------------------------------------------------------------------


def _apply(rows: dict, selected: torch.Tensor, mode: str, token_id, pad_id: int) -> dict:
    """Replace the selected positions' ids by token_id (an id, or per-position ids shaped like the rows), or delete
    them (compacting left, re-padding right)."""
    selected = selected.to(rows["input_ids"].device)
    if mode == "replace":
        out = dict(rows)
        out["input_ids"] = torch.where(selected, torch.as_tensor(token_id).to(rows["input_ids"]), rows["input_ids"])
        return out
    keep = rows["attention_mask"].bool() & ~selected
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    kept = keep.gather(1, order)
    out = {}
    for key, value in rows.items():
        moved = value.gather(1, order)
        if key == "attention_mask":
            out[key] = kept.to(value.dtype)
        else:
            out[key] = moved.masked_fill(~kept, pad_id if key == "input_ids" else 0)
    return out


def _trim(rows: dict) -> dict:
    """Drop trailing columns that are padding in every row (keeps at least one column)."""
    used = rows["attention_mask"].bool().any(0).nonzero()
    width = int(used.max()) + 1 if len(used) else 1
    return {k: v[:, :width] for k, v in rows.items()}


def replace_top_k(input_ids, attention_mask=None, scores=None, special_mask=None, *, fraction=None, k=None,
                  token_id: int = 0, mode: str = "replace", order: str = "desc", complement: bool = False,
                  groups=None, reduce: str = "sum", token_type_ids=None, pad_id: int = 0) -> dict:
    """Perturb the top-k (or top `fraction`) content units of each example; returns the model inputs.

    input_ids, attention_mask, scores, special_mask: [B, S] (attention_mask defaults to ones; special tokens
    — [CLS], [SEP], padding — are never perturbed; `scores` may be an Explanation, whose `special` is then used).
    fraction in [0, 1] counts content units (k = round(f · n)); k is a number of units (clipped to n).
    mode "replace": ids → token_id, attention mask unchanged; "delete": tokens removed, rows re-padded on the right
    with pad_id and trailing all-padding columns dropped. order "desc" perturbs the highest scores first ("asc":
    lowest first). complement=True perturbs every content unit *except* the top-k (ERASER sufficiency).
    Returns dict(input_ids, attention_mask[, token_type_ids]).
    """
    _check_choice(mode, MODES, "mode")
    rows = _text_inputs({"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids})
    if scores is None:
        raise MetricInputError("replace_top_k needs scores")
    scores, special = _scores_and_special(scores, special_mask, rows["input_ids"].shape)
    content = _content_mask(rows["attention_mask"].cpu(), special)
    rank, n_units = _unit_ranks(scores, content, groups, order, reduce)
    selected = _selected(rank, content, _counts(n_units, fraction, k), complement)
    out = _apply(rows, selected, mode, token_id, pad_id)
    return _trim(out) if mode == "delete" else out


def random_scores(like, seed: int = 0) -> torch.Tensor:
    """Uniform random scores with the shape of `like` (a tensor or an Explanation) from a seeded generator:
    the random-order baseline (Wu & Ong Fig. 1, Mask-LRP "Random")."""
    ref = like.scores if hasattr(like, "scores") else torch.as_tensor(like)
    gen = torch.Generator().manual_seed(int(seed))
    return torch.rand(tuple(ref.shape), generator=gen, dtype=torch.float64)


# ---- the model -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _eval_mode(module):
    if not isinstance(module, nn.Module):
        yield
        return
    training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(training)


def _is_hf_model(obj) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    return isinstance(obj, PreTrainedModel)


class _Predictor:
    """log p(·|x) for batches of token ids, from an HF classifier (adapter) or a predict_fn returning probabilities."""

    def __init__(self, model_or_predict):
        self.adapter = None
        self.fn = model_or_predict
        if _is_hf_model(model_or_predict):
            from lab.models.adapters import get_adapter

            adapter = get_adapter(model_or_predict)
            if adapter.modality != "text":
                raise MetricInputError(f"{type(model_or_predict).__name__} is a {adapter.modality} model; these metrics "
                                       "are for text (use lab.metrics.images)")
            self.adapter = adapter
        elif not callable(model_or_predict):
            raise MetricInputError("model_or_predict must be a Hugging Face sequence classifier or a callable "
                                   "predict_fn(input_ids, attention_mask) -> probabilities [batch, classes]")

    @property
    def device(self):
        if self.adapter is not None:
            return self.adapter.device
        params = list(self.fn.parameters()) if isinstance(self.fn, nn.Module) else []
        return params[0].device if params else torch.device("cpu")

    def default_token_id(self) -> int:
        if self.adapter is not None:
            pad = getattr(self.adapter.config, "pad_token_id", None)
            return 0 if pad is None else int(pad)
        return 0

    def special_mask(self, rows: dict) -> torch.Tensor | None:
        if self.adapter is None:
            return None
        return self.adapter.special_mask(self.adapter.prepare(rows)).cpu()

    def log_probs(self, rows: dict) -> torch.Tensor:
        with torch.no_grad():
            if self.adapter is not None:
                prepared = self.adapter.prepare(_trim(rows))
                return self.adapter.forward(prepared).logits.double().log_softmax(-1).cpu()
            device = self.device
            probs = self.fn(rows["input_ids"].to(device), rows["attention_mask"].to(device))
        if not isinstance(probs, (torch.Tensor, np.ndarray)):
            raise MetricInputError(f"predict_fn returned a {type(probs).__name__}; it must return a tensor of "
                                   "probabilities [batch, classes]")
        probs = torch.as_tensor(probs).detach().double().cpu()
        n = rows["input_ids"].shape[0]
        if probs.dim() != 2 or probs.shape[0] != n:
            raise MetricInputError(f"predict_fn must return probabilities [batch={n}, classes], got shape {list(probs.shape)}")
        if (probs < -1e-6).any() or not torch.allclose(probs.sum(-1), torch.ones(n, dtype=probs.dtype), atol=1e-3):
            raise MetricInputError("predict_fn must return probabilities (non-negative, rows summing to 1); "
                                   "apply softmax to logits first")
        return probs.clamp_min(PROB_FLOOR).log()


@dataclass
class _Setup:
    predictor: _Predictor
    inputs: dict
    content: torch.Tensor
    rank: torch.Tensor
    n_units: torch.Tensor
    token_id: int | torch.Tensor  # an id, or [N, S] per-position replacement ids
    pad_id: int
    batch_size: int
    progress: bool

    def base_log_probs(self) -> torch.Tensor:
        n = self.inputs["input_ids"].shape[0]
        idx = torch.arange(n)
        return self._run(idx, None, mode="replace", complement=False, desc="original")

    def perturbed_log_probs(self, example: torch.Tensor, counts: torch.Tensor, mode: str, complement: bool = False,
                            desc: str = "perturbed") -> torch.Tensor:
        return self._run(example, counts, mode, complement, desc)

    def _run(self, example, counts, mode, complement, desc) -> torch.Tensor:
        out = []
        starts = range(0, len(example), self.batch_size)
        with _eval_mode(self.predictor.fn):
            for start in progress_bar(starts, desc, self.progress and len(starts) > 1, unit="batch"):
                ex = example[start:start + self.batch_size]
                rows = {key: value[ex] for key, value in self.inputs.items()}
                if counts is not None:
                    selected = _selected(self.rank[ex], self.content[ex], counts[start:start + self.batch_size], complement)
                    tid = self.token_id[ex] if torch.is_tensor(self.token_id) else self.token_id
                    rows = _apply(rows, selected, mode, tid, self.pad_id)
                out.append(self.predictor.log_probs(rows))
        return torch.cat(out)


def _setup(model_or_predict, inputs, scores, special_mask, groups, order, reduce, token_id, pad_id, batch_size,
           progress) -> _Setup:
    if int(batch_size) < 1:
        raise MetricInputError(f"batch_size must be >= 1, got {batch_size}")
    predictor = _Predictor(model_or_predict)
    rows = _text_inputs(inputs)
    rows = {k: v.cpu() for k, v in rows.items()}
    scores, special = _scores_and_special(scores, special_mask, rows["input_ids"].shape)
    if special is None:
        special = predictor.special_mask(rows)
    content = _content_mask(rows["attention_mask"], special)
    rank, n_units = _unit_ranks(scores.cpu(), content, groups, order, reduce)
    tid = predictor.default_token_id() if token_id is None else _token_ids(token_id, rows["input_ids"].shape)
    pid = predictor.default_token_id() if pad_id is None else int(pad_id)
    return _Setup(predictor, rows, content, rank, n_units, tid, pid, int(batch_size), bool(progress))


def _token_ids(token_id, shape) -> int | torch.Tensor:
    """An int id, or a [B, S] tensor of per-position replacement ids matching the inputs."""
    if torch.is_tensor(token_id) and token_id.dim() > 0:
        if tuple(token_id.shape) != tuple(shape):
            raise MetricInputError(f"per-position token_id must have the inputs' shape {list(shape)}, got "
                                   f"{list(token_id.shape)}")
        return token_id.long().cpu()
    return int(token_id)


def _targets(label, labels, base_log_probs: torch.Tensor) -> torch.Tensor:
    n, n_classes = base_log_probs.shape
    _check_choice(label, LABELS, "label")
    if label == "predicted":
        return base_log_probs.argmax(-1)
    if labels is None:
        raise MetricInputError("label='gold' needs labels= (one class index per example)")
    y = torch.as_tensor(labels).long().reshape(-1).cpu()
    if y.numel() != n:
        raise MetricInputError(f"labels has {y.numel()} entries for a batch of {n}")
    if (y < 0).any() or (y >= n_classes).any():
        raise MetricInputError(f"labels {y.tolist()} out of range: the model has {n_classes} classes")
    return y


def _fraction_grid(fractions) -> torch.Tensor:
    grid = torch.as_tensor([float(f) for f in fractions], dtype=torch.float64)
    if grid.numel() == 0:
        raise MetricInputError("fractions is empty")
    if (grid < 0).any() or (grid > 1).any():
        raise MetricInputError(f"fractions must lie in [0, 1], got {grid.tolist()}")
    return grid


def _grid_rows(setup: _Setup, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(example index, count) for every example × fraction, example-major: [N*K] each."""
    counts = torch.stack([_counts(setup.n_units, fraction=float(f)) for f in grid], dim=1)  # [N, K]
    n, k = counts.shape
    return torch.arange(n).repeat_interleave(k), counts.reshape(-1)


# ---- Mask-LRP: AOPC and LOdds ----------------------------------------------------------------------------


def aopc_lodds(model_or_predict, inputs, scores, fractions=MASK_LRP_FRACTIONS, token_id: int | None = None,
               label: str = "predicted", labels=None, *, special_mask=None, mode: str = "replace",
               order: str = "desc", groups=None, reduce: str = "sum", pad_id: int | None = None,
               batch_size: int = 64, progress: bool = True) -> dict:
    """AOPC and LOdds of Mask-LRP (Song et al., Eqs. 12–13), as printed:

        AOPC  = mean_k [ f_y(x) − f_y(x̃^k) ]          (higher is better)
        LOdds = mean_k log[ f_y(x̃^k) / f_y(x) ]       (lower is better; a log probability ratio, not log-odds)

    x̃^k: x with its top-k% content tokens replaced by `token_id` (default the model's [PAD], as in the authors'
    code); k over `fractions` (default 1/9, 2/9, ..., 1: the code's round(linspace(0,1,10)·n)[1:]).
    y: the predicted class of x ("predicted", the text's ŷ) or the gold class ("gold", the authors' code).
    Returns dict: fractions [K], counts [N, K], target [N], base_prob [N] f_y(x), probs [N, K] f_y(x̃^k),
    aopc [N], lodds [N], aopc_curve [K], lodds_curve [K] (means over examples), aopc_mean, lodds_mean (floats).
    """
    _check_choice(mode, MODES, "mode")
    setup = _setup(model_or_predict, inputs, scores, special_mask, groups, order, reduce, token_id, pad_id,
                   batch_size, progress)
    grid = _fraction_grid(fractions)
    base = setup.base_log_probs()
    y = _targets(label, labels, base)
    example, counts = _grid_rows(setup, grid)
    perturbed = setup.perturbed_log_probs(example, counts, mode, desc="aopc")
    n, k = len(y), len(grid)
    logp = perturbed.gather(1, y[example][:, None]).reshape(n, k)
    logp0 = base.gather(1, y[:, None])  # [N, 1]
    aopc = logp0.exp() - logp.exp()  # Eq. 12, per k
    lodds = logp - logp0  # Eq. 13, per k
    return {
        "fractions": grid, "counts": counts.reshape(n, k), "target": y, "base_prob": logp0[:, 0].exp(),
        "probs": logp.exp(), "aopc": aopc.mean(1), "lodds": lodds.mean(1), "aopc_curve": aopc.mean(0),
        "lodds_curve": lodds.mean(0), "aopc_mean": float(aopc.mean()), "lodds_mean": float(lodds.mean()),
        "params": {"token_id": setup.token_id, "label": label, "mode": mode, "order": order,
                   "fractions": grid.tolist()},
    }


# ---- ERASER: comprehensiveness and sufficiency -----------------------------------------------------------


def comprehensiveness_sufficiency(model_or_predict, inputs, scores, bins=ERASER_BINS, label: str = "predicted",
                                  labels=None, *, special_mask=None, mode: str = "delete", token_id: int | None = None,
                                  groups=None, reduce: str = "sum", pad_id: int | None = None, batch_size: int = 64,
                                  progress: bool = True) -> dict:
    """ERASER (DeYoung et al. 2020) comprehensiveness and sufficiency, AOPC over `bins`:

        comprehensiveness = mean_k [ p(y|x) − p(y|x without its top-k% tokens) ]   (higher is better)
        sufficiency       = mean_k [ p(y|x) − p(y|only its top-k% tokens) ]         (lower is better)

    averaged over the bins (as ERASER's `_instances_aopc`), y the predicted class by default. Tokens are deleted
    (`mode="delete"`, as ERASER); "replace" substitutes `token_id` instead.
    Returns dict: bins [K], target [N], base_prob [N], comp_probs / suff_probs [N, K], comprehensiveness /
    sufficiency [N], comp_curve / suff_curve [K], comprehensiveness_mean, sufficiency_mean (floats).
    """
    _check_choice(mode, MODES, "mode")
    setup = _setup(model_or_predict, inputs, scores, special_mask, groups, "desc", reduce, token_id, pad_id,
                   batch_size, progress)
    grid = _fraction_grid(bins)
    base = setup.base_log_probs()
    y = _targets(label, labels, base)
    example, counts = _grid_rows(setup, grid)
    n, k = len(y), len(grid)
    p0 = base.gather(1, y[:, None]).exp()
    comp = setup.perturbed_log_probs(example, counts, mode, complement=False, desc="comprehensiveness")
    suff = setup.perturbed_log_probs(example, counts, mode, complement=True, desc="sufficiency")
    comp_p = comp.gather(1, y[example][:, None]).reshape(n, k).exp()
    suff_p = suff.gather(1, y[example][:, None]).reshape(n, k).exp()
    return {
        "bins": grid, "counts": counts.reshape(n, k), "target": y, "base_prob": p0[:, 0], "comp_probs": comp_p,
        "suff_probs": suff_p, "comprehensiveness": (p0 - comp_p).mean(1), "sufficiency": (p0 - suff_p).mean(1),
        "comp_curve": (p0 - comp_p).mean(0), "suff_curve": (p0 - suff_p).mean(0),
        "comprehensiveness_mean": float((p0 - comp_p).mean()), "sufficiency_mean": float((p0 - suff_p).mean()),
        "params": {"label": label, "mode": mode, "bins": grid.tolist()},
    }


# ---- Wu & Ong: accuracy vs number of deleted words --------------------------------------------------------


def deletion_curve(model_or_predict, inputs, scores, labels, max_words: int = 10, *, fractions=None,
                   mode: str = "delete", token_id: int | None = None, special_mask=None, groups=None,
                   reduce: str = "sum", order: str = "desc", pad_id: int | None = None, batch_size: int = 64,
                   progress: bool = True) -> dict:
    """Wu & Ong Fig. 1: accuracy on the initially correctly classified examples as their n most relevant
    units are removed, n = 0, 1, ..., max_words (or at the given `fractions` of each example's units).

    Units are tokens, or words with `groups` (see `word_groups`). An example with fewer units than n has all of
    them removed. mode "delete" removes tokens (the paper's "remove"); "replace" substitutes `token_id`.
    For the random baseline pass `random_scores(scores, seed)`.
    Returns dict: x [n+1] (counts or fractions), accuracy [n+1], correct [M, n+1] (bool), examples [M] (indices of
    the initially-correct examples), n_examples M, auc (mean accuracy over x; lower = steeper drop).
    """
    _check_choice(mode, MODES, "mode")
    setup = _setup(model_or_predict, inputs, scores, special_mask, groups, order, reduce, token_id, pad_id,
                   batch_size, progress)
    base = setup.base_log_probs()
    y = _targets("gold", labels, base)
    examples = (base.argmax(-1) == y).nonzero()[:, 0]
    if fractions is not None:
        x = torch.cat([torch.zeros(1, dtype=torch.float64), _fraction_grid(fractions)])
        counts = torch.stack([_counts(setup.n_units[examples], fraction=float(f)) for f in x], dim=1)
    else:
        if int(max_words) < 0:
            raise MetricInputError(f"max_words must be >= 0, got {max_words}")
        x = torch.arange(int(max_words) + 1)
        counts = torch.stack([_counts(setup.n_units[examples], k=int(n)) for n in x], dim=1)
    m, k = counts.shape
    if m == 0:
        warnings.warn("deletion_curve: no example is classified correctly; the curve is empty (NaN)", stacklevel=2)
        nan = torch.full((len(x),), float("nan"), dtype=torch.float64)
        return {"x": x, "accuracy": nan, "correct": torch.zeros(0, len(x), dtype=torch.bool), "examples": examples,
                "n_examples": 0, "auc": float("nan")}
    rows_example = examples.repeat_interleave(k)
    perturbed = setup.perturbed_log_probs(rows_example, counts.reshape(-1), mode, desc="deletion")
    correct = (perturbed.argmax(-1) == y[rows_example]).reshape(m, k)
    accuracy = correct.double().mean(0)
    return {"x": x, "accuracy": accuracy, "correct": correct, "counts": counts, "examples": examples,
            "n_examples": int(m), "auc": float(accuracy.mean()),
            "params": {"mode": mode, "order": order, "max_words": max_words, "fractions": fractions}}


# ---- Kim et al.: AUC_rep ---------------------------------------------------------------------------------


def _area_to(x: np.ndarray, p: np.ndarray, stop: float) -> float:
    """Trapezoid area under the piecewise-linear curve (x, p) from 0 to stop (x increasing from 0)."""
    if len(x) == 1 or stop <= 0:
        return float(p[0]) * stop
    end = float(np.interp(stop, x, p))
    keep = x < stop
    xs = np.append(x[keep], stop)
    ps = np.append(p[keep], end)
    return float(np.sum((xs[1:] - xs[:-1]) * (ps[1:] + ps[:-1]) / 2))


def auc_rep(model_or_predict, inputs, scores, stop: float = 0.2, token_id: int | None = None,
            label: str = "predicted", labels=None, *, normalize: bool = True, special_mask=None, groups=None,
            reduce: str = "sum", grid_points: int = 21, batch_size: int = 64, progress: bool = True) -> dict:
    """AUC_rep of Kim et al. (2020), Sec. 3.1.4 of the reproduction: replace units most-important-first with [PAD]
    (`token_id`, default the model's pad id; or a [B, S] tensor of per-position replacements, e.g. a masked LM's
    predictions as in Kim et al.'s original metric) and follow p(ŷ | x^[i]), i = 0, 1, ... replaced units.

    Lower is better (faithful scores make the curve drop fast). Choices (stated, since the text gives none):
    the x-axis is the fraction replaced, x_i = i / n (n content units); the curve is linear between points and
    integrated by the trapezoid rule from 0 to `stop` (default 0.2, the authors' code stops at int(0.2·#words));
    with `normalize` the area is divided by `stop`, so it reads as the mean probability over [0, stop] (in [0, 1],
    comparable with the paper's ~0.5). ŷ = argmax p(y|x) ("predicted", as the text) or the gold label ("gold",
    as the code). An example without content units has a flat curve.
    Returns dict: auc [N], auc_mean, target [N], probs (list of [m_i + 1] tensors, i = 0..m_i with m_i =
    ceil(stop · n_i)), grid [grid_points] on [0, stop], curve [N, grid_points] (interpolated), mean_curve.
    """
    if not 0 < float(stop) <= 1:
        raise MetricInputError(f"stop must be in (0, 1], got {stop}")
    setup = _setup(model_or_predict, inputs, scores, special_mask, groups, "desc", reduce, token_id, None,
                   batch_size, progress)
    base = setup.base_log_probs()
    y = _targets(label, labels, base)
    n_units = setup.n_units
    steps = torch.ceil(n_units.double() * float(stop) - 1e-9).long().clamp(0, None).minimum(n_units)  # m_i
    example = torch.arange(len(y)).repeat_interleave(steps + 1)
    counts = torch.cat([torch.arange(int(m) + 1) for m in steps])
    perturbed = setup.perturbed_log_probs(example, counts, "replace", desc="auc_rep")
    p_rows = perturbed.gather(1, y[example][:, None])[:, 0].exp()
    probs = list(torch.split(p_rows, (steps + 1).tolist()))
    grid = np.linspace(0.0, float(stop), int(grid_points))
    aucs, curves = [], []
    for p, n in zip(probs, n_units.tolist()):
        p_np = p.numpy()
        x = np.arange(len(p_np)) / max(n, 1)
        aucs.append(_area_to(x, p_np, float(stop)))
        curves.append(np.interp(grid, x, p_np) if len(p_np) > 1 else np.full_like(grid, p_np[0]))
    auc = torch.tensor(aucs, dtype=torch.float64)
    if normalize:
        auc = auc / float(stop)
    curve = torch.tensor(np.stack(curves))
    return {"auc": auc, "auc_mean": float(auc.mean()), "target": y, "probs": probs, "steps": steps,
            "grid": torch.tensor(grid), "curve": curve, "mean_curve": curve.mean(0),
            "params": {"stop": float(stop), "label": label, "normalize": normalize,
                       "token_id": "per-position" if torch.is_tensor(setup.token_id) else setup.token_id}}


__all__ = [
    "ERASER_BINS", "MASK_LRP_FRACTIONS", "aopc_lodds", "auc_rep", "comprehensiveness_sufficiency", "deletion_curve",
    "groups_from_word_ids", "merge_wordpieces", "random_scores", "replace_top_k", "top_k_mask", "word_groups",
]
