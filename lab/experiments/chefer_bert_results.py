"""Notebook 02's claims and results file (Chefer et al. on BERT), from what `lab.experiments.chefer_bert` computes:
each claim decided on bootstrap intervals over reviews (paired where two methods are compared)."""
from __future__ import annotations

import time
from typing import Mapping

import numpy as np

from lab import stats
from lab.claims import interval_cells
from lab.experiments.chefer_bert import NOTEBOOK, PAPER_METHODS, Context, method_params
from lab.results import Results


def _paired_parts(per_doc: Mapping[str, np.ndarray], a: str, b: str, ks, margin: float = 0.0) -> dict:
    """{k: (interval, verdict)} of mean F1_a − F1_b > margin at each k, on the reviews both methods scored."""
    n = min(len(per_doc[a]), len(per_doc[b]))
    ivs = {k: stats.paired_difference(per_doc[a][:n, i], per_doc[b][:n, i]) for i, k in enumerate(ks)}
    return {k: (iv, stats.decide(iv, margin, "greater")) for k, iv in ivs.items()}


def f1_claims(fig3: Mapping, step_tolerance: float) -> list[dict]:
    """The Fig. 3 claims, decided on paired per-review token-F1 differences."""
    ks, per_doc, out = fig3["ks"], fig3["per_doc"], []
    paper = [m for m in PAPER_METHODS if m in per_doc and m != "chefer"]
    if "chefer" in per_doc and paper:
        parts = {(m, k): p for m in paper for k, p in _paired_parts(per_doc, "chefer", m, ks).items()}
        open_parts = [f"k={k} chefer − {m} {iv} {v}" for (m, k), (iv, v) in parts.items() if v != "holds"]
        out.append({"claim": "Fig. 3: Chefer has the highest token-F1 at every k (among the paper's six methods)",
                    "verdict": stats.combine(v for _, v in parts.values()),
                    "detail": "; ".join(open_parts) or f"all {len(parts)} paired differences > 0"})
    verdicts, notes = [], []
    for m, f1 in per_doc.items():
        rise = stats.paired_difference(f1[:, -1], f1[:, 0])
        steps = [stats.paired_difference(f1[:, i + 1], f1[:, i]) for i in range(len(ks) - 1)]
        verdicts.append(stats.combine([stats.decide(rise, 0.0, "greater")] +
                                      [stats.decide(iv, -step_tolerance, "greater") for iv in steps]))
        weakest = min(range(len(steps)), key=lambda i: steps[i].low) if steps else None
        notes.append(f"{m}: k={ks[-1]} − k={ks[0]} {rise}" + ("" if weakest is None else
                     f", weakest step k={ks[weakest]}→{ks[weakest + 1]} {steps[weakest]}") + f" → {verdicts[-1]}")
    out.append({"claim": f"Fig. 3: token-F1 rises with k for every method (F1 at the largest k above the smallest, "
                         f"no step down by more than {step_tolerance})",
                "verdict": stats.combine(verdicts), "detail": "; ".join(notes)})
    return out


def support_criteria(agreement: Mapping, cfg: Mapping) -> dict[str, str]:
    """Verdicts (bootstrap over reviews) of one method's GT-vs-CF criteria: live (CF map constant in under half the
    reviews), distinct / same (mean top-k overlap below / above overlap_below), mirror / not_mirror (median ρ below /
    above mirror_below; no finite ρ is neither)."""
    overlap = stats.bootstrap(np.asarray(agreement["overlap"], dtype=float))
    constant = stats.bootstrap(np.asarray(agreement["cf_constant"], dtype=float))
    rho = np.asarray(agreement["rho"], dtype=float)
    median = stats.bootstrap(rho[np.isfinite(rho)], np.median) if np.isfinite(rho).any() else None
    lo, mirror = cfg["overlap_below"], cfg["mirror_below"]
    return {"live": stats.decide(constant, 0.5, "less"), "distinct": stats.decide(overlap, lo, "less"),
            "same": stats.decide(overlap, lo, "greater"),
            "mirror": "fails" if median is None else stats.decide(median, mirror, "less"),
            "not_mirror": "fails" if median is None else stats.decide(median, mirror, "greater"),
            "detail": f"top overlap {overlap}, median ρ {median or 'undefined'}, CF constant {constant}"}


SUPPORT_KINDS = {"both classes": ("live", "distinct", "not_mirror"), "sign reversal": ("live", "distinct", "mirror"),
                 "same map": ("live", "same")}


