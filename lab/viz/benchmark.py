"""Figures of notebook 07 (the benchmark): pure functions of the tables `lab.experiments.benchmark` computes.

Each takes {task: table} (and {task: label}) and returns a new Figure with one panel per task; the single-panel
ones draw on ``ax`` when given.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from matplotlib.figure import Figure

from lab.viz.curves import bar_table, heatmap_matrix, scatter_cost_quality


def _panels(n: int, width: float, height: float):
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(1, n, squeeze=False)[0]


def ranks_figure(ranks: Mapping, labels: Mapping[str, str]) -> Figure:
    """Per task: methods (rows, best mean rank first) × metrics (columns), cells = rank (1 = best).
    ``ranks[task]``: a methods × metrics DataFrame of ranks."""
    height = max(len(f) for f in ranks.values()) * 0.32 + 1.6
    fig, axes = _panels(len(ranks), sum(0.55 * f.shape[1] + 2.4 for f in ranks.values()), height)
    for ax, (t, f) in zip(axes, ranks.items()):
        heatmap_matrix(f.to_numpy(), list(f.index), list(f.columns), ax=ax, fmt=".1f", cmap="RdYlGn_r",
                       colorbar=False, title=f"{labels.get(t, t)}: rank (1 = best)")
    return fig


def agreement_figure(matrices: Mapping, labels: Mapping[str, str]) -> Figure:
    """Per task: Kendall τ between the method rankings of each pair of metrics (``matrices[task]``: a metrics ×
    metrics DataFrame)."""
    names = list(matrices)
    fig, axes = _panels(len(names), sum(0.5 * m.shape[1] + 2.2 for m in matrices.values()),
                        0.45 * max(len(m) for m in matrices.values()) + 1.8)
    for ax, t in zip(axes, names):
        m = matrices[t]
        heatmap_matrix(m.to_numpy(), list(m.index), list(m.columns), ax=ax, cmap="RdBu_r", vmin=-1, vmax=1,
                       colorbar=t == names[-1], title=f"{labels.get(t, t)}: τ between metrics")
    return fig


def cost_quality_figure(mean_ranks: Mapping, costs: Mapping[str, Mapping[str, float]],
                        labels: Mapping[str, str]) -> Figure:
    """Quality (mean rank over metrics, 1 = best, axis inverted) against cost (× one forward+backward), per task.
    ``mean_ranks[task]``: a Series method -> mean rank; ``costs[task][method]``: the ratio to forward+backward."""
    fig, axes = _panels(len(mean_ranks), 4.6 * len(mean_ranks), 3.8)
    for ax, (t, ranks) in zip(axes, mean_ranks.items()):
        points = {m: (max(costs[t][m], 1e-3), float(ranks[m])) for m in ranks.index}
        scatter_cost_quality(points, ax=ax, xlabel="cost (× one forward+backward)",
                             ylabel="mean rank over metrics (1 = best)", title=labels.get(t, t))
        ax.invert_yaxis()
    return fig


def randomisation_figure(rand: Mapping[str, Mapping], ax=None) -> Figure:
    """Spearman ρ between explanations of the trained and the top-randomised model, per method and task
    (``rand[task]["rows"][method]["spearman"]``; empty tasks are left out)."""
    rows = {m: {t: r["rows"][m]["spearman"] for t, r in rand.items() if r and m in r["rows"]}
            for t, r in rand.items() if r for m in r["rows"]}
    fig = bar_table(rows, ax=ax, ylabel="Spearman ρ (trained vs randomised)",
                    title="model randomisation: lower = the method depends on the weights")
    ax = fig.axes[0] if ax is None else ax
    ax.axhline(0, color="black", linewidth=0.8)
    ax.legend(fontsize=6, ncol=3)
    return fig


def metric_bars(values: Mapping[str, float], higher: bool, metric: str, title: str, ax=None) -> Figure:
    """Horizontal bars of one metric per method, best on top (the random explainer in grey)."""
    order = sorted((m for m in values if np.isfinite(values[m])), key=values.get, reverse=not higher)
    if ax is None:
        fig = Figure(figsize=(5.5, 0.28 * len(order) + 1.2), layout="constrained")
        ax = fig.subplots()
    ax.barh(order, [values[m] for m in order], color=["tab:grey" if m == "random" else "tab:blue" for m in order])
    ax.set_xlabel(f"{metric} ({'higher' if higher else 'lower'} is better)")
    ax.set_title(title, fontsize=9)
    return ax.figure
