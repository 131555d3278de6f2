"""Pure plotting functions ``f(..., ax=None) -> Figure`` and the figure export every notebook uses.

Each function draws on ``ax`` when given (returning its figure) or makes a new figure that pyplot does not
track: show it as a cell's last expression, export it with ``save_figure(fig, notebook, name)``. Each draws under
``paper_style()`` (fonts, colour-blind palette); ``legend_outside(ax)`` puts a legend beside the data.
"""
from lab.viz.curves import (bar_table, heatmap_matrix, interval_curves, perturbation_curves, reference_curves,
                             scatter_cost_quality)
from lab.viz.image import image_grid, overlay, upsample_bilinear
from lab.viz.style import (COLORBLIND, enable_notebook_display, legend_outside, paper_style, save_figure,
                           use_paper_style)
from lab.viz.text import token_heatmap, token_heatmap_panels

__all__ = [
    "COLORBLIND", "bar_table", "heatmap_matrix", "image_grid", "interval_curves", "legend_outside", "overlay",
    "paper_style", "perturbation_curves", "reference_curves", "save_figure", "scatter_cost_quality", "token_heatmap",
    "token_heatmap_panels", "upsample_bilinear", "use_paper_style",
]

enable_notebook_display()
