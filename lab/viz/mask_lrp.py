"""Figures, tables and widget renderers of notebook 03 (Song et al., Mask-LRP): pure functions of what
`lab.experiments.mask_lrp` computes.

``runs`` maps a dataset to an object with ``stats`` (`lab.analysis.heads.HeadStats`), ``stats_by_specials``
({"include" | "exclude": HeadStats}) and ``special_shares``; ``names[dataset]`` is its display name,
``labels[method]`` a method's; ``cfg`` holds the thresholds ``xi_synt``, ``xi_pos`` and ``include_self``.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from lab import stats
from lab.analysis import heads
from lab.viz.curves import heatmap_matrix, interval_curves, perturbation_curves
from lab.viz.style import legend_outside, paper_style
from lab.viz.text import token_heatmap_panels

COLUMNS = {"AOPC": "↑", "LOdds": "↓"}  # the two metrics and the direction that is better
_K_LABEL = "k (fraction of tokens replaced by [PAD])"


def _thresholds(cfg: Mapping, **given) -> dict:
    return {k: cfg[k] if given.get(k) is None else given[k] for k in ("xi_synt", "xi_pos", "include_self")}


# ---- Figure 5 and the head tables ---------------------------------------------------------------------------------


def head_heatmaps(runs: Mapping, cfg: Mapping, names: Mapping[str, str], xi_synt: float | None = None,
                  xi_pos: float | None = None, include_self: bool | None = None) -> Figure:
    """Figure 5: per dataset, block × head maps of the syntactic margin max_k(α_k − max λ_k) (top) and the largest
    positional frequency max_i α_i (bottom); boxed cells are the heads in M (thresholds: `cfg` unless given)."""
    t = _thresholds(cfg, xi_synt=xi_synt, xi_pos=xi_pos, include_self=include_self)
    blocks, n_heads = next(iter(runs.values())).stats.shape
    fig = Figure(figsize=(max(4.5, 0.42 * n_heads + 1.6) * len(runs), 2 * (0.36 * blocks + 1.3)),
                 layout="constrained")
    axes = np.asarray(fig.subplots(2, len(runs), squeeze=False))
    for j, (name, run) in enumerate(runs.items()):
        st = run.stats
        synt_mask = heads.syntactic_heads(st, t["xi_synt"]).any(-1)
        pos_mask = heads.positional_heads(st, t["xi_pos"], t["include_self"])
        last = j == len(runs) - 1
        heatmap_matrix(heads.syntactic_margin(st), ax=axes[0, j], cmap="RdBu_r", vmin=-0.6, vmax=0.6, fmt=".2f",
                       colorbar=last, xlabel="head", ylabel="block",
                       title=f"{names[name]}: syntactic margin ({int(synt_mask.sum())} > ξ={t['xi_synt']:g})")
        heatmap_matrix(st.alpha_pos(t["include_self"]).max(-1), ax=axes[1, j], cmap="viridis", vmin=0, vmax=1,
                       fmt=".2f", colorbar=last, xlabel="head", ylabel="block",
                       title=f"positional max α_i ({int(pos_mask.sum())} > ξ={t['xi_pos']:g})")
        for ax, m in ((axes[0, j], synt_mask), (axes[1, j], pos_mask)):
            for b, h in zip(*np.nonzero(m)):
                ax.add_patch(Rectangle((h - 0.5, b - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.0))
    return fig


def heads_renderer(runs: Mapping, cfg: Mapping, names: Mapping[str, str]):
    """Render function for `lab.widgets.controls`: (xi_synt, xi_pos, include_self) -> Figure 5 for those
    thresholds, from the cached statistics (no model call)."""

    def render(xi_synt: float, xi_pos: float, include_self: bool):
        return head_heatmaps(runs, cfg, names, xi_synt=xi_synt, xi_pos=xi_pos, include_self=include_self)

    return render


def mask_table(runs: Mapping, cfg: Mapping, names: Mapping[str, str]):
    """One row per dataset: heads found (syntactic, positional, kept), mask rate, per-block counts, the heads kept
    with and without [CLS]/[SEP] in Eq. 8, and per block the argmax share going to [CLS]/[SEP]."""
    import pandas as pd

    t = _thresholds(cfg)
    rows = {}
    for name, run in runs.items():
        s = heads.mask_summary(run.stats, **t)
        rows[names[name]] = {
            "syntactic": s["n_syntactic"], "positional": s["n_positional"], "kept": s["n_kept"],
            "of": s["n_heads"], "mask rate": round(s["mask_rate"], 3),
            "syntactic per block": s["syntactic_per_block"], "positional per block": s["positional_per_block"],
            "relations (heads)": s["per_relation"], "texts": run.stats.n_texts,
            **{f"kept ({k} [CLS]/[SEP])": heads.mask_summary(st, **t)["n_kept"]
               for k, st in run.stats_by_specials.items()},
            "argmax to [CLS]/[SEP] per block": [round(x, 2) for x in
                                                run.special_shares.get("argmax_to_special_per_block", [])]}
    return pd.DataFrame(rows).T


def relation_table(runs: Mapping, names: Mapping[str, str]):
    """Per dataset and relation: dependents counted, best fixed-offset accuracy max(λ_k) and its offset, and the
    best head's α_k (Fig. 1 / Eq. 7 ingredients)."""
    import pandas as pd

    rows = {}
    for name, run in runs.items():
        st = run.stats
        best = np.nanmax(np.nan_to_num(st.alpha_synt, nan=-1), axis=(0, 1))
        for k, rel in enumerate(st.relations):
            rows[(names[name], rel)] = {"dependents": int(st.n_dependents[k]),
                                        "max λ_k": round(float(st.lambda_max[k]), 3),
                                        "best offset": int(st.best_offset[k]),
                                        "best head α_k": round(float(best[k]), 3)}
    return pd.DataFrame(rows).T


