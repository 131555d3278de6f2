"""Notebook 04 (Wu & Ong 2021): the results file. The paper's values (Tables 1-6, Table 3 accuracies), our tables
beside them with bootstrap intervals, and the paper's claims decided on those intervals, from what
`lab.experiments.wu_ong` computes."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from lab.experiments.wu_ong import (CLASS_OF_INTEREST, METHODS, NOTEBOOK, PAPER_METHOD, RANDOM, DeletionSet,
                                    deletion_summary, model_info, per_example_auc)
from lab.experiments.wu_ong_words import pearson_r, correlation_matrix, top_bottom_words, word_vectors
from lab.results import Results
from lab.claims import Part, interval_cells, interval_or_none, part_verdicts, parts_claim
from lab.stats import Interval, bootstrap, combine, paired_difference, unpaired_difference

# What each of our datasets stands in for (the paper's Table 3 datasets).
PAPER_DATASET = {"sst5": "SST-5", "sst2": "SemEval", "yelp": "Yelp-5", "imdb": "IMDb"}
REPLACEMENT_NOTE = {
    "sst5": "SST-5 sentences from the PTB trees (the paper trains on phrases too: 156,817 examples)",
    "sst2": "GLUE SST-2 replaces SemEval-2017 tweets (not available offline); paper values are SemEval's",
    "yelp": "Yelp polarity sentences (Shen et al. 2017) replace Yelp-5 reviews (5 classes)",
    "imdb": "IMDB subset (lowercased, punctuation stripped), truncated to 128 tokens",
}

# ---- paper values (paper 002, Tables 1-6; Table 3 accuracies) ---------------------------------------------
PAPER_ACCURACY = {"sst5": 56.9, "sst2": 74.2, "imdb": 89.0, "yelp": 66.0}  # %, Table 3 (sst2 row: SemEval)
PAPER_TABLE1 = {  # Pearson correlation between two initialisations
    "sst5": {"GS": 0.91, "GI": 0.91, "LRP": 0.89, "LAT": 0.85},
    "sst2": {"GS": 0.89, "GI": 0.88, "LRP": 0.83, "LAT": 0.81},  # SemEval
    "imdb": {"GS": 0.81, "GI": 0.82, "LRP": 0.81, "LAT": 0.79},
    "yelp": {"GS": 0.83, "GI": 0.86, "LRP": 0.79, "LAT": 0.73},
}
PAPER_TABLE2 = {  # SST-5 test, top 5 then bottom 5 words by mean relevance
    "GS": ["mess", "disturbing", "slick", "fine", "laugh", "ka", "create", "were", "ni", "michael"],
    "GI": ["mess", "slick", "disturbing", "fine", "miss", "create", "ka", "were", "the", "michael"],
    "LRP": ["repetitive", "lacks", "anything", "hilarious", "thriller", "post", "close", "el", "ga", "ca"],
    "LAT": ["repetitive", "in", "disturbing", "lacks", "stupid", "el", "des", "lo", "ka", "ho"],
}
PAPER_TOP5_APPENDIX = {  # Tables 4-6 (top 5 only, as quoted in the reproduction spec); sst2 <- SemEval (Table 4)
    "sst2": {"GS": ["weird", "sad", "nice", "sweet", "excellent"],
             "LRP": ["excited", "awesome", "jurassic", "amazing", "happy"],
             "LAT": ["in", "undertaker", "to", "fleetwood", "excited"]},
    "imdb": {"GS": ["succeeds", "nightmare", "joke", "creep", "perfection"],
             "LRP": ["simpsons", "emotionally", "mtv", "animated", "immensely"],
             "LAT": ["mtv", "countless", "emotionally", "everyday", "include"]},
    "yelp": {"GS": ["tooth", "edible", "superb", "thrilled", "pink"],
             "LRP": ["waitress", "amazing", "disappointing", "detail", "disgusting"],
             "LAT": ["email", "amazing", "dessert", "convenience", "upset"]},
}
RANKS = [f"top {i}" for i in range(1, 6)] + [f"bottom {i}" for i in range(1, 6)]

def word_table(vocab: Mapping[str, Mapping[str, tuple[float, int]]], min_count: int, k: int = 5):
    """Table 2 layout: rows top 1..k, bottom 1..k; one column per method (our words)."""
    import pandas as pd

    cols = {}
    for method, stats in vocab.items():
        top, bottom = top_bottom_words(stats, k, min_count)
        cols[method] = (top + [""] * (k - len(top))) + (bottom + [""] * (k - len(bottom)))
    return pd.DataFrame(cols, index=RANKS[:k] + RANKS[5:5 + k])


def table2_frame(vocab_sst5: Mapping, min_count: int):
    """Table 2 side by side: (method, "paper") and (method, "ours") columns."""
    import pandas as pd

    ours = word_table(vocab_sst5, min_count)
    data = {}
    for method in ours.columns:
        data[(method, "paper")] = PAPER_TABLE2.get(_paper(method), [""] * 10)
        data[(method, "ours")] = list(ours[method])
    frame = pd.DataFrame(data, index=RANKS)
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["method", "source"])
    return frame


# ---- results -----------------------------------------------------------------------------------------------
def _round(x, nd: int = 4):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(float(x), nd)


def build_results(profile: str, cfg: Mapping, main_models: Mapping, deletion: Mapping[str, DeletionSet],
                  seeds: Mapping[str, dict], vocab: Mapping[str, dict], matrices: Mapping[str, np.ndarray],
                  shared: Sequence[str], meta: Mapping | None = None,
                  conservation: Mapping[str, dict] | None = None,
                  deletion_beside: Mapping[str, Mapping[str, DeletionSet]] | None = None,
                  raw_matrices: Mapping[str, np.ndarray] | None = None) -> Results:
    """The results file of notebook 04: tables with paper values side by side, intervals and the paper's claims.

    deletion: {dataset: DeletionSet} in the main mode (cfg["deletion_mode"]); deletion_beside: {mode: {dataset:
    DeletionSet}} in the other modes; matrices: Fig. 3 on per-sentence normalised |R| (cfg["sentence_norm"]);
    raw_matrices: Fig. 3 on raw per-word means (shown beside)."""
    res = Results(NOTEBOOK, profile, meta={
        "models": {d: model_info(ft) for d, ft in main_models.items()},
        "seed_models": {d: row.get("_models") for d, row in seeds.items()},
        "replacements": REPLACEMENT_NOTE, "paper_dataset": PAPER_DATASET,
        "methods": {m: {"explainer": e, "params": p} for m, (e, p) in METHODS.items()},
        "paper_method": PAPER_METHOD, "class_of_interest": CLASS_OF_INTEREST,
        "deletion_mode": cfg["deletion_mode"], "sentence_norm": cfg.get("sentence_norm"),
        "settings": {k: v for k, v in cfg.items() if k != "progress"},
        "word_tables": {d: {m: dict(zip(["top", "bottom"], top_bottom_words(s, 5, cfg["min_count"])))
                            for m, s in v.items()} for d, v in vocab.items()},
        "paper_table2_sst5": PAPER_TABLE2, "paper_top5_appendix": PAPER_TOP5_APPENDIX,
        "n_shared_words": len(shared), **(meta or {})})
    res.add_table("table3_accuracy", "test accuracy of the fine-tuned classifiers (paper: BERT-base; sst2 row: "
                  "paper's SemEval)", {d: {"test_accuracy_%": (PAPER_ACCURACY[d], _round(100 * ft.accuracy, 2)
                                                               if ft.accuracy is not None else None)}
                                      for d, ft in main_models.items()}, direction={"test_accuracy_%": "higher"})
    if conservation:
        _conservation_table(res, conservation)
    modes = {cfg["deletion_mode"]: deletion, **(deletion_beside or {})}
    aucs = {mode: {d: per_example_auc(ds) for d, ds in sets.items()} for mode, sets in modes.items()}
    for mode, sets in modes.items():
        _deletion_tables(res, mode, sets, aucs[mode], main=mode == cfg["deletion_mode"])
    _seed_tables(res, seeds, cfg)
    _cross_tables(res, matrices, list(vocab), len(shared), cfg.get("sentence_norm"), raw_matrices)
    vectors = {m: word_vectors({d: vocab[d][m] for d in vocab}, shared) for m in matrices}
    _claims(res, aucs, seeds, vectors, main=cfg["deletion_mode"])
    return res


def _paper(method: str) -> str:
    return PAPER_METHOD.get(method, method)


def _conservation_table(res: Results, conservation: Mapping[str, Mapping]) -> None:
    rows = {f"{d} {reading}": {k: _round(v, 6) for k, v in c.items()}
            for d, per in conservation.items() for reading, c in per.items()}
    res.add_table("lrp_conservation", "LRP conservation per reading (`lrp_wu_ong`): |sum R - R^(0)| on a few test "
                  "examples, R^(0) = f_c(x) (logit for the code reading, probability otherwise); rel = over |R^(0)|; "
                  "0 = conserved", rows, direction={c: "lower" for c in ("median_abs_delta", "max_abs_delta",
                                                                         "median_rel_delta")})


def _deletion_tables(res: Results, mode: str, sets: Mapping[str, DeletionSet], aucs: Mapping, main: bool) -> None:
    suffix = "" if main else f"_{mode}"
    summaries = {d: deletion_summary(ds) for d, ds in sets.items()}
    rows = {m: {f"{d} {col}": _round(v) for d, s in summaries.items() for col, v in s[m].items()}
            for m in [*METHODS, RANDOM]}
    res.add_table(f"fig1_deletion{suffix}", f"Fig. 1 deletion test ({mode}): accuracy after k words removed and the "
                  "mean accuracy over k = 0..max_words (auc, lower = steeper); the paper gives curves only",
                  rows, direction={c: "lower" for r in rows.values() for c in r})
    res.add_table(f"fig1_deletion_paired{suffix}", f"Fig. 1 ({mode}): auc(method) − auc(Random) per initially-correct "
                  "example (paired), mean and bootstrap 95 % interval; n per dataset: " + ", ".join(
                      f"{d} {len(a[RANDOM])}" for d, a in aucs.items()), _deletion_intervals(aucs),
                  direction={c: "lower" for c in ("Δauc", "Δauc_low", "Δauc_high")})


def _seed_tables(res: Results, seeds: Mapping[str, dict], cfg: Mapping) -> None:
    if not seeds:
        return
    t1 = {d: {m: (PAPER_TABLE1[d][_paper(m)], _round(row[m]["mean"])) for m in METHODS} for d, row in seeds.items()}
    res.add_table("table1_seed_pearson", "Table 1: Pearson r of word relevance between two seeds (mean over test "
                  "examples of the per-example r); sst2 row: paper's SemEval", t1,
                  direction={m: "higher" for m in METHODS})
    if all("vocabulary" in row[m] for row in seeds.values() for m in METHODS):
        tv = {d: {m: (PAPER_TABLE1[d][_paper(m)], _round(row[m]["vocabulary"]["r"])) for m in METHODS}
              for d, row in seeds.items()}
        n = ", ".join(f"{d} {row['GS']['vocabulary']['n']}" for d, row in seeds.items())
        res.add_table("table1_seed_vocabulary", f"Table 1 as the authors aggregate: Pearson r over WordPieces of "
                      f"vocabulary-level means of per-sentence {cfg.get('sentence_norm')}(|R|); WordPieces: {n}",
                      tv, direction={m: "higher" for m in METHODS})
    acc = {d: {f"seed {m.get('seed')} accuracy_%": _round(100 * m["eval_accuracy"], 2)
                                                    if m.get("eval_accuracy") is not None else None
               for m in row.get("_models") or []} for d, row in seeds.items()}
    if any(acc.values()):
        res.add_table("table1_models", "test accuracy of the two seed models behind Table 1 (same recipe)", acc,
                      direction={c: "higher" for r in acc.values() for c in r})
    t1p = {d: {m: (PAPER_TABLE1[d][_paper(m)], _round(row[m]["pooled"])) for m in METHODS} for d, row in seeds.items()}
    res.add_table("table1_seed_pearson_pooled", "Table 1 variant: Pearson r over all (example, word) pairs", t1p,
                  direction={m: "higher" for m in METHODS})


def _cross_tables(res: Results, matrices: Mapping, names: Sequence[str], n_shared: int, norm: str | None,
                  raw_matrices: Mapping | None) -> None:
    for label, mats in ((norm, matrices), ("raw", raw_matrices or {})):
        suffix = "" if label == norm else "_raw"
        for method, m in mats.items():
            res.add_table(f"fig3_cross_dataset_{method}{suffix}", f"Fig. 3 ({method}, {label} per-sentence |R|): "
                          f"Pearson r of per-word mean relevance between datasets on {n_shared} shared words "
                          "(paper: no numbers)",
                          {a: {b: _round(m[i, j]) for j, b in enumerate(names)} for i, a in enumerate(names)})


def _deletion_intervals(aucs: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    return {f"{m} ({d})": {**interval_cells("Δauc", _vs_random(a, m)[0]), "n": len(a[RANDOM])}
            for d, a in aucs.items() for m in METHODS}


# ---- claims: bootstrap intervals over examples (deletion, seeds) and over shared words (Fig. 3) ---------------------
SPEEDUP_MARGIN, SPREAD_MARGIN, LAT_MARGIN = 0.05, 0.05, 0.05  # auc differences the claims need (accuracy units)
SEED_BAND = (0.75, 0.95)  # "about 0.8-0.9"
CROSS_MIN_R = 0.5


def _vs_random(aucs: Mapping[str, np.ndarray], method: str, margin: float = 0.0, kind: str = "less") -> Part:
    """The part "auc(method) − auc(Random) against `margin`", paired over examples."""
    return interval_or_none(lambda: paired_difference(aucs[method], aucs[RANDOM])), margin, kind


def deletion_claims(aucs: Mapping[str, Mapping[str, np.ndarray]], mode: str | None = None) -> list[dict]:
    """The Fig. 1 claims (`Results.add_claim` arguments) from per-example deletion AUCs {dataset: {method: [M]}};
    `mode` (a DELETION_MODES entry) is named in the claims; LRP-paper, when present, gets its own claim."""
    tag = f" ({mode} deletion)" if mode else ""

    def spread(a):
        three = np.stack([a[m] for m in ("GS", "GI", "LRP")], 1)
        return interval_or_none(lambda: bootstrap(three, lambda x: float(np.ptp(x.mean(0))))), SPREAD_MARGIN, "less"

    out = [parts_claim(f"GS, GI and LRP drop accuracy faster than random deletion on every dataset (auc at least "
                       f"{SPEEDUP_MARGIN} below random){tag}",
                       {f"{d} auc_{m} − auc_random": _vs_random(a, m, -SPEEDUP_MARGIN)
                        for d, a in aucs.items() for m in ("GS", "GI", "LRP")}),
           parts_claim(f"GS, GI and LRP drop similarly (auc spread <= {SPREAD_MARGIN} on every dataset){tag}",
                       {f"{d} spread": spread(a) for d, a in aucs.items()}),
           parts_claim(f"LAT is no better than random deletion (|auc_LAT - auc_random| <= {LAT_MARGIN} on every "
                       f"dataset){tag}", {f"{d} auc_LAT − auc_random": _vs_random(a, "LAT", LAT_MARGIN, "within")
                                          for d, a in aucs.items()})]
    if all("LRP-paper" in a for a in aucs.values()):
        out.append(parts_claim(f"LRP, paper-text reading (conserving), drops accuracy faster than random deletion on "
                               f"every dataset (auc at least {SPEEDUP_MARGIN} below random){tag}",
                               {f"{d} auc_LRP-paper − auc_random": _vs_random(a, "LRP-paper", -SPEEDUP_MARGIN)
                                for d, a in aucs.items()}))
    return out


def _band_claim(claim: str, cells: Mapping[tuple[str, str], tuple[Interval | None, str]]) -> dict:
    """Every cell's r within `SEED_BAND`; cells {(dataset, method): (interval of r − the band's middle, its n)}."""
    lo, hi = SEED_BAND
    mid = (lo + hi) / 2
    verdicts = part_verdicts({k: (iv, (hi - lo) / 2, "within") for k, (iv, _) in cells.items()})

    def show(iv):  # back from r − mid to r
        return "no values" if iv is None else f"{iv.estimate + mid:.3f} [{iv.low + mid:.3f}, {iv.high + mid:.3f}]"

    return {"claim": claim, "verdict": combine(list(verdicts.values())),
            "detail": "; ".join(f"{d} {m} r {show(iv)} ({n}) → {verdicts[d, m]}" for (d, m), (iv, n) in cells.items())}


def seed_claims(seeds: Mapping[str, Mapping]) -> list[dict]:
    """The Table 1 claims (`Results.add_claim` arguments) from the per-example seed-to-seed r of every cell, and
    from the vocabulary-level means (the authors' aggregation, resampling the WordPieces) where present."""
    lo, hi = SEED_BAND
    mid = (lo + hi) / 2
    out = [_band_claim(f"seed-to-seed correlation is about 0.8-0.9 (every cell of Table 1 within {lo}-{hi})",
                       {(d, m): (interval_or_none(lambda r=row[m]["per_example"]: bootstrap(
                           np.asarray(r, dtype=float) - mid)), f"n={len(row[m]['per_example'])}")
                        for d, row in seeds.items() for m in METHODS})]
    if "imdb" in seeds and len(seeds) > 1:
        out.append(parts_claim(
            "correlation is lower on long texts (IMDb below every sentence-level dataset, per method)",
            {f"{m} r_imdb − r_{d}": (interval_or_none(lambda m=m, d=d: unpaired_difference(
                seeds["imdb"][m]["per_example"], seeds[d][m]["per_example"])), 0.0, "less")
             for m in METHODS for d in seeds if d != "imdb"}))
    if all("vocabulary" in row[m] for row in seeds.values() for m in METHODS):
        out.append(_band_claim(
            f"seed-to-seed correlation is about 0.8-0.9 with the authors' aggregation (r over WordPieces of "
            f"vocabulary-level means, every cell within {lo}-{hi})",
            {(d, m): (interval_or_none(lambda p=row[m]["vocabulary"]["pairs"]: bootstrap(
                p, lambda x: pearson_r(x[:, 0], x[:, 1]) - mid)), f"n={row[m]['vocabulary']['n']} WordPieces")
             for d, row in seeds.items() for m in METHODS}))
    return out


def cross_claims(vectors: Mapping[str, np.ndarray]) -> list[dict]:
    """The Fig. 3 claims (`Results.add_claim` arguments) from {method: [W, D] per-word means}, resampling words."""
    def mean_off_diagonal(v):
        m = correlation_matrix(v)
        off = m[~np.eye(len(m), dtype=bool)]
        return float(np.nanmean(off)) if np.isfinite(off).any() else 0.0

    parts = {m: (interval_or_none(lambda v=v: bootstrap(v, mean_off_diagonal)), CROSS_MIN_R, "greater")
             for m, v in vectors.items()}
    out = []
    for beside in (False, True):  # the authors' readings decide the claim; the text/L2 readings get their own row
        ms = [m for m in parts if (m in PAPER_METHOD) == beside]
        what = f"the readings beside the authors' ({', '.join(ms)})" if beside else "every method"
        out += [parts_claim(f"relevance is consistent across datasets (mean off-diagonal Pearson r >= {CROSS_MIN_R} "
                            f"for {what})", {f"{m} mean r over words": parts[m] for m in ms})] if ms else []
    return out


def _claims(res: Results, aucs: Mapping, seeds: Mapping, vectors: Mapping, main: str | None = None) -> None:
    """aucs: {deletion mode: {dataset: {method: [M]}}}, the `main` mode's claims first."""
    order = sorted(aucs, key=lambda mode: mode != main)
    for claim in [c for mode in order if aucs[mode] for c in deletion_claims(aucs[mode], mode)] + \
            (seed_claims(seeds) if seeds else []) + (cross_claims(vectors) if vectors else []):
        res.add_claim(**claim)