def support_claims(support: Mapping, cfg: Mapping) -> list[dict]:
    """The supplement's class-support claims, each criterion decided by a bootstrap interval over the reviews."""
    crit = {m: support_criteria(a, cfg) for m, a in support.get("per_review", {}).items()}

    def kind(m, name):
        return stats.combine(crit[m][c] for c in SUPPORT_KINDS[name])

    out, (top, lo, mirror) = [], (cfg["support_top"], cfg["overlap_below"], cfg["mirror_below"])
    if "chefer" in crit:
        parts = [kind("chefer", "both classes")] + [{"holds": "fails", "fails": "holds"}.get(v, v) for v in
                                                    (kind(m, "both classes") for m in crit if m != "chefer")]
        out.append({"claim": "Supplement: only Chefer shows support for both classes (criterion: its ground-truth and "
                             f"counterfactual maps share < {100 * lo:.0f}% of their top-{top} tokens on average and "
                             f"are not anti-correlated, median Spearman ρ > {mirror})",
                    "verdict": stats.combine(parts),
                    "detail": "; ".join(f"{m}: {c['detail']} → both classes {kind(m, 'both classes')}"
                                        for m, c in crit.items())})
    for method, name, text in (("attn_gradcam", "sign reversal", f"GradCAM shows a sign reversal between the two "
                                f"classes (different top tokens, median ρ ≤ {mirror})"),
                               ("lrp", "same map", f"LRP gives (nearly) the same map for both classes (top-{top} "
                                f"overlap ≥ {lo:.0%})")):
        if method in crit:
            out.append({"claim": "Supplement: " + text, "verdict": kind(method, name),
                        "detail": crit[method]["detail"]})
    return out


def claims(ctx: Context, fig3: Mapping, support: Mapping, special: Mapping) -> list[dict]:
    """The paper's claims on our numbers, as `Results.add_claim` keyword arguments."""
    cfg = ctx.cfg
    out = f1_claims(fig3, cfg["f1_step_tolerance"]) + support_claims(support, cfg)
    if "rollout" in special.get("sep_top", {}):
        r = special["rows"]["rollout"]
        out.append({"claim": "Supplement: rollout focuses mostly on [SEP] ([SEP] is rollout's top token other than "
                             f"[CLS] in at least {100 * cfg['sep_majority']:.0f}% of reviews)",
                    "interval": stats.bootstrap(special["sep_top"]["rollout"].astype(float)),
                    "margin": cfg["sep_majority"], "kind": "greater",
                    "detail": f"[SEP] holds {100 * r['sep_share_without_cls']:.1f}% of the non-[CLS] mass (a uniform "
                              f"map: {100 * r['uniform_share']:.2f}%); [CLS] {100 * r['cls_share']:.1f}% of all mass"})
    out.append({"claim": f"the fine-tuned classifier reaches >= {100 * cfg['accuracy_target']:.0f}% test accuracy "
                         "(issue target)", "interval": stats.bootstrap(ctx.correct.double().numpy()),
                "margin": cfg["accuracy_target"], "kind": "greater",
                "detail": f"{ctx.model_info.get('n_test')} test reviews at max_length {cfg['max_length']}"})
    return out


