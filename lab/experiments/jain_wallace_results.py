"""Notebook 05's tables, claims and results file (Jain & Wallace), from what `lab.experiments.jain_wallace`
computes: Table 1 (test performance), Table 2 and the τ means, permutations (Fig. 6), adversaries (Figs. 7–8), the
premise check, the Transformer beyond the paper, and the paper's claims, each decided by a bootstrap interval."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from lab import stats
from lab.claims import interval_cells, parts_claim, range_part
from lab.analysis import attention_tests as at
from lab.analysis.attention_tests import Analysis
from lab.config import torch_threads
from lab.experiments.jain_wallace import (ENCODERS, NOTEBOOK, PAPER_CLASS_ORDER, PAPER_TABLE1, PAPER_TABLE2, Task,
                                          other_average)
from lab.models import rnn
from lab.results import Results, claim_verdict
from lab.viz.jain_wallace import ENCODER_LABELS, title


# ---------------------------------------------------------------- tables
def tau_summary(a: Analysis, level: float = 0.05) -> dict:
    """{measure: {group: {mean, std, sig_frac, n}}} for every τ of an analysis (Table 2 layout)."""
    return {name: at.summarise_tau(corr, a.groups, level) for name, corr in a.tau.items()}


def performance_rows(tasks: Mapping[str, Task], models: Mapping) -> dict:
    """Table 1: test performance per dataset and encoder (paper: BiLSTM only)."""
    rows = {}
    for name, task in tasks.items():
        row = {}
        for enc in ENCODERS:
            if (name, enc) in models:
                with torch_threads(fallback=1):
                    m = rnn.test_metrics(models[name, enc].model, task.test, "macro_f1" if task.spec.kind ==
                                         "classification" else "accuracy")
                paper = PAPER_TABLE1.get(name) if enc == "lstm" else None
                iv = m["paper_metric_interval"]
                row[f"test_{enc}"] = (paper, round(m["paper_metric"], 4))
                row[f"test_{enc}_ci_low"] = (None, round(iv.low, 4))
                row[f"test_{enc}_ci_high"] = (None, round(iv.high, 4))
                row[f"accuracy_{enc}"] = (None, round(m["accuracy"], 4))
        row["n_train"] = (None, len(task.train))
        row["n_test"] = (None, len(task.test))
        rows[title(name)] = row
    return rows


def paper_class(dataset: str, group, label_names: Sequence[str]):
    """The paper's Table 2 key for our predicted class `group` (our label index; "overall" for QA)."""
    order = PAPER_CLASS_ORDER.get(dataset)
    if order is None or group == "overall":
        return group
    return order.index(label_names[group])


def _group_label(dataset: str, group, label_names: Sequence[str]) -> str:
    if group == "overall":
        return "overall"
    return f"class {group}" + (f" ({label_names[group]})" if dataset in PAPER_CLASS_ORDER else "")


def table2_rows(analyses: Mapping[tuple[str, str], Analysis], level: float = 0.05) -> dict:
    """Table 2: mean τ, std and Sig. Frac. per dataset and predicted class, paper values alongside (matched by
    class name where the paper's class order differs from ours: SNLI)."""
    rows: dict[str, dict] = {}
    for (name, enc), a in analyses.items():
        if enc not in ("lstm", "average"):
            continue
        summary = tau_summary(a, level)
        for group in sorted(set(a.groups), key=str):
            key = f"{title(name)} / {_group_label(name, group, a.label_names)}"
            paper = PAPER_TABLE2.get(name, {}).get(paper_class(name, group, a.label_names))
            row = rows.setdefault(key, {})
            for measure, pcol, pidx in (("attn_grad", "tau_g", 0 if enc == "lstm" else 1),
                                        ("attn_loo", "tau_loo", 2 if enc == "lstm" else None)):
                s = summary[measure].get(group)
                if s is None:
                    continue
                p = paper[pidx] if paper is not None and pidx is not None else (None, None, None)
                col = f"{pcol}_{'bilstm' if enc == 'lstm' else 'average'}"
                row[col] = (p[0], round(s["mean"], 3))
                row[f"{col}_std"] = (p[1], round(s["std"], 3))
                row[f"{col}_sig"] = (p[2], round(s["sig_frac"], 3))
                row[f"n_{enc}"] = (None, s["n"])
    return rows


