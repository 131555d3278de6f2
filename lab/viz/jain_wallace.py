"""Figures, tables for display and text of notebook 05 (Jain & Wallace): pure functions of the analyses
(`lab.analysis.attention_tests.Analysis`, keyed by (dataset, encoder)) and of the results object."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from lab.analysis.attention_tests import LN2, Analysis
from lab.viz.style import COLORBLIND
from lab.viz.text import token_heatmap_panels

DATASET_LABELS = {"sst_jw": "SST", "imdb": "IMDB", "agnews_binary": "AG News", "snli": "SNLI", "babi1": "bAbI 1"}
ENCODER_LABELS = {"lstm": "BiLSTM", "average": "Average", "cnn": "CNN", "transformer": "Transformer",
                  "average:authors": "Average (tanh/128, authors)", "average:appendix": "Average (ReLU/256, appendix)"}


def title(dataset: str, encoder: str | None = None) -> str:
    """"SST", or "SST / BiLSTM" (the rows of the results tables)."""
    label = DATASET_LABELS.get(dataset, dataset)
    return label if encoder is None else f"{label} / {ENCODER_LABELS.get(encoder, encoder)}"


def _panel_title(dataset: str, encoder: str) -> str:
    return f"{DATASET_LABELS.get(dataset, dataset)} ({ENCODER_LABELS.get(encoder, encoder)})"


def readings_frame(res):
    """The Average claims' verdicts under the authors' configuration (tanh, m = 128) and the paper's appendix (ReLU,
    m = 256), one row per claim (empty when the readings were not compared)."""
    import pandas as pd

    return pd.DataFrame.from_dict(res.meta.get("average_readings", {}), orient="index")


def _cells(table: Mapping, col: str, fmt: str = "{:.2f}", ci: bool = False) -> str:
    """'row value [low, high]' for every row of a results table that has `col`."""
    out = []
    for row, cells in table["rows"].items():
        v = cells.get(col, {}).get("ours")
        if v is None:
            continue
        text = f"{row} {fmt.format(v)}"
        if ci and f"{col}_ci_low" in cells:
            text += f" [{fmt.format(cells[col + '_ci_low']['ours'])}, {fmt.format(cells[col + '_ci_high']['ours'])}]"
        paper = cells[col].get("paper")
        out.append(text + (f" (paper {paper:.2f})" if paper is not None else ""))
    return "; ".join(out)


def discussion_markdown(res) -> str:
    """The notebook's discussion, formatted from the results object's tables (no fixed numbers); the verdicts are
    `lab.results.claims_markdown`'s."""
    t = res.tables
    parts = []
    if "table1_performance" in t:
        cells = {label: _cells(t["table1_performance"], f"test_{enc}", "{:.3f}", ci=True)
                 for enc, label in (("lstm", "BiLSTM"), ("average", "Average"))}
        parts.append("*Models (Table 1, 95 % intervals over test examples).* "
                     + " ".join(f"{label}: {text}." for label, text in cells.items() if text))
    if "tau_means" in t:
        parts.append("*Agreement (Table 2, Figs. 2–5): mean τ with 95 % intervals.* Attention–gradient: "
                     + _cells(t["tau_means"], "attn_grad", ci=True) + ". Attention–LOO: "
                     + _cells(t["tau_means"], "attn_loo", ci=True) + ". Gradient–LOO: "
                     + _cells(t["tau_means"], "grad_loo", ci=True) + ".")
    if "fig6_permutation" in t:
        parts.append("*Permutation (Fig. 6).* Median Δŷ^med: " + _cells(t["fig6_permutation"],
                                                                         "median_of_median_tvd", "{:.3f}")
                     + "; share of instances with Δŷ^med < 0.05: "
                     + _cells(t["fig6_permutation"], "frac_median_tvd_below_0.05") + ".")
    if "fig7_adversarial" in t:
        parts.append("*Adversarial attention (Figs. 7–8).* Share of instances with ε-max JSD > 0.6 (bound "
                     "ln 2 ≈ 0.69): " + _cells(t["fig7_adversarial"], "frac_jsd_above_0.6") + "; above 87 % of the "
                     "instance's reachable maximum: " + _cells(t["fig7_adversarial"], "frac_relative_jsd_above_0.87")
                     + "; Kendall τ of the "
                     "JSD with the maximum attention: " + _cells(t["fig7_adversarial"], "tau_jsd_vs_max_attention")
                     + ".")
    if "premise_reliance" in t:
        parts.append("*Premise reliance (pair tasks).* Share of predictions that change when the attended "
                     "premise/story context is zeroed: " + _cells(t["premise_reliance"], "changed_prediction",
                                                                   ci=True) + ".")
    readings = {k: r for k, r in res.meta.get("average_readings", {}).items() if "not evaluated" not in r.values()}
    if readings:
        changed = [k for k, r in readings.items() if len(set(r.values())) > 1]
        parts.append("*Average encoder, two readings.* " + (
            f"{len(changed)} of {len(readings)} Average claims change verdict between the "
            "authors' tanh/128 and the appendix's ReLU/256; both verdicts are listed with the claims."
            if changed else "No Average claim changes verdict between the authors' tanh/128 and the appendix's "
            "ReLU/256."))
    if "transformer" in t:
        parts.append("*The Transformer (beyond the paper), SST.* τ with gradient: "
                     + _cells(t["transformer"], "tau_vs_grad") + ". τ with LOO: "
                     + _cells(t["transformer"], "tau_vs_loo") + ". τ between gradient and LOO: "
                     + _cells(t["transformer"], "tau_grad_vs_loo") + ".")
    return "\n\n".join(parts)


