"""Curves, matrices and summary plots: perturbation curves, head masks / correlation matrices, cost vs quality.

Every function draws under ``paper_style()``; legends sit to the right of the data area, never on it."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from lab.viz.style import figure_axes, legend_outside, paper_style


def _values(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=float)



def _decorate(ax, xlabel: str, ylabel: str, title: str | None, legend: bool = False) -> None:
    """Axis labels, an optional title and (legend=True) the legend beside the axes: the end of every line plot."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend:
        legend_outside(ax)

@paper_style()
def perturbation_curves(fractions: Sequence[float], curves: Mapping[str, Sequence[float]], ax=None,
                        ylabel: str = "accuracy", xlabel: str = "fraction of tokens removed",
                        title: str | None = None, legend_values: Mapping[str, float] | None = None,
                        legend_fmt: str = "{name} ({value:.3g})") -> Figure:
    """One line per method over the perturbation fractions (e.g. Chefer Fig. 3, deletion curves).

    ``legend_values`` (e.g. each method's AUC, computed by ``lab.metrics``) are appended to the labels.
    """
    x = _values(fractions)
    fig, ax = figure_axes(ax, figsize=(5.2, 3))  # room for the legend beside the axes
    for name, ys in curves.items():
        y = _values(ys)
        if y.shape != x.shape:
            raise ValueError(f"perturbation_curves: curve {name!r} has {y.size} points, fractions have {x.size}")
        label = name if legend_values is None or name not in legend_values else \
            legend_fmt.format(name=name, value=legend_values[name])
        ax.plot(x, y, marker="o", label=label)
    _decorate(ax, xlabel, ylabel, title, legend=True)
    return fig


@paper_style()
def interval_curves(x: Sequence[float], series: Mapping[str, Mapping[str, Sequence[float]]], ax=None,
                    xlabel: str = "", ylabel: str = "", title: str | None = None,
                    references: Mapping[str, float] | None = None) -> Figure:
    """One line per series with its confidence band: ``series[name] = {"mean": [...], "low": [...],
    "high": [...]}`` over ``x`` (e.g. AOPC of top-m vs random-m heads against m); ``references`` are dashed
    horizontal lines (e.g. a baseline's value)."""
    xs = _values(x)
    fig, ax = figure_axes(ax, figsize=(5.2, 3))
    for name, s in series.items():
        (line,) = ax.plot(xs, _values(s["mean"]), marker="o", markersize=3, label=name)
        ax.fill_between(xs, _values(s["low"]), _values(s["high"]), alpha=0.2, color=line.get_color())
    for name, value in (references or {}).items():
        ax.axhline(float(value), linestyle="--", color="black", linewidth=1, label=name)
    _decorate(ax, xlabel, ylabel, title, legend=True)
    return fig


@paper_style()
def heatmap_matrix(matrix, row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
                   ax=None, annot: bool = True, fmt: str = ".2f", cmap: str = "viridis",
                   vmin: float | None = None, vmax: float | None = None, title: str | None = None,
                   colorbar: bool = True, xlabel: str | None = None, ylabel: str | None = None) -> Figure:
    """A matrix as coloured cells, e.g. block × head masks (Mask-LRP) or method × method correlations.

    NaN cells are left blank; annotations switch to white on dark cells.
    """
    m = _values(matrix)
    if m.ndim != 2:
        raise ValueError(f"heatmap_matrix: expected a 2-D matrix, got shape {m.shape}")
    for labels, n, what in ((row_labels, m.shape[0], "row"), (col_labels, m.shape[1], "column")):
        if labels is not None and len(labels) != n:
            raise ValueError(f"heatmap_matrix: {len(labels)} {what} labels for {n} {what}s")
    fig, ax = figure_axes(ax, figsize=(0.45 * m.shape[1] + 1.8, 0.35 * m.shape[0] + 1.0))
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto",
                   interpolation="nearest")
    ax.set_xticks(range(m.shape[1]), labels=col_labels if col_labels is not None else range(m.shape[1]))
    ax.set_yticks(range(m.shape[0]), labels=row_labels if row_labels is not None else range(m.shape[0]))
    if col_labels is not None and max((len(str(c)) for c in col_labels), default=0) > 3:
        ax.tick_params(axis="x", labelrotation=45)
    if annot:
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                r, g, b, _ = im.cmap(im.norm(v))
                colour = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
                ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7, color=colour)
    if colorbar:
        fig.colorbar(im, ax=ax, shrink=0.8)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_xlabel(xlabel or "")
    ax.set_ylabel(ylabel or "")
    if title:
        ax.set_title(title)
    return fig


