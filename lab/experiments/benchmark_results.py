"""Notebook 07's results, claims and command line: `build_results` turns the benchmark's tables
(`lab.experiments.benchmark`) into results/07_benchmark.json with the claims checked on intervals; `run` does every
stage in order; `main` is `python -m lab benchmark`."""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Mapping, Sequence

import numpy as np
import torch

import lab
from lab import stats
from lab.experiments import ExperimentError
from lab.experiments.benchmark import (COST_COLUMNS, METRICS, MODES, NOTEBOOK, PROFILES, REPLACEMENT_METRICS,
                                       TASK_LABELS, TASKS, TOKEN_LABELS, TOKENS, Task, TaskRun, directions,
                                       explain_task, load_tasks, method_metrics, quality_table, randomisation_check,
                                       settings, threads, token_id, token_sweep)
from lab.metrics.agreement import kendall_tau, rank_correlation_matrix
from lab.viz import benchmark as viz_benchmark


# ---- tables ----------------------------------------------------------------------------------------------


def quality_frame(quality: Mapping[str, Mapping[str, float]]):
    """Methods × metrics DataFrame (NaN where a metric does not apply)."""
    import pandas as pd

    return pd.DataFrame.from_dict({m: dict(r) for m, r in quality.items()}, orient="index").astype(float)


def rank_frame(quality: Mapping[str, Mapping[str, float]]):
    """Rank of every method on every metric (1 = best; ties share the mean rank) and the mean rank, sorted."""
    frame = quality_frame(quality)
    ranks = frame.copy()
    for col in frame.columns:
        ranks[col] = frame[col].rank(ascending=METRICS[col][0] == "lower", method="average")
    ranks["mean_rank"] = ranks.mean(axis=1, skipna=True)
    return ranks.sort_values("mean_rank")


def ranked_table(quality: Mapping[str, Mapping[str, float]], metric: str):
    """One metric's ranking: rank, method, value (best first)."""
    import pandas as pd

    if metric not in METRICS:
        raise ExperimentError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    vals = {m: r[metric] for m, r in quality.items() if metric in r and np.isfinite(r[metric])}
    if not vals:
        raise ExperimentError(f"no method has a value for {metric!r} on this task")
    order = sorted(vals, key=vals.get, reverse=METRICS[metric][0] == "higher")
    frame = pd.DataFrame({"method": order, metric: [vals[m] for m in order]}, index=range(1, len(order) + 1))
    frame.index.name = "rank"
    return frame


def cost_frame(run: TaskRun):
    """Methods × cost columns (s/example, × forward+backward, peak MB)."""
    import pandas as pd

    return pd.DataFrame.from_dict(run.cost, orient="index").reindex(columns=list(COST_COLUMNS))


def figures(quality: Mapping, runs: Mapping[str, TaskRun]) -> dict:
    """{name: Figure} of the ranks, the metric agreement and cost against quality (`lab.viz.benchmark`)."""
    labels = {t: TASK_LABELS.get(t, t) for t in quality}
    return {"ranks": viz_benchmark.ranks_figure({t: rank_frame(q) for t, q in quality.items()}, labels),
            "metric_agreement": viz_benchmark.agreement_figure({t: metric_agreement(q) for t, q in quality.items()},
                                                               labels),
            "cost_quality": viz_benchmark.cost_quality_figure(
                {t: rank_frame(q)["mean_rank"] for t, q in quality.items()},
                {t: {m: c["ratio_fb"] for m, c in runs[t].cost.items()} for t in quality}, labels)}


def randomisation_frame(rand: Mapping[str, Mapping]):
    """Methods × tasks: Spearman ρ between the explanations of the trained and the randomised model."""
    import pandas as pd

    return pd.DataFrame({t: {m: row["spearman"] for m, row in r["rows"].items()} for t, r in rand.items() if r})


