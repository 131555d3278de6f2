"""Errors shared across layers (the bottom of the import graph: anything in `lab` may raise them)."""
from __future__ import annotations


class UnsupportedModelError(TypeError):
    """A model `lab` cannot explain; the message lists what it can."""


class ExplainInputError(ValueError):
    """Bad input to an explainer; the message says what is wrong and how to fix it."""
