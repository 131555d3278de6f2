"""Figures, widget renderer and generated text of notebook 04 (Wu & Ong): pure functions of what
`lab.experiments.wu_ong` computes (deletion curves, correlation matrices, example word scores, a results file)."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from lab.results import Results
from lab.viz.curves import heatmap_matrix, perturbation_curves
from lab.viz.style import paper_style
from lab.viz.text import token_heatmap_panels

DONE = {"delete": "removed", "pad": "set to [PAD]", "replace": "set to [MASK]"}  # what deletion does to a word


@paper_style()
def deletion_figure(curves: Mapping[str, Mapping[str, Mapping]], mode: str) -> Figure:
    """Fig. 1: one panel per dataset, accuracy vs #words removed in `mode`, one line per method; `curves[dataset]
    [method]` is a `lab.metrics.perturbation.deletion_curve` output."""
    fig = Figure(figsize=(3.6 * len(curves), 3.2), layout="constrained")
    for ax, (name, per_method) in zip(fig.subplots(1, len(curves), squeeze=False)[0], curves.items()):
        first = next(iter(per_method.values()))
        perturbation_curves(first["x"], {m: c["accuracy"] for m, c in per_method.items()}, ax=ax,
                            xlabel=f"# words {DONE[mode]}", ylabel="accuracy",
                            title=f"{name} (n={first['n_examples']})")
        ax.set_ylim(-0.02, 1.02)
    return fig


@paper_style()
def cross_dataset_figure(matrices: Mapping[str, np.ndarray], datasets: Sequence[str], n_words: int) -> Figure:
    """Fig. 3: one dataset x dataset correlation matrix per method."""
    fig = Figure(figsize=(3.3 * len(matrices), 3.0), layout="constrained")
    for ax, (method, m) in zip(fig.subplots(1, len(matrices), squeeze=False)[0], matrices.items()):
        heatmap_matrix(m, list(datasets), list(datasets), ax=ax, vmin=-1, vmax=1, cmap="RdBu_r",
                       colorbar=False, title=f"{method} ({n_words} shared words)")
    return fig


def example_figure(panels: Mapping[str, Mapping]) -> Figure:
    """Fig. 2 style: one example's word relevance under every method; `panels[method]` holds "words", "scores",
    "target" (the explained class) and "p" (its probability)."""
    return token_heatmap_panels([(f"{m} (target {p['target']}, p={p['p']:.2f})", p["words"], p["scores"])
                                 for m, p in panels.items()])


def render_deletion(perturb: Callable[..., Mapping]):
    """Render function for `lab.widgets.controls`: (dataset, method, sentence, words_deleted) -> Figure, drawing
    `perturb(dataset, method, sentence, words_deleted)` (`lab.experiments.wu_ong.perturber`)."""
    def render(dataset: str, method: str, sentence: int, words_deleted: int) -> Figure:
        p = perturb(dataset, method, sentence, words_deleted)
        names = p["label_names"]
        before, after = int(np.argmax(p["probs_before"])), int(np.argmax(p["probs_after"]))
        kept = [w for w, r in zip(p["words"], p["removed"]) if not r] or ["(nothing left)"]
        kept_scores = [s for s, r in zip(p["scores"], p["removed"]) if not r] or [0.0]
        return token_heatmap_panels([
            (f"{dataset} #{p['index']} {method} relevance; gold {names[p['label']]}, predicted {names[before]} "
             f"(p={p['probs_before'][before]:.2f})", p["words"], p["scores"]),
            (f"after removing {int(p['removed'].sum())} word(s): predicted {names[after]} "
             f"(p={p['probs_after'][after]:.2f})", kept, kept_scores)])
    return render


# ---- "reading the results": generated from the results file ------------------------------------------------
def _interval_text(c: Mapping) -> str:
    if c["Δauc"]["ours"] is None:
        return "no values"
    return f"{c['Δauc']['ours']:+.3f} [{c['Δauc_low']['ours']:+.3f}, {c['Δauc_high']['ours']:+.3f}]"


def _decided(results: Results, mode: str) -> bool:
    """Whether the deletion claims of `mode` were decided (`Results.add_claim` leaves smoke claims undecided)."""
    return any(f"({mode} deletion)" in c["claim"] and c["verdict"] != "not evaluated" for c in results.claims)


def _deletion_lines(results: Results, methods: Sequence[str], margin: float) -> list[str]:
    t, lines = results.tables, []
    max_words = results.meta.get("settings", {}).get("max_words")
    for name in [n for n in t if n.startswith("fig1_deletion_paired")]:
        rows, mode = t[name]["rows"], t[name]["caption"].split("(")[1].split(")")[0]
        for m in methods:
            cells = [(r.split(" (")[1][:-1], c) for r, c in rows.items() if r.startswith(f"{m} (")]
            lines.append(f"- **Deletion ({mode}), {m}** − Random (mean accuracy over 0..{max_words} words; "
                         "< 0 = steeper than random): " + ", ".join(f"{d} {_interval_text(c)}" for d, c in cells) + ".")
        if _decided(results, mode):
            lines.append(_lrp_finding(rows, mode, margin))
    return lines


def _lrp_finding(rows: Mapping, mode: str, margin: float) -> str:
    """The plain statement of whether any LRP reading beats random deletion (whole interval below -margin)."""
    beats = [r for r, c in rows.items() if r.startswith("LRP") and c["Δauc_high"]["ours"] is not None
             and c["Δauc_high"]["ours"] < -margin]
    if beats:
        return f"- **LRP vs random ({mode})**: beats random deletion (interval below −{margin}) in " + \
            ", ".join(beats) + "."
    return (f"- **Finding ({mode}): no LRP reading beats random deletion** — for neither the authors' code reading "
            f"nor the paper-text reading does the paired 95 % interval of auc − auc_random lie below "
            f"−{margin} on any dataset.")


def _seed_lines(t: Mapping, methods: Sequence[str]) -> list[str]:
    lines = []
    for name, label in (("table1_seed_pearson", "per-example r over words"),
                        ("table1_seed_vocabulary", "authors' aggregation, r over WordPieces")):
        cols = t.get(name, {}).get("rows", {})
        for m in methods:
            vals = {d: c[m]["ours"] for d, c in cols.items() if c[m]["ours"] is not None}
            if vals:
                paper = ", ".join(f"{d} {cols[d][m]['paper']}" for d in vals)
                lines.append(f"- **Seeds, {m}** ({label}): r " + ", ".join(f"{d} {v:.3f}" for d, v in vals.items())
                             + f" (paper: {paper}).")
    return lines


def _cross_line(t: Mapping, meta: Mapping, methods: Sequence[str], suffix: str, label: str) -> list[str]:
    cross = {m: t[f"fig3_cross_dataset_{m}{suffix}"]["rows"] for m in methods if f"fig3_cross_dataset_{m}{suffix}" in t}
    if not cross:
        return []
    means = {}
    for m, rows in cross.items():
        off = [c["ours"] for a, r in rows.items() for b, c in r.items() if a != b and c["ours"] is not None]
        means[m] = f"{np.mean(off):.3f}" if off else "n/a"
    return [f"- **Across datasets** ({label}; {meta.get('n_shared_words')} shared words), mean off-diagonal r: " +
            ", ".join(f"{m} {v}" for m, v in means.items()) + "."]


def reading_markdown(results: Results, methods: Sequence[str], margin: float) -> str:
    """The notebook's "reading the results" bullets, generated from the results file (no hard-coded numbers):
    `methods` in their order, `margin` the auc difference the deletion claims need."""
    t, meta = results.tables, results.meta
    sizes = meta.get("settings", {})
    lines = [f"Sizes of this run: deletion examples {sizes.get('n_deletion')}, seed-pair examples "
             f"{sizes.get('n_seed')}, vocabulary examples {sizes.get('n_words')}."]
    lines += _deletion_lines(results, methods, margin)
    if "lrp_conservation" in t:
        lines.append("- **LRP conservation**, median |ΣR − R⁽⁰⁾| / |R⁽⁰⁾| per dataset and reading: " + ", ".join(
            f"{r} {c['median_rel_delta']['ours']:.3g}" for r, c in t["lrp_conservation"]["rows"].items()) +
            " (0 = conserved).")
    lines += _seed_lines(t, methods)
    lines += _cross_line(t, meta, methods, "", f"per-sentence {meta.get('sentence_norm')}(|R|)")
    lines += _cross_line(t, meta, methods, "_raw", "raw per-word means")
    tables = meta.get("word_tables") or {}
    if tables:
        d = next(iter(tables))
        lines.append(f"- **Words ({d})**, top 5: " + "; ".join(f"{m}: {', '.join(v['top'])}"
                                                                for m, v in tables[d].items()) + ".")
    return "\n".join(lines)