def tau_rows(analyses: Mapping) -> dict:
    """Mean τ per dataset and encoder with its 95 % bootstrap interval over the analysed instances."""
    rows = {}
    for (name, enc), a in analyses.items():
        row = {}
        for measure in ("attn_grad", "attn_loo", "grad_loo"):
            vals = _finite(_tau(a, measure))[0]
            if vals.size:
                row.update(_ci_cells(measure, stats.bootstrap(vals), 3))
        rows[title(name, enc)] = {**row, "n": len(a)}
    return rows


def _ci_cells(col: str, iv: stats.Interval, digits: int) -> dict:
    return interval_cells(col, iv, ("_ci_low", "_ci_high"), digits)


def permutation_rows(analyses: Mapping) -> dict:
    rows = {}
    for (name, enc), a in analyses.items():
        med = a.perm_median_tvd
        rows[title(name, enc)] = {
            "median_of_median_tvd": round(float(np.median(med)), 4),
            "frac_median_tvd_below_0.01": round(float((med < 0.01).mean()), 3),
            "frac_median_tvd_below_0.05": round(float((med < 0.05).mean()), 3),
            "mean_max_attention": round(float(a.max_attention.mean()), 3),
            "ms_per_instance": round(1000 * a.timings["permutation_s_per_instance"], 2), "n": len(a)}
    return rows


def adversarial_rows(analyses: Mapping) -> dict:
    rows = {}
    for (name, enc), a in analyses.items():
        jsd = a.adv_eps_max_jsd
        if jsd.size == 0:
            continue
        corr = at.kendall_per_instance([jsd], [a.max_attention[:jsd.size]])
        rows[title(name, enc)] = {
            "epsilon": a.epsilon, "mean_eps_max_jsd": round(float(jsd.mean()), 3),
            "median_eps_max_jsd": round(float(np.median(jsd)), 3),
            "frac_jsd_above_0.6": round(float((jsd > 0.6).mean()), 3), **_relative_cells(a),
            "frac_feasible": round(float(a.adv_feasible.mean()), 3),
            "mean_any_iterate_jsd": round(float(a.adv_any_iterate.mean()), 3),
            "tau_jsd_vs_max_attention": round(float(corr.statistic[0]), 3) if np.isfinite(corr.statistic[0]) else None,
            "s_per_instance": round(a.timings["adversarial_s_per_instance"], 3), "n": int(jsd.size)}
    return rows


RELATIVE_JSD = 0.6 / at.LN2  # "near the bound": the absolute criterion JSD > 0.6 when the reachable maximum is ln 2


def _relative_cells(a: Analysis) -> dict:
    rel = a.adv_relative_jsd
    if not rel.size:
        return {}
    return {"median_reachable_max_jsd": round(float(np.median(a.adv_reachable_max)), 3),
            "median_relative_jsd": round(float(np.median(rel)), 3),
            "frac_relative_jsd_above_0.87": round(float((rel > RELATIVE_JSD).mean()), 3)}


def premise_rows(analyses: Mapping) -> dict:
    """Premise reliance (pair tasks): how often the prediction changes, and by how much (TVD), when the attended
    premise/story context is zeroed; accuracy on the analysed instances with and without it. 95 % intervals."""
    rows = {}
    for (name, enc), a in analyses.items():
        if a.context_zeroed_probs is None:
            continue
        changed = (a.context_zeroed_probs.argmax(-1) != a.predicted).astype(float)
        moved = 0.5 * np.abs(a.context_zeroed_probs - a.probs).sum(-1)
        rows[title(name, enc)] = {
            **_ci_cells("changed_prediction", stats.bootstrap(changed), 3),
            **_ci_cells("mean_tvd", stats.bootstrap(moved), 3),
            "accuracy": round(float((a.predicted == a.labels).mean()), 3),
            "accuracy_zeroed": round(float((a.context_zeroed_probs.argmax(-1) == a.labels).mean()), 3), "n": len(a)}
    return rows


