"""Every explainer registers itself in EXPLAINERS on import."""
import importlib

from .base import EXPLAINERS, Explanation, ExplainerError, describe_explainers, explain, explain_text, register

for _module in ("relevance", "attention", "gradient", "perturbation", "marginalization"):
    try:
        importlib.import_module(f"{__name__}.{_module}")
    except ModuleNotFoundError as exc:  # optional modules added by later issues
        if exc.name != f"{__name__}.{_module}":
            raise

__all__ = ["EXPLAINERS", "Explanation", "ExplainerError", "describe_explainers", "explain", "explain_text",
           "register"]