def build_results(ctx: Context, fig3: Mapping, faith: Mapping, support: Mapping, special: Mapping,
                  fig3_other: Mapping | None = None) -> Results:
    """The notebook's `Results`: Figure 3 (paper values null: the paper plots curves only; the claims use `fig3`,
    `fig3_other` is the other F1 unit), faithfulness, class support, special-token mass, accuracy, claims."""
    res = Results(NOTEBOOK, ctx.cfg["profile"], meta=run_meta(ctx, fig3))
    cols = [f"k={k}" for k in fig3["ks"]]
    higher = {c: "higher" for c in cols}

    def series(f, kind, se=False):
        return {m: {**dict(zip(cols, ys)), "n": f["n"][m],
                    **({"max_se": max(f["se"][m]) if f["se"].get(m) else None} if se else {})}
                for m, ys in f[kind].items()}

    res.add_table("figure3_token_f1_macro", f"Fig. 3: token-F1 of the top-k {fig3['unit']}s vs the human rationale, "
                  "per-document mean (ERASER macro); the paper plots these curves without numbers",
                  series(fig3, "macro", se=True), higher)
    res.add_table("figure3_token_f1_micro", "Fig. 3 (pooled counts, ERASER micro)", series(fig3, "micro"), higher)
    if fig3_other is not None:
        res.add_table(f"figure3_token_f1_macro_{fig3_other['unit']}", f"Fig. 3 with F1 over {fig3_other['unit']}s "
                      f"(beside the reported {fig3['unit']}s), per-document mean", series(fig3_other, "macro"), higher)
    paired = {f"chefer − {m} (k={k})": {**interval_cells("ΔF1", iv), "n": iv.n}
              for m in (fig3["per_doc"] if "chefer" in fig3["per_doc"] else ()) if m != "chefer"
              for k, (iv, _) in _paired_parts(fig3["per_doc"], "chefer", m, fig3["ks"]).items()}
    if paired:
        res.add_table("figure3_chefer_paired", "Fig. 3: per-review token-F1 of Chefer minus each other method at each "
                      "k on the same reviews, mean and bootstrap 95 % interval (n reviews per row)", paired,
                      {"ΔF1": "higher", "ΔF1_low": "higher", "ΔF1_high": "higher"})
    other_tables(res, ctx, faith, support, special)
    for claim in claims(ctx, fig3, support, special):
        res.add_claim(**claim)
    return res


def run_meta(ctx: Context, fig3: Mapping) -> dict:
    """The results' run metadata: model, subset sizes, settings, what F1 and faithfulness mean, timings."""
    return {"model": ctx.model_info.get("model") or ctx.model_info.get("checkpoint"),
            "paper_model": "BERT-base (uncased) fine-tuned on ERASER Movies train; ours: see model / model_info",
            "accuracy": ctx.model_info.get("test_accuracy"), "model_info": ctx.model_info,
            **{f"n_{k}": len(ctx.subset(k)) for k in ("examples", "faithfulness", "class_support", "ig")},
            **{k: ctx.cfg[k] for k in ("ig_steps", "max_length", "seed")},
            "method_params": {m: method_params(ctx.cfg, m) for m in ctx.cfg["methods"]},
            "f1": f"ERASER token-level F1 of the top-k content units ({fig3.get('unit', 'word_piece')}s; a word scores "
                  "the max over its pieces) vs the rationale; macro = per-document F1 averaged over documents "
                  "(reported, ERASER instance_macro), micro = pooled counts",
            "elapsed_s": round(time.perf_counter() - ctx.started, 1),
            "target_class": "ground-truth label", "faithfulness": "ERASER AOPC over bins 1/5/10/20/50 %, word pieces "
            "deleted, probability of the ground-truth class", "timings": ctx.timings}


def other_tables(res: Results, ctx: Context, faith: Mapping, support: Mapping, special: Mapping) -> None:
    """ERASER faithfulness, class support, special-token mass and accuracy tables."""
    rows = {}
    for m, r in faith["rows"].items():
        rows[m] = {k: r[k] for k in ("comprehensiveness", "sufficiency")}
        for i, b in enumerate(faith["bins"]):
            rows[m][f"comp@{100 * b:g}%"] = faith["curves"][m]["comprehensiveness"][i]
            rows[m][f"suff@{100 * b:g}%"] = faith["curves"][m]["sufficiency"][i]
        rows[m]["n"] = r["n"]
    res.add_table("eraser_faithfulness", "ERASER comprehensiveness (higher is better) and sufficiency (lower is "
                  "better), beyond the paper", rows, {c: ("higher" if c.startswith("comp") else "lower")
                                                      for r in list(rows.values())[:1] for c in r if c != "n"})
    res.add_table("class_support", "Ground-truth vs counterfactual class maps: Spearman ρ over content tokens and "
                  "top-k overlap (supplement Figs. 15-33, measured)",
                  {m: {k: v for k, v in r.items() if k != "verdict"} for m, r in support["rows"].items()})
    res.meta["class_support_verdicts"] = {m: r["verdict"] for m, r in support["rows"].items()}
    res.add_table("special_tokens", "Share of each map's positive mass on [SEP] / [CLS]; how often [SEP] is the top "
                  "token other than [CLS]", special["rows"])
    res.add_table("accuracy", "Test accuracy of the fine-tuned classifier (the paper does not report BERT's)",
                  {"classifier": {k: ctx.model_info.get(k) for k in ("test_accuracy", "n_test")}},
                  {"test_accuracy": "higher"})
