"""Relevance propagation: rules (one autograd function each), composites (methods as data), ops."""
from .composites import ALPHA_BETA, ATTNLRP, CHEFER, CP_LRP, GRADIENT, LRP_EQ4, Composite
from .propagate import RelevanceOps

__all__ = ["ALPHA_BETA", "ATTNLRP", "CHEFER", "CP_LRP", "GRADIENT", "LRP_EQ4", "Composite", "RelevanceOps"]
