"""Notebook 07 (the benchmark) presented: figures, display tables and generated text, pure functions of the tables
`lab.experiments.benchmark` computes (quality {task: {method: {metric: v}}}, costs, sweeps, randomisation checks).

Each figure takes {task: table} (and {task: label}) and returns a new Figure with one panel per task; the
single-panel ones draw on ``ax`` when given.
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np
from matplotlib.figure import Figure

from lab.metrics.ranking import mean_off_diagonal, metric_agreement, quality_frame, rank_frame
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


def figures(quality: Mapping, costs: Mapping[str, Mapping[str, Mapping]], labels: Mapping[str, str]) -> dict:
    """{name: Figure} of the ranks, the metric agreement and cost against quality; ``costs[task][method]``: the
    cost row (its ``ratio_fb``: × one forward+backward)."""
    return {"ranks": ranks_figure({t: rank_frame(q) for t, q in quality.items()}, labels),
            "metric_agreement": agreement_figure({t: metric_agreement(q) for t, q in quality.items()}, labels),
            "cost_quality": cost_quality_figure({t: rank_frame(q)["mean_rank"] for t, q in quality.items()},
                                                {t: {m: c["ratio_fb"] for m, c in costs[t].items()} for t in quality},
                                                labels)}


# ---- display tables and text ------------------------------------------------------------------------------


def cost_frame(cost: Mapping[str, Mapping[str, float]]):
    """Methods × cost columns (s/example, × forward+backward, peak MB)."""
    import pandas as pd

    return pd.DataFrame.from_dict(cost, orient="index").reindex(columns=["s_per_example", "ratio_fb", "peak_mb"])


def quality_cost_frame(quality: Mapping[str, Mapping[str, float]], cost: Mapping[str, Mapping[str, float]]):
    """Methods (best mean rank first) × metrics, with the cost columns on the right."""
    return quality_frame(quality).join(cost_frame(cost)).loc[rank_frame(quality).index]


def sweep_frame(sweep: Mapping, token_labels: Mapping[str, str]):
    """One row per swept metric: Kendall τ between the rankings under each pair of tokens, and the best method
    under each token."""
    import pandas as pd

    rows = {}
    for metric, taus in sweep["tau"].items():
        row = {f"τ {' vs '.join(token_labels[t] for t in pair.split('~'))}": v for pair, v in taus.items()}
        row.update({f"best {token_labels[t]}": m for t, m in sweep["best"][metric].items()})
        rows[metric] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def randomisation_frame(rand: Mapping[str, Mapping]):
    """Methods × tasks: Spearman ρ between the explanations of the trained and the randomised model."""
    import pandas as pd

    return pd.DataFrame({t: {m: row["spearman"] for m, row in r["rows"].items()} for t, r in rand.items() if r})


def machine_line(threads: int | None) -> str:
    """Threads used (None: torch's default) and the machine's load (timings depend on both)."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{threads or 'default'} torch thread(s) on {os.cpu_count()} cores; load average {load}"


def _sweep_text(s: Mapping, token_labels: Mapping[str, str]) -> str:
    worst = min(((m, p, v) for m, taus in s["tau"].items() for p, v in taus.items()), key=lambda x: x[2])
    moved = [m for m, b in s["best"].items() if len(set(b.values())) > 1]
    return (f" Token sweep ({s['n']} examples): lowest τ {worst[2]:.2f} ({worst[0]}, "
            f"{' vs '.join(token_labels[x] for x in worst[1].split('~'))}); the best method changes with "
            f"the token on: {', '.join(moved) or 'no metric'}.")


def _randomisation_text(r: Mapping) -> str:
    rho = sorted(r["rows"].items(), key=lambda kv: -kv[1]["spearman"])
    return (" Randomisation: highest ρ (least sensitive) "
            + ", ".join(f"{m} {row['spearman']:.2f}" for m, row in rho[:4]) + "; lowest "
            + ", ".join(f"{m} {row['spearman']:.2f}" for m, row in rho[-3:]) + ".")


def summary_markdown(quality: Mapping, costs: Mapping[str, Mapping[str, Mapping]], sweep: Mapping, rand: Mapping,
                     labels: Mapping[str, str], token_labels: Mapping[str, str]) -> str:
    """A data-driven summary per task: the best mean rank and its cost, the cheapest method among the top three,
    the best method per metric, how much the metrics agree, what the token sweep and the randomisation check show."""
    lines = []
    for t, q in quality.items():
        ranks = rank_frame(q)
        cost = {m: costs[t][m]["ratio_fb"] for m in ranks.index}
        top = list(ranks.index[:3])
        cheap = min(top, key=cost.get)
        best = {c: ranks[c].idxmin() for c in ranks.columns if c != "mean_rank" and ranks[c].notna().any()}
        text = (f"- **{labels[t]}**: best mean rank **{top[0]}** ({ranks['mean_rank'].iloc[0]:.1f}, "
                f"{cost[top[0]]:.1f}× forward+backward); cheapest of the top three: {cheap} ({cost[cheap]:.1f}×). "
                f"Best per metric: " + ", ".join(f"{c} → {m}" for c, m in best.items()) +
                f". Mean Kendall τ between the metrics' rankings: {mean_off_diagonal(metric_agreement(q)):.2f}.")
        if "random" in ranks.index:
            text += f" The random explainer's mean rank: {ranks.loc['random', 'mean_rank']:.1f} of {len(ranks)}."
        text += _sweep_text(sweep[t], token_labels) if sweep.get(t) else ""
        text += _randomisation_text(rand[t]) if rand.get(t) else ""
        lines.append(text)
    return "\n".join(lines)
