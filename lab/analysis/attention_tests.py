"""Jain & Wallace (2019) Sec. 4: does attention agree with feature importance, and does the output care about it?

A model is seen through an `AttentionView` of one batch: its attention α̂, the positions it may attend to, its
output ŷ, and `decode(α)`, which recomputes ŷ from *other* attention with everything else held fixed (Dec(h, α)).

    view = rnn_view(model, batch)                 # lab.models.rnn.AttentionClassifier (h fixed)
    view = transformer_view(model, inputs)        # BERT-family classifier: last block's [CLS] row, value vectors fixed
    perm = permutation_test(view, n=100)          # Alg. 2, all permutations in ONE decoder call
    adv = adversarial_attention(view, k=5, epsilon=0.01)     # Alg. 3 / Eqs. 1-2, k adversaries optimised together
    g = gradient_importance(model, batch)         # Alg. 1: |Σ_d ∂ŷ/∂e_td · e_td|, attention detached
    loo = leave_one_out_tvd(model, batch)         # Alg. 1: TVD(ŷ(x_-t), ŷ(x)), token t removed
    tau = kendall_per_instance(attn, g)           # Kendall τ-b + p-value per instance (lab.metrics.agreement)
    summary = summarise_tau(tau, groups)          # mean ± std and the fraction with p < 0.05 per class (Table 2)

A study's analysis of one model runs all of them over its test instances in chunks and returns an `Analysis`:
`analyse_rnn` (Jain & Wallace's own measures, computed here) and `analyse_transformer` (importance by `lab.explain`
methods through `explain_many`). TVD and JSD are `lab.metrics.agreement`'s, in their `differentiable` form.

Transformer (beyond the paper): α̂ is the per-head [CLS] row of the last block's attention, [B, H, T]; what is shown,
correlated and compared by JSD is its mean over heads. Permutations apply the same permutation to every head, so the
identity permutation reproduces the model exactly; adversaries are free per head (the head-mean is what must move).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from lab.metrics.agreement import LN2, Correlation, fraction_significant, jsd, kendall_tau, tvd
from lab.progress import progress as progress_bar

EPSILON = {"classification": 0.01, "qa": 0.05}  # Jain & Wallace Sec. 4.2.2: ε for text classification / QA


class AttentionTestError(ValueError):
    """Bad input to an attention test; the message says what to change."""


# ---------------------------------------------------------------- views
@dataclass
class AttentionView:
    """One batch seen through its attention.

    alpha: α̂ [B, T], or [B, H, T] per-head rows (then `shown` is their mean);
    mask: [B, T] positions that may receive attention (right-padded: valid positions form a prefix);
    probs: ŷ [B, C]; decode: α [B, K, T] (or [B, K, H, T]) -> ŷ [B, K, C] with everything else fixed;
    tokens: optional per-instance token strings (for plots).
    """

    alpha: torch.Tensor
    mask: torch.Tensor
    probs: torch.Tensor
    decode: Callable[[torch.Tensor], torch.Tensor]
    tokens: list[list[str]] | None = None

    @property
    def heads(self) -> bool:
        return self.alpha.dim() == 3

    @property
    def shown(self) -> torch.Tensor:
        """The attention one would show as the explanation: [B, T] (the head mean for a Transformer)."""
        return self.alpha.mean(1) if self.heads else self.alpha


def _check_prefix(mask: torch.Tensor) -> None:
    lengths = mask.sum(-1, keepdim=True)
    if not torch.equal(mask, torch.arange(mask.shape[-1], device=mask.device)[None] < lengths):
        raise AttentionTestError("attention tests need right-padded inputs (valid positions first in every row)")


def rnn_view(model, batch) -> AttentionView:
    """View of a `lab.models.rnn.AttentionClassifier` on a `Batch`: h (and the query) computed once and held fixed."""
    model.eval()
    with torch.no_grad():
        enc = model.encode(batch)
        alpha = model.attend(enc)
        probs = model.probabilities(model.decode(enc.h, alpha, enc.query))

    def decode(a: torch.Tensor) -> torch.Tensor:
        return model.probabilities(model.decode(enc.h, a, enc.query))

    return AttentionView(alpha, enc.mask, probs, decode)


def last_block_cls_decoder(adapter, block_input: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """decode(α) for a BERT-family classifier: the last block recomputed at [CLS] with its attention row replaced by
    α ([B, K, H, T] per head, or [B, K, T] shared by all heads), from the block's input x [B, T, D] — the value
    vectors V = x W_V and the residual x_[CLS] stay fixed. Returns ŷ [B, K, C].

    BERT block (post-LN): a = LN₁(W_O [α_h V_h]_h + x_cls); out = LN₂(FFN(a) + a); logits = head(out)."""
    if adapter.modality != "text" or adapter.readout != "first":
        raise AttentionTestError("transformer_view supports encoder classifiers that read [CLS] (BERT, MiniLM, "
                                 "RoBERTa, ...) only")
    batch, seq, dim = block_input.shape
    heads = adapter.num_heads
    with torch.no_grad():
        values, finish = adapter.attention_readout(block_input)  # [B, H, T, d]
    residual = block_input[:, 0].detach()

    def decode(alpha: torch.Tensor) -> torch.Tensor:
        if alpha.dim() == 3:
            alpha = alpha[:, :, None, :].expand(-1, -1, heads, -1)
        if alpha.dim() != 4 or alpha.shape[0] != batch or alpha.shape[2] != heads or alpha.shape[3] != seq:
            raise AttentionTestError(f"decode: alpha must be [B={batch}, K, H={heads}, T={seq}] or [B, K, T], got "
                                     f"{list(alpha.shape)}")
        k = alpha.shape[1]
        context = torch.einsum("bkht,bhtd->bkhd", alpha.to(values.dtype), values).reshape(batch, k, -1)
        out = finish(context, residual[:, None].expand(-1, k, -1))
        logits = adapter.classify(out.reshape(batch * k, 1, dim))
        return logits.view(batch, k, -1).softmax(-1)

    return decode


def transformer_view(model, inputs, tokenizer=None) -> AttentionView:
    """View of a BERT-family sequence classifier on a tokenised (right-padded) batch: α̂ = the last block's [CLS]
    attention row per head [B, H, T]; decode() replaces it with value vectors fixed (`last_block_cls_decoder`)."""
    from lab.explainers.base import model_guard
    from lab.models.adapters import get_adapter

    adapter = get_adapter(model)
    if adapter.modality != "text":
        raise AttentionTestError("transformer_view applies to text classifiers")
    prepared = adapter.prepare(inputs)
    with model_guard(model), torch.no_grad():
        out = adapter.forward(prepared, attentions=True, hidden_states=True)
    alpha = out.attentions[-1][:, :, 0, :].detach()
    decode = last_block_cls_decoder(adapter, out.hidden_states[-2].detach())
    tokens = None
    if tokenizer is not None:
        tokens = [tokenizer.convert_ids_to_tokens(r.tolist()) for r in prepared["input_ids"]]
    return AttentionView(alpha, adapter.valid_mask(prepared), out.logits.softmax(-1).detach(), decode, tokens)


def _masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)


def _expand_mask(mask: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """mask [B, T] broadcast to [B, K, (H,) T]."""
    m = mask[:, None]
    if len(shape) == 4:
        m = m[:, :, None]
    return m.expand(*shape)


# ---------------------------------------------------------------- Alg. 2: permutations
@dataclass
class PermutationResult:
    tvd: torch.Tensor  # [B, n] TVD(ŷ^p, ŷ) per permutation
    median_tvd: torch.Tensor  # [B] Δŷ^med
    max_attention: torch.Tensor  # [B] max α̂ (the shown attention)
    median_alpha: torch.Tensor  # [B, T] the shown permuted attention whose TVD is the median one
    median_probs: torch.Tensor  # [B, C] its output
    seconds: float


def permute_attention(alpha: torch.Tensor, mask: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n random permutations of each row's valid positions: [B, n, (H,) T]; per-head rows share the permutation."""
    _check_prefix(mask)
    b, t = mask.shape
    keys = torch.rand(b, n, t, generator=generator).to(mask.device)
    keys = keys.masked_fill(~mask[:, None], 2.0)  # padding sorts last, so it stays where it is
    perm = keys.argsort(-1)
    if alpha.dim() == 3:
        h = alpha.shape[1]
        return alpha[:, None].expand(b, n, h, t).gather(-1, perm[:, :, None].expand(b, n, h, t))
    return alpha[:, None].expand(b, n, t).gather(-1, perm)