@paper_style()
def bar_table(rows: Mapping[str, Mapping[str, float]], ax=None, ylabel: str | None = None,
              title: str | None = None, paper: Mapping[str, Mapping[str, float]] | None = None) -> Figure:
    """Grouped bars: one group per column, one bar per row (method). ``rows[method][column] = value``.

    ``paper`` (same layout) adds the paper's values as black tick marks on top of each bar.
    """
    methods = list(rows)
    cols: list[str] = []
    for r in rows.values():
        cols += [c for c in r if c not in cols]
    fig, ax = figure_axes(ax, figsize=(1.2 + 0.9 * len(cols) * max(1, len(methods)) / 3, 3))
    width = 0.8 / max(1, len(methods))
    for k, method in enumerate(methods):
        x = np.arange(len(cols)) - 0.4 + width * (k + 0.5)
        y = [rows[method].get(c, np.nan) for c in cols]
        ax.bar(x, [np.nan if v is None else v for v in y], width, label=method)
        if paper and method in paper:
            py = [paper[method].get(c) for c in cols]
            ax.scatter(x, [np.nan if v is None else v for v in py], marker="_", s=120, color="black",
                       zorder=3, label="paper" if k == 0 else None)
    ax.set_xticks(range(len(cols)), labels=cols)
    ax.set_ylabel(ylabel or "")
    if title:
        ax.set_title(title)
    legend_outside(ax)
    return fig


@paper_style()
def scatter_cost_quality(points: Mapping[str, tuple[float, float]], ax=None,
                         xlabel: str = "seconds per example", ylabel: str = "quality",
                         logx: bool = True, title: str | None = None) -> Figure:
    """One labelled point per method: ``points[method] = (cost, quality)`` (the benchmark trade-off plot)."""
    fig, ax = figure_axes(ax, figsize=(4, 3))
    for name, (cost, quality) in points.items():
        ax.scatter([cost], [quality], s=30)
        ax.annotate(name, (cost, quality), textcoords="offset points", xytext=(4, 3), fontsize=8)
    if logx:
        ax.set_xscale("log")
    ax.margins(0.15)  # room for the labels of extreme points
    _decorate(ax, xlabel, ylabel, title)
    return fig


REFERENCE_STYLES = ({"color": "black", "linestyle": ":"}, {"color": "0.5", "linestyle": "-."},
                    {"color": "0.3", "linestyle": (0, (1, 3))})


@paper_style()
def reference_curves(x: Sequence[float], references: Mapping[str, Sequence[float]], ax=None,
                     legend: bool | Mapping = True) -> Figure:
    """Reference lines (e.g. an oracle ceiling and a random baseline) in black / grey, no markers, drawn under
    the curves already on ``ax`` (e.g. token-F1 at k, Chefer Fig. 3). At most three references.

    ``legend``: True redraws the axes' legend beside it (all its lines), a mapping also passes those keywords to
    ``legend_outside``, False leaves the legend alone.
    """
    if len(references) > len(REFERENCE_STYLES):
        raise ValueError(f"reference_curves: at most {len(REFERENCE_STYLES)} references, got {len(references)}")
    xs = _values(x)
    fig, ax = figure_axes(ax, figsize=(5.2, 3))
    for (name, ys), style in zip(references.items(), REFERENCE_STYLES):
        y = _values(ys)
        if y.shape != xs.shape:
            raise ValueError(f"reference_curves: {name!r} has {y.size} points, x has {xs.size}")
        ax.plot(xs, y, label=name, linewidth=1.2, zorder=1, **style)
    if legend:
        legend_outside(ax, **(legend if isinstance(legend, Mapping) else {}))
    return fig