def transformer_rows(tr: Analysis, analyses: Mapping) -> dict:
    """Agreement on SST: BiLSTM/Average attention vs the Transformer's attention and Chefer's relevance."""
    def row(a: Analysis) -> dict:
        return {"tau_vs_grad": round(a.mean_tau("attn_grad"), 3), "tau_vs_loo": round(a.mean_tau("attn_loo"), 3),
                "tau_grad_vs_loo": round(a.mean_tau("grad_loo"), 3),
                "median_perm_tvd": round(float(np.median(a.perm_median_tvd)), 4),
                "mean_eps_max_jsd": round(float(a.adv_eps_max_jsd.mean()), 3)}

    rnns = {("sst_jw", "lstm"): "BiLSTM attention", ("sst_jw", "average"): "Average attention"}
    rows = {label: row(analyses[key]) for key, label in rnns.items() if key in analyses}
    rows["Transformer attention (last layer, [CLS], head mean)"] = row(tr)
    rows["Transformer Chefer relevance"] = {"tau_vs_grad": round(tr.mean_tau("chefer_grad"), 3),
                                            "tau_vs_loo": round(tr.mean_tau("chefer_loo"), 3)}
    return rows


def timing_rows(models: Mapping, analyses: Mapping) -> dict:
    rows = {}
    for (name, enc), a in analyses.items():
        trained = models.get((name, enc))
        rows[title(name, enc)] = {"train_s": trained.metrics.get("train_seconds") if trained is not None else None,
                                  **{k.replace("_s_per_instance", "_ms"): round(1000 * v, 2)
                                     for k, v in a.timings.items() if k.endswith("_s_per_instance")}}
    return rows


# ---------------------------------------------------------------- claims (paired bootstrap intervals)
def _tau(a: Analysis, measure: str) -> np.ndarray:
    return np.asarray(a.tau[measure].statistic, float)


def _finite(*cols: np.ndarray) -> list[np.ndarray]:
    """The columns restricted to the rows where every column is finite (undefined τ are left out)."""
    keep = np.logical_and.reduce([np.isfinite(c) for c in cols])
    return [c[keep] for c in cols]


def mean_of_means(per_dataset: Sequence[np.ndarray], seed: int = 0) -> stats.Interval | None:
    """Interval of the mean over datasets of each dataset's mean value (NaN left out); instances are resampled
    from the pooled rows, each keeping its dataset. None when no dataset has a finite value."""
    parts = [v[np.isfinite(v)] for v in map(np.asarray, per_dataset)]
    parts = [v for v in parts if v.size]
    if not parts:
        return None
    rows = np.concatenate([np.stack([v, np.full(v.size, g)], 1) for g, v in enumerate(parts)])

    def statistic(r):
        return float(np.mean([r[r[:, 1] == g, 0].mean() for g in np.unique(r[:, 1])]))

    return stats.bootstrap(rows, statistic, seed=seed)


def _range_claim(text: str, iv: stats.Interval | None, low: float, high: float, detail: str) -> dict:
    if iv is None:
        return {"claim": text, "detail": detail + " (no finite value)"}
    return {"claim": text, **dict(zip(("interval", "margin", "kind"), range_part(iv, low, high))),
            "detail": f"{detail}; mean {iv} (interval shifted by the range's centre {(low + high) / 2:g})"}


def _parts(text: str, parts: Mapping[str, tuple[stats.Interval, float, str]], rule=stats.combine) -> list[dict]:
    """[The claim made of per-dataset parts {dataset: (interval, margin, kind)}], none without parts."""
    return [parts_claim(text, {f"{k}:": p for k, p in parts.items()}, rule)] if parts else []


