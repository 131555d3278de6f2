"""The operations an adapter's relevance forward is written in; each applies its composite's rule.

`RelevanceOps` records, during the backward pass, the relevance of every attention map (R^(n_b) in
Chefer Eq. 15) and the relevance total entering each block (for conservation checks).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .composites import Composite
from .rules import AddRelevance, LinearRelevance, MatmulRelevance, Mode, Passthrough, Probe


class RelevanceOps:
    def __init__(self, composite: Composite, head_masks: torch.Tensor | None = None, mask_recorded: bool = False,
                 first_layer_bounds: tuple | None = None, with_gradients: bool = False):
        """with_gradients: also support a gradient backward over the same graph (see `Mode`), which records
        d(output)/dA per block in `attention_gradients`."""
        self.composite = composite
        self.mode = Mode(relevance=True, relevance_only=not with_gradients)
        self.attention_gradients: dict[int, torch.Tensor] = {}
        self.head_masks = head_masks  # [blocks, heads] for Mask-LRP, or None
        self.mask_recorded = mask_recorded
        self.first_layer_bounds = first_layer_bounds
        self.attention_relevance: dict[int, torch.Tensor] = {}
        self.block_totals: dict[str, torch.Tensor] = {}

    # layers with weights
    def linear(self, x, weight, bias=None, first: bool = False):
        c = self.composite
        rule = (c.first_linear or c.linear) if first else c.linear
        if rule == "gradient" and self.mode.relevance_only:
            return F.linear(x, weight, bias)
        params = {"alpha": c.alpha, "beta": c.beta, "epsilon": c.epsilon}
        if rule == "zb":
            low, high = self.first_layer_bounds if self.first_layer_bounds else (x.detach().min(), x.detach().max())
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
        return MatmulRelevance.apply(a, b, c.matmul, c.absolute, record, head_mask, self.mask_recorded, self.mode)

    def nonlinear(self, fn: Callable, x):
        if self.composite.nonlinear == "gradient":
            return fn(x)
        return Passthrough.apply(x, fn, self.mode)

    def probe(self, x, name: str):
        def store(relevance):
            if self.mode.relevance:
                self.block_totals[name] = relevance.detach().reshape(relevance.shape[0], -1).sum(1)

        return Probe.apply(x, store)

    def _recorder(self, block: int):
        def store(value, gradient=False):
            (self.attention_gradients if gradient else self.attention_relevance)[block] = value.detach()

        return store
