"""Pieces shared by explainers: attention maps with their gradients, relevance traces, rollout."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lab.errors import ExplainInputError
from lab.models.adapters import Adapter
from lab.relevance.composites import Composite
from lab.relevance.propagate import RelevanceOps

GRADIENT_OF = ("logit", "probability", "log_probability")


class NonFiniteError(ArithmeticError):
    """NaN/inf met inside an explainer; the message says where (explain() adds the method name)."""


def resolve_target(target: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    """The target class per example; None means the predicted class (argmax of these logits)."""
    return logits.detach().argmax(-1) if target is None else target


def target_output(logits: torch.Tensor, target: torch.Tensor | None, of: str = "logit") -> torch.Tensor:
    """Sum over the batch of each example's target output (so one backward gives per-example gradients);
    target None: the predicted class."""
    target = resolve_target(target, logits)
    if of == "logit":
        out = logits
    elif of == "probability":
        out = logits.softmax(-1)
    elif of == "log_probability":
        out = logits.log_softmax(-1)
    else:
        raise ValueError(f"gradient_of must be one of {GRADIENT_OF}, got {of!r}")
    return out.gather(1, target[:, None]).sum()


@dataclass
class AttentionGradients:
    attentions: list[torch.Tensor]  # per block [B, H, S, S]
    gradients: list[torch.Tensor] | None  # d y_t / d A per block, or None
    hidden_states: list[torch.Tensor] | None = None  # every level: embedding output, then each block's output
    hidden_gradients: list[torch.Tensor] | None = None
    logits: torch.Tensor | None = None


def attention_gradients(adapter: Adapter, inputs, target, gradient_of="logit", gradients=True,
                        hidden=False) -> AttentionGradients:
    """Attention probabilities of every block from the model's own (eager) forward, and optionally the gradient of
    the target output with respect to them (and, with ``hidden``, to every hidden level: the embedding output, then
    each block's output; block b's input is level b)."""
    with torch.set_grad_enabled(gradients):
        # forward from input embeddings that require grad, so frozen models (requires_grad=False) work too
        embeds = adapter.embed(inputs).detach().requires_grad_(gradients)
        out = adapter.forward(inputs, embeds=embeds, attentions=True, hidden_states=hidden)
        attentions = list(out.attentions)
        states = list(out.hidden_states) if hidden else None
        grads = hidden_grads = None
        if gradients:
            wrt = attentions + (states or [])
            g = torch.autograd.grad(target_output(out.logits, target, gradient_of), wrt)
            grads = list(g[: len(attentions)])
            hidden_grads = list(g[len(attentions):]) if hidden else None
    return AttentionGradients([a.detach() for a in attentions], grads,
                              [h.detach() for h in states] if states else None, hidden_grads, out.logits.detach())


@dataclass
class RelevanceTrace:
    input_relevance: torch.Tensor  # [B, S, D] at the encoder input (embedding output)
    attention_relevance: list[torch.Tensor]  # per block [B, H, S, S]: R^(n_b) of the attention map
    block_totals: dict[str, torch.Tensor]  # relevance sum entering each block boundary, per example
    logits: torch.Tensor
    pixel_relevance: torch.Tensor | None = None
    attention_gradients: list[torch.Tensor] | None = None  # d y_t / d A^(b), when asked for


def relevance_trace(adapter: Adapter, inputs, target, composite: Composite, head_masks=None,
                    mask_recorded: bool = False, pixels: bool = False, gradients: bool = False,
                    gradient_of: str = "logit", mask_renormalize: bool = True,
                    mask_record_rule: str | None = None) -> RelevanceTrace:
    """One relevance pass: R^(0) = one-hot(target) (Chefer Eq. 7) propagated back with `composite`'s rules.

    gradients=True also takes, over the same forward graph, the gradient of the target output with respect to
    every attention map (Chefer Eq. 1) before the relevance backward: one forward, two backward passes.
    """
    ops = RelevanceOps(composite, head_masks=head_masks, mask_recorded=mask_recorded,
                       mask_renormalize=mask_renormalize, mask_record_rule=mask_record_rule,
                       with_gradients=gradients)
    with torch.enable_grad():
        if pixels:
            leaf, pixel_leaf, logits = adapter.relevance_forward(inputs, ops, return_pixels=True)
            wrt = (leaf, pixel_leaf)
        else:
            leaf, logits = adapter.relevance_forward(inputs, ops)
            wrt = (leaf,)
        grads = None
        if gradients:
            ops.mode.relevance = False
            torch.autograd.grad(target_output(logits, target, gradient_of), leaf, retain_graph=True)
            ops.mode.relevance = True
            grads = [_full_rows(ops.attention_gradients[b]) for b in range(adapter.num_layers)]
        seed = F.one_hot(resolve_target(target, logits), logits.shape[-1]).to(logits.dtype)
        rel = torch.autograd.grad(logits, wrt, grad_outputs=seed)
    attn = [_full_rows(ops.attention_relevance[b]) for b in range(adapter.num_layers)]
    for b in reversed(range(adapter.num_layers)):  # the backward pass meets the last block first
        if not torch.isfinite(attn[b]).all():
            raise NonFiniteError(f"the relevance of block {b}'s attention map (blocks counted from the input)")
    if not torch.isfinite(rel[0]).all():
        raise NonFiniteError("the input relevance")
    return RelevanceTrace(rel[0].detach(), attn, ops.block_totals, logits.detach(),
                          rel[1].detach() if pixels else None, grads)


def _full_rows(attention: torch.Tensor) -> torch.Tensor:
    """[B, H, Q, S] -> [B, H, S, S]: the relevance forward computes only the [CLS] query row (Q=1) of the last
    block, whose other rows get zero relevance and zero gradient; give them back as zeros."""
    rows, seq = attention.shape[-2:]
    if rows == seq:
        return attention
    full = attention.new_zeros(*attention.shape[:-2], seq, seq)
    full[..., :rows, :] = attention
    return full


def check_start_layer(adapter, start_layer: int) -> int:
    """The first rolled-out block as an index in 0..B-1: negative values count from the end (-1 = the last block,
    as Python counts); anything outside -B..B-1 is an `ExplainInputError` naming that range."""
    n = adapter.num_layers
    if not -n <= int(start_layer) < n:
        raise ExplainInputError(f"start_layer must be in -{n}..{n - 1} (negative counts from the end: -1 = the last "
                                f"block), got {start_layer}")
    return int(start_layer) % n


def rollout(matrices: list[torch.Tensor], start_layer: int = 0, normalize: bool = False) -> torch.Tensor:
    """Product of per-block [B, S, S] matrices from the input side up (Chefer Eq. 16 / rollout Eq. 18)."""
    mats = matrices[start_layer:]
    if not mats:
        raise ValueError(f"start_layer={start_layer} leaves no blocks (model has {len(matrices)})")
    if normalize:
        mats = [m / m.sum(-1, keepdim=True).clamp_min(1e-12) for m in mats]
    joint = mats[0]
    for m in mats[1:]:
        joint = m @ joint
    return joint


def with_identity(m: torch.Tensor) -> torch.Tensor:
    """I + M for a batch of [B, S, S] matrices (accounts for the skip connection)."""
    return m + torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)


def head_mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=1)


def cls_row(m: torch.Tensor) -> torch.Tensor:
    return m[:, 0, :]
