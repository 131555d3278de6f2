"""Relevance methods as data: which rule each kind of operation uses (zennit's 'composites').

A `Composite` is consumed by `lab.relevance.propagate.RelevanceOps`; methods differ by one entry.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Composite:
    linear: str = "alpha_beta"  # eq4 | alpha_beta | epsilon | gradient
    alpha: float = 1.0
    beta: float = 0.0
    epsilon: float = 1e-6
    add: str = "normalized"  # normalized | z | gradient
    matmul: str = "normalized"  # normalized | halve | naive | gradient
    absolute: str = "sum_abs"  # normalisation: paper's sum|R| ("sum_abs") or the code's |sum R| ("abs_sum")
    nonlinear: str = "passthrough"  # passthrough | gradient
    softmax: str = "passthrough"  # passthrough (as nonlinear) | taylor (AttnLRP Prop. 3.1)
    norm: str = "passthrough"  # passthrough (as nonlinear) | epsilon (normaliser constant, epsilon rule)
    first_linear: str | None = None  # rule for the pixel/patch projection (e.g. "zb"); None = same as linear

    def with_(self, **changes) -> "Composite":
        return replace(self, **changes)


# Chefer et al. 2021: Eq. 6 (alpha=1, beta=0) for weights, Sec. 3.2 normalisation for add and matmul.
CHEFER = Composite()
# Standard LRP (Eq. 4) without the paper's modified rule and normalisations: the "LRP" baseline.
LRP_EQ4 = Composite(linear="eq4", add="z", matmul="naive")
# LRP-alpha-beta as used by Wu & Ong; add/matmul split by their contributions (Eq. 8), no renormalisation.
ALPHA_BETA = Composite(linear="alpha_beta", add="z", matmul="naive")
# Plain gradient through the same graph: backward of the relevance graph == autograd gradient.
GRADIENT = Composite(linear="gradient", add="gradient", matmul="gradient", nonlinear="gradient")
# AttnLRP (Achtibat et al. 2024): epsilon rule on linears and residual adds (Eq. 8), the softmax rule (Prop. 3.1),
# epsilon + uniform rule on both attention matmuls (Prop. 3.3, Eq. 7), identity on the normaliser of LayerNorm /
# RMSNorm (Prop. 3.4) and on element-wise non-linearities (Eq. 9).
ATTNLRP = Composite(linear="epsilon", add="z", matmul="halve", softmax="taylor", norm="epsilon")
# CP-LRP (Ali et al. 2022, AH- and LN-rules): the same, except that attention weights are constants, so all
# relevance goes to the values and none through the softmax.
CP_LRP = ATTNLRP.with_(matmul="first_constant")
# Wu & Ong's text (Sec. 3, "obeys conservation"): alpha-beta with the add and matmul relevance normalised (Chefer
# Sec. 3.2), so that sum R is kept block to block.
WU_ONG_PAPER = ALPHA_BETA.with_(add="normalized", matmul="normalized")