def task_overview(tasks: Mapping):
    """One row per dataset: sizes, vocabulary, mean length (word pieces) and how many instances are analysed."""
    import pandas as pd

    rows = {}
    for name, t in tasks.items():
        rows[title(name)] = {"train": len(t.train), "dev": len(t.dev), "test": len(t.test), "vocab": len(t.vocab),
                             "mean length": round(float(np.mean([len(x) for x in t.test.ids])), 1),
                             "analysed": len(t.analysis_rows), "adversarial": t.n_adversarial,
                             "ε": t.epsilon, "classes": len(t.label_names)}
    return pd.DataFrame.from_dict(rows, orient="index")


# ---------------------------------------------------------------- figures
def _class_colours(n: int) -> list[str]:
    return [COLORBLIND[4], COLORBLIND[1], COLORBLIND[2], COLORBLIND[0], COLORBLIND[3], COLORBLIND[5]][:max(n, 1)] + \
        COLORBLIND[6:]


def _grid(n_rows: int, n_cols: int, w: float = 2.6, h: float = 2.0):
    fig = Figure(figsize=(w * n_cols, h * n_rows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(n_rows, n_cols, squeeze=False))
    return fig, axes


def _by_class(a: Analysis):
    names = a.label_names if len(a.label_names) <= 6 else [str(i) for i in range(len(a.label_names))]
    pred = a.predicted
    return [(c, names[c] if c < len(names) else str(c), pred == c) for c in sorted(set(pred.tolist()))]


def tau_histograms(analyses: Mapping, measure: str = "attn_grad", encoders: Sequence[str] = ("lstm", "average")
                   ) -> Figure:
    """Fig. 2: histograms of per-instance τ per dataset (columns) and encoder (rows), coloured by predicted class."""
    names = list(dict.fromkeys(n for n, _ in analyses))
    encs = [e for e in encoders if any((n, e) in analyses for n in names)]
    fig, axes = _grid(len(encs), len(names))
    colours = _class_colours(6)
    for r, enc in enumerate(encs):
        for c, name in enumerate(names):
            ax = axes[r, c]
            a = analyses.get((name, enc))
            if a is None:
                ax.set_axis_off()
                continue
            tau = np.asarray(a.tau[measure].statistic, float)
            for k, (cls, label, sel) in enumerate(_by_class(a)):
                vals = tau[sel & np.isfinite(tau)]
                ax.hist(vals, bins=np.linspace(-1, 1, 21), alpha=0.6, color=colours[k % len(colours)], label=label)
            ax.set_title(_panel_title(name, enc), fontsize=9)
            ax.set_xlim(-1, 1)
            if r == len(encs) - 1:
                ax.set_xlabel(f"Kendall τ ({measure.replace('attn', 'attention').replace('_', ' vs ')})")
            if len(_by_class(a)) <= 3:
                ax.legend(fontsize=6)
    return fig


def gap_figure(analyses: Mapping, encoder: str = "lstm") -> Figure:
    """Figs. 3–4: mean τ(gradient, LOO) − τ(attention, LOO) and − τ(attention, gradient), per dataset."""
    fig, axes = _grid(1, 2, w=3.6, h=2.6)
    names = [n for (n, e) in analyses if e == encoder]
    for ax, other, heading in ((axes[0, 0], "attn_loo", "Fig. 3: τ(grad, LOO) − τ(attn, LOO)"),
                             (axes[0, 1], "attn_grad", "Fig. 4: τ(grad, LOO) − τ(attn, grad)")):
        vals = [analyses[n, encoder].mean_tau("grad_loo") - analyses[n, encoder].mean_tau(other) for n in names]
        ax.barh([title(n) for n in names], vals, color=COLORBLIND[0])
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(f"{heading} ({ENCODER_LABELS[encoder]})", fontsize=9)
        ax.set_xlabel("difference in mean Kendall τ")
    return fig


def encoder_figure(analyses: Mapping) -> Figure:
    """Fig. 5: mean τ for the Average encoder minus the BiLSTM's, for LOO and gradients, per dataset."""
    fig, axes = _grid(1, 1, w=4.2, h=2.6)
    ax = axes[0, 0]
    names = [n for (n, e) in analyses if e == "lstm" and (n, "average") in analyses]
    y = np.arange(len(names))
    for off, measure, label, colour in ((-0.2, "attn_loo", "τ(attention, LOO)", COLORBLIND[0]),
                                        (0.2, "attn_grad", "τ(attention, gradient)", COLORBLIND[1])):
        vals = [analyses[n, "average"].mean_tau(measure) - analyses[n, "lstm"].mean_tau(measure) for n in names]
        ax.barh(y + off, vals, height=0.4, label=label, color=colour)
    ax.set_yticks(y, [title(n) for n in names])
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("mean τ (Average) − mean τ (BiLSTM)")
    ax.set_title("Fig. 5: Average vs BiLSTM", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def _scatter_panels(analyses: Mapping, encoder: str, x_of, y_of, xlabel: str, ylabel: str, heading: str,
                    xlim=None) -> Figure:
    keys = [k for k in analyses if k[1] == encoder]
    fig, axes = _grid(1, max(len(keys), 1), w=2.6, h=2.4)
    colours = _class_colours(6)
    for ax, key in zip(axes[0], keys):
        a = analyses[key]
        x, y = x_of(a), y_of(a)
        for k, (cls, label, sel) in enumerate(_by_class(a)):
            sel = sel[:len(x)]
            ax.scatter(x[sel], y[sel], s=6, alpha=0.6, color=colours[k % len(colours)], label=label)
        ax.set_title(_panel_title(key[0], encoder), fontsize=9)
        ax.set_xlabel(xlabel)
        if xlim is not None:
            ax.set_xlim(*xlim)
        if len(_by_class(a)) <= 3:
            ax.legend(fontsize=6)
    axes[0, 0].set_ylabel(ylabel)
    fig.suptitle(heading, fontsize=10)
    return fig


def permutation_figure(analyses: Mapping, encoder: str = "lstm") -> Figure:
    """Fig. 6: median output change under permutation (x) vs the maximum attention (y)."""
    return _scatter_panels(analyses, encoder, lambda a: a.perm_median_tvd, lambda a: a.max_attention,
                           "median Δŷ (TVD)", "max attention", "Fig. 6: permuting attention", xlim=(0, None))


def adversarial_histograms(analyses: Mapping, encoder: str = "lstm") -> Figure:
    """Fig. 7: histograms of the ε-max JSD, coloured by predicted class."""
    keys = [k for k in analyses if k[1] == encoder and analyses[k].adv_eps_max_jsd.size]
    fig, axes = _grid(1, max(len(keys), 1), w=2.6, h=2.2)
    colours = _class_colours(6)
    for ax, key in zip(axes[0], keys):
        a = analyses[key]
        jsd = a.adv_eps_max_jsd
        for k, (cls, label, sel) in enumerate(_by_class(a)):
            ax.hist(jsd[sel[:jsd.size]], bins=np.linspace(0, LN2, 15), alpha=0.6,
                    color=colours[k % len(colours)], label=label)
        ax.axvline(LN2, color="black", lw=0.8, ls="--")
        ax.set_title(_panel_title(key[0], encoder), fontsize=9)
        ax.set_xlabel("ε-max JSD")
        if len(_by_class(a)) <= 3:
            ax.legend(fontsize=6)
    fig.suptitle("Fig. 7: adversarial attention", fontsize=10)
    return fig


def adversarial_scatter(analyses: Mapping, encoder: str = "lstm") -> Figure:
    """Fig. 8: ε-max JSD (x) against the maximum attention (y)."""
    keys = {k: a for k, a in analyses.items() if k[1] == encoder and a.adv_eps_max_jsd.size}
    return _scatter_panels(keys, encoder, lambda a: a.adv_eps_max_jsd,
                           lambda a: a.max_attention[:a.adv_eps_max_jsd.size], "ε-max JSD", "max attention",
                           "Fig. 8: ε-max JSD vs max attention", xlim=(0, 0.7))


def transformer_figure(tr: Analysis, lstm: Analysis | None = None) -> Figure:
    """Beyond the paper: τ histograms of Transformer attention and Chefer relevance against gradient and LOO, and
    the permutation / adversarial distributions next to the BiLSTM's (SST)."""
    fig, axes = _grid(1, 4, w=2.6, h=2.3)
    bins = np.linspace(-1, 1, 21)
    for ax, (measures, title) in zip(axes[0, :2], ((("attn_grad", "chefer_grad"), "vs gradient"),
                                                    (("attn_loo", "chefer_loo"), "vs LOO"))):
        for measure, label, colour in ((measures[0], "attention", COLORBLIND[0]),
                                       (measures[1], "Chefer", COLORBLIND[1])):
            vals = np.asarray(tr.tau[measure].statistic, float)
            ax.hist(vals[np.isfinite(vals)], bins=bins, alpha=0.6, label=label, color=colour)
        ax.set_title(f"Transformer: τ {title}", fontsize=9)
        ax.set_xlabel("Kendall τ")
        ax.legend(fontsize=6)
    ax = axes[0, 2]
    ax.hist(tr.perm_median_tvd, bins=20, alpha=0.6, label="Transformer", color=COLORBLIND[2])
    if lstm is not None:
        ax.hist(lstm.perm_median_tvd, bins=20, alpha=0.6, label="BiLSTM", color=COLORBLIND[4])
    ax.set_title("permutation: Δŷ^med", fontsize=9)
    ax.set_xlabel("median TVD")
    ax.legend(fontsize=6)
    ax = axes[0, 3]
    jbins = np.linspace(0, LN2, 15)
    ax.hist(tr.adv_eps_max_jsd, bins=jbins, alpha=0.6, label="Transformer", color=COLORBLIND[2])
    if lstm is not None and lstm.adv_eps_max_jsd.size:
        ax.hist(lstm.adv_eps_max_jsd, bins=jbins, alpha=0.6, label="BiLSTM", color=COLORBLIND[4])
    ax.set_title("adversarial: ε-max JSD", fontsize=9)
    ax.set_xlabel("ε-max JSD")
    ax.legend(fontsize=6)
    return fig


def _out_text(a: Analysis, probs: np.ndarray) -> str:
    c = int(np.argmax(probs))
    name = a.label_names[c] if c < len(a.label_names) else str(c)
    return f"ŷ = {name} ({probs[c]:.3f})"


def instance_panels(a: Analysis, i: int) -> Figure:
    """Fig. 1 / App. D: original, median-permuted and adversarial attention on instance i, with the outputs."""
    if not 0 <= i < len(a):
        raise ValueError(f"instance must be in 0..{len(a) - 1} for {title(a.dataset, a.encoder)}, got {i}")
    tokens = [t for t in a.tokens[i]]
    head = f"{title(a.dataset, a.encoder)} #{i}"
    if a.queries is not None:
        head += f" — query: {a.queries[i]}"
    tau_g = float(a.tau["attn_grad"].statistic[i])
    panels = [(f"{head}\noriginal attention: {_out_text(a, a.probs[i])}, τ_g = {tau_g:.2f}", tokens, a.attention[i])]
    d_perm = 0.5 * float(np.abs(a.perm_probs[i] - a.probs[i]).sum())
    panels.append((f"median permutation: {_out_text(a, a.perm_probs[i])}, Δŷ = {d_perm:.3f}", tokens,
                   a.perm_alpha[i]))
    if i < len(a.adv_alpha):
        d_adv = 0.5 * float(np.abs(a.adv_probs[i] - a.probs[i]).sum())
        panels.append((f"adversarial (ε-max JSD = {a.adv_eps_max_jsd[i]:.3f}): {_out_text(a, a.adv_probs[i])}, "
                       f"Δŷ = {d_adv:.3f}", tokens, a.adv_alpha[i]))
    return token_heatmap_panels(panels, max_width=90, shared_scale=True)


def striking_instance(a: Analysis, max_tokens: int = 40) -> int:
    """A short instance with a large ε-max JSD and peaked original attention (for the Fig. 1-style heatmap)."""
    n = a.adv_eps_max_jsd.size
    if n == 0:
        return 0
    short = np.asarray([len(t) <= max_tokens for t in a.tokens[:n]])
    score = a.adv_eps_max_jsd + 0.5 * a.max_attention[:n] - 10 * (~short)
    return int(np.argmax(score))


def figure1(analyses: Mapping, preferred: tuple[str, str] = ("sst_jw", "lstm")) -> Figure:
    """Fig. 1: the striking instance of the preferred analysis (else the first one)."""
    a = analyses.get(preferred) or next(iter(analyses.values()))
    return instance_panels(a, striking_instance(a))


def instance_renderer(analyses: Mapping):
    """A render function for `lab.widgets.controls`: (dataset, encoder, instance) -> Figure."""

    def render(dataset: str, encoder: str, instance: int):
        key = (dataset, encoder)
        if key not in analyses:
            avail = ", ".join(f"{d}/{e}" for d, e in analyses)
            raise ValueError(f"no analysis for {dataset}/{encoder}; available: {avail}")
        return instance_panels(analyses[key], int(instance))

    return render
