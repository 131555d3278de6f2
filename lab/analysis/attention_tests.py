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

Transformer (beyond the paper): α̂ is the per-head [CLS] row of the last block's attention, [B, H, T]; what is shown,
correlated and compared by JSD is its mean over heads. Permutations apply the same permutation to every head, so the
identity permutation reproduces the model exactly; adversaries are free per head (the head-mean is what must move).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from lab.metrics.agreement import Correlation, fraction_significant, kendall_tau

LN2 = math.log(2.0)
EPSILON = {"classification": 0.01, "qa": 0.05}  # Jain & Wallace Sec. 4.2.2: ε for text classification / QA
_TINY = 1e-12


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
    layers = getattr(adapter, "layers", None)
    if not layers or not hasattr(layers[-1], "attention") or not hasattr(layers[-1].attention, "self"):
        raise AttentionTestError("transformer_view supports BERT-family classifiers (BERT, MiniLM, RoBERTa) only")
    layer = layers[-1]
    att = layer.attention
    batch, seq, dim = block_input.shape
    heads, head_dim = adapter.num_heads, adapter.head_dim
    with torch.no_grad():
        values = att.self.value(block_input).view(batch, seq, heads, head_dim).transpose(1, 2)  # [B, H, T, d]
    residual = block_input[:, 0].detach()

    def decode(alpha: torch.Tensor) -> torch.Tensor:
        if alpha.dim() == 3:
            alpha = alpha[:, :, None, :].expand(-1, -1, heads, -1)
        if alpha.dim() != 4 or alpha.shape[0] != batch or alpha.shape[2] != heads or alpha.shape[3] != seq:
            raise AttentionTestError(f"decode: alpha must be [B={batch}, K, H={heads}, T={seq}] or [B, K, T], got "
                                     f"{list(alpha.shape)}")
        k = alpha.shape[1]
        context = torch.einsum("bkht,bhtd->bkhd", alpha.to(values.dtype), values).reshape(batch, k, heads * head_dim)
        a = att.output(context, residual[:, None].expand(-1, k, -1))
        out = layer.output(layer.intermediate(a), a)
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


# ---------------------------------------------------------------- distances (differentiable)
def tvd(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """TVD(p, q) = ½ Σ_i |p_i − q_i| over the last axis."""
    return 0.5 * (p - q).abs().sum(-1)


def jsd(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """JSD over the last axis (natural log, ≤ ln 2), differentiable also where entries are exactly 0 (padding)."""
    m = 0.5 * (p + q)
    log_m = m.clamp_min(_TINY).log()

    def kl(a):
        return (a * (a.clamp_min(_TINY).log() - log_m)).sum(-1)

    return (0.5 * kl(p) + 0.5 * kl(q)).clamp(0.0, LN2)


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
        dist = tvd(probs, view.probs.detach()[:, None])
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
                          steps: int = 500, lr: float = 0.01, seed: int = 0, init_noise: float = 3.0
                          ) -> AdversarialResult:
    """Eqs. 1–2: k attention distributions per instance maximising Σ_i JSD(α^(i), α̂) + 1/(k(k−1)) Σ_{i<j}
    JSD(α^(i), α^(j)) − (λ/k) Σ_i max(0, TVD(ŷ(α^(i)), ŷ(α̂)) − ε) (the hinge penalty subtracted; the paper prints
    "+"), by Adam (amsgrad, as the authors' code) on softmax logits initialised at log-uniform + `init_noise`·N(0, 1)
    (authors' code). Every instance and all k adversaries are optimised together: one decoder call per step."""
    if k < 2:
        raise AttentionTestError(f"k must be >= 2 adversaries (the objective has a pairwise term), got {k}")
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
            dist = tvd(probs, ref_probs[:, None])
            shown = alpha.mean(2) if view.heads else alpha
            to_ref = jsd(shown, ref_shown[:, None])
            cross = jsd(shown[:, :, None], shown[:, None, :])[:, pairs]  # [B, k(k-1)/2]
            f = to_ref.sum(1) + cross.sum(1) / (k * (k - 1))
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
    out[rows, cols] = tvd(probs, ref[rows].to(probs.dtype))
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