def _kendall_rows(rows: np.ndarray) -> float:
    return float(at.kendall_per_instance([rows[:, 0]], [rows[:, 1]]).statistic[0])


def _by_encoder(analyses: Mapping, enc: str, skip=()) -> dict[str, Analysis]:
    return {title(n): a for (n, e), a in analyses.items() if e == enc and n not in skip}


def _pairs(analyses: Mapping) -> dict[str, tuple[Analysis, Analysis]]:
    """{dataset: (BiLSTM, Average)} analyses of the same instances."""
    return {title(n): (a, analyses[n, "average"]) for (n, e), a in analyses.items()
            if e == "lstm" and (n, "average") in analyses}


def _gap(a: Analysis, b: Analysis, first: str, second: str) -> np.ndarray:
    """Per-instance τ_first(a) − τ_second(b) where both are finite."""
    return np.subtract(*_finite(_tau(a, first), _tau(b, second)))


def _gap_claim(text: str, per: Mapping[str, np.ndarray], margin: float, prefix: str = "") -> dict:
    """The mean over datasets of the per-instance differences `per[dataset]` exceeds `margin` (`mean_of_means`)."""
    iv = mean_of_means(list(per.values()))
    detail = ", ".join(f"{k}: {v.mean():.3f}" for k, v in per.items() if v.size)
    return {"claim": text, "detail": detail} if iv is None else \
        {"claim": text, "interval": iv, "margin": margin, "kind": "greater", "detail": prefix + detail}


def correlation_claims(analyses: Mapping) -> list[dict]:
    """Table 2 and Figs. 3–5: ranges of mean τ_g and paired gaps, each decided by a bootstrap interval."""
    out = []
    for enc, name, low, high, what in (("lstm", "BiLSTM", 0.30, 0.45, "modest"),
                                       ("average", "Average-encoder", 0.65, 0.80, "high")):
        per = _by_encoder(analyses, enc)
        if per:
            iv = mean_of_means([_tau(a, "attn_grad") for a in per.values()])
            detail = ", ".join(f"{k}: {a.mean_tau('attn_grad'):.3f}" for k, a in per.items())
            out.append(_range_claim(f"{name} attention–gradient τ_g is {what}: mean over datasets within "
                                    f"{low:.2f}–{high:.2f}", iv, low, high, detail))
    pairs = _pairs(analyses)
    out += _parts("τ_g is higher for the Average encoder than for the BiLSTM on every dataset (paired over "
                  "instances)", {k: (stats.bootstrap(_gap(av, ls, "attn_grad", "attn_grad")), 0.0, "greater")
                                 for k, (ls, av) in pairs.items()})
    lstm = _by_encoder(analyses, "lstm", skip=("snli",))
    for second, text in (("attn_loo", "Fig. 3: τ(gradient, LOO) exceeds τ(attention, LOO) by > 0.2 on average "
                                      "(BiLSTM, SNLI excepted)"),
                         ("attn_grad", "Fig. 4: τ(gradient, LOO) exceeds τ(attention, gradient) by ≈ 0.25 on average "
                                       "(> 0.2; BiLSTM, SNLI excepted)")):
        out.append(_gap_claim(text, {k: _gap(a, a, "grad_loo", second) for k, a in lstm.items()}, 0.2, "per dataset "))
    fig5 = _gap_claim("Fig. 5: attention–LOO τ is higher for Average than BiLSTM by ≈ 0.375 on average (> 0.25; "
                      "paired over instances)", {k: _gap(av, ls, "attn_loo", "attn_loo") for k, (ls, av) in
                                                 pairs.items()}, 0.25)
    return out + ([fig5] if "interval" in fig5 else [])


def _peaked_part(a: Analysis) -> tuple[stats.Interval, float, str]:
    """Fig. 6 on one dataset: the share of the more peaked half (max α̂ ≥ its median) with Δŷ^med < 0.05 > 1/4."""
    peaked = a.max_attention >= np.median(a.max_attention)
    return stats.proportion(float((a.perm_median_tvd[peaked] < 0.05).mean()), int(peaked.sum())), 0.25, "greater"


