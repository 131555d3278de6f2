"""Figures of notebook 02 (Chefer et al. on BERT): pure functions of the series `lab.experiments.chefer_bert`
computes. ``labels[method]`` names a method in legends; ``paper_methods`` are drawn solid, the others dashed."""
from __future__ import annotations

from typing import Mapping, Sequence

from matplotlib.figure import Figure

from lab.viz.style import legend_outside, paper_style


@paper_style()
def figure3_plot(fig3: Mapping, labels: Mapping[str, str], paper_methods: Sequence[str]) -> Figure:
    """Fig. 3: token-F1 vs k, one line per method (paper methods solid, beyond-the-paper methods dashed)."""
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, kind, title in zip(axes, ("macro", "micro"), ("per-document F1 (ERASER macro, reported)",
                                                          "pooled F1 (micro)")):
        for method, ys in fig3[kind].items():
            style = "-" if method in paper_methods else "--"
            n = fig3["n"][method]
            label = labels.get(method, method) + ("" if n == max(fig3["n"].values()) else f" (n={n})")
            ax.plot(fig3["ks"], ys, style, marker="o", markersize=3, label=label)
        ax.set_xlabel("k (top word pieces)")
        ax.set_ylabel("token F1")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(fig3["ks"])
    legend_outside(axes[1], fontsize=7)  # same methods and styles in both panels
    return fig


@paper_style()
def faithfulness_plot(faith: Mapping, labels: Mapping[str, str], paper_methods: Sequence[str]) -> Figure:
    """Comprehensiveness and sufficiency per bin (fraction of word pieces deleted / kept), one line per method."""
    fig = Figure(figsize=(12, 3.4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, kind, better in zip(axes, ("comprehensiveness", "sufficiency"), ("higher", "lower")):
        for method, c in faith["curves"].items():
            style = "-" if method in paper_methods else "--"
            value = faith["rows"][method][kind]
            ax.plot(faith["bins"], c[kind], style, marker="o", markersize=3,
                    label=f"{labels.get(method, method)} ({value:.3f})")
        ax.set_xscale("log")
        ax.set_xticks(faith["bins"], labels=[f"{100 * b:g}%" for b in faith["bins"]])
        ax.set_xlabel("top word pieces deleted" if kind == "comprehensiveness" else "top word pieces kept")
        ax.set_ylabel("p(y|x) − p(y|x')")
        ax.set_title(f"{kind} ({better} is better; AOPC in legend)", fontsize=10)
        legend_outside(ax, fontsize=7)  # each panel's own AOPC values
    return fig
