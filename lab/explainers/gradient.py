"""Gradient-based explainers: input gradients (saliency, gradient × input, integrated gradients) and attention
gradients (attention GradCAM, CAM, AttCAT, GAE).

Every method takes `gradient_of` ("logit" | "probability" | "log_probability"): the output whose gradient is used
(`common.target_output`). Input-gradient methods attribute to the word embeddings e_t (text; token scores [B, S]) or
to the pixels (ViT; pixel scores [B, H, W], unit="pixel").
"""
from __future__ import annotations

import contextlib

import torch

from lab.explainers.base import ANY_READOUT, register
from lab.explainers.common import (GRADIENT_OF, attention_gradients, check_start_layer, cls_row, head_mean, rollout,
                                   target_output, with_identity)
from lab.errors import ExplainInputError

GXI_VARIANTS = ("l2", "signed_sum", "abs_sum")
IG_BASELINES = ("pad", "zero")
CLAMPS = ("before_mean", "after_mean")
HEAD_REDUCE = ("mean", "sum")
GRADCAM_WEIGHTS = ("cls_row", "matrix")


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ExplainInputError(f"{name} must be one of {allowed}, got {value!r}")


@contextlib.contextmanager
def frozen_parameters(model):
    """No weight gradients while differentiating to the input (faster backward); restores requires_grad."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def input_gradient(adapter, inputs, target, gradient_of: str = "logit") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, ∂y_t/∂x, logits) for the adapter's input embedding x (word embeddings [B, S, D] or pixels [B, C, H, W])."""
    _choice("gradient_of", gradient_of, GRADIENT_OF)
    with frozen_parameters(adapter.model), torch.enable_grad():
        x = adapter.embed(inputs).detach().clone().requires_grad_(True)
        logits = adapter.forward(inputs, embeds=x).logits
        (grad,) = torch.autograd.grad(target_output(logits, target, gradient_of), x)
    return x.detach(), grad, logits.detach()


def _reduce_dims(t: torch.Tensor, adapter, how: str) -> tuple[torch.Tensor, str]:
    """Per-token (text: over embedding dims) or per-pixel (vision: over channels) reduction; returns (scores, unit)."""
    dim, unit = (1, "pixel") if adapter.modality == "vision" else (-1, "token")
    if how == "l2":
        return t.norm(dim=dim), unit
    if how == "signed_sum":
        return t.sum(dim=dim), unit
    if how == "abs_sum":
        return t.sum(dim=dim).abs(), unit
    raise ExplainInputError(f"reduction must be one of {GXI_VARIANTS}, got {how!r}")


SALIENCY_NORMS = ("l2", "squared_l2")


@register("saliency", "gradient sensitivity: L2 norm (or its square) over embedding dims (pixels: over channels) of "
          "d y_t / d e_t", "Wu & Ong 2021 Eq. 1 (GS, Li et al. 2016) with footnote 1's L2 aggregation; squared_l2: "
          "their code (frankaging/BERT-LRP)", own_forward=True, readouts=ANY_READOUT)
def saliency(adapter, inputs, target, gradient_of: str = "logit", norm: str = "l2"):
    """norm "l2": ||g_t||; "squared_l2": ||g_t||^2 (Wu & Ong's code, with gradient_of="logit"; their gradient is
    taken at the embedding-layer output, ours at the word embeddings e_t)."""
    _choice("norm", norm, SALIENCY_NORMS)
    _, grad, logits = input_gradient(adapter, inputs, target, gradient_of)
    scores, unit = _reduce_dims(grad, adapter, "l2")
    if norm == "squared_l2":
        scores = scores.square()
    return {"scores": scores, "unit": unit, "params": {"gradient_of": gradient_of, "norm": norm}, "logits": logits}


@register("grad_x_input", "gradient x input e_t ⊙ d y_t/d e_t, reduced per token: l2 | signed_sum | abs_sum",
          "Wu & Ong 2021 Eq. 2 (GI, l2); Jain & Wallace 2019 g_t (abs_sum); AttCAT-style signed sum",
          own_forward=True, readouts=ANY_READOUT)
def grad_x_input(adapter, inputs, target, variant: str = "l2", gradient_of: str = "logit"):
    """variant "l2": ||e_t ⊙ g_t||_2 (Wu & Ong); "signed_sum": Σ_d e_td g_td; "abs_sum": |Σ_d e_td g_td| (Jain &
    Wallace's g_t — their RNN models also detach the attention, which has no counterpart here)."""
    _choice("variant", variant, GXI_VARIANTS)
    x, grad, logits = input_gradient(adapter, inputs, target, gradient_of)
    scores, unit = _reduce_dims(x * grad, adapter, variant)
    return {"scores": scores, "unit": unit, "params": {"variant": variant, "gradient_of": gradient_of},
            "logits": logits}