def counterfactual_claims(cfg: Mapping, analyses: Mapping) -> list[dict]:
    """Figs. 6–8: permutation and adversarial attention, per dataset, combined over datasets."""
    out = []
    for enc in cfg["encoders"]:
        out += _parts(f"Fig. 6: there exist many instances with small Δŷ^med despite large attention "
                      f"({ENCODER_LABELS[enc]}): among the more peaked half (max α̂ ≥ its median), at least a quarter "
                      f"have Δŷ^med < 0.05, on every dataset (interval on the proportion)",
                      {k: _peaked_part(a) for k, a in _by_encoder(analyses, enc).items()})
    for enc in cfg["encoders"]:
        per = _by_encoder(analyses, enc)
        out += _parts(f"Fig. 7: adversarial attention is often near the JSD bound ln 2 ≈ 0.69 ({ENCODER_LABELS[enc]}): "
                      "ε-max JSD > 0.6 for more than half the instances on every dataset",
                      {k: (stats.bootstrap((a.adv_eps_max_jsd > 0.6).astype(float)), 0.5, "greater")
                       for k, a in per.items() if a.adv_eps_max_jsd.size})
        out += _parts(f"Fig. 7, relative to each instance's reachable maximum ({ENCODER_LABELS[enc]}): ε-max JSD above "
                      f"{RELATIVE_JSD:.0%} of the largest JSD any attention could reach from α̂ for more than half the "
                      "instances on every dataset",
                      {k: (stats.proportion(float((a.adv_relative_jsd > RELATIVE_JSD).mean()),
                                            a.adv_relative_jsd.size), 0.5, "greater")
                       for k, a in per.items() if a.adv_relative_jsd.size})
    return out + _parts("Fig. 8: ε-max JSD decreases (weakly) with the maximum attention: Kendall τ < 0 on most "
                        "datasets (BiLSTM)", {k: (stats.bootstrap(np.stack([a.adv_eps_max_jsd, a.max_attention[
                            :a.adv_eps_max_jsd.size]], 1), _kendall_rows), 0.0, "less")
                            for k, a in _by_encoder(analyses, "lstm").items() if a.adv_eps_max_jsd.size > 2},
                        rule=stats.majority)


def performance_claims(perf: Mapping) -> list[dict]:
    """Table 1: the BiLSTM's test performance within 0.05 of the paper's (interval over test examples)."""
    out = []
    for name in ("sst_jw", "babi1"):
        row = perf.get(title(name), {})
        if "test_lstm" in row and "test_lstm_ci_low" in row:
            paper, ours = row["test_lstm"]
            iv = stats.Interval(ours - paper, row["test_lstm_ci_low"][1] - paper,
                                row["test_lstm_ci_high"][1] - paper, row["n_test"][1])
            out.append({"claim": f"Table 1: the BiLSTM's test performance on {title(name)} is within 0.05 of "
                        "the paper's", "interval": iv, "margin": 0.05, "kind": "within",
                        "detail": f"ours {ours:.3f} vs paper {paper:.2f} (interval of ours − paper)"})
    return out


def _decided(claim: Mapping) -> str:
    """The verdict `Results.add_claim` records for a claim (`lab.results.claim_verdict`)."""
    return claim_verdict(**{k: v for k, v in claim.items() if k != "detail"})


def _renamed(claim: str, alt: str) -> str:
    return f"{claim} — {ENCODER_LABELS[alt]} reading"


