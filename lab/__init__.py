"""lab: a notebook-first workbook for explaining Transformer models.

Public surface: `explain`, `EXPLAINERS`, `Explanation`, `save_figure` (lazy), plus the subpackages
`lab.data`, `lab.models`, `lab.metrics`, `lab.viz`, `lab.widgets`, `lab.results`.
"""
from lab import config  # noqa: F401  (sets the offline environment variables first)
config.apply_num_threads()
from lab.explainers import EXPLAINERS, Explanation, describe_explainers, explain, explain_text

__all__ = ["EXPLAINERS", "Explanation", "describe_explainers", "explain", "explain_text", "save_figure"]


def __getattr__(name):
    if name == "save_figure":
        from lab.viz.style import save_figure

        return save_figure
    raise AttributeError(name)