def permutation_test(view: AttentionView, n: int = 100, seed: int = 0) -> PermutationResult:
    """Alg. 2: decode with n random permutations of α̂ (h fixed), in one decoder call; Δŷ^med = median TVD."""
    if n < 1:
        raise AttentionTestError(f"n must be >= 1 permutations, got {n}")
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    permuted = permute_attention(view.alpha, view.mask, n, gen)
    with torch.no_grad():
        probs = view.decode(permuted)  # [B, n, C]
        dist = tvd(probs, view.probs.detach()[:, None], differentiable=True)
    order = dist.argsort(-1)
    mid = order[:, (n - 1) // 2]  # the lower median permutation (exact median for odd n)
    rows = torch.arange(dist.shape[0])
    shown = permuted.mean(2) if view.heads else permuted
    return PermutationResult(dist, dist.median(-1).values if n % 2 else dist.quantile(0.5, dim=-1),
                             view.shown.max(-1).values, shown[rows, mid], probs[rows, mid],
                             time.perf_counter() - start)


# ---------------------------------------------------------------- Alg. 3: adversarial attention
class AmsgradAdam:
    """torch.optim.Adam(amsgrad=True) with PyTorch's defaults (β = 0.9, 0.999; eps 1e-8) for one tensor, updated in
    place — the same arithmetic without the optimizer machinery (whose first use imports torch._dynamo)."""

    def __init__(self, param: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.betas, self.eps, self.t = param, lr, betas, eps, 0
        self.m, self.v, self.v_max = (torch.zeros_like(param) for _ in range(3))

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        b1, b2 = self.betas
        self.t += 1
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        torch.maximum(self.v_max, self.v, out=self.v_max)
        denom = (self.v_max.sqrt() / math.sqrt(1 - b2 ** self.t)).add_(self.eps)
        self.param.addcdiv_(self.m, denom, value=-self.lr / (1 - b1 ** self.t))


@dataclass
class AdversarialResult:
    alphas: torch.Tensor  # [B, k, T] the final shown adversarial distributions
    jsd: torch.Tensor  # [B, k] JSD(α^(i), α̂)
    tvd: torch.Tensor  # [B, k] TVD(ŷ(α^(i)), ŷ(α̂))
    probs: torch.Tensor  # [B, k, C]
    eps_max_jsd: torch.Tensor  # [B] max_i 1[TVD_i ≤ ε] JSD_i of the final iterates (Alg. 3)
    best_alpha: torch.Tensor  # [B, T] the adversary achieving eps_max_jsd (α̂ when none is feasible)
    best_probs: torch.Tensor  # [B, C]
    any_iterate_eps_max_jsd: torch.Tensor  # [B] the same maximum over every iterate of the optimisation
    epsilon: float
    seconds: float


def adversarial_attention(view: AttentionView, k: int = 5, epsilon: float = 0.01, lam: float = 500.0,
                          cross_weight: float | None = None,
                          steps: int = 500, lr: float = 0.01, seed: int = 0, init_noise: float = 3.0
                          ) -> AdversarialResult:
    """Eqs. 1–2: k attention distributions per instance maximising Σ_i JSD(α^(i), α̂) + 1/(k(k−1)) Σ_{i<j}
    JSD(α^(i), α^(j)) − (λ/k) Σ_i max(0, TVD(ŷ(α^(i)), ŷ(α̂)) − ε) (the hinge penalty subtracted; the paper prints
    "+"), by Adam (amsgrad, as the authors' code) on softmax logits initialised at log-uniform + `init_noise`·N(0, 1)
    (authors' code). Every instance and all k adversaries are optimised together: one decoder call per step.
    `cross_weight` replaces Eq. 1's 1/(k(k−1)) on the pairwise sum: the authors' code takes the mean over all k²
    ordered pairs (`cross_jsd.sum(0).mean()`), i.e. 2/k² on Σ_{i<j}."""
    if k < 2:
        raise AttentionTestError(f"k must be >= 2 adversaries (the objective has a pairwise term), got {k}")
    divisor = k * (k - 1) if cross_weight is None else 1.0 / float(cross_weight)  # of the pairwise term
    if steps < 0 or lr <= 0 or epsilon < 0:
        raise AttentionTestError(f"need steps >= 0, lr > 0 and epsilon >= 0, got {steps}, {lr}, {epsilon}")
    _check_prefix(view.mask)
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    b, t = view.mask.shape
    shape = (b, k, view.alpha.shape[1], t) if view.heads else (b, k, t)
    mask = _expand_mask(view.mask, shape)
    lengths = view.mask.sum(-1).to(torch.float32)
    base = -lengths.log().view(b, *([1] * (len(shape) - 1)))
    theta = (base + init_noise * torch.randn(shape, generator=gen)).to(view.probs.dtype).requires_grad_(True)
    opt = AmsgradAdam(theta, lr)
    ref_probs, ref_shown = view.probs.detach(), view.shown.detach()
    best_any = torch.zeros(b, k, dtype=ref_shown.dtype)
    pairs = torch.triu(torch.ones(k, k, dtype=torch.bool), diagonal=1)
    for step in range(steps + 1):
        with torch.enable_grad():
            alpha = _masked_softmax(theta, mask)
            probs = view.decode(alpha)
            dist = tvd(probs, ref_probs[:, None], differentiable=True)
            shown = alpha.mean(2) if view.heads else alpha
            to_ref = jsd(shown, ref_shown[:, None], differentiable=True)
            cross = jsd(shown[:, :, None], shown[:, None, :], differentiable=True)[:, pairs]  # [B, k(k-1)/2]
            f = to_ref.sum(1) + cross.sum(1) / divisor
            objective = f - (lam / k) * torch.relu(dist - epsilon).sum(1)
        with torch.no_grad():
            feasible = dist <= epsilon
            best_any = torch.where(feasible, torch.maximum(best_any, to_ref.detach()), best_any)
        if step == steps:
            break
        (grad,) = torch.autograd.grad(-objective.sum(), theta)
        opt.step(grad)
    alpha, probs, dist, to_ref = shown.detach(), probs.detach(), dist.detach(), to_ref.detach()
    scored = torch.where(dist <= epsilon, to_ref, torch.zeros_like(to_ref))
    eps_max, which = scored.max(1)
    rows = torch.arange(b)
    none = ~(dist <= epsilon).any(1)
    best_alpha = torch.where(none[:, None], ref_shown, alpha[rows, which])
    best_probs = torch.where(none[:, None], ref_probs, probs[rows, which])
    return AdversarialResult(alpha, to_ref, dist, probs, eps_max, best_alpha, best_probs, best_any.max(1).values,
                             float(epsilon), time.perf_counter() - start)


# ---------------------------------------------------------------- Alg. 1: importance and correlation (RNN models)
def gradient_importance(model, batch, target: torch.Tensor | None = None) -> torch.Tensor:
    """g_t = |Σ_d ∂ŷ_c/∂e_td · e_td| with the attention detached (Jain & Wallace App. B), [B, T] (0 on padding).

    ŷ_c is the output probability of class `target` (default: the predicted class); for two classes this equals the
    paper's sigmoid output up to sign, and the absolute value makes the two identical. Which output the paper
    differentiates for more than two classes is not stated (ambiguous); we use the predicted class."""
    model.eval()
    with torch.enable_grad():
        e = model.embed(batch.ids).detach().requires_grad_(True)
        probs = model.probabilities(model(batch, embeds=e, detach_attention=True).logits)
        tgt = probs.argmax(-1) if target is None else torch.as_tensor(target).reshape(-1)
        (grad,) = torch.autograd.grad(probs.gather(1, tgt[:, None]).sum(), e)
    return ((grad * e).sum(-1).abs() * batch.mask).detach()


def leave_one_out_tvd(model, batch, batch_size: int = 128) -> torch.Tensor:
    """Δŷ_t = TVD(ŷ(x_−t), ŷ(x)) with token t removed (the sequence gets shorter), [B, T]; NaN where undefined
    (padding, and single-token inputs). All deletions of all instances go through the model in length-sorted
    batches of `batch_size` sequences."""
    from lab.models.rnn import EncodedSet, predict_proba

    model.eval()
    with torch.no_grad():
        ref = model.probabilities(model(batch).logits)
    seqs, queries, owners = [], [], []
    for i in range(len(batch)):
        n = int(batch.lengths[i])
        ids = batch.ids[i, :n].tolist()
        if n < 2:
            continue
        q = None if batch.query_ids is None else batch.query_ids[i, :int(batch.query_lengths[i])].tolist()
        for t in range(n):
            seqs.append(ids[:t] + ids[t + 1:])
            queries.append(q)
            owners.append((i, t))
    out = torch.full(batch.ids.shape, float("nan"))
    if not seqs:
        return out
    data = EncodedSet(seqs, [0] * len(seqs), None if batch.query_ids is None else queries)
    probs = torch.as_tensor(predict_proba(model, data, batch_size=batch_size))
    rows = torch.as_tensor([o[0] for o in owners])
    cols = torch.as_tensor([o[1] for o in owners])
    out[rows, cols] = tvd(probs, ref[rows].to(probs.dtype), differentiable=True)
    return out


def rows_of(scores: torch.Tensor, mask: torch.Tensor) -> list[np.ndarray]:
    """Per-instance 1-D arrays of the masked positions of a [B, T] tensor."""
    return [scores[i][mask[i]].detach().cpu().double().numpy() for i in range(scores.shape[0])]


def kendall_per_instance(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> Correlation:
    """Kendall τ-b and its two-sided p-value per instance (NaN where undefined, e.g. fewer than 2 tokens).
    Positions where either side is NaN are dropped first."""
    a2, b2 = [], []
    for x, y in zip(a, b):
        x, y = np.asarray(x, float), np.asarray(y, float)
        keep = np.isfinite(x) & np.isfinite(y)
        a2.append(x[keep])
        b2.append(y[keep])
    return kendall_tau(a2, b2)


def summarise_tau(corr: Correlation, groups: Sequence, level: float = 0.05) -> dict:
    """{group: {"mean", "std", "sig_frac", "n"}} of per-instance τ (Table 2: mean ± std per predicted class and the
    fraction with p < `level`; undefined τ are left out of mean/std and count as not significant)."""
    stat, pval = np.asarray(corr.statistic, float), np.asarray(corr.pvalue, float)
    groups = np.asarray(list(groups))
    out = {}
    for g in sorted(set(groups.tolist()), key=str):
        sel = groups == g
        vals = stat[sel]
        finite = vals[np.isfinite(vals)]
        out[g] = {"mean": float(finite.mean()) if finite.size else float("nan"),
                  "std": float(finite.std()) if finite.size else float("nan"),
                  "sig_frac": fraction_significant(pval[sel], level), "n": int(sel.sum())}
    return out


# ---------------------------------------------------------------- a study's analysis of one model
@dataclass(frozen=True)
class Protocol:
    """The analysis settings: permutations per instance; k adversaries with `lam` as `adversarial_attention` takes
    it, Adam `steps` and `lr`; instances per chunk for importance and permutations (`chunk`) and for adversaries
    (`adv_chunk`); the seed of the permutations and adversaries."""

    n_permutations: int = 100
    k: int = 5
    lam: float = 500.0
    steps: int = 500
    lr: float = 0.01
    chunk: int = 64
    adv_chunk: int = 256
    seed: int = 0
    cross_weight: float | None = None  # of Σ_{i<j} JSD(α^(i), α^(j)); None: Eq. 1's 1/(k(k-1))


@dataclass
class Analysis:
    """Per-instance results of one (dataset, encoder): the lists are aligned with `tokens`."""

    dataset: str
    encoder: str
    label_names: tuple[str, ...]
    tokens: list[list[str]]
    attention: list[np.ndarray]  # shown attention over all positions of the instance
    importance: dict[str, list[np.ndarray]]  # "gradient", "loo" (+ "chefer") over the correlated positions
    correlated: list[np.ndarray]  # bool mask of positions used for τ (all tokens for RNNs; content for BERT)
    probs: np.ndarray  # [N, C]
    labels: np.ndarray
    tau: dict[str, Correlation]  # "attn_grad", "attn_loo", "grad_loo" (+ "chefer_grad", "chefer_loo")
    perm_median_tvd: np.ndarray
    max_attention: np.ndarray
    perm_alpha: list[np.ndarray]
    perm_probs: np.ndarray
    adv_eps_max_jsd: np.ndarray  # first n_adversarial instances
    adv_any_iterate: np.ndarray
    adv_alpha: list[np.ndarray]
    adv_probs: np.ndarray
    adv_feasible: np.ndarray  # [Na] whether any adversary met the ε constraint
    epsilon: float
    queries: list[str] | None = None
    timings: dict = field(default_factory=dict)
    context_zeroed_probs: np.ndarray | None = None  # [N, C] pair tasks: ŷ with the attended context set to 0

    @property
    def adv_reachable_max(self) -> np.ndarray:
        """Per adversarial instance, the largest JSD any attention could reach from α̂ (`reachable_max_jsd`)."""
        return np.asarray([reachable_max_jsd(a) for a in self.attention[:self.adv_eps_max_jsd.size]])

    @property
    def adv_relative_jsd(self) -> np.ndarray:
        """ε-max JSD / its reachable maximum per adversarial instance (empty when the attention is not kept)."""
        top = self.adv_reachable_max
        if top.size != self.adv_eps_max_jsd.size:
            return np.zeros(0)
        return self.adv_eps_max_jsd / np.maximum(top, 1e-12)

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(-1)

    def mean_tau(self, measure: str) -> float:
        """Mean per-instance τ of `measure` ("attn_grad", ...), undefined τ left out (NaN when none is defined)."""
        vals = np.asarray(self.tau[measure].statistic, float)
        return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")

    @property
    def groups(self) -> list:
        """Table 2's row per instance: the predicted class, or "overall" for QA (bAbI)."""
        if self.dataset == "babi1":
            return ["overall"] * len(self.tokens)
        return self.predicted.tolist()

    def __len__(self) -> int:
        return len(self.tokens)


def reachable_max_jsd(alpha) -> float:
    """max over distributions q on α̂'s positions of JSD(q, α̂): JSD is convex in q, so a vertex attains it, and
    JSD(δ_j, α̂) = ln 2 − ½[(1 + a) ln(1 + a) − a ln a] with a = α̂_j decreases in a: all mass on the least-attended
    position. Equals ln 2 only when some α̂_j = 0."""
    a = float(np.min(np.asarray(alpha, float)))
    return float(LN2 - 0.5 * ((1 + a) * np.log1p(a) - (a * np.log(a) if a > 0 else 0.0)))


def context_zeroed(view: AttentionView) -> torch.Tensor:
    """ŷ [B, C] with the attended premise/story context Σ_t α_t h_t set to 0 and the query kept (pair models): the
    premise-reliance check — if ŷ hardly moves, the attention over the premise cannot matter either."""
    with torch.no_grad():
        return view.decode(torch.zeros_like(view.alpha)[:, None])[:, 0]


def chunks(rows: Sequence[int], lengths: Sequence[int], size: int) -> list[list[int]]:
    """Length-sorted chunks of `rows` (less padding)."""
    order = sorted(rows, key=lambda r: lengths[r])
    return [order[i:i + size] for i in range(0, len(order), size)]


def _adversaries(view: AttentionView, epsilon: float, protocol: Protocol) -> AdversarialResult:
    return adversarial_attention(view, k=protocol.k, epsilon=epsilon, lam=protocol.lam,
                                 cross_weight=protocol.cross_weight, steps=protocol.steps,
                                 lr=protocol.lr, seed=protocol.seed)


def _view_record(view: AttentionView, perm: PermutationResult, i: int, n: int) -> dict:
    """Instance i's attention, output and permutation results over its n positions."""
    return {"alpha": view.shown[i, :n].float().numpy(), "probs": view.probs[i].float().numpy(),
            "perm_median": float(perm.median_tvd[i]), "max_attention": float(perm.max_attention[i]),
            "perm_alpha": perm.median_alpha[i, :n].float().numpy(), "perm_probs": perm.median_probs[i].numpy()}


def _adversarial_record(adv: AdversarialResult, j: int, n: int) -> dict:
    return {"adv_jsd": float(adv.eps_max_jsd[j]), "adv_any": float(adv.any_iterate_eps_max_jsd[j]),
            "adv_alpha": adv.best_alpha[j, :n].float().numpy(), "adv_probs": adv.best_probs[j].float().numpy(),
            "adv_feasible": bool((adv.tvd[j] <= adv.epsilon).any())}


def _timed(t: dict, name: str, fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    t[name] += time.perf_counter() - start
    return out


def _rnn_chunk(model, batch, protocol: Protocol, pair: bool, t: dict) -> list[dict]:
    grad = _timed(t, "gradient", gradient_importance, model, batch)
    loo = _timed(t, "loo", leave_one_out_tvd, model, batch)
    view = rnn_view(model, batch)
    perm = permutation_test(view, protocol.n_permutations, seed=protocol.seed)
    t["permutation"] += perm.seconds
    zeroed = context_zeroed(view) if pair else None
    out = []
    for i in range(len(batch)):
        n = int(batch.lengths[i])
        out.append({**_view_record(view, perm, i, n), "gradient": grad[i, :n].numpy(), "loo": loo[i, :n].numpy(),
                    **({} if zeroed is None else {"zeroed_probs": zeroed[i].numpy()})})
    return out


def analyse_rnn(model, data, rows: Sequence[int], n_adversarial: int, epsilon: float, protocol: Protocol, *,
                vocab, dataset: str, encoder: str, label_names: Sequence[str], progress: bool = False,
                desc: str = "") -> Analysis:
    """Algorithms 1–3 on the `rows` of `data` (a `lab.models.rnn.EncodedSet`) for one `AttentionClassifier`. These
    are Jain & Wallace's own measures (gradient with the attention detached, leave-one-out TVD, τ, permutations,
    adversaries), computed here, not `lab.explain` methods. Importance, τ and permutations run in length-sorted
    chunks of `protocol.chunk` instances; adversaries for the first `n_adversarial` rows in chunks of `adv_chunk`
    (one optimisation per chunk: every instance and all k adversaries together)."""
    from lab.models.rnn import make_batch

    lengths = [len(s) for s in data.ids]
    out: dict[int, dict] = {}
    t = {"gradient": 0.0, "loo": 0.0, "permutation": 0.0, "adversarial": 0.0}
    for chunk in progress_bar(chunks(rows, lengths, protocol.chunk), desc, progress):
        out.update(zip(chunk, _rnn_chunk(model, make_batch(data, chunk), protocol, data.pair, t)))
    for chunk in progress_bar(chunks(rows[:n_adversarial], lengths, protocol.adv_chunk), f"{desc} adversary",
                              progress):
        batch = make_batch(data, chunk)
        adv = _adversaries(rnn_view(model, batch), epsilon, protocol)
        t["adversarial"] += adv.seconds
        for j, r in enumerate(chunk):
            out[r].update(_adversarial_record(adv, j, int(batch.lengths[j])))
    tokens = [vocab.tokens(data.ids[r]) for r in rows]
    queries = [" ".join(vocab.tokens(data.query_ids[r])).replace(" ##", "") for r in rows] if data.pair else None
    return assemble(dataset, encoder, label_names, tokens, [out[r] for r in rows],
                    [np.ones(len(x), bool) for x in tokens], np.asarray([data.labels[r] for r in rows]), epsilon, t,
                    queries)


TRANSFORMER_IMPORTANCE = (("gradient", "grad_x_input", {"variant": "abs_sum", "gradient_of": "probability"}),
                          ("loo", "leave_one_out", {}), ("chefer", "chefer", {}))


def analyse_transformer(model, tokenizer, texts: Sequence[str], labels: Sequence[int], protocol: Protocol, *,
                        label_names: Sequence[str], dataset: str = "sst_jw", max_length: int = 128,
                        progress: bool = False) -> Analysis:
    """The three analyses on a BERT-family classifier: importance by `lab.explain` methods through `explain_many`
    (`TRANSFORMER_IMPORTANCE`: |grad × input| of the predicted probability, leave-one-out, Chefer's relevance), τ on
    content tokens; permutations and adversaries of the last block's [CLS] row (`transformer_view`). Sentences in
    chunks of min(`chunk`, 32), shortest (in characters) first."""
    from lab.explainers.batch import explain_many, trim_rows

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    size = min(protocol.chunk, 32)
    inputs = dict(tokenizer([texts[i] for i in order], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt"))
    sets = {name: explain_many(model, inputs, method, batch_size=size, sort=False, progress=progress,
                               desc=f"Transformer {name}", **params) for name, method, params in TRANSFORMER_IMPORTANCE}
    t = {**{name: s.total_seconds for name, s in sets.items()}, "permutation": 0.0, "adversarial": 0.0}
    recs: list[dict] = []
    for start in progress_bar(range(0, len(order), size), "Transformer attention", progress):
        idx = list(range(start, min(start + size, len(order))))
        rows = trim_rows(inputs, idx)
        view = transformer_view(model, rows, tokenizer)
        perm = permutation_test(view, protocol.n_permutations, seed=protocol.seed)
        adv = _adversaries(view, EPSILON["classification"], protocol)
        t["permutation"], t["adversarial"] = t["permutation"] + perm.seconds, t["adversarial"] + adv.seconds
        for i, row in enumerate(idx):
            n = int(rows["attention_mask"][i].sum())
            recs.append({**_view_record(view, perm, i, n), **_adversarial_record(adv, i, n),
                         "tokens": view.tokens[i][:n], "content": (~sets["chefer"].special[row, :n]).numpy(),
                         **{k: s.scores[row, :n].numpy() for k, s in sets.items()}})
    ordered = [recs[pos] for pos in np.argsort(order)]
    return assemble(dataset, "transformer", label_names, [r.pop("tokens") for r in ordered], ordered,
                    [r.pop("content") for r in ordered], labels, EPSILON["classification"], t,
                    extra={"chefer": [r["chefer"] for r in ordered]})


def assemble(dataset, encoder, label_names, tokens, recs, correlated, labels, epsilon, timings, queries=None,
             extra: Mapping[str, list] | None = None) -> Analysis:
    """Analysis from per-instance records (in instance order); computes the τ's on the correlated positions."""
    attention = [r["alpha"] for r in recs]
    importance = {"gradient": [r["gradient"] for r in recs], "loo": [r["loo"] for r in recs], **(extra or {})}
    pick = lambda xs: [np.asarray(x)[m] for x, m in zip(xs, correlated)]  # noqa: E731
    attn = pick(attention)
    tau = {"attn_grad": kendall_per_instance(attn, pick(importance["gradient"])),
           "attn_loo": kendall_per_instance(attn, pick(importance["loo"])),
           "grad_loo": kendall_per_instance(pick(importance["gradient"]), pick(importance["loo"]))}
    for name in (extra or {}):
        tau[f"{name}_grad"] = kendall_per_instance(pick(importance[name]), pick(importance["gradient"]))
        tau[f"{name}_loo"] = kendall_per_instance(pick(importance[name]), pick(importance["loo"]))
    adv = [r for r in recs if "adv_jsd" in r]
    n = max(len(recs), 1)
    timings = {**{f"{k}_s_per_instance": v / n for k, v in timings.items() if k != "adversarial"},
               "adversarial_s_per_instance": timings.get("adversarial", 0.0) / max(len(adv), 1),
               "n": len(recs), "n_adversarial": len(adv)}
    stack = lambda key: np.asarray([r[key] for r in adv])  # noqa: E731
    return Analysis(
        dataset=dataset, encoder=encoder, label_names=tuple(label_names), tokens=tokens, attention=attention,
        importance=importance, correlated=correlated, probs=np.stack([r["probs"] for r in recs]),
        labels=np.asarray(labels), tau=tau, perm_median_tvd=np.asarray([r["perm_median"] for r in recs]),
        max_attention=np.asarray([r["max_attention"] for r in recs]), perm_alpha=[r["perm_alpha"] for r in recs],
        perm_probs=np.stack([r["perm_probs"] for r in recs]), adv_eps_max_jsd=stack("adv_jsd"),
        adv_any_iterate=stack("adv_any"), adv_alpha=[r["adv_alpha"] for r in adv],
        adv_probs=np.stack([r["adv_probs"] for r in adv]) if adv else np.zeros((0, len(label_names))),
        adv_feasible=np.asarray([r["adv_feasible"] for r in adv], bool), epsilon=epsilon, queries=queries,
        timings=timings, context_zeroed_probs=np.stack([r["zeroed_probs"] for r in recs])
        if recs and "zeroed_probs" in recs[0] else None)