def reading_claims(cfg: Mapping, analyses: Mapping, main: Sequence[dict]) -> tuple[list[str], list[dict]]:
    """The Average claims of `main` (the default reading's) that the other reading (`other_average`) makes too, and
    the other reading's versions of those whose verdict differs, renamed by `_renamed` (listed beside them)."""
    alt = other_average(cfg)
    if alt is None or not any(e == alt for _, e in analyses):
        return [], []
    swapped = {(n, "average" if e == alt else e): a for (n, e), a in analyses.items() if e != "average"}
    average_only = {k: a for k, a in swapped.items() if k[1] == "average"}
    other = {c["claim"]: c for c in correlation_claims(swapped)
             + counterfactual_claims({**cfg, "encoders": ("average",)}, average_only)}
    shared = [c for c in main if "Average" in c["claim"] and c["claim"] in other]
    return [c["claim"] for c in shared], [{**other[c["claim"]], "claim": _renamed(c["claim"], alt)} for c in shared
                                          if _decided(c) != _decided(other[c["claim"]])]


def transformer_claims(tr: Analysis, lstm: Analysis) -> list[dict]:
    """Beyond the paper: the same questions for the Transformer (SST; its instances are the first len(tr) of the
    BiLSTM's, so τ differences are paired)."""
    n = min(len(tr), len(lstm))
    t_attn, l_attn = _finite(_tau(tr, "attn_loo")[:n], _tau(lstm, "attn_loo")[:n])
    chef, attn = _finite(_tau(tr, "chefer_loo"), _tau(tr, "attn_loo"))
    out = [
        {"claim": "Beyond: the Transformer's last-layer [CLS] attention agrees with LOO no better than the BiLSTM's "
                  "attention (paired difference of τ_loo < 0.05, SST)",
         "interval": stats.paired_difference(t_attn, l_attn), "margin": 0.05, "kind": "less",
         "detail": f"Transformer {t_attn.mean():.3f} vs BiLSTM {l_attn.mean():.3f}"},
        {"claim": "Beyond: Chefer's relevance agrees with LOO better than the Transformer's raw attention (paired "
                  "τ_loo, SST)", "interval": stats.paired_difference(chef, attn), "margin": 0.0, "kind": "greater",
         "detail": f"Chefer {chef.mean():.3f} vs attention {attn.mean():.3f}"},
        {"claim": "Beyond: permuting the Transformer's last-layer [CLS] attention rarely changes the output (median "
                  "Δŷ^med < 0.05)", "interval": stats.bootstrap(tr.perm_median_tvd, np.median), "margin": 0.05,
         "kind": "less", "detail": "median over instances"}]
    if tr.adv_eps_max_jsd.size:
        out.append({"claim": "Beyond: adversarial last-layer [CLS] attention with ε-max JSD > 0.6 exists for more "
                             "than half the SST sentences", "interval": stats.bootstrap(
                                 (tr.adv_eps_max_jsd > 0.6).astype(float)), "margin": 0.5, "kind": "greater",
                    "detail": "fraction of sentences"})
    return out


def start_results(cfg: Mapping, tasks: Mapping[str, Task], meta: Mapping | None = None) -> Results:
    """The notebook's Results, with the run's settings in `meta`; tables and claims are added as they are computed."""
    return Results(NOTEBOOK, cfg["profile"], meta={
        "datasets": list(tasks), "encoders": list(cfg["encoders"]), "attention": cfg["attention"],
        "average_reading": cfg["average_reading"], "adversary_penalty": cfg["adversary_penalty"],
        "adversary_cross": cfg["adversary_cross"],
        "embeddings": "MiniLM-L6 word-piece table (384-d); bAbI: random 50-d",
        "n_analysis": {title(n): len(t.analysis_rows) for n, t in tasks.items()},
        "n_adversarial": {title(n): t.n_adversarial for n, t in tasks.items()},
        "significance_level": cfg["level"], "seed": cfg["seed"], **(meta or {})})


def add_performance(res: Results, perf: Mapping) -> Results:
    return res.add_table(
        "table1_performance", "Test performance (F1 = macro-F1 for classification, accuracy for SNLI and bAbI) "
        "with its 95 % bootstrap interval over the n_test test examples; "
        "paper = Table 1 (BiLSTM). AG News here is Sports vs rest (offline AGN-2), SNLI is trained on its 9.8k "
        "validation pairs, IMDB on a 4.3k subset.", perf, direction={"test_lstm": "higher", "test_average": "higher"})


