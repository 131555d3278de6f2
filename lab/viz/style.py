"""One look for every figure, and the one function that exports figures.

``paper_style()`` is a context manager (and decorator) with consistent fonts and a colour-blind palette; every
``lab.viz`` plotting function runs under it, so its figures look the same on screen and on paper.
``use_paper_style()`` applies the same settings for the rest of a session (a notebook's first cell).
``save_figure(fig, notebook, name)`` writes ``figures/<notebook>/<name>.png`` and ``.pdf`` under ``PAPER_RC``
(TrueType fonts in PDFs), with the permissions the process umask gives new files.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Iterable

import matplotlib as mpl
from cycler import cycler

from lab import cache, config

# seaborn's "colorblind" palette (Okabe-Ito-like), copied so plotting does not need seaborn.
COLORBLIND = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc",
              "#ca9161", "#fbafe4", "#949494", "#ece133", "#56b4e9"]

PAPER_RC = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.prop_cycle": cycler(color=COLORBLIND),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "lines.linewidth": 1.5,
    "lines.markersize": 4,
    "image.cmap": "viridis",
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,  # embed TrueType so text stays editable in PDFs
}

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def paper_style():
    """Context manager / decorator applying ``PAPER_RC``: ``with paper_style(): fig = ...``."""
    return mpl.rc_context(PAPER_RC)


def use_paper_style() -> None:
    """Apply ``PAPER_RC`` for the rest of the session."""
    mpl.rcParams.update(PAPER_RC)


def legend_outside(ax, **kwargs):
    """The axes' legend to the right of its data area (never on the curves); ``kwargs`` go to ``ax.legend``."""
    return ax.legend(**{"loc": "center left", "bbox_to_anchor": (1.02, 0.5), "borderaxespad": 0.0, **kwargs})


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        raise ValueError(f"save_figure: {kind} {name!r} must be letters, digits, '.', '_', '+' or '-'")
    return name


def save_figure(fig, notebook: str, name: str, formats: Iterable[str] = ("png", "pdf"),
                dpi: int | None = None) -> list[Path]:
    """Write ``figures_dir()/<notebook>/<name>.<fmt>`` for each format; returns the paths written.

    Each file is written to a temporary name first and moved into place, so a reader never sees a
    half-written figure. PDFs carry no creation date, so re-running gives identical files. The figure is
    saved under ``PAPER_RC`` (TrueType, not Type 3, fonts in PDFs); files get mode 0666 less the umask.
    """
    out_dir = config.figures_dir() / _check_name("notebook", notebook)
    _check_name("name", name)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, mode = [], 0o666 & ~cache.umask()
    for fmt in formats:
        fmt = fmt.lower().lstrip(".")
        path = out_dir / f"{name}.{fmt}"
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=f".{fmt}")
        os.close(fd)
        try:
            with paper_style():
                fig.savefig(tmp, format=fmt, dpi=dpi or PAPER_RC["savefig.dpi"], bbox_inches="tight",
                            metadata=metadata)
            os.chmod(tmp, mode)  # mkstemp creates 0600 whatever the umask
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        paths.append(path)
    return paths


def figure_axes(ax=None, figsize: tuple[float, float] = (4.0, 3.0)):
    """(figure, axes): a new figure not registered with pyplot when ``ax`` is None, else ``ax``'s own figure.

    Figures made here are shown by making them a cell's last expression (or ``display(fig)``); since pyplot
    does not track them they are never shown twice and never leak when many are made in a loop.
    """
    if ax is not None:
        return root_figure(ax), ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def root_figure(ax):
    """The top-level Figure holding ``ax`` (also when ``ax`` lives in a SubFigure)."""
    try:
        return ax.get_figure(root=True)
    except TypeError:  # matplotlib < 3.10
        fig = ax.figure
        while hasattr(fig, "figure") and fig.figure is not fig:
            fig = fig.figure
        return fig


def enable_notebook_display() -> None:
    """Show figures made without pyplot as PNG in Jupyter (no-op outside IPython, keeps existing settings).

    The inline backend registers its Figure formatter only once pyplot is imported; notebooks that only call
    ``lab.viz`` would otherwise print ``<Figure size ...>`` instead of the plot.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    from matplotlib.figure import Figure

    png = shell.display_formatter.formatters["image/png"]
    try:
        png.lookup_by_type(Figure)
        return  # already configured (inline backend, retina, ...): leave it alone
    except KeyError:
        from IPython.core.pylabtools import select_figure_formats

        select_figure_formats(shell, {"png"})
