"""Input marginalisation (Kim et al. 2020; reproduction by Mehta et al., REPRODUCTION_SPEC 004.1).

Weight of evidence of token i for class y (Sec. 3.1.1):

    a_i = logodds p(y|x) − logodds p^[i](y|x),   p^[i](y|x) = Σ_w p(y | x_{i←w}) · p_MLM(w | x_{−i})

computed in log space: log p^[i] = LogSumExp_w [log p(y|x_{i←w}) + log p_MLM(w|x_{−i})], and
log(1 − p^[i]) = LogSumExp( log(1 − Σ_w q_w),  LogSumExp_w [log q_w + log(1 − p(y|x_{i←w}))] )   (q = the weights),
so both sides of the log-odds are sums of positive terms (no cancellation when p → 1). Log-odds for any number of
classes: log p_y − log(1 − p_y), with 1 − p_y = Σ_{c≠y} p_c (for two classes = the logit difference).

Candidate sets w (the `candidates` parameter):
- "truncate" (default): the words with p_MLM(w|x_{−i}) > σ (σ = 1e-4 as in the authors' code); with `renormalize`
  (default True, as Sec. 3.1.3 says; the authors' Algorithm 1 does not) the kept weights are rescaled to sum to 1;
- "full": the whole vocabulary (the slow reference path; = "truncate" with σ = 0);
- "mc": n samples w_s ~ p_MLM(·|x_{−i}) with replacement, p̂^[i] = (1/n) Σ_s p(y|x_{i←w_s}) (unbiased for the
  full-vocabulary p^[i]; equal samples are evaluated once and weighted by their count);
- "token": a point mass on `token_id` — the erasure baselines (Zero/[PAD], [UNK], [MASK]) through the same formula
  (for Hugging Face classifiers the `erasure` explainer gives the same numbers; this path serves any classifier).

Each example is processed on its own, unpadded (batch-invariant); all candidate sentences of all its positions go
through the classifier in chunks of `max_batch` rows. Special tokens ([CLS]/[SEP]/padding) get score 0.
`marginalize` works for any classifier given as a `log_probs_fn(rows) -> [N, C]` log-probabilities; the registered
explainer `input_marginalization` wraps a Hugging Face classifier and needs the masked LM as `mlm=`.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from lab.explainers.base import register
from lab.explainers.perturbation import example_seed
from lab.errors import ExplainInputError
from lab.models.adapters import get_adapter
from lab.models.causal_lm import sequence_log_prob
from lab.models.mlm import masked_log_probs
from lab.progress import progress as progress_bar

CANDIDATES = ("truncate", "full", "mc", "token")
DEFAULT_SIGMA = 1e-4
MISSING_MLM = ("input_marginalization needs a masked language model: pass mlm= (e.g. "
               "lab.models.mlm.mlm_preset('default').model, or any BertForMaskedLM with the classifier's vocabulary)")


# ---------------------------------------------------------------- log-space pieces
def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x ≤ 0, accurate everywhere (Mächler 2012); −inf at x = 0."""
    x = torch.as_tensor(x).clamp_max(0.0)
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def log_odds_from_log_probs(logp: torch.Tensor, target: int) -> torch.Tensor:
    """log p_y − log Σ_{c≠y} p_c from log-probabilities [..., C]."""
    others = torch.cat([logp[..., :target], logp[..., target + 1:]], dim=-1)
    return logp[..., target] - torch.logsumexp(others, dim=-1)


def marginal_log_odds(logp_rows: torch.Tensor, log_w: torch.Tensor, target: int) -> torch.Tensor:
    """logodds of m = Σ_k w_k p(y | x_k) from the candidates' log-probabilities [K, C] and log-weights [K]
    (weights may sum to less than 1: the missing mass counts as 'not y', as in Algorithm 1 without renormalising)."""
    logp_rows, log_w = logp_rows.double(), log_w.double()
    log_m = torch.logsumexp(log_w + logp_rows[:, target], 0)
    others = torch.cat([logp_rows[:, :target], logp_rows[:, target + 1:]], dim=-1)
    log_not = torch.logsumexp(log_w + torch.logsumexp(others, dim=-1), 0)
    missing = log1mexp(torch.logsumexp(log_w, 0).clamp_max(0.0))  # log(1 − Σ w), −inf when the weights sum to 1
    return log_m - torch.logaddexp(log_not, missing)