def _output_fn(gradient_of: str):
    if gradient_of == "logit":
        return lambda logits: logits
    if gradient_of == "probability":
        return lambda logits: logits.softmax(-1)
    return lambda logits: logits.log_softmax(-1)


def ig_baseline(adapter, inputs, baseline: str, keep_special: bool) -> torch.Tensor:
    """The IG reference input: [PAD] embeddings (text) or zeros; keep_special keeps [CLS]/[SEP] as they are."""
    x = adapter.embed(inputs).detach()
    if baseline == "zero":
        base = torch.zeros_like(x)
    elif adapter.modality == "vision":
        raise ExplainInputError("baseline='pad' applies to text; use baseline='zero' for images")
    else:
        base = adapter.baseline_embed(inputs).detach()
    if keep_special and adapter.modality == "text":
        keep = (adapter.special_mask(inputs) & adapter.valid_mask(inputs))[..., None]
        base = torch.where(keep, x, base)
    return base


@register("integrated_gradients",
          "integrated gradients from a [PAD]/zero baseline (captum); token score = sum over dims",
          "Sundararajan et al. 2017 (captum IntegratedGradients); Chefer et al. 2021 Sec. 2 (discussed)",
          readouts=ANY_READOUT)
def integrated_gradients(adapter, inputs, target, steps: int = 50, internal_batch_size: int | None = None,
                         baseline: str | None = None, keep_special: bool = False, method: str = "gausslegendre",
                         gradient_of: str = "logit"):
    """IG_t = Σ_d (e_td − b_td) ∫ ∂y_t/∂e_td (b + α(e − b)) dα, by captum with `steps` points of `method`.

    baseline None → "pad" for text (every token's embedding replaced by [PAD]'s), "zero" for images. `delta` is
    captum's convergence delta Σ IG − (y(e) − y(b)) per example.
    """
    from captum.attr import IntegratedGradients

    _choice("gradient_of", gradient_of, GRADIENT_OF)
    baseline = baseline or ("zero" if adapter.modality == "vision" else "pad")
    _choice("baseline", baseline, IG_BASELINES)
    if int(steps) < 1:
        raise ExplainInputError(f"steps must be >= 1, got {steps}")
    output = _output_fn(gradient_of)
    extra_keys = [k for k in inputs if k not in ("input_ids", "pixel_values")]

    def forward(embeds, *extra):
        batch = dict(zip(extra_keys, extra))
        return output(adapter.forward(batch, embeds=embeds).logits)

    x = adapter.embed(inputs).detach()
    base = ig_baseline(adapter, inputs, baseline, keep_special)
    with frozen_parameters(adapter.model), torch.enable_grad():
        attributions, delta = IntegratedGradients(forward).attribute(
            x, baselines=base, target=target, additional_forward_args=tuple(inputs[k] for k in extra_keys) or None,
            n_steps=int(steps), method=method, internal_batch_size=internal_batch_size, return_convergence_delta=True)
    scores, unit = _reduce_dims(attributions.detach(), adapter, "signed_sum")
    params = dict(steps=int(steps), internal_batch_size=internal_batch_size, baseline=baseline,
                  keep_special=keep_special, method=method, gradient_of=gradient_of)
    return {"scores": scores, "unit": unit, "delta": delta.detach(), "params": params}


# ---- attention-gradient methods --------------------------------------------------------------------------


def _mean_over(x: torch.Tensor, mask: torch.Tensor, dims) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum(dims) / mask.sum(dims).clamp_min(1.0)


@register("attn_gradcam",
          "GradCAM on the last attention map: heads as channels, per-head mean gradient of the [CLS] row as weight, "
          "ReLU(Σ_h w_h A_h[CLS])", "Chefer et al. 2021 Supplement B (GradCAM baseline, Selvaraju 2017)",
          own_forward=True)
def attn_gradcam(adapter, inputs, target, head_reduce: str = "mean", weight_from: str = "cls_row",
                 gradient_of: str = "logit"):
    """weight_from="cls_row": w_h = mean of ∂y/∂A_h over the [CLS] row's tokens except [CLS] (Chefer's ViT code);
    "matrix": mean over the whole (non-padding) map (Chefer's BERT code). head_reduce "mean" (both codes) or "sum"
    (the GradCAM formula); ReLU after the head reduction."""
    _choice("head_reduce", head_reduce, HEAD_REDUCE)
    _choice("gradient_of", gradient_of, GRADIENT_OF)
    _choice("weight_from", weight_from, GRADCAM_WEIGHTS)
    ag = attention_gradients(adapter, inputs, target, gradient_of=gradient_of)
    att, grad = ag.attentions[-1], ag.gradients[-1]  # [B, H, S, S]
    valid = adapter.valid_mask(inputs)
    if weight_from == "cls_row":
        cols = valid.clone()
        cols[:, 0] = False
        weights = _mean_over(grad[:, :, 0, :], cols[:, None, :], -1)  # [B, H]
    else:
        pair = (valid[:, :, None] & valid[:, None, :])[:, None]
        weights = _mean_over(grad, pair, (-1, -2))
    cam = weights[..., None] * att[:, :, 0, :]  # [B, H, S]
    cam = cam.mean(1) if head_reduce == "mean" else cam.sum(1)
    params = dict(head_reduce=head_reduce, weight_from=weight_from, gradient_of=gradient_of)
    return {"scores": cam.clamp(min=0), "params": params, "logits": ag.logits}