def machine_line(cfg: Mapping) -> str:
    """Threads used and the machine's load (timings depend on both)."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{threads(cfg) or torch.get_num_threads()} torch thread(s) on {os.cpu_count()} cores; load average {load}"


def ranking_overview(quality: Mapping[str, Mapping[str, float]]):
    """The ranked table of every metric side by side: rows = rank (1 = best), columns = metrics, cells = method."""
    import pandas as pd

    frame = quality_frame(quality)
    cols = {}
    for metric in frame.columns:
        if not frame[metric].notna().any():  # e.g. deletion accuracy when no example is classified correctly
            continue
        ranked = ranked_table(quality, metric)
        cols[metric] = pd.Series(list(ranked["method"]), index=ranked.index)
    out = pd.DataFrame(cols)
    out.index.name = "rank"
    return out.fillna("")


def metric_agreement(quality: Mapping[str, Mapping[str, float]], method: str = "kendall"):
    """Metrics × metrics Kendall τ between the method rankings the metrics induce (+1: same ranking; "lower is
    better" metrics are negated first)."""
    frame = quality_frame(quality)
    return rank_correlation_matrix(frame, method=method, directions=directions(list(frame.columns)))


def mean_off_diagonal(matrix) -> float:
    m = np.asarray(matrix, dtype=float)
    off = m[~np.eye(m.shape[0], dtype=bool)]
    off = off[np.isfinite(off)]
    return float(off.mean()) if off.size else float("nan")


def sweep_frame(sweep: Mapping):
    """One row per swept metric: Kendall τ between the rankings under each pair of tokens, and the best method
    under each token."""
    import pandas as pd

    rows = {}
    for metric, taus in sweep["tau"].items():
        row = {f"τ {' vs '.join(TOKEN_LABELS[t] for t in pair.split('~'))}": v for pair, v in taus.items()}
        row.update({f"best {TOKEN_LABELS[t]}": m for t, m in sweep["best"][metric].items()})
        rows[metric] = row
    return pd.DataFrame.from_dict(rows, orient="index")


# ---- results -----------------------------------------------------------------------------------------------


def build_results(cfg: Mapping, tasks: Mapping[str, Task], runs: Mapping[str, TaskRun], quality: Mapping,
                  sweep: Mapping, rand: Mapping, skipped_tasks: Mapping[str, str] | None = None,
                  meta: Mapping | None = None):
    """results/07_benchmark.json: per task the quality, rank, cost, metric-agreement, token-sweep and
    randomisation tables (no paper values: no paper runs this comparison), and the claims checked on ours."""
    from lab.results import Results

    res = Results(NOTEBOOK, cfg["profile"], meta=run_meta(cfg, tasks, runs, skipped_tasks, meta))
    quality_tables(res, cfg, tasks, runs, quality)
    study_tables(res, cfg, sweep, rand)
    _claims(res, cfg, quality, runs, sweep, rand)
    return res


def run_meta(cfg: Mapping, tasks: Mapping[str, Task], runs: Mapping[str, TaskRun],
             skipped_tasks: Mapping[str, str] | None = None, meta: Mapping | None = None) -> dict:
    """The results' run metadata: protocol, tasks, token ids, skipped tasks and methods, timings, machine."""
    return {
        "protocol": {"target": "predicted class", "token": cfg["token"], "mode": cfg["mode"],
                     "fractions": [round(f, 4) for f in cfg["fractions"]], "bins": list(cfg["bins"]),
                     "auc_rep_stop": cfg["auc_rep_stop"], "deletion_max": cfg["deletion_max"], "ks": list(cfg["ks"]),
                     "ig_steps": cfg["ig_steps"], "fill": cfg["fill"], "randomise_layers": cfg["randomise_layers"]},
        "tasks": {t: {"n": len(task), **task.info} for t, task in tasks.items()},
        "token_ids": {t: {tok: token_id(task, tok) for tok in cfg["tokens"]} for t, task in tasks.items()
                      if task.modality == "text"},
        "skipped_tasks": dict(skipped_tasks or {}), "skipped_methods": {t: r.skipped for t, r in runs.items()},
        "forward_backward_s_per_example": {t: r.fb_seconds / len(tasks[t]) for t, r in runs.items()},
        "timings": {t: {"setup_s": tasks[t].info.get("setup_s"), **r.timings} for t, r in runs.items()},
        "total_s": round(sum(float(v or 0) for t, r in runs.items()
                             for v in [tasks[t].info.get("setup_s"), *r.timings.values()]), 1),
        "metrics": {m: {"direction": d, "source": s} for m, (d, s) in METRICS.items()},
        "seed": cfg["seed"], "load_average": list(os.getloadavg()), "cpu_count": os.cpu_count(),
        "torch_threads": threads(cfg) or torch.get_num_threads(), **(meta or {})}


def quality_tables(res, cfg: Mapping, tasks: Mapping[str, Task], runs: Mapping[str, TaskRun],
                   quality: Mapping) -> None:
    """Per task: quality (+ interval half-widths), ranks, cost and metric-agreement tables."""
    for t, q in quality.items():
        cols = list(quality_frame(q).columns)
        res.add_table(f"{t}_quality", f"{TASK_LABELS[t]}: every method × every applicable metric under one protocol "
                      f"({len(tasks[t])} examples; token {TOKEN_LABELS[cfg['token']]}); no paper reports these",
                      {m: {c: (None, v) for c, v in r.items()} for m, r in q.items()}, directions(cols))
        res.add_table(f"{t}_quality_half_widths", f"{TASK_LABELS[t]}: half-width of the 95 % bootstrap interval of "
                      f"each quality value over the {len(tasks[t])} examples (mIoU: of the mean per-image IoU)",
                      half_widths(runs[t].per_example))
        ranks = rank_frame(q)
        res.add_table(f"{t}_ranks", f"{TASK_LABELS[t]}: rank per metric (1 = best) and mean rank",
                      {m: {c: (None, float(v)) for c, v in row.items()} for m, row in ranks.iterrows()},
                      {c: "lower" for c in ranks.columns})
        res.add_table(f"{t}_cost", f"{TASK_LABELS[t]}: seconds per example, ratio to one forward+backward on the "
                      "same batches, peak resident-memory growth (MB); measured on a shared, loaded machine",
                      {m: {c: (None, v) for c, v in r.items()} for m, r in runs[t].cost.items()},
                      {c: "lower" for c in COST_COLUMNS})
        agree = metric_agreement(q)
        res.add_table(f"{t}_metric_agreement", f"{TASK_LABELS[t]}: Kendall τ between the method rankings of two "
                      "metrics (+1 = same ranking)",
                      {a: {b: (None, float(agree.loc[a, b])) for b in agree.columns} for a in agree.index})
        conservative_table(res, t, runs[t].per_example)


def study_tables(res, cfg: Mapping, sweep: Mapping, rand: Mapping) -> None:
    """Per task: the token-sweep and randomisation tables (when they were run)."""
    for t, s in sweep.items():
        if not s:
            continue
        res.add_table(f"{t}_token_sweep", f"{TASK_LABELS[t]}: Kendall τ between method rankings under two "
                      f"replacement tokens ({s['n']} examples, explanations fixed)",
                      {m: {pair: (None, v) for pair, v in taus.items()} for m, taus in s["tau"].items()},
                      {pair: "higher" for pair in next(iter(s["tau"].values()))})
        for token, vals in s["values"].items():
            res.add_table(f"{t}_token_{token}", f"{TASK_LABELS[t]}: replacement metrics with "
                          f"{TOKEN_LABELS[token]} (id {s['token_ids'][token]}), {s['n']} examples",
                          {m: {c: (None, v) for c, v in r.items()} for m, r in vals.items()},
                          directions(list(cfg["sweep_metrics"])))
    for t, r in rand.items():
        if not r:
            continue
        res.add_table(f"{t}_randomisation", f"{TASK_LABELS[t]}: Spearman ρ between explanations of the trained model "
                      f"and of a copy with its top {r['layers']} blocks + head re-initialised ({r['n']} examples; "
                      f"the copy changes {100 * r['prediction_changed']:.0f}% of the predictions)",
                      {m: {c: (None, v) for c, v in row.items()} for m, row in r["rows"].items()},
                      {"spearman": "lower", "changed": "higher"})


CONSERVATIVE = ("attnlrp", "cp_lrp")  # issue 21: ranked against these, paired over examples
CONSERVATIVE_BASELINES = ("chefer", "gae", "integrated_gradients")


def conservative_rows(per_example: Mapping) -> dict:
    """{"a vs b | metric": {estimate, low, high, n}}: paired advantage (positive = a better, every metric oriented
    "higher is better") of AttnLRP / CP-LRP over Chefer, GAE and integrated gradients, per shared metric."""
    rows = {}
    for a in (m for m in CONSERVATIVE if m in per_example):
        for b in (m for m in CONSERVATIVE_BASELINES if m in per_example):
            for c in (c for c in per_example[a] if c in per_example[b]):
                iv = paired_advantage(per_example, a, b, c)
                if iv is not None:
                    rows[f"{a} vs {b} | {c}"] = {"estimate": iv.estimate, "low": iv.low, "high": iv.high, "n": iv.n}
    return rows


def conservative_table(res, task: str, per_example: Mapping) -> None:
    rows = conservative_rows(per_example)
    if rows:
        res.add_table(f"{task}_conservative_paired", f"{TASK_LABELS[task]}: AttnLRP / CP-LRP minus Chefer, GAE and "
                      "integrated gradients per metric (oriented: positive = the conservative method is better), "
                      "mean paired difference with its 95 % bootstrap interval over the examples",
                      {r: {k: (None, v) for k, v in d.items()} for r, d in rows.items()})


def half_widths(per_example: Mapping) -> dict:
    """{method: {metric: (None, half-width)}} of the 95 % bootstrap interval of each mean (NaN values left out)."""
    out = {}
    for m, cols in per_example.items():
        out[m] = {}
        for c, v in cols.items():
            v = np.asarray(v, float)[np.isfinite(v)]
            iv = stats.bootstrap(v) if v.size > 1 else None
            out[m][c] = (None, None if iv is None else (iv.high - iv.low) / 2)
    return out


def _oriented(values, metric: str) -> np.ndarray:
    """Per-example values with "higher is better" for every metric."""
    v = np.asarray(values, float)
    return v if METRICS[metric][0] == "higher" else -v


def paired_advantage(per_example: Mapping, a: str, b: str, metric: str) -> stats.Interval | None:
    """Interval of how much method a beats b on `metric` (positive = a better), paired over the examples where
    both are defined; None when fewer than two are."""
    x, y = _oriented(per_example[a][metric], metric), _oriented(per_example[b][metric], metric)
    keep = np.isfinite(x) & np.isfinite(y)
    return stats.paired_difference(x[keep], y[keep]) if keep.sum() > 1 else None


def _metrics_of(per_example: Mapping) -> list[str]:
    return list(dict.fromkeys(c for cols in per_example.values() for c in cols))


def best_everywhere_claim(task: str, quality: Mapping, per_example: Mapping) -> dict:
    """'No single method is best on every metric': each method against the best other method (point estimate) on
    every metric; a method is shown not best once one such interval lies below 0, best everywhere when all lie
    above it."""
    verdicts, shown = {}, []
    for m in per_example:
        ivs = {}
        for c in per_example[m]:
            others = {o: _oriented([quality[o][c]], c)[0] for o in per_example if o != m and c in per_example[o]
                      and np.isfinite(quality[o][c])}
            if others:
                ivs[c] = paired_advantage(per_example, m, max(others, key=others.get), c)
        decided = [stats.decide(iv, 0.0, "greater") for iv in ivs.values() if iv is not None]
        verdicts[m] = ("holds" if "fails" in decided else "fails" if decided and set(decided) == {"holds"}
                       else "inconclusive")
        if verdicts[m] != "holds":
            shown.append(f"{m} ({verdicts[m]})")
    return {"claim": f"{task}: no single method is best on every metric", "verdict": stats.combine(verdicts.values()),
            "detail": "each method vs the best other method per metric, paired intervals over examples; not shown "
                      "to be beaten somewhere: " + (", ".join(shown) or "none")}


def _matrix(per_example: Mapping, columns: Sequence[tuple[str, str]]) -> np.ndarray:
    """[n, 2 × len(columns)]: oriented per-example values (NaN → 0) and their NaN mask, so a bootstrap keeps rows."""
    v = np.stack([_oriented(per_example[m][c], c) for m, c in columns], 1)
    return np.hstack([np.nan_to_num(v), np.isnan(v).astype(float)])


def _masked_means(rows: np.ndarray) -> np.ndarray:
    k = rows.shape[1] // 2
    ok = 1.0 - rows[:, k:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rows[:, :k] * ok).sum(0) / ok.sum(0)


def _kendall(a: np.ndarray, b: np.ndarray) -> float:
    keep = np.isfinite(a) & np.isfinite(b)
    return float(kendall_tau(a[keep], b[keep]).statistic) if keep.sum() > 2 else float("nan")


def agreement_claim(task: str, per_example: Mapping, n_boot: int = 200) -> dict:
    """'The metrics agree on the ranking of methods': the mean pairwise Kendall τ between the metrics' rankings of
    the methods, recomputed on resampled examples."""
    methods, metrics = list(per_example), _metrics_of(per_example)
    cols = [(m, c) for c in metrics for m in methods]
    nan = np.full(len(next(iter(next(iter(per_example.values())).values()))), np.nan)
    per = {m: {c: per_example[m].get(c, nan) for c in metrics} for m in methods}

    def statistic(rows):
        means = _masked_means(rows).reshape(len(metrics), len(methods))
        taus = [_kendall(means[i], means[j]) for i in range(len(metrics)) for j in range(i + 1, len(metrics))]
        taus = [t for t in taus if np.isfinite(t)]
        return float(np.mean(taus)) if taus else 0.0

    iv = stats.bootstrap(_matrix(per, cols), statistic, n_boot=n_boot)
    return {"claim": f"{task}: the metrics agree on the ranking of methods (mean pairwise Kendall τ > 0.5)",
            "interval": iv, "margin": 0.5, "kind": "greater",
            "detail": f"mean τ between the {len(metrics)} metrics' rankings, examples resampled ({n_boot} draws)"}


def random_claim(task: str, per_example: Mapping) -> dict:
    """'Every method beats the random explainer on a majority of metrics': per method, the paired advantage over
    random on each metric decides that metric; a majority of metrics decides the method."""
    verdicts, weak = {}, []
    for m in per_example:
        if m == "random":
            continue
        ivs = [paired_advantage(per_example, m, "random", c) for c in per_example[m] if c in per_example["random"]]
        parts = [stats.decide(iv, 0.0, "greater") for iv in ivs if iv is not None]
        if parts:
            verdicts[m] = stats.majority(parts)
            if verdicts[m] != "holds":
                weak.append(f"{m} ({verdicts[m]}: beats random on {parts.count('holds')} of {len(parts)})")
    return {"claim": f"{task}: every method beats the random explainer on a majority of metrics",
            "verdict": stats.combine(verdicts.values()) if verdicts else None,
            "detail": "paired intervals over examples; not shown: " + (", ".join(weak) or "none")}


def sweep_claim(task: str, sweep: Mapping, tokens: Sequence[str], n_boot: int = 200) -> dict:
    """'Rankings do not depend on the replacement token': the lowest Kendall τ (over swept metrics and token pairs)
    between the method rankings under two tokens, recomputed on resampled examples."""
    per = sweep["per_example"]
    methods, metrics = list(per[tokens[0]]), list(sweep["tau"])
    cols = [(f"{t}/{m}", c) for t in tokens for m in methods for c in metrics]
    flat = {f"{t}/{m}": per[t][m] for t in tokens for m in methods}

    def statistic(rows):
        means = _masked_means(rows).reshape(len(tokens), len(methods), len(metrics))
        return min(_kendall(means[i, :, c], means[j, :, c]) for c in range(len(metrics))
                   for i in range(len(tokens)) for j in range(i + 1, len(tokens)))

    iv = stats.bootstrap(_matrix(flat, cols), statistic, n_boot=n_boot)
    return {"claim": f"{task}: method rankings do not depend on the replacement token (Kendall τ > 0.8 between "
                     f"{'/'.join(TOKEN_LABELS[x] for x in tokens)} on every swept metric)",
            "interval": iv, "margin": 0.8, "kind": "greater",
            "detail": f"lowest τ on {sweep['n']} examples, examples resampled ({n_boot} draws)"}


def randomisation_claims(task: str, r: Mapping) -> list[dict]:
    """Re-initialising the top blocks changes every model-dependent method's explanations (mean ρ < 0.5, interval
    over examples); the original model is untouched (an exact check)."""
    parts = {m: stats.bootstrap(v[np.isfinite(v)]) for m, v in r["rho"].items()
             if m != "random" and np.isfinite(v).sum() > 1}
    verdicts = {m: stats.decide(iv, 0.5, "less") for m, iv in parts.items()}
    stuck = [f"{m} {parts[m]} → {v}" for m, v in verdicts.items() if v != "holds"]
    return [{"claim": f"{task}: re-initialising the top {r['layers']} blocks changes every model-dependent method's "
                      "explanations (mean Spearman ρ < 0.5)",
             "verdict": stats.combine(verdicts.values()) if verdicts else None,
             "detail": "not shown: " + ("; ".join(stuck) or "none")},
            {"claim": f"{task}: the original model is left untouched by the randomisation check",
             "holds": bool(r["original_untouched"]), "detail": "torch.equal on every parameter", "exact": True}]


def _claims(res, cfg, quality, runs, sweep, rand):
    for t, q in quality.items():
        pe = runs[t].per_example
        res.add_claim(**best_everywhere_claim(t, q, pe))
        res.add_claim(**agreement_claim(t, pe))
        if "random" in pe:
            res.add_claim(**random_claim(t, pe))
    for t, s in sweep.items():
        if s:
            res.add_claim(**sweep_claim(t, s, list(cfg["tokens"])))
    for t, r in rand.items():
        for c in randomisation_claims(t, r) if r else []:
            res.add_claim(**c)


def summary_markdown(quality: Mapping, runs: Mapping[str, TaskRun], sweep: Mapping, rand: Mapping) -> str:
    """A data-driven summary per task: the best mean rank and its cost, the cheapest method among the top three,
    the best method per metric, how much the metrics agree, what the token sweep and the randomisation check show."""
    lines = []
    for t, q in quality.items():
        ranks = rank_frame(q)
        cost = {m: runs[t].cost[m]["ratio_fb"] for m in ranks.index}
        top = list(ranks.index[:3])
        cheap = min(top, key=cost.get)
        best = {c: ranks[c].idxmin() for c in ranks.columns if c != "mean_rank" and ranks[c].notna().any()}
        tau = mean_off_diagonal(metric_agreement(q))
        text = (f"- **{TASK_LABELS[t]}**: best mean rank **{top[0]}** ({ranks['mean_rank'].iloc[0]:.1f}, "
                f"{cost[top[0]]:.1f}× forward+backward); cheapest of the top three: {cheap} ({cost[cheap]:.1f}×). "
                f"Best per metric: " + ", ".join(f"{c} → {m}" for c, m in best.items()) +
                f". Mean Kendall τ between the metrics' rankings: {tau:.2f}.")
        if "random" in ranks.index:
            text += f" The random explainer's mean rank: {ranks.loc['random', 'mean_rank']:.1f} of {len(ranks)}."
        s = sweep.get(t)
        if s:
            worst = min(((m, p, v) for m, taus in s["tau"].items() for p, v in taus.items()), key=lambda x: x[2])
            moved = [m for m, b in s["best"].items() if len(set(b.values())) > 1]
            text += (f" Token sweep ({s['n']} examples): lowest τ {worst[2]:.2f} ({worst[0]}, "
                     f"{' vs '.join(TOKEN_LABELS[x] for x in worst[1].split('~'))}); the best method changes with "
                     f"the token on: {', '.join(moved) or 'no metric'}.")
        r = rand.get(t)
        if r:
            rho = sorted(r["rows"].items(), key=lambda kv: -kv[1]["spearman"])
            text += (" Randomisation: highest ρ (least sensitive) " +
                     ", ".join(f"{m} {row['spearman']:.2f}" for m, row in rho[:4]) + "; lowest " +
                     ", ".join(f"{m} {row['spearman']:.2f}" for m, row in rho[-3:]) + ".")
        lines.append(text)
    return "\n".join(lines)


# ---- one call, and the CLI --------------------------------------------------------------------------------


def run(cfg: Mapping) -> dict:
    """Everything, in order: tasks, explanations + cost, quality, token sweep, randomisation, results."""
    started = time.perf_counter()
    tasks, skipped = load_tasks(cfg)
    if not tasks:
        raise ExperimentError("no task to run: " + "; ".join(f"{t}: {r}" for t, r in skipped.items()))
    runs, quality, sweep, rand = {}, {}, {}, {}
    for t, task in tasks.items():
        runs[t] = explain_task(task, cfg)
        quality[t] = quality_table(task, runs[t], cfg)
        sweep[t] = token_sweep(task, runs[t], cfg, quality[t])
        rand[t] = randomisation_check(task, runs[t], cfg)
    res = build_results(cfg, tasks, runs, quality, sweep, rand, skipped,
                        meta={"elapsed_s": round(time.perf_counter() - started, 1)})
    return {"tasks": tasks, "skipped_tasks": skipped, "runs": runs, "quality": quality, "sweep": sweep,
            "randomisation": rand, "results": res}


def export_tables(out: Mapping, directory=None) -> list:
    """CSV of every quality, rank, cost, agreement and sweep table under results/07_benchmark/."""
    from pathlib import Path

    from lab.config import results_dir

    folder = Path(directory) if directory is not None else results_dir() / NOTEBOOK
    folder.mkdir(parents=True, exist_ok=True)
    written = []

    def save(frame, name):
        path = folder / f"{name}.csv"
        tmp = path.with_suffix(".csv.tmp")
        frame.to_csv(tmp)
        os.replace(tmp, path)
        written.append(path)

    import pandas as pd

    for t, q in out["quality"].items():
        save(quality_frame(q), f"{t}_quality")
        save(rank_frame(q), f"{t}_ranks")
        save(cost_frame(out["runs"][t]), f"{t}_cost")
        save(metric_agreement(q), f"{t}_metric_agreement")
        if out["sweep"].get(t):
            save(sweep_frame(out["sweep"][t]), f"{t}_token_sweep")
        if out["randomisation"].get(t):
            save(pd.DataFrame.from_dict(out["randomisation"][t]["rows"], orient="index"), f"{t}_randomisation")

    return written


def _print_summary(out: Mapping) -> None:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 3):
        for t, q in out["quality"].items():
            print(f"\n== {TASK_LABELS[t]} ==")
            frame = quality_frame(q).join(pd.DataFrame.from_dict(out["runs"][t].cost, orient="index"))
            print(frame.loc[rank_frame(q).index].to_string())
            if out["runs"][t].skipped:
                print("skipped: " + "; ".join(f"{m} ({r})" for m, r in out["runs"][t].skipped.items()))
            if out["sweep"].get(t):
                print(sweep_frame(out["sweep"][t]).to_string())
        for t, r in out["skipped_tasks"].items():
            print(f"task {t} skipped: {r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab benchmark",
                                     description="every explainer x every metric on the fine-tuned models (notebook 07)")
    parser.add_argument("--profile", default="default", choices=list(PROFILES))
    parser.add_argument("--tasks", nargs="*", default=None, help=f"subset of {', '.join(TASKS)}")
    parser.add_argument("--methods", nargs="*", default=None, help="explainers (default: every registered one)")
    parser.add_argument("--token", default=None, choices=TOKENS, help="replacement token of the protocol")
    parser.add_argument("--mode", default=None, choices=MODES, help="replace (protocol) or delete (ERASER, Wu & Ong)")
    parser.add_argument("--n", type=int, default=None, help="examples per task (default: the profile's)")
    parser.add_argument("--no-train", action="store_true", help="skip tasks whose model is not cached")
    parser.add_argument("--no-figures", action="store_true")
    args = parser.parse_args(argv)
    from lab.runner import profile_outputs  # non-default profiles write under results/<profile>/, as notebooks do

    try:
        cfg = settings(args.profile, tasks=args.tasks, methods=args.methods, token=args.token, mode=args.mode,
                       n=None if args.n is None else {t: args.n for t in TASKS},
                       train_missing=False if args.no_train else None)
        with profile_outputs(args.profile):
            out = run(cfg)
            path = out["results"].save()
            tables = export_tables(out)
            if not args.no_figures:
                for name, fig in figures(out["quality"], out["runs"]).items():
                    lab.save_figure(fig, NOTEBOOK, name)
    except (ExperimentError, lab.metrics.MetricInputError) as err:
        print(f"python -m lab benchmark: {err}", file=sys.stderr)
        return 2
    _print_summary(out)
    print(f"\nresults: {path}; tables: {tables[0].parent if tables else '-'}")
    return 0


# ---- widget -----------------------------------------------------------------------------------------------


def widget_renderer(tasks: Mapping[str, Task], runs: Mapping[str, TaskRun], cfg: Mapping):
    """render(task, metric, n, token) -> Figure: one metric for every method on the first n examples, recomputed
    with the chosen replacement token (text; images ignore it)."""

    def render(task: str, metric: str, n: int, token: str):
        if task not in tasks:
            raise ExperimentError(f"task {task!r} was not run; choose from {', '.join(tasks)}")
        t = tasks[task]
        if metric not in t.metrics:
            raise ExperimentError(f"{metric} does not apply to {task}; choose from {', '.join(t.metrics)}")
        n = max(1, min(int(n), len(t)))
        values = {m: method_metrics(t, runs[task], m, cfg, token=token, n=n, metrics=[metric]).get(metric, np.nan)
                  for m in runs[task].methods}
        tok = f", token {TOKEN_LABELS[token]}" if t.modality == "text" and metric in REPLACEMENT_METRICS else ""
        return viz_benchmark.metric_bars(values, METRICS[metric][0] == "higher", metric,
                                         f"{TASK_LABELS[task]}: {metric} on {n} examples{tok}")

    return render
