"""Figures, widget and discussion of notebook 06 (input marginalisation): pure functions of what
`lab.experiments.input_marginalization` computes (names and labels are passed in)."""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from lab.viz.curves import perturbation_curves
from lab.viz.style import figure_axes, paper_style
from lab.viz.text import token_heatmap, token_heatmap_panels


def deletion_figure(curves: Mapping[str, Mapping], model_name: str, deletion_label: str, ax=None) -> Figure:
    """Fig. 4: mean p(ŷ | x^[i]) against the fraction of tokens replaced, one line per method; `curves[method]` is
    its `lab.metrics.perturbation.auc_rep` result (grid, mean_curve, auc_mean)."""
    grid = next(iter(curves.values()))["grid"]
    return perturbation_curves(grid, {k: v["mean_curve"] for k, v in curves.items()}, ax=ax,
                               ylabel="p(ŷ | x^[i])", xlabel=f"fraction of tokens replaced by {deletion_label}",
                               title=f"AUC_rep curves, {model_name}, {deletion_label} deletion",
                               legend_values={k: v["auc_mean"] for k, v in curves.items()})


@paper_style()
def mc_figure(study: Mapping, model_name: str, ax=None) -> Figure:
    """Mean |a − a_exact| against classifier forward rows per token: MC (by n) and truncation (by σ)."""
    fig, ax = figure_axes(ax, figsize=(4.8, 3.4))
    for kind, marker in (("mc", "o"), ("truncate", "s")):
        pts = [r for r in study["rows"] if r["kind"] == kind]
        ax.plot([r["rows_per_token"] for r in pts], [r["mae"] for r in pts], marker=marker,
                label="Monte Carlo (n draws)" if kind == "mc" else "σ-truncation")
        for r in pts:
            ax.annotate(f"{r['param']:g}", (r["rows_per_token"], r["mae"]), textcoords="offset points",
                        xytext=(3, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("classifier forward rows per token (cost)")
    ax.set_ylabel("mean |a − a_exact|")
    ax.set_title(f"MC vs truncation ({model_name}; exact over the top {study['mc_vocab']} MLM words)", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def sentence_panel(view: Mapping, run, i: int, title: str) -> tuple[str, list[str], np.ndarray]:
    """(title, word pieces, scores) of row `i` of a view for `token_heatmap_panels`: the content tokens, a pair's
    middle [SEP] drawn as "|" (score 0); the other special tokens and the padding are left out."""
    tokens, valid, special = view["tokens"][i], view["valid"][i], view["special"][i]
    last = int(valid.sum()) - 1
    keep = [j for j, t in enumerate(tokens) if not special[j] or (t == "[SEP]" and valid[j] and j != last)]
    scores = view["runs"][run]["scores"][i]
    return (title, ["|" if tokens[j] == "[SEP]" else tokens[j] for j in keep],
            np.array([0.0 if tokens[j] == "[SEP]" else float(scores[j]) for j in keep]))


def _predicted(run: Mapping, i: int, names: Sequence[str]) -> tuple[str, float]:
    y = int(run["target"][i])
    return names[y], float(run["log_probs"][i, y].exp())


def sst_figure(view: Mapping, gold: Sequence[int], model_names: Mapping[str, str]) -> Figure:
    """Fig. 1: one panel per (model, method) run of the view and sentence (gold labels `gold`: 1 positive)."""
    panels = []
    for key, run in view["runs"].items():
        for i, g in enumerate(gold):
            y, p = _predicted(run, i, "−+")
            panels.append(sentence_panel(view, key, i, f"{model_names[key[0]]} · gold {'+' if g else '−'} · "
                                                       f"predicted {y} (p={p:.2f})"))
    return token_heatmap_panels(panels, signed=True)


def snli_figure(view: Mapping, gold: Sequence[int], labels: Sequence[str]) -> Figure:
    """Fig. 2: premise | hypothesis attributions of the view's one run, for each pair (gold classes `gold`)."""
    key, run = next(iter(view["runs"].items()))
    panels = []
    for i, g in enumerate(gold):
        y, p = _predicted(run, i, labels)
        panels.append(sentence_panel(view, key, i, f"gold {labels[g]} · predicted {y} (p={p:.2f}) · "
                                                   "premise | hypothesis"))
    return token_heatmap_panels(panels, signed=True)


def zero_vs_marg_figure(view: Mapping, model_name: str) -> Figure:
    """Fig. 3: each sentence under every run (method) of the view, e.g. Zero erasure above marginalisation."""
    panels = []
    for i in range(len(view["tokens"])):
        for key, run in view["runs"].items():
            method = "Zero" if key[1] == "zero" else "Marg"
            panels.append(sentence_panel(view, key, i, f"{method} · {model_name} · "
                                                       f"predicted {_predicted(run, i, '−+')[0]}"))
    return token_heatmap_panels(panels, signed=True)


def generative_figure(view: Mapping, log_p) -> Figure:
    """Fig. 5: the causal LM's attributions, each sentence titled with its log p(x)."""
    key = next(iter(view["runs"]))
    return token_heatmap_panels([sentence_panel(view, key, i, f"log p(x) = {float(lp):.1f}")
                                 for i, lp in enumerate(log_p)], signed=True)


@paper_style()
def candidates_figure(view: Mapping, run, position: int, title: str, top: int = 15) -> Figure:
    """The coloured sentence (row 0 of the view) and, when the run kept candidates at `position`, the `top` of
    them by weight with their p(y | x_{i←w}); else a note that the method replaces the token by a fixed one."""
    fig = Figure(figsize=(7, 5.5), layout="constrained")
    ax1, ax2 = fig.subplots(2, 1, gridspec_kw={"height_ratios": [1, 2.2]})
    token_heatmap(*sentence_panel(view, run, 0, title)[1:], ax=ax1, title=title, signed=True)
    found = view["runs"][run]["candidates"].get((0, position))
    if found:
        words, log_w, log_py = found[0], np.asarray(found[1], float), np.asarray(found[2], float)
        order = np.argsort(-log_w, kind="stable")[:top]
        ax2.barh(range(len(order))[::-1], np.exp(log_w[order]), color="tab:blue", label="weight (p_MLM or MC share)")
        ax2.set_yticks(range(len(order))[::-1], [f"{words[k]}  p(y)={np.exp(log_py[k]):.2f}" for k in order],
                       fontsize=7)
        ax2.set_title(f"candidates for '{view['tokens'][0][position]}' (position {position}); {len(words)} kept",
                      fontsize=9)
        ax2.legend(fontsize=7)
    else:
        ax2.text(0.5, 0.5, f"{run[1]}: one fixed replacement token (erasure)", ha="center", va="center")
        ax2.axis("off")
    return fig


def renderer(explain: Callable[..., Mapping], model_names: Mapping[str, str], pair_models: Sequence[str] = ()):
    """Widget render function (text, model, method, log10 σ, n_samples, position) -> Figure: `explain(texts,
    [(model, method)], pairs, keep=True, sigma=σ, n_samples=n)` returns a view with the candidates (e.g.
    `input_marginalization.attributions` with its first arguments bound); models in `pair_models` read
    'premise | hypothesis'; `position` counts the content tokens."""

    def render(text: str, model: str, method: str, sigma: float, n_samples: int, position: int) -> Figure:
        parts = [t.strip() for t in text.split("|", 1)] if model in pair_models else [text.strip()]
        if not parts[0]:
            raise ValueError("type a sentence")
        if model in pair_models and len(parts) < 2:
            raise ValueError(f"{model_names[model]}: write 'premise | hypothesis'")
        view = explain(parts[:1], [(model, method)], parts[1:] or None, keep=True, sigma=10 ** sigma,
                       n_samples=n_samples)
        content = (view["valid"][0] & ~view["special"][0]).nonzero()[:, 0].tolist()
        if not content:
            raise ValueError("the text has no content token")
        pos = content[min(max(int(position), 0), len(content) - 1)]
        return candidates_figure(view, (model, method), pos, f"{model_names[model]} · {method}")

    return render


# ---------------------------------------------------------------- discussion
def _ordering_verdicts(claims: Iterable[Mapping], deletion_labels: Iterable[str]) -> list[str]:
    """'<label> deletion: k holds, ... (of n models)' per deletion with an AUC_rep ordering claim."""
    out = []
    for label in deletion_labels:
        found = [c["verdict"] for c in claims if c["claim"].startswith("AUC_rep ordering")
                 and c["claim"].endswith(f"{label} deletion)")]
        if found:
            counts = ", ".join(f"{found.count(v)} {v}" for v in dict.fromkeys(found))
            out.append(f"{label} deletion: {counts} (of {len(found)} models)")
    return out


def _auc_discussion(res, deletion_labels: Iterable[str]) -> str:
    """Table 2 per (model, deletion) column, then the ordering verdicts counted per deletion."""
    rows = res.tables["table2_auc_rep"]["rows"]
    columns = [c for c in next(iter(rows.values())) if not c.endswith("±") and c != "Kim et al. (orig.)"]
    per_col = ["{}: {}".format(c, ", ".join(f"{meth.split(' ')[0]} {r[c]['ours']:.3f} ± {r[c + ' ±']['ours']:.3f}"
                                            for meth, r in rows.items())) for c in columns]
    paper = ", ".join(f"{meth.split(' ')[0]} {r[c]['paper']}" for meth, r in rows.items() for c in columns
                      if r[c].get("paper") is not None)
    text = ("*Table 2, AUC_rep (mean ± 95 % half-width; lower is better).* " + "; ".join(per_col)
            + (f" (reproduction's values, [PAD]: {paper})." if paper else "."))
    verdicts = _ordering_verdicts(res.claims, deletion_labels)
    return text + (" Marg < Unk < Zero under " + "; ".join(verdicts) + "." if verdicts else "")


def discussion_markdown(res, deletion_labels: Iterable[str]) -> str:
    """The notebook's discussion, formatted from the results object's tables (no fixed numbers); the verdicts are
    `lab.results.claims_markdown`'s. `deletion_labels`: the AUC_rep deletions' labels, in the order to report."""
    t, parts = res.tables, []
    if "mlm" in t:
        ours = t["mlm"]["rows"]["MiniLM + tied MLM head (ours)"]
        parts.append(f"*The masked LM.* Held-out top-1 {ours['top1']['ours']:.3f}, top-5 {ours['top5']['ours']:.3f}, "
                     f"perplexity {ours['perplexity']['ours']:.0f} after {ours['steps']['ours']} steps (issue target: "
                     "top-5 ≥ 0.5; the paper uses pretrained BERT).")
    if "table1_accuracy" in t:
        acc = [(m, r["accuracy (Mehta)"], r["accuracy (Kim)"]) for m, r in t["table1_accuracy"]["rows"].items()]
        parts.append("*Table 1 (ours vs Mehta / Kim).* "
                     + "; ".join(f"{m} {a['ours']:.3f} ({a['paper']} / {k['paper']})" for m, a, k in acc) + ".")
    if "table2_auc_rep" in t:
        parts.append(_auc_discussion(res, deletion_labels))
    if "mc_vs_truncation" in t:
        mc = t["mc_vs_truncation"]["rows"].items()
        parts.append("*Monte Carlo vs truncation (beyond the paper), mean |a − a_exact| at rows per token.* "
                     + "; ".join(f"{k} {r['mean_abs_error']['ours']:.4f} at {r['rows_per_token']['ours']:.0f}"
                                 for k, r in mc) + ".")
    return "\n\n".join(parts)