@register("cam", "final-layer gradient: d y_t / d A of the last block's [CLS] row, head mean, positive part [choice]",
          "Mask-LRP (Song et al.) Sec. 5.2 baseline 'CAM' (Zhou et al. 2016); formula not in the text, see docstring",
          own_forward=True)
def cam(adapter, inputs, target, clamp: str = "after_mean", gradient_of: str = "logit"):
    """Mask-LRP only says CAM uses "the final layer gradient". Chosen reading (REPRODUCTION_SPEC X.1 item 6): the
    gradient of y_t with respect to the last block's attention probabilities, [CLS] row, mean over heads, positive
    part (clamp="after_mean"; "before_mean" clamps each head first)."""
    _choice("clamp", clamp, CLAMPS)
    _choice("gradient_of", gradient_of, GRADIENT_OF)
    ag = attention_gradients(adapter, inputs, target, gradient_of=gradient_of)
    grad = ag.gradients[-1][:, :, 0, :]
    scores = grad.mean(1).clamp(min=0) if clamp == "after_mean" else grad.clamp(min=0).mean(1)
    return {"scores": scores, "params": {"clamp": clamp, "gradient_of": gradient_of}, "logits": ag.logits}


@register("attcat",
          "AttCAT: Σ_blocks [Σ_d (d y_t/d h_b ⊙ h_b)] x attention to the token (h_b: input of block b)",
          "Qiang et al. 2022 (AttCAT), as a Mask-LRP baseline", own_forward=True)
def attcat(adapter, inputs, target, gradient_of: str = "logit"):
    """h_b is the input of block b (``hidden_states[b]``, the embedding output for b = 0), as in the Mask-LRP authors'
    code; the last block's output would carry a gradient at [CLS] only. The attention weight of token j in block b
    is A^(b) averaged over heads and over the (non-padding) query rows, i.e. the attention token j receives. Scores
    are signed."""
    _choice("gradient_of", gradient_of, GRADIENT_OF)
    ag = attention_gradients(adapter, inputs, target, gradient_of=gradient_of, hidden=True)
    rows = adapter.valid_mask(inputs)[:, None, :, None]  # query rows i that are real tokens
    scores = 0.0
    for att, h, g in zip(ag.attentions, ag.hidden_states[:-1], ag.hidden_gradients[:-1]):
        cat = (g * h).sum(-1)  # [B, S]: class activation token (gradient × hidden state)
        received = _mean_over(head_mean(att)[:, None], rows, -2)[:, 0]  # [B, S]
        scores = scores + cat * received
    return {"scores": scores, "params": {"gradient_of": gradient_of}, "logits": ag.logits}


@register("gae", "generic attention explainability: rollout of I + E_h (∇A ⊙ A)+ over blocks, [CLS] row",
          "Chefer, Gur & Wolf 2021b (Generic Attention-model Explainability), self-attention update R += Ā R",
          own_forward=True)
def gae(adapter, inputs, target, clamp: str = "before_mean", start_layer: int = 0, rollout_normalize: bool = False,
        gradient_of: str = "logit"):
    """Ā^(b) = I + E_h[(∇A^(b) ⊙ A^(b))+]; R ← R + Ā R, i.e. the product of (I + Ā) from the input side, [CLS] row.

    clamp="before_mean" is the authors' code, "after_mean" the other reading of E_h(·)+."""
    _choice("clamp", clamp, CLAMPS)
    _choice("gradient_of", gradient_of, GRADIENT_OF)
    start_layer = check_start_layer(adapter, start_layer)
    ag = attention_gradients(adapter, inputs, target, gradient_of=gradient_of)
    maps = []
    for att, grad in zip(ag.attentions, ag.gradients):
        weighted = grad * att
        maps.append(head_mean(weighted.clamp(min=0)) if clamp == "before_mean" else head_mean(weighted).clamp(min=0))
    joint = rollout([with_identity(m) for m in maps], start_layer=int(start_layer), normalize=bool(rollout_normalize))
    params = dict(clamp=clamp, start_layer=int(start_layer), rollout_normalize=bool(rollout_normalize),
                  gradient_of=gradient_of)
    return {"scores": cls_row(joint), "params": params, "logits": ag.logits}
