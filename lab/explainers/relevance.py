"""LRP-family explainers: full LRP, LRP-alpha-beta, Wu & Ong's readings, partial LRP, Chefer et al. 2021, Mask-LRP,
AttnLRP, CP-LRP.

They differ only in the composite (lab.relevance.composites) and in how the recorded relevances are read out.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lab.errors import ExplainInputError
from lab.models.adapters import BertAdapter, ViTAdapter
from lab.relevance.composites import ALPHA_BETA, ATTNLRP, CHEFER, CP_LRP, LRP_EQ4, WU_ONG_PAPER, Composite
from lab.relevance.rules import per_example_sum, rule_wu_ong_code

from .base import ANY_READOUT, register
from .common import check_start_layer, cls_row, head_mean, relevance_trace, resolve_target, rollout, with_identity
from .gradient import frozen_parameters

CLAMPS = ("before_mean", "after_mean")
ABLATIONS = (None, "no_gradient", "last_block", "second_block")
# reading= of chefer / partial_lrp / lrp: "text" (default) applies the rules as Chefer et al. 2021 print them,
# "code" as their code computes them (hila-chefer/Transformer-Explainability; tests/test_reference_chefer.py
# matches it to 1e-3):
#   method       | text                                      | code
#   chefer       | sum|R| normalisation, A·V/Q·K^T           | |sum R|, A·V/Q·K^T halved, rollout rows normalised
#                | normalised, rollout rows as they are      | (text models; their ViT generator does not)
#   partial_lrp  | Eq. 6 linear rule, normalised adds/matmul | Eq. 4 linear rule, z-rule adds, A·V/Q·K^T halved
#   lrp          | Eq. 4, z-rule adds, naive A·V/Q·K^T       | A·V/Q·K^T halved; z^B at ViT pixels (image min/max)
# Rule parameters (absolute, matmul, rollout_normalize) left at None take the reading's value; given, they win.
READINGS = {"text": dict(absolute="sum_abs", matmul="normalized", rollout_normalize=False),
            "code": dict(absolute="abs_sum", matmul="halve", rollout_normalize=True)}


def _is_code(reading: str) -> bool:
    if reading not in READINGS:
        raise ExplainInputError(f"reading must be one of {tuple(READINGS)}, got {reading!r}")
    return reading == "code"


def _read(reading: str, **given) -> dict:
    """The rule parameters of `reading`, overridden by those `given` (not None)."""
    _is_code(reading)
    return {k: READINGS[reading][k] if v is None else v for k, v in given.items()}


def _conservation_delta(trace) -> torch.Tensor:
    """Sum of input relevance minus the initial relevance (1 for the one-hot start, Chefer Eq. 7)."""
    return trace.input_relevance.reshape(trace.input_relevance.shape[0], -1).sum(1) - 1.0


def _token_scores(relevance: torch.Tensor, reduce: str) -> torch.Tensor:
    if reduce == "sum":
        return relevance.sum(-1)
    if reduce == "abs_sum":
        return relevance.abs().sum(-1)
    raise ExplainInputError(f"score must be 'sum' or 'abs_sum', got {reduce!r}")


def _input_scores(adapter, inputs, target, composite, reduce, pixels):
    vision_pixels = pixels and isinstance(adapter, ViTAdapter)
    trace = relevance_trace(adapter, inputs, target, composite, pixels=vision_pixels)
    if vision_pixels:  # relevance at the pixels, summed over channels (Chefer's LRP baseline)
        rel = trace.pixel_relevance
        scores = rel.sum(1) if reduce == "sum" else rel.abs().sum(1)
        delta = per_example_sum(rel).reshape(-1) - 1.0
        return scores, delta, "pixel", trace.logits
    return _token_scores(trace.input_relevance, reduce), _conservation_delta(trace), None, trace.logits


@register("lrp", "full LRP with the standard rule (Eq. 4) propagated to the input; token score = sum over dims",
          "Bach et al. 2015; Chefer et al. 2021 Eq. 4",
          own_forward=True, readouts=ANY_READOUT)
def lrp(adapter, inputs, target, linear: str = "eq4", score: str = "sum", pixels: bool = True, epsilon: float = 1e-6,
        reading: str = "text"):
    """reading="text": naive A·V and Q·K^T (each operand gets all of R, Lemma 1); "code": the authors' LRP
    baseline (READINGS)."""
    composite = LRP_EQ4.with_(linear=linear, epsilon=epsilon)
    if _is_code(reading):
        composite = composite.with_(matmul="halve", first_linear="zb")
    scores, delta, unit, logits = _input_scores(adapter, inputs, target, composite, score, pixels)
    out = {"scores": scores, "delta": delta, "logits": logits,
           "params": dict(linear=linear, score=score, pixels=pixels, epsilon=epsilon, reading=reading)}
    if unit:
        out["unit"] = unit
    return out


@register("lrp_alpha_beta", "LRP-alpha-beta to the input; token score = sum_d |R| (Wu & Ong)",
          "Bach et al. 2015; Wu & Ong 2021 Sec. 3",
          own_forward=True, readouts=ANY_READOUT)
def lrp_alpha_beta(adapter, inputs, target, alpha: float = 1.0, beta: float = 0.0, score: str = "abs_sum",
                   pixels: bool = True, add: str = "z", matmul: str = "naive"):
    """Linear layers: alpha-beta. Residual adds and matrix products: add="z" / matmul="naive" split relevance by
    contribution (Eq. 8; Wu & Ong do not say more), which lets the total drift (matmul doubles it, Lemma 1);
    add="normalized" / matmul="normalized" (or "halve") apply Chefer Sec. 3.2 so that relevance is conserved."""
    if abs(alpha - beta - 1.0) > 1e-9:
        raise ExplainInputError(f"LRP-alpha-beta needs alpha - beta = 1, got alpha={alpha}, beta={beta}")
    if add not in ("z", "normalized"):
        raise ExplainInputError(f"add must be 'z' or 'normalized', got {add!r}")
    if matmul not in ("naive", "halve", "normalized"):
        raise ExplainInputError(f"matmul must be 'naive', 'halve' or 'normalized', got {matmul!r}")
    composite = ALPHA_BETA.with_(alpha=alpha, beta=beta, add=add, matmul=matmul)
    scores, delta, unit, logits = _input_scores(adapter, inputs, target, composite, score, pixels)
    out = {"scores": scores, "delta": delta, "logits": logits,
           "params": dict(alpha=alpha, beta=beta, score=score, pixels=pixels, add=add, matmul=matmul)}
    if unit:
        out["unit"] = unit
    return out


# The LRP readings of Wu & Ong 2021 (notebook 04), one place: reading -> default start R^(0).
#   "code":  the authors' code (frankaging/BERT-LRP `backward_lrp`, see `_wu_ong_code`); R^(0) = logit, as in their
#            notebook; their alpha-beta rule (alpha = beta = 0.5, `rule_wu_ong_code`) on the classifier and pooler.
#   "paper": the text (Sec. 3, Eqs. 3-8, "obeys conservation"): alpha = 1, beta = 0 with normalised add and matmul
#            (`WU_ONG_PAPER`); R^(0) = f_c(x), the class probability.
#   "naive": the workbook's earlier reading (= `lrp_alpha_beta` defaults): add/matmul split by contributions, so the
#            total drifts (the matmul rule doubles it per block); R^(0) = the class probability.
WU_ONG_READINGS = {"code": "logit", "paper": "probability", "naive": "probability"}
STARTS = ("logit", "probability", "one")


def _start_value(logits, target, start):
    tgt = resolve_target(target, logits)
    value = {"logit": logits, "probability": logits.softmax(-1), "one": torch.ones_like(logits)}[start]
    return tgt, value.detach().gather(1, tgt[:, None]).reshape(-1)


def _head_modules(adapter):
    """(dense, classifier) projections of a tanh head: BERT's pooler and classifier, or RoBERTa's head."""
    steps = adapter.head_steps
    if len(steps) != 2 or steps[0][1] is not torch.tanh:
        raise ExplainInputError(f"lrp_wu_ong reading='code' needs a BERT pooler or a RoBERTa head, got "
                                f"{type(adapter.model).__name__}")
    return steps[0][0], steps[1][0]


def _wu_ong_code(adapter, inputs, target, start):
    """The authors' `backward_lrp`: their rule on the classifier and the pooler dense (tanh passed), giving R at the
    [CLS] state; each block then hands on `autograd.grad(block output, block input, R)` (their "residual", which
    is the whole block's gradient) plus the LRP of its main path. That path starts from the LayerNorm gradient,
    which sums to 0 per token, so their rescaling shrinks it to ~1e-7 of the total; it is left out here (the
    fixture test bounds the difference). So R_input = J^T R_[CLS], J the encoder's Jacobian at the embedding output."""
    x = adapter.embed(inputs).detach().requires_grad_(True)
    with torch.enable_grad():
        out = adapter.forward(inputs, embeds=x, hidden_states=True)
        emb, cls = out.hidden_states[0], out.hidden_states[-1][:, 0]
        tgt, r0 = _start_value(out.logits, target, start)
        dense, classifier = _head_modules(adapter)
        pooled = torch.tanh(F.linear(cls, *dense))
        seed = F.one_hot(tgt, out.logits.shape[-1]).to(pooled.dtype) * r0[:, None]
        r_pooled = rule_wu_ong_code(pooled.detach(), classifier.weight, seed, bias=classifier.bias)
        r_cls = rule_wu_ong_code(cls.detach(), dense.weight, r_pooled, bias=dense.bias)
        (rel,) = torch.autograd.grad(cls, emb, grad_outputs=r_cls.detach())
    return rel.detach(), out.logits.detach(), r0


def _composite_reading(adapter, inputs, target, composite, start):
    trace = relevance_trace(adapter, inputs, target, composite)
    _, r0 = _start_value(trace.logits, target, start)
    return trace.input_relevance * r0[:, None, None], trace.logits, r0


@register("lrp_wu_ong", "Wu & Ong's LRP readings (code | paper | naive) from R^(0) = f_c(x); token score = sum_d |R|",
          "Wu & Ong 2021 Sec. 3 Eqs. 3-8; frankaging/BERT-LRP backward_lrp", modalities=("text",), own_forward=True,
          model_classes=("BertForSequenceClassification", "RobertaForSequenceClassification",
                         "XLMRobertaForSequenceClassification"))
def lrp_wu_ong(adapter, inputs, target, reading: str = "code", start: str | None = None):
    """reading: a key of WU_ONG_READINGS (documented there); start: "logit" | "probability" | "one" (None: the
    reading's default). delta = sum R_input - R^(0) per example (0 = conserved)."""
    if reading not in WU_ONG_READINGS:
        raise ExplainInputError(f"reading must be one of {tuple(WU_ONG_READINGS)}, got {reading!r}")
    start = WU_ONG_READINGS[reading] if start is None else start
    if start not in STARTS:
        raise ExplainInputError(f"start must be one of {STARTS}, got {start!r}")
    if not isinstance(adapter, BertAdapter):
        raise ExplainInputError(f"lrp_wu_ong explains BERT-family classifiers, got {type(adapter.model).__name__}")
    if reading == "code":
        with frozen_parameters(adapter.model):
            rel, logits, r0 = _wu_ong_code(adapter, inputs, target, start)
    else:
        rel, logits, r0 = _composite_reading(adapter, inputs, target, WU_ONG_PAPER if reading == "paper" else
                                             ALPHA_BETA, start)
    return {"scores": rel.abs().sum(-1), "delta": per_example_sum(rel).reshape(-1) - r0, "logits": logits,
            "params": dict(reading=reading, start=start)}


@register("partial_lrp", "relevance of the last block's attention map (Eq. 6 rules), positive part, head mean, [CLS] row",
          "Voita et al. 2019; Chefer et al. 2021 Sec. 4", own_forward=True)
def partial_lrp(adapter, inputs, target, absolute: str | None = None, matmul: str | None = None,
                reading: str = "text"):
    """reading="text": Chefer's composite; "code": the authors' "orig LRP" baseline (READINGS)."""
    rules = _read(reading, absolute=absolute, matmul=matmul)
    composite = (LRP_EQ4 if _is_code(reading) else CHEFER).with_(**rules)
    trace = relevance_trace(adapter, inputs, target, composite)
    scores = cls_row(head_mean(trace.attention_relevance[-1].clamp(min=0)))
    return {"scores": scores, "delta": _conservation_delta(trace), "logits": trace.logits,
            "params": dict(rules, reading=reading)}


def _weighted_maps(relevances, gradients, clamp):
    """Chefer Eq. 15 without the identity: E_h(grad ⊙ R)+ per block (gradients=None: the no-gradient ablation)."""
    maps = []
    for b, rel in enumerate(relevances):
        weighted = rel if gradients is None else gradients[b] * rel
        if clamp == "before_mean":
            maps.append(head_mean(weighted.clamp(min=0)))
        elif clamp == "after_mean":
            maps.append(head_mean(weighted).clamp(min=0))
        else:
            raise ExplainInputError(f"clamp must be one of {CLAMPS}, got {clamp!r}")
    return maps


def _chefer_scores(adapter, inputs, target, composite, start_layer, clamp, rollout_normalize, gradient_of, ablation,
                   head_masks=None, mask_recorded=False, mask_renormalize=True, mask_record_rule=None):
    if ablation not in ABLATIONS:
        raise ExplainInputError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
    start_layer = check_start_layer(adapter, start_layer)
    trace = relevance_trace(adapter, inputs, target, composite, head_masks=head_masks, mask_recorded=mask_recorded,
                            gradients=ablation != "no_gradient", gradient_of=gradient_of,
                            mask_renormalize=mask_renormalize, mask_record_rule=mask_record_rule)
    grads = trace.attention_gradients
    maps = _weighted_maps(trace.attention_relevance, grads, clamp)
    if ablation == "last_block":  # Table 3: grad-A(1) R(n_1) of the block nearest the output only
        return cls_row(maps[-1]), trace
    if ablation == "second_block":  # Table 3: grad-A(B-1) R(n_{B-1}), the second block from the input
        return cls_row(maps[1 if len(maps) > 1 else 0]), trace
    return cls_row(rollout([with_identity(m) for m in maps], start_layer, rollout_normalize)), trace


@register("chefer", "Chefer et al.: Eq. 6 LRP + add/matmul normalisation, rollout of I + E_h(grad A ⊙ R_A)+, [CLS] row",
          "Chefer, Gur & Wolf 2021 Eqs. 6, 13-16", own_forward=True)
def chefer(adapter, inputs, target, start_layer: int = 0, clamp: str = "before_mean",
           rollout_normalize: bool | None = None, absolute: str | None = None, matmul: str | None = None,
           gradient_of: str = "logit", ablation=None, reading: str = "text"):
    """reading="text": the rules as the paper prints them; "code": as the authors' code computes them (READINGS)."""
    if reading == "code" and rollout_normalize is None:
        rollout_normalize = adapter.modality == "text"
    rules = _read(reading, absolute=absolute, matmul=matmul, rollout_normalize=rollout_normalize)
    composite = CHEFER.with_(absolute=rules["absolute"], matmul=rules["matmul"])
    scores, trace = _chefer_scores(adapter, inputs, target, composite, start_layer, clamp,
                                   rules["rollout_normalize"], gradient_of, ablation)
    params = dict(start_layer=start_layer, clamp=clamp, **rules, gradient_of=gradient_of, ablation=ablation,
                  reading=reading)
    return {"scores": scores, "delta": _conservation_delta(trace), "params": params, "logits": trace.logits}


@register("mask_lrp", "Mask-LRP: chefer with per-head relevance masked to syntactic/positional heads "
          "(renormalised or not)", "Song et al. Eqs. 5-11", own_forward=True)
def mask_lrp(adapter, inputs, target, head_mask=None, mask_recorded: bool = False, renormalize: bool = True,
             recorded_rule: str | None = None, start_layer: int = 0, clamp: str = "before_mean",
             rollout_normalize: bool = False, absolute: str = "sum_abs", matmul: str = "normalized",
             gradient_of: str = "logit"):
    """head_mask: {0,1} tensor [blocks, heads] (see lab.analysis.heads). The relevance of each head's context O_h = A_h V_h
    is multiplied by the mask before the A·V matmul rule and, with renormalize=True (the text's "normalise"),
    rescaled to conserve the block's total; renormalize=False is the authors' code (`cam * head_mask`, the total
    shrinks). The attention relevance used in the rollout is recorded before masking unless mask_recorded=True
    (authors' code), by the matmul rule, or by `recorded_rule` when given: the authors' MGAE records A·V's naive
    (Eq. 8) relevance, before the /2 its propagated relevance gets, i.e. twice what their GAE records, so an
    all-ones mask is GAE only when recorded_rule is None. The authors' full code reading: renormalize=False,
    recorded_rule="naive", rollout_normalize=True, matmul="halve", absolute="abs_sum" (see
    lab.experiments.mask_lrp.READINGS)."""
    if recorded_rule not in (None, "naive", "halve", "normalized"):
        raise ExplainInputError(f"recorded_rule must be None, 'naive', 'halve' or 'normalized', got {recorded_rule!r}")
    if head_mask is None:
        raise ExplainInputError("mask_lrp needs head_mask: a [blocks, heads] 0/1 tensor (see lab.analysis.heads.head_mask)")
    mask = torch.as_tensor(head_mask, dtype=adapter.dtype, device=adapter.device)
    if tuple(mask.shape) != (adapter.num_layers, adapter.num_heads):
        raise ExplainInputError(f"head_mask must have shape ({adapter.num_layers}, {adapter.num_heads}), got {tuple(mask.shape)}")
    composite = CHEFER.with_(absolute=absolute, matmul=matmul)
    scores, trace = _chefer_scores(adapter, inputs, target, composite, start_layer, clamp, rollout_normalize,
                                   gradient_of, None, head_masks=mask, mask_recorded=mask_recorded,
                                   mask_renormalize=bool(renormalize), mask_record_rule=recorded_rule)
    params = dict(head_mask=mask.tolist(), mask_recorded=mask_recorded, renormalize=bool(renormalize),
                  recorded_rule=recorded_rule,
                  start_layer=start_layer, clamp=clamp, rollout_normalize=rollout_normalize, absolute=absolute,
                  matmul=matmul, gradient_of=gradient_of)
    return {"scores": scores, "delta": _conservation_delta(trace), "params": params, "logits": trace.logits}


def _from_logit(adapter, inputs, target, composite, score):
    """Input relevance when R^(0) is the target logit f_t(x) (AttnLRP Sec. 3, as LXT): one pass from the one-hot
    start, scaled by f_t (every rule is linear in the incoming relevance). delta = sum R_input - f_t(x): what the
    biases and the softmax rule absorb (both methods pass relevance through biases, as the papers do)."""
    if score not in ("sum", "abs_sum"):
        raise ExplainInputError(f"score must be 'sum' or 'abs_sum', got {score!r}")
    trace = relevance_trace(adapter, inputs, target, composite)
    logit = trace.logits.gather(1, resolve_target(target, trace.logits)[:, None])
    relevance = trace.input_relevance * logit[..., None]
    delta = per_example_sum(relevance).reshape(-1) - logit.reshape(-1)
    return {"scores": _token_scores(relevance, score), "delta": delta, "logits": trace.logits}


@register("attnlrp", "AttnLRP: epsilon-LRP, softmax rule, uniform rule on attention matmuls, norms' scale constant; "
          "R^(0) = target logit; token score = sum over dims", "Achtibat et al. 2024 Eqs. 7-9, Props. 3.1, 3.3, 3.4",
          own_forward=True, readouts=ANY_READOUT)
def attnlrp(adapter, inputs, target, epsilon: float = 1e-6, score: str = "sum"):
    out = _from_logit(adapter, inputs, target, ATTNLRP.with_(epsilon=epsilon), score)
    return dict(out, params=dict(epsilon=epsilon, score=score))


@register("cp_lrp", "CP-LRP: attention weights and norms' scale constant, epsilon-LRP elsewhere; R^(0) = target "
          "logit; token score = sum over dims", "Ali et al. 2022 (AH- and LN-rules)",
          own_forward=True, readouts=ANY_READOUT)
def cp_lrp(adapter, inputs, target, epsilon: float = 1e-6, score: str = "sum"):
    out = _from_logit(adapter, inputs, target, CP_LRP.with_(epsilon=epsilon), score)
    return dict(out, params=dict(epsilon=epsilon, score=score))

