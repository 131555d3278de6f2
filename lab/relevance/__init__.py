"""Relevance propagation: rules (one autograd function each), composites (methods as data), ops."""
from .composites import ALPHA_BETA, ATTNLRP, CHEFER, CP_LRP, GRADIENT, LRP_EQ4, WU_ONG_PAPER, Composite
from .propagate import RelevanceOps

__all__ = ["ALPHA_BETA", "ATTNLRP", "CHEFER", "CP_LRP", "GRADIENT", "LRP_EQ4", "WU_ONG_PAPER", "Composite",
           "RelevanceOps"]
