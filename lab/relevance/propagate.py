"""The operations an adapter's relevance forward is written in; each applies its composite's rule.

`RelevanceOps` records, during the backward pass, the relevance of every attention map (R^(n_b) in
Chefer Eq. 15) and the relevance total entering each block (for conservation checks); with record_absorbed,
also the relevance that epsilon-rule biases and the softmax rule's Taylor bias absorb (AttnLRP, CP-LRP).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .composites import Composite
from .rules import (AddRelevance, LinearRelevance, MatmulRelevance, Mode, NormRelevance, Passthrough, Probe,
                    SoftmaxRelevance)


class RelevanceOps:
    def __init__(self, composite: Composite, head_masks: torch.Tensor | None = None, mask_recorded: bool = False,
                 mask_renormalize: bool = True, mask_record_rule: str | None = None,
                 first_layer_bounds: tuple | None = None, with_gradients: bool = False, record_absorbed: bool = False):
        """with_gradients: also support a gradient backward over the same graph (see `Mode`), which records
        d(output)/dA per block in `attention_gradients`. record_absorbed: sum, per example, into `absorbed` the
        relevance left to biases by the epsilon, norm and softmax rules (sum R_input + absorbed = R_output)."""
        self.composite = composite
        self.mode = Mode(relevance=True, relevance_only=not with_gradients)
        self.attention_gradients: dict[int, torch.Tensor] = {}
        self.head_masks = head_masks  # [blocks, heads] for Mask-LRP, or None
        self.mask_recorded = mask_recorded
        self.mask_renormalize = mask_renormalize
        self.mask_record_rule = mask_record_rule
        self.first_layer_bounds = first_layer_bounds
        self.attention_relevance: dict[int, torch.Tensor] = {}
        self.block_totals: dict[str, torch.Tensor] = {}
        self.absorbed: torch.Tensor | float = 0.0
        self._absorb = self._add_absorbed if record_absorbed else None

    # layers with weights
    def linear(self, x, weight, bias=None, first: bool = False):
        c = self.composite
        rule = (c.first_linear or c.linear) if first else c.linear
        if rule == "gradient" and self.mode.relevance_only:
            return F.linear(x, weight, bias)
        params = {"alpha": c.alpha, "beta": c.beta, "epsilon": c.epsilon, "absorb": self._absorb}
        if rule == "zb":
            low, high = self.first_layer_bounds if self.first_layer_bounds else _example_bounds(x.detach())
            params.update(low=low, high=high)
        return LinearRelevance.apply(x, weight, bias, rule, params, self.mode)

    def add(self, u, v):
        if self.composite.add == "gradient" and self.mode.relevance_only:
            return u + v
        return AddRelevance.apply(u, v, self.composite.add, self.composite.absolute, self.mode)

    def matmul(self, a, b, attention_block: int | None = None):
        """a @ b; with attention_block set, `a` is that block's attention map: record its relevance and apply
        the block's head mask (if any) to the relevance flowing down."""
        c = self.composite
        record = None
        head_mask = None
        if attention_block is not None:
            record = self._recorder(attention_block)
            if self.head_masks is not None:
                head_mask = self.head_masks[attention_block]
        if c.matmul == "gradient" and record is None and self.mode.relevance_only:
            return a @ b
        return MatmulRelevance.apply(a, b, c.matmul, c.absolute, record, head_mask, self.mask_recorded, self.mode,
                                     self.mask_renormalize, self.mask_record_rule)

    def nonlinear(self, fn: Callable, x):
        """An element-wise function, or a normalisation module (LayerNorm/RMSNorm: composite.norm applies)."""
        if self.composite.norm == "epsilon" and _is_norm(fn):
            return NormRelevance.apply(x, fn, self.composite.epsilon, self.mode, self._absorb)
        if self.composite.nonlinear == "gradient":
            return fn(x)
        return Passthrough.apply(x, fn, self.mode)

    def softmax(self, x):
        """Softmax over the last dimension (attention probabilities)."""
        if self.composite.softmax == "taylor":
            return SoftmaxRelevance.apply(x, self.mode, self._absorb)
        return self.nonlinear(lambda s: torch.softmax(s, dim=-1), x)

    def probe(self, x, name: str):
        def store(relevance):
            if self.mode.relevance:
                self.block_totals[name] = relevance.detach().reshape(relevance.shape[0], -1).sum(1)

        return Probe.apply(x, store)

    def _add_absorbed(self, value: torch.Tensor):
        self.absorbed = self.absorbed + value.detach()

    def _recorder(self, block: int):
        def store(value, gradient=False):
            (self.attention_gradients if gradient else self.attention_relevance)[block] = value.detach()

        return store


def _is_norm(fn) -> bool:
    return isinstance(fn, torch.nn.LayerNorm) or type(fn).__name__.endswith("RMSNorm")


def _example_bounds(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each example's own min and max ([B, 1, ..., 1]): the z^B bounds when none are given (the authors' code
    takes the image's X.min() / X.max()), so a batch gives what each example gives alone."""
    flat = x.reshape(x.shape[0], -1)
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    return flat.amin(1).reshape(shape), flat.amax(1).reshape(shape)
