"""Presentation of notebook 02 (Chefer et al. on BERT): figures, tables, review heatmaps and the review widget, as
pure functions of what `lab.experiments.chefer_bert` computes. ``labels[method]`` names a method in legends and
titles; ``paper_methods`` are drawn solid, the others dashed."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

from matplotlib.figure import Figure

from lab.viz.style import legend_outside, paper_style
from lab.viz.text import token_heatmap_panels


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


# ---- tables -------------------------------------------------------------------------------------------------


def figure3_frame(fig3: Mapping, which: str = "macro"):
    """The Figure 3 series as a DataFrame: methods × (n, k=10, ..., k=80[, max_se for macro])."""
    import pandas as pd

    frame = pd.DataFrame({f"k={k}": [fig3[which][m][i] for m in fig3[which]] for i, k in enumerate(fig3["ks"])},
                         index=list(fig3[which]))
    frame.insert(0, "n", [fig3["n"][m] for m in fig3[which]])
    if which == "macro":
        frame["max_se"] = [max(fig3["se"][m]) for m in fig3[which]]
    frame.index.name = f"token F1 ({which})"
    return frame


def rows_frame(rows: Mapping[str, Mapping], index_name: str = "method"):
    """A {method: {column: value}} table (class support, special-token mass) as a DataFrame."""
    import pandas as pd

    frame = pd.DataFrame.from_dict({m: dict(r) for m, r in rows.items()}, orient="index")
    frame.index.name = index_name
    return frame


def f1_table_markdown(fig3: Mapping, labels: Mapping[str, str], which: str = "macro") -> str:
    """The Figure 3 series as a markdown table (methods × k)."""
    lines = ["| method | n | " + " | ".join(f"k={k}" for k in fig3["ks"]) + " |",
             "|" + "---|" * (len(fig3["ks"]) + 2)]
    for m, ys in fig3[which].items():
        lines.append(f"| {labels.get(m, m)} | {fig3['n'][m]} | " + " | ".join(f"{y:.3f}" for y in ys) + " |")
    return "\n".join(lines)


# ---- review heatmaps (supplement Figs. 15-33) and the review widget ----------------------------------------
# A review `view` is {uid, category, tokens, rationale, gold, predicted, p, counterfactual} and a `map` is
# {method, target, class, scores[, f1, top_k]}, both over the review's tokens without [CLS] (rollout and attention
# put most of their mass there); `lab.experiments.chefer_bert.review_view` / `review_map` make them.


def pick_reviews(index: Sequence[Mapping]) -> dict[str, int]:
    """One review per category (ground truth × correct / mistaken, sorted): the shortest with a visible rationale
    (readable figures); `index` rows are {index, category, tokens, rationale}."""
    out: dict[str, int] = {}
    for r in sorted(index, key=lambda r: (r["tokens"], r["index"])):
        if r["rationale"]:
            out.setdefault(r["category"], r["index"])
    return {c: out[c] for c in sorted(out)}


def review_panels(view: Mapping, maps: Sequence[Mapping], labels: Mapping[str, str], max_width: int = 120,
                  fontsize: float = 7.0) -> Figure:
    """Supplement-style figure: (a) the human rationale, then one panel per map, lettered (b), (c), ...; a map of a
    class-agnostic method (`target` None) is marked so. Each panel is scaled to its own maximum."""
    panels = [(f"(a) human rationale — review {view['uid']}: ground truth {view['gold']}, predicted "
               f"{view['predicted']} (p={view['p']:.2f})", view["tokens"], view["rationale"])]
    for letter, m in zip("bcdefghijklmnopqrstuvwxyz", maps):
        what = "(class-agnostic)" if m["target"] is None else f"→ {m['class']} ({m['target']})"
        panels.append((f"({letter}) {labels.get(m['method'], m['method'])} {what}", view["tokens"], m["scores"]))
    return token_heatmap_panels(panels, max_width=max_width, fontsize=fontsize)


def render_review(view: Mapping, maps: Sequence[Mapping], labels: Mapping[str, str], k: int, top_k_only: bool = False,
                  max_width: int = 120) -> Figure:
    """The human rationale and each map of one review, titled with its token-F1@k against the rationale; with
    `top_k_only` each map is shown as its top-k word pieces (the predicted rationale of Fig. 3)."""
    panels = [(f"human rationale — {view['category']}", view["tokens"], view["rationale"])]
    for m in maps:
        f1 = m["f1"]
        panels.append((f"{labels.get(m['method'], m['method'])} → {m['class']}: F1@{k} = {f1['macro_f1']:.2f} "
                       f"(P {f1['macro_precision']:.2f}, R {f1['macro_recall']:.2f})", view["tokens"],
                       m["top_k"] if top_k_only else m["scores"]))
    return token_heatmap_panels(panels, max_width=max_width, fontsize=7.0)


def review_choices(index: Sequence[Mapping], group: str = "all") -> list[tuple[str, int]]:
    """(label, index) of the reviews in a group ("all" or a category such as "NEG mistaken"), for a dropdown."""
    return [(f"#{r['index']} {r['uid']} — {r['category']} ({r['tokens']} tokens)", r["index"]) for r in index
            if group in ("all", r["category"])]


def review_selector(index: Sequence[Mapping]):
    """(group dropdown, review dropdown): choosing a group (label × correctness) filters the reviews."""
    import ipywidgets as W

    style = {"description_width": "initial"}
    groups = ["all"] + sorted({r["category"] for r in index})
    group = W.Dropdown(options=groups, value="all", description="group", style=style)
    review = W.Dropdown(options=review_choices(index), description="review", style=style,
                        layout=W.Layout(width="34em"))

    def refilter(change):
        review.options = review_choices(index, change["new"]) or [("(no review in this group)", -1)]

    group.observe(refilter, names="value")
    return group, review


def method_selector(methods: Sequence[str], value=("chefer",)):
    import ipywidgets as W

    return W.SelectMultiple(options=list(methods), value=tuple(value), description="methods", rows=6,
                            style={"description_width": "initial"})


def review_renderer(view: Callable[[int], Mapping], review_map: Callable[..., Mapping], labels: Mapping[str, str]):
    """render(group, review, methods, target, k, top_k_only) -> Figure for `lab.widgets.controls`, from `view(i)`
    and `review_map(i, method, target, k)` (e.g. those of `lab.experiments.chefer_bert` bound to a context)."""

    def render(group: str = "all", review: int = 0, methods=("chefer",), target: str = "ground truth", k: int = 40,
               top_k_only: bool = False):
        if review is None or int(review) < 0:
            raise ValueError("pick a review (the chosen group has none)")
        if not methods:
            raise ValueError("pick at least one method")
        maps = [review_map(int(review), m, target, int(k)) for m in methods]
        return render_review(view(int(review)), maps, labels, int(k), top_k_only)

    return render
