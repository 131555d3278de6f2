"""Every explainer registers itself in EXPLAINERS on import (this order is the registry's order)."""
from . import relevance, attention, gradient, perturbation, marginalization  # noqa: F401  (they register)
from .base import EXPLAINERS, Explanation, ExplainerError, describe_explainers, explain, explain_text, register

__all__ = ["EXPLAINERS", "Explanation", "ExplainerError", "describe_explainers", "explain", "explain_text",
           "register"]
