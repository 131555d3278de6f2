"""Attention-only explainers (no gradients): raw attention, attention rollout, layerwise attention tracing.

All three are class-agnostic: the target is accepted (the registry contract) but not used.
"""
from __future__ import annotations

import torch

from lab.explainers.base import register
from lab.explainers.common import (attention_gradients, check_start_layer, cls_row, head_mean,
                                   rollout as rollout_product, with_identity)
from lab.errors import ExplainInputError

LAT_HEADS = ("split", "sum")
LAT_STARTS = ("cls", "uniform")


def attention_maps(adapter, inputs) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(attention probabilities A^(b) [B, H, S, S] of every block, logits), from the model's own eager forward."""
    ag = attention_gradients(adapter, inputs, target=None, gradients=False)
    return ag.attentions, ag.logits


@register("raw_attention", "attention of the last block, mean over heads, [CLS] row",
          "Chefer et al. 2021 Sec. 4 baselines (raw attention, code: head mean); Mask-LRP RawAtt",
          class_specific=False, own_forward=True)
def raw_attention(adapter, inputs, target):
    maps, logits = attention_maps(adapter, inputs)
    return {"scores": cls_row(head_mean(maps[-1])), "params": {}, "logits": logits}


@register("rollout", "attention rollout: product over blocks of I + mean_h A (optionally row-normalised), [CLS] row",
          "Abnar & Zuidema 2020; Chefer et al. 2021 Eqs. 17-18", class_specific=False, own_forward=True)
def rollout(adapter, inputs, target, start_layer: int = 0, rollout_normalize: bool = False):
    """Â^(b) = I + E_h A^(b) (Chefer Eq. 17), rollout = Â^(1)···Â^(B) taken from the input side (Eq. 18).

    rollout_normalize=True divides each Â by its row sums (Abnar & Zuidema's 0.5·I + 0.5·A; both papers' code);
    the default follows Eq. 17 as printed (no normalisation). The [CLS] row is the token score.
    """
    start_layer = check_start_layer(adapter, start_layer)
    maps, logits = attention_maps(adapter, inputs)
    joint = rollout_product([with_identity(head_mean(a)) for a in maps], start_layer=start_layer,
                            normalize=bool(rollout_normalize))
    return {"scores": cls_row(joint), "logits": logits,
            "params": {"start_layer": start_layer, "rollout_normalize": bool(rollout_normalize)}}


@register("lat", "layerwise attention tracing: unit relevance at [CLS] redistributed by attention only (no residual)",
          "Wu & Ong 2021 Eq. 10 (after Abnar & Zuidema 2020)", class_specific=False, own_forward=True)
def lat(adapter, inputs, target, heads: str = "split", start: str = "cls"):
    """R^(i<-j) = Σ_h A_h R^(j(h)) (Wu & Ong Eq. 10), applied from the last block down to the input.

    Residual connections are ignored (no +I). The paper leaves two choices open:
    heads="split": the relevance of a token is split equally among the H heads, so Σ_h A_h R/H = mean_h A · R and the
      total stays 1 (the conservation the paper claims, since attention rows sum to 1); heads="sum": Σ_h A_h R
      unnormalised (total grows by H per block; same ranking).
    start="cls": unit relevance at [CLS] of the last block (the classifier reads [CLS]); start="uniform": a unit
      "relevance for the sequence" spread evenly over its (non-padding) tokens.
    """
    if heads not in LAT_HEADS:
        raise ExplainInputError(f"heads must be one of {LAT_HEADS}, got {heads!r}")
    if start not in LAT_STARTS:
        raise ExplainInputError(f"start must be one of {LAT_STARTS}, got {start!r}")
    maps, logits = attention_maps(adapter, inputs)
    valid = adapter.valid_mask(inputs).to(maps[0].dtype)  # [B, S]
    if start == "cls":
        relevance = torch.zeros_like(valid)
        relevance[:, 0] = 1.0
    else:
        relevance = valid / valid.sum(-1, keepdim=True)
    for a in reversed(maps):
        mixed = a.sum(1) if heads == "sum" else head_mean(a)  # [B, S, S], rows = receiving (query) tokens
        relevance = torch.einsum("bi,bij->bj", relevance * valid, mixed)
    return {"scores": relevance, "params": {"heads": heads, "start": start}, "logits": logits}