def add_analysis_tables(res: Results, analyses: Mapping, models: Mapping, level: float = 0.05) -> Results:
    res.add_table("table2_kendall_tau", f"Kendall τ between attention and gradient (τ_g) / leave-one-out (τ_loo), "
                  f"mean, std and Sig. Frac. (p < {level}) per predicted class; paper = Table 2. SNLI rows are our "
                  "classes (entailment, neutral, contradiction), each beside the paper's row for the same class (the "
                  "paper's order, from its Fig. 2 caption: neutral, contradiction, entailment).",
                  table2_rows(analyses, level))
    res.add_table("tau_means", "Mean Kendall τ per dataset and encoder (attention–gradient, attention–LOO, "
                  "gradient–LOO) with 95 % bootstrap intervals over the n analysed instances (undefined τ left out)",
                  tau_rows(analyses))
    res.add_table("fig6_permutation", "Permutation (Alg. 2): Δŷ^med = median TVD over 100 permutations of α̂ with h "
                  "fixed (one decoder call per batch)", permutation_rows(analyses))
    res.add_table("fig7_adversarial", "Adversarial attention (Alg. 3, k = 5, λ = 500, 500 Adam steps): ε-max JSD of "
                  "the final iterates; any_iterate = the best feasible JSD seen during the optimisation; relative = "
                  "ε-max JSD / the largest JSD any attention could reach from α̂ on that instance (all mass on its "
                  "least-attended token; below ln 2 on short inputs)",
                  adversarial_rows(analyses), direction={"mean_eps_max_jsd": "higher"})
    premise = premise_rows(analyses)
    if premise:
        res.add_table("premise_reliance", "Premise reliance (pair tasks; the check behind the SNLI Average result, "
                      "in place of a dead-ReLU story): share of analysed instances whose prediction changes, and mean "
                      "TVD of ŷ, when the attended premise/story context is set to 0 (query kept), with 95 % bootstrap "
                      "intervals; accuracy with and without the context. A model that ignores the premise leaves its "
                      "attention over the premise nothing to explain.", premise)
    return res


def add_timing(res: Results, models: Mapping, analyses: Mapping) -> Results:
    """Training seconds and analysis milliseconds per instance; `analyses` may include the Transformer's."""
    return res.add_table("timing", "Training seconds (recorded when the model was trained) and analysis "
                         "milliseconds per instance (adversarial: per instance of the adversarial subsample)",
                         timing_rows(models, analyses))


def add_transformer(res: Results, tr: Analysis, analyses: Mapping) -> Results:
    res.add_table("transformer", "Beyond the paper (SST test sentences): attention–importance agreement, permutation "
                  "and adversarial results for the fine-tuned MiniLM classifier's last-layer [CLS] attention, next to "
                  "the RNN models", transformer_rows(tr, analyses))
    return res


def add_claims(res: Results, cfg: Mapping, perf: Mapping, analyses: Mapping, tr: Analysis | None) -> Results:
    """Every claim (the other Average reading's right after the paper's where its verdict differs), and in
    ``meta["average_readings"]`` the Average claims' verdicts, as recorded, under both readings (when compared)."""
    main = correlation_claims(analyses) + counterfactual_claims(cfg, analyses)
    shared, differ = reading_claims(cfg, analyses, main)
    out = main + differ + performance_claims(perf)
    if tr is not None and ("sst_jw", "lstm") in analyses:
        out += transformer_claims(tr, analyses["sst_jw", "lstm"])
    for c in out:
        res.add_claim(**c)
    verdict, alt = {c["claim"]: c["verdict"] for c in res.claims}, other_average(cfg)
    if shared:  # words, not table values: kept in meta, shown by `lab.viz.jain_wallace.readings_frame`
        res.meta["average_readings"] = {k: {cfg["average_reading"]: verdict[k], alt.partition(":")[2]:
                                            verdict.get(_renamed(k, alt), verdict[k])} for k in shared}
    return res