def candidate_weights(mlm_log_probs: torch.Tensor, candidates: str = "truncate", sigma: float = DEFAULT_SIGMA,
                      renormalize: bool = True, n_samples: int = 100, generator: torch.Generator | None = None,
                      token_id: int | None = None, max_candidates: int | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(candidate ids [K], log-weights [K]) at one position from log p_MLM(·|x_{−i}) [V] (see the module doc).

    `max_candidates` (truncation only; None = no cap) keeps at most that many of the most likely words above σ —
    a cost cap for flat MLM distributions, not part of the paper's method."""
    logp = mlm_log_probs.double()
    if candidates == "token":
        if token_id is None:
            raise ExplainInputError("candidates='token' needs token_id= (the erasure token's id)")
        return torch.as_tensor([int(token_id)]), torch.zeros(1, dtype=torch.float64)
    finite = torch.isfinite(logp)
    if candidates == "full":
        ids = finite.nonzero()[:, 0]
        return ids, logp[ids]
    if candidates == "truncate":
        keep = finite & (logp > math.log(sigma)) if sigma > 0 else finite
        ids = keep.nonzero()[:, 0]
        if len(ids) == 0:  # σ above every probability: keep the most likely word
            ids = logp.argmax()[None]
        if max_candidates is not None and len(ids) > int(max_candidates):
            ids = ids[logp[ids].topk(int(max_candidates)).indices.sort().values]
        log_w = logp[ids]
        if renormalize:
            log_w = log_w - torch.logsumexp(log_w, 0)
        return ids, log_w
    if candidates == "mc":
        samples = torch.multinomial(logp.exp().float(), int(n_samples), replacement=True, generator=generator)
        ids, counts = torch.unique(samples, return_counts=True)
        return ids, counts.double().log() - math.log(int(n_samples))
    raise ExplainInputError(f"candidates must be one of {CANDIDATES}, got {candidates!r}")


# ---------------------------------------------------------------- the estimator
def _mlm_fn(mlm, mlm_batch: int):
    """(row, positions) -> log p_MLM [k, V] from a BertForMaskedLM, a TrainedMLM, or such a callable itself."""
    if mlm is None:
        raise ExplainInputError(MISSING_MLM)
    model = mlm if isinstance(mlm, nn.Module) or callable(mlm) else getattr(mlm, "model", mlm)  # TrainedMLM
    if isinstance(model, nn.Module) and type(model).__name__.endswith("ForMaskedLM"):  # no HF submodule names
        return lambda row, positions: masked_log_probs(model, row, positions, max_batch=mlm_batch)
    if callable(model) and not isinstance(model, nn.Module):
        return model  # (row, positions) -> [k, V] log-probabilities
    raise ExplainInputError(f"mlm must be a BertForMaskedLM (or lab.models.mlm.TrainedMLM), got {type(mlm).__name__}")


def _check(candidates, sigma, n_samples, max_batch, max_candidates=None):
    if candidates not in CANDIDATES:
        raise ExplainInputError(f"candidates must be one of {CANDIDATES}, got {candidates!r}")
    if not 0 <= float(sigma) < 1:
        raise ExplainInputError(f"sigma must be in [0, 1), got {sigma}")
    if int(n_samples) < 1:
        raise ExplainInputError(f"n_samples must be >= 1, got {n_samples}")
    if int(max_batch) < 1:
        raise ExplainInputError(f"max_batch must be >= 1, got {max_batch}")
    if max_candidates is not None and int(max_candidates) < 1:
        raise ExplainInputError(f"max_candidates must be >= 1 or None, got {max_candidates}")


def _candidate_rows(row: dict, positions: torch.Tensor, cand: list) -> dict:
    """One copy of `row` ([1, n]) per (position, candidate) with x_position ← candidate: [Σ K_j, n] tensors."""
    pos = torch.cat([torch.full((len(ids),), int(p), dtype=torch.long) for p, (ids, _) in zip(positions, cand)])
    new = torch.cat([ids for ids, _ in cand]).to(row["input_ids"].device)
    copies = {k: v.expand(len(pos), -1).clone() for k, v in row.items()}
    copies["input_ids"][torch.arange(len(pos)), pos.to(row["input_ids"].device)] = new
    return copies


def _chunked(log_probs_fn, rows: dict, max_batch: int) -> torch.Tensor:
    n = rows["input_ids"].shape[0]
    out = []
    with torch.no_grad():
        for start in range(0, n, max_batch):
            out.append(log_probs_fn({k: v[start:start + max_batch] for k, v in rows.items()}).double().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0, dtype=torch.float64)


def marginalize(log_probs_fn, inputs: dict, target, special: torch.Tensor, mlm=None, candidates: str = "truncate",
                sigma: float = DEFAULT_SIGMA, renormalize: bool = True, n_samples: int = 100, seed: int = 0,
                token_id: int | None = None, max_batch: int = 512, mlm_batch: int = 64, keep: bool = False,
                progress: bool = False, max_candidates: int | None = None) -> dict:
    """Weight-of-evidence scores [B, S] of every non-special token for any classifier.

    log_probs_fn(rows) -> [N, C] log-probabilities for a dict of [N, n] tensors (input_ids, attention_mask, ...);
    inputs: [B, S] tensors (attention_mask marks the real tokens); target: [B] class indices; special: [B, S] bool.
    Returns dict(scores [B, S] float64, n_candidates [B, S], cost {classifier_rows, mlm_rows, seconds},
    candidates {(i, position): (ids, log_weights, log p(y|x_{i←w}))} when `keep`)."""
    _check(candidates, sigma, n_samples, max_batch, max_candidates)
    mlm_fn = None if candidates == "token" else _mlm_fn(mlm, mlm_batch)
    ids_all = inputs["input_ids"]
    valid = inputs.get("attention_mask", torch.ones_like(ids_all)).bool()
    target = torch.as_tensor(target).reshape(-1).tolist()
    scores = torch.zeros(ids_all.shape, dtype=torch.float64)
    n_cand = torch.zeros(ids_all.shape, dtype=torch.long)
    kept, clf_rows, mlm_rows, start = {}, 0, 0, time.perf_counter()
    for i in progress_bar(range(ids_all.shape[0]), f"marginalise ({candidates})", progress):
        real = valid[i].nonzero()[:, 0]
        row = {k: v[i:i + 1, real] for k, v in inputs.items() if torch.is_tensor(v) and v.shape == ids_all.shape}
        local = (~special[i, real].cpu()).nonzero()[:, 0]
        if len(local) == 0:
            continue
        y = int(target[i])
        base = log_odds_from_log_probs(_chunked(log_probs_fn, row, max_batch)[0], y)
        mlm_logp = mlm_fn(row, local) if mlm_fn is not None else [None] * len(local)
        mlm_rows += len(local) if mlm_fn is not None else 0
        seed_i = example_seed(seed, row["input_ids"][0])
        cand = []
        for j, p in enumerate(local.tolist()):
            gen = torch.Generator().manual_seed((seed_i + 7919 * p) % (2 ** 63)) if candidates == "mc" else None
            cand.append(candidate_weights(mlm_logp[j] if mlm_fn is not None else torch.zeros(1), candidates,
                                          float(sigma), renormalize, int(n_samples), gen, token_id, max_candidates))
        logp = _chunked(log_probs_fn, _candidate_rows(row, local, cand), max_batch)
        clf_rows += 1 + logp.shape[0]
        offsets = torch.cumsum(torch.as_tensor([0] + [len(c[0]) for c in cand]), 0).tolist()
        for j, p in enumerate(local.tolist()):
            rows_j = logp[offsets[j]:offsets[j + 1]]
            scores[i, real[p]] = base - marginal_log_odds(rows_j, cand[j][1], y)
            n_cand[i, real[p]] = len(cand[j][0])
            if keep:
                kept[(i, int(real[p]))] = (cand[j][0], cand[j][1], rows_j[:, y])
    cost = {"classifier_rows": clf_rows, "mlm_rows": mlm_rows, "seconds": round(time.perf_counter() - start, 3)}
    out = {"scores": scores, "n_candidates": n_cand, "cost": cost}
    if keep:
        out["candidates"] = kept
    return out


def merged_extras(explanations) -> dict:
    """The `input_marginalization` extras of every batch of an `ExplanationSet` at the rows' own positions:
    n_candidates [N, S], candidates {(row, position): ...} (kept with keep_candidates) and the classifier rows."""
    n_cand, kept, rows = torch.zeros(explanations.scores.shape, dtype=torch.long), {}, 0
    for idx, extras in explanations.extras:
        n_cand[idx, :extras["n_candidates"].shape[1]] = extras["n_candidates"]
        kept.update({(int(idx[i]), pos): c for (i, pos), c in extras.get("candidates", {}).items()})
        rows += extras["cost"]["classifier_rows"]
    return {"n_candidates": n_cand, "candidates": kept, "cost": {"classifier_rows": rows}}


def estimator_errors(score, content: torch.Tensor, sigmas, sample_sizes, seeds, progress: bool = False) -> dict:
    """Error and cost of σ-truncation and Monte Carlo against the exact sum (truncation at σ = 0) on the content
    tokens [B, S]. `score(candidates, progress, **params) -> dict(scores [B, S], cost, seconds)` runs the estimator
    ("truncate" or "mc") with those `marginalize` parameters. Rows: |error| per token (MC: averaged over `seeds`),
    its mean (MC: the mean and spread of the per-seed means) and the classifier forward rows per token."""
    n_tokens = int(content.sum())
    full = score("truncate", progress, sigma=0.0, max_candidates=None)
    ref, rows = full["scores"][content], []
    for s in sigmas:
        a = score("truncate", False, sigma=s, max_candidates=None)
        err = (a["scores"][content] - ref).abs()
        rows.append({"estimator": f"truncate σ={s:g}", "kind": "truncate", "param": s, "mae": float(err.mean()),
                     "abs_errors": err.tolist(), "rows_per_token": a["cost"]["classifier_rows"] / n_tokens})
    for n in sample_sizes:
        runs = [score("mc", False, n_samples=n, seed=seed) for seed in seeds]
        errs = [(a["scores"][content] - ref).abs().numpy() for a in runs]
        per_seed = [float(e.mean()) for e in errs]
        rows.append({"estimator": f"MC n={n}", "kind": "mc", "param": n, "mae": float(np.mean(per_seed)),
                     "mae_std": float(np.std(per_seed)), "abs_errors": np.mean(errs, 0).tolist(),
                     "rows_per_token": float(np.mean([a["cost"]["classifier_rows"] / n_tokens for a in runs]))})
    return {"rows": rows, "full_rows_per_token": full["cost"]["classifier_rows"] / n_tokens, "n_tokens": n_tokens,
            "full_seconds": full.get("seconds")}


def cost_ratio(study: dict, sigma: float = 1e-4) -> dict:
    """Of an `estimator_errors` study: the classifier rows per token Monte Carlo needs to match σ-truncation's error
    (the first n at or below it), and the ratio to truncation's rows."""
    trunc = next(r for r in study["rows"] if r["kind"] == "truncate" and r["param"] == sigma)
    match = next((r for r in study["rows"] if r["kind"] == "mc" and r["mae"] <= trunc["mae"]), None)
    return {"sigma": sigma, "truncation_mae": trunc["mae"], "truncation_rows": trunc["rows_per_token"],
            "mc_n": None if match is None else match["param"],
            "mc_rows": None if match is None else match["rows_per_token"],
            "ratio": None if match is None else match["rows_per_token"] / trunc["rows_per_token"]}


def weight_of_evidence(model, inputs: dict, special: torch.Tensor, mlm=None, *, target=None, erasure: str | None = None,
                       keep: bool = False, progress: bool = False, max_batch: int = 256, **params) -> dict:
    """Scores [B, S] (float64) of class `target` (None: the predicted class) for any text classifier, with the
    target, log_probs [B, C] and seconds. A Hugging Face classifier goes through `explain_many` (the `erasure`
    explainer with token `erasure` when given, else `input_marginalization` with `params`), any other model, called
    as model(input_ids, attention_mask, token_type_ids) -> logits, through `marginalize` with `params` (erasure:
    candidates "token"); `special` [B, S] marks what that path leaves unscored. Marginalisation adds n_candidates,
    the cost and (`keep`) the candidates."""
    from transformers import PreTrainedModel

    from lab.explainers.batch import explain_many

    with torch.no_grad():
        logp = classifier_log_probs(model)(inputs)
    tgt = logp.argmax(-1) if target is None else torch.as_tensor(target).reshape(-1).expand(len(logp))
    start = time.perf_counter()
    if not isinstance(model, PreTrainedModel):
        out = marginalize(classifier_log_probs(model), inputs, tgt, special, mlm, keep=keep, progress=progress,
                          max_batch=max_batch, **params)
    elif erasure is not None:
        s = explain_many(model, inputs, "erasure", tgt, progress=progress, token=erasure, max_batch=max_batch)
        out = {"scores": s.scores.double(), "cost": {"classifier_rows": None}}
    else:
        s = explain_many(model, inputs, "input_marginalization", tgt, progress=progress, mlm=mlm,
                         keep_candidates=keep, max_batch=max_batch, **params)
        out = {"scores": s.scores.double(), **merged_extras(s)}
    out["target"], out["log_probs"], out["seconds"] = tgt, logp.detach(), time.perf_counter() - start
    return out


def adapter_log_probs(adapter):
    """log_probs_fn of a Hugging Face classifier (through its adapter)."""
    return lambda rows: adapter.forward(rows).logits.double().log_softmax(-1)


def classifier_log_probs(model):
    """log_probs_fn of a Hugging Face classifier, or of a model called as model(input_ids, attention_mask,
    token_type_ids) -> logits (the `lab.models.cnn` CNN/BiLSTM)."""
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        return adapter_log_probs(get_adapter(model))
    return lambda rows: model(rows["input_ids"], rows.get("attention_mask"), rows.get("token_type_ids")).log_softmax(-1)


class CachedMLM:
    """log p_MLM(·|x_{−i}) for (sentence, positions), memoised: the candidates of a sentence are the same for every
    target model and method, so the MLM runs once per sentence. `vocab` > 0 restricts p_MLM to its `vocab` most
    likely words, renormalised (used by the MC study to afford an exact reference)."""

    def __init__(self, model, vocab: int | None = None, max_batch: int = 64):
        self.model, self.vocab, self.max_batch, self._memo = getattr(model, "model", model), vocab, max_batch, {}

    def __call__(self, row: dict, positions) -> torch.Tensor:
        positions = torch.as_tensor(positions).reshape(-1)
        key = (tuple(row["input_ids"][0].tolist()), tuple(row.get("token_type_ids", row["input_ids"])[0].tolist()),
               tuple(positions.tolist()))
        if key not in self._memo:
            logp = masked_log_probs(self.model, row, positions, max_batch=self.max_batch)
            if self.vocab:
                top = logp.topk(int(self.vocab), dim=-1)
                restricted = torch.full_like(logp, float("-inf"))
                restricted.scatter_(1, top.indices, top.values)
                logp = restricted.log_softmax(-1)
            self._memo[key] = logp
        return self._memo[key]


def mlm_replacements(mlm, inputs: dict, special: torch.Tensor) -> torch.Tensor:
    """[B, S] replacement ids for AUC_rep's MLM deletion (Kim et al.'s original metric replaces tokens with masked-LM
    predictions): at each content position the most likely word under p_MLM(·|x_{−i}) other than x_i itself (the
    MLM's output vocabulary, specials excluded); other positions keep their id. `mlm`: (row, positions) -> [k, V]."""
    out = inputs["input_ids"].clone()
    for i in range(len(out)):
        real = inputs["attention_mask"][i].bool().nonzero()[:, 0]
        row = {k: v[i:i + 1, real] for k, v in inputs.items()}
        local = (~special[i, real]).nonzero()[:, 0]
        if len(local):
            logp = mlm(row, local).clone()
            logp[torch.arange(len(local)), row["input_ids"][0, local]] = float("-inf")
            out[i, real[local]] = logp.argmax(-1)
    return out


def sentence_attributions(lm, inputs: dict, special: torch.Tensor, mlm, **params) -> dict:
    """The generative extension (Mehta et al. Sec. 5.2): a_i = logodds p(x) − logodds p^[i](x) for a causal LM's
    sentence probability (class 1 of `sentence_log_probs_fn`), with log_p [B] = log p(x); `params` go to
    `marginalize`."""
    fn = sentence_log_probs_fn(lm)
    out = marginalize(fn, inputs, torch.ones(len(inputs["input_ids"]), dtype=torch.long), special, mlm, **params)
    with torch.no_grad():
        out["log_p"] = fn(inputs)[:, 1]
    return out


def sentence_log_probs_fn(lm):
    """log_probs_fn of a causal LM seen as a two-class model whose class 1 is the sentence: rows -> [N, 2] =
    [log(1 − p(x)), log p(x)] (the generative extension, Mehta et al. Sec. 5.2; target 1)."""

    def fn(rows: dict) -> torch.Tensor:
        with torch.no_grad():
            lp = sequence_log_prob(lm, rows["input_ids"], rows.get("attention_mask"))
        return torch.stack([log1mexp(lp), lp], dim=-1)

    return fn


@register("input_marginalization",
          "weight of evidence: log-odds drop when a token is marginalised out with a masked LM (σ-truncated, full "
          "vocabulary, Monte Carlo, or a fixed erasure token); needs mlm=",
          "Kim et al. 2020 (input marginalization), Mehta et al. reproduction Sec. 3.1", modalities=("text",))
def input_marginalization(adapter, inputs, target, mlm=None, candidates: str = "truncate",
                          sigma: float = DEFAULT_SIGMA, renormalize: bool = True, n_samples: int = 100, seed: int = 0,
                          token_id: int | None = None, max_batch: int = 512, mlm_batch: int = 64,
                          keep_candidates: bool = False, progress: bool = False, max_candidates: int | None = None):
    """a_i = logodds p(y|x) − logodds Σ_w p(y|x_{i←w}) p_MLM(w|x_{−i}); positive = token i supports y.

    mlm: a BertForMaskedLM over the classifier's vocabulary (required unless candidates="token").
    candidates: "truncate" (p_MLM > sigma; renormalised by default) | "full" | "mc" (n_samples draws, seeded per
    example and position from `seed`) | "token" (point mass on token_id: erasure through the same formula)."""
    if mlm is None and candidates != "token":
        raise ExplainInputError(MISSING_MLM)
    special = adapter.special_mask(inputs).cpu()
    out = marginalize(adapter_log_probs(adapter), inputs, target.cpu(), special, mlm, candidates, sigma,
                      renormalize, n_samples, seed, token_id, max_batch, mlm_batch, keep_candidates, progress,
                      max_candidates)
    extras = {"n_candidates": out["n_candidates"], "cost": out["cost"]}
    if keep_candidates:
        extras["candidates"] = out["candidates"]
    params = dict(candidates=candidates, sigma=float(sigma), renormalize=bool(renormalize),
                  n_samples=int(n_samples), seed=int(seed), token_id=token_id, max_batch=int(max_batch),
                  max_candidates=max_candidates)
    return {"scores": out["scores"].to(adapter.dtype).to(adapter.device), "params": params, "extras": extras}