def readings_frame(readings: Mapping[str, Mapping], used: str):
    """The readings table (parameter × code / text / why) with the value of the reading `used`."""
    import pandas as pd

    return pd.DataFrame({p: {**v, "used": v[used]} for p, v in readings.items()}).T


# ---- Table 1 and Figures 3-4, the size-matched sweep ----------------------------------------------------------------


def table1_frame(evals: Mapping[str, dict], labels: Mapping[str, str], names: Mapping[str, str],
                 methods: Sequence[str]):
    """Table 1 (`methods` × dataset AOPC/LOdds; a row with a std, the random mask, as mean ± std) as strings."""
    import pandas as pd

    rows = {}
    for method in methods:
        row = {}
        for d, ev in evals.items():
            m = ev["methods"].get(method)
            for col in COLUMNS if m is not None else ():
                std = f" ± {m[col + '_std']:.3f}" if col + "_std" in m else ""
                row[(names[d], col)] = f"{m[col]:.3f}{std}"
        rows[labels[method]] = row
    return pd.DataFrame(rows).T


@paper_style()
def curves_figure(evaluation: Mapping, fractions: Sequence[float], labels: Mapping[str, str],
                  methods: Sequence[str] | None = None, title: str = "SST-2") -> Figure:
    """Figure 3: AOPC(k) and LOdds(k) of `methods` (default: every method of `labels` evaluated), one legend."""
    fig = Figure(figsize=(11.5, 3.8), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    rows = {labels[m]: evaluation["methods"][m] for m in (methods or labels) if m in evaluation["methods"]}
    for ax, col in ((ax1, "AOPC"), (ax2, "LOdds")):
        perturbation_curves(np.asarray(fractions), {k: v[f"{col.lower()}_curve"] for k, v in rows.items()}, ax=ax,
                            ylabel=f"{col}(k) {COLUMNS[col]}", xlabel=_K_LABEL, title=f"{title}: {col}")
    ax1.get_legend().remove()
    legend_outside(ax2, fontsize=7)  # one legend for both panels, beside the data
    return fig


def corruption_figure(sweep: Mapping) -> Figure:
    """Figure 4: AOPC and LOdds (mean ± std over seeds) against the corruption rate; rate 0 is Mask-LRP itself,
    the dashed line GAE (chefer), which the 100 % point equals under the text reading only."""
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    axes = fig.subplots(1, 2)
    rates = [0.0] + list(sweep["rates"])
    for ax, (col, arrow) in zip(axes, COLUMNS.items()):
        mean = np.array([sweep["mask_lrp"][col]] + [sweep["summary"][r][col] for r in sweep["rates"]])
        std = np.array([0.0] + [sweep["summary"][r][col + "_std"] for r in sweep["rates"]])
        ax.plot(rates, mean, marker="o", label="Mask-LRP, corrupted mask")
        ax.fill_between(rates, mean - std, mean + std, alpha=0.25)
        ax.axhline(sweep["chefer"][col], color="black", linestyle="--", label="GAE (chefer)")
        ax.set_xlabel("corruption rate (share of M's zeros switched on)")
        ax.set_ylabel(f"{col} {arrow}")
        ax.set_title(f"SST-2, {sweep['n_examples']} sentences")
    axes[0].legend(fontsize=8)
    return fig


def size_sweep_figure(sweep: Mapping, chefer: Mapping | None = None) -> Figure:
    """AOPC and LOdds against m for the top-m heads and random m heads (95 % interval bands of the per-m means over
    examples; random: every seed's rows), with GAE (chefer) dashed when given."""
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, (col, arrow) in zip(axes, COLUMNS.items()):
        key = col.lower()
        series = {}
        for name, pick in (("top-m heads by margin", lambda r: [r["top"][key]]),
                           ("random m heads", lambda r: [x[key] for x in r["random"]])):
            ivs = [stats.bootstrap(np.concatenate(pick(sweep["per_size"][m]))) for m in sweep["sizes"]]
            series[name] = {"mean": [iv.estimate for iv in ivs], "low": [iv.low for iv in ivs],
                            "high": [iv.high for iv in ivs]}
        refs = {"GAE (chefer)": chefer[col]} if chefer else None
        interval_curves(sweep["sizes"], series, ax=ax, xlabel="m (heads kept)", ylabel=f"{col} {arrow}",
                        title=f"size-matched masks, {sweep['n_examples']} examples", references=refs)
    return fig


# ---- Figure 6 and the sentence widget -------------------------------------------------------------------------------


def sentence_figure(tokens: Sequence[str], scores: Mapping, method: str, baselines: Sequence[str],
                    labels: Mapping[str, str], class_name: str) -> Figure:
    """Figure 6: `method`'s normalised scores, then Δ = method − baseline for each baseline, all on one colour scale
    (red: the method gives the token more relevance than the baseline, blue: less)."""
    name = labels.get(method, method)
    panels = [(f"{name} (class {class_name})", tokens, scores[method])]
    panels += [(f"Δ {name} − {labels.get(b, b)}", tokens, scores[method] - scores[b]) for b in baselines
               if b != method]
    return token_heatmap_panels(panels, shared_scale=True)


def sentence_renderer(explain: Callable, labels: Mapping[str, str]):
    """Render function for `lab.widgets.controls`: (dataset, sentence, method, baseline, xi_synt, xi_pos,
    include_self) -> the method's map, the baseline's and their difference. ``explain(dataset, sentence, methods,
    thresholds)`` returns (tokens, {method: scores}, class name, heads kept, heads)."""

    def render(dataset: str, sentence: str, method: str, baseline: str, xi_synt: float, xi_pos: float,
               include_self: bool):
        t = {"xi_synt": xi_synt, "xi_pos": xi_pos, "include_self": include_self}
        tokens, scores, class_name, kept, n_heads = explain(dataset, sentence, [method, baseline], t)
        m, b = labels.get(method, method), labels.get(baseline, baseline)
        return token_heatmap_panels(shared_scale=True, panels=[
            (f"{m} (class {class_name}; mask keeps {kept}/{n_heads} heads)", tokens, scores[method]),
            (b, tokens, scores[baseline]), (f"Δ {m} − {b}", tokens, scores[method] - scores[baseline])])

    return render
