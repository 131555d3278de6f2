"""Notebook 07's results file, claims and command line: `build_results` turns the benchmark's tables into
results/07_benchmark.json (claims decided on paired intervals, `lab.metrics.ranking`); `run` does every stage in
order; `main` is `python -m lab benchmark`."""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Mapping, Sequence

import torch

import lab
from lab import config
from lab.experiments import ExperimentError
from lab.experiments.benchmark import (COST_COLUMNS, METRICS, MODES, NOTEBOOK, PROFILES, REPLACEMENT_METRICS,
                                       TASK_LABELS, TASKS, TOKEN_LABELS, TOKENS, Task, TaskRun, explain_task,
                                       load_tasks, method_metrics, quality_table, randomisation_check, settings,
                                       token_id, token_sweep)
from lab.metrics import protocols
from lab.metrics import ranking as R
from lab.viz import benchmark as viz_benchmark

CONSERVATIVE = ("attnlrp", "cp_lrp")  # issue 21: ranked against these, paired over examples
CONSERVATIVE_BASELINES = ("chefer", "gae", "integrated_gradients")


def build_results(cfg: Mapping, tasks: Mapping[str, Task], runs: Mapping[str, TaskRun], quality: Mapping,
                  sweep: Mapping, rand: Mapping, skipped_tasks: Mapping[str, str] | None = None,
                  meta: Mapping | None = None):
    """results/07_benchmark.json: per task the quality, rank, cost, metric-agreement, token-sweep and
    randomisation tables (no paper values: no paper runs this comparison), and the claims checked on ours."""
    from lab.results import Results

    res = Results(NOTEBOOK, cfg["profile"], meta=run_meta(cfg, tasks, runs, skipped_tasks, meta))
    for t, q in quality.items():
        _add_tables(res, t, _quality_tables(cfg, len(tasks[t]), q, runs[t]))
    for t in sweep:
        _add_tables(res, t, _sweep_tables(cfg, sweep[t]) if sweep[t] else [])
    for t, r in rand.items():
        _add_tables(res, t, [("randomisation", f"Spearman ρ between explanations of the trained model and of a copy "
                              f"with its top {r['layers']} blocks + head re-initialised ({r['n']} examples; the copy "
                              f"changes {100 * r['prediction_changed']:.0f}% of the predictions)", r["rows"],
                              {"spearman": "lower", "changed": "higher"})] if r else [])
    for claim in claims(cfg, quality, runs, sweep, rand):
        res.add_claim(**claim)
    return res


def _add_tables(res, task: str, tables: Sequence[tuple]) -> None:
    for name, caption, rows, directions in tables:
        res.add_table(f"{task}_{name}", f"{TASK_LABELS[task]}: {caption}", rows, directions)


def _quality_tables(cfg: Mapping, n: int, q: Mapping, run: TaskRun) -> list[tuple]:
    """Quality (+ interval half-widths), ranks, cost, metric agreement and the conservative methods' paired table."""
    ranks, paired = R.rank_frame(q), R.paired_rows(run.per_example, CONSERVATIVE, CONSERVATIVE_BASELINES)
    return [("quality", f"every method × every applicable metric under one protocol ({n} examples; token "
             f"{TOKEN_LABELS[cfg['token']]}); no paper reports these", q, R.directions(list(R.quality_frame(q)))),
            ("quality_half_widths", f"half-width of the 95 % bootstrap interval of each quality value over the {n} "
             "examples (mIoU: of the mean per-image IoU)", R.half_widths(run.per_example), None),
            ("ranks", "rank per metric (1 = best) and mean rank", ranks.to_dict("index"),
             dict.fromkeys(ranks.columns, "lower")),
            ("cost", "seconds per example, ratio to one forward+backward on the same batches, peak resident-memory "
             "growth (MB); measured on a shared, loaded machine", run.cost, dict.fromkeys(COST_COLUMNS, "lower")),
            ("metric_agreement", "Kendall τ between the method rankings of two metrics (+1 = same ranking)",
             R.metric_agreement(q).to_dict("index"), None),
            *([("conservative_paired", "AttnLRP / CP-LRP minus Chefer, GAE and integrated gradients per metric "
                "(oriented: positive = the conservative method is better), mean paired difference with its 95 % "
                "bootstrap interval over the examples", paired, None)] if paired else [])]


def _sweep_tables(cfg: Mapping, s: Mapping) -> list[tuple]:
    return [("token_sweep", f"Kendall τ between method rankings under two replacement tokens ({s['n']} examples, "
             "explanations fixed)", s["tau"], dict.fromkeys(next(iter(s["tau"].values())), "higher")),
            *[(f"token_{token}", f"replacement metrics with {TOKEN_LABELS[token]} (id {s['token_ids'][token]}), "
               f"{s['n']} examples", vals, R.directions(cfg["sweep_metrics"])) for token, vals in s["values"].items()]]


def run_meta(cfg: Mapping, tasks: Mapping[str, Task], runs: Mapping[str, TaskRun],
             skipped_tasks: Mapping[str, str] | None = None, meta: Mapping | None = None) -> dict:
    """The results' run metadata: protocol, tasks, token ids, skipped tasks and methods, timings, machine."""
    keys = ("token", "mode", "fractions", "bins", "auc_rep_stop", "deletion_max", "ks", "ig_steps", "fill",
            "randomise_layers")
    timings = {t: {"setup_s": tasks[t].info.get("setup_s"), **r.timings} for t, r in runs.items()}
    return {"protocol": {"target": "predicted class", **{k: cfg[k] for k in keys}},
            "tasks": {t: {"n": len(task), **task.info} for t, task in tasks.items()},
            "token_ids": {t: {tok: token_id(task, tok) for tok in cfg["tokens"]} for t, task in tasks.items()
                          if task.modality == "text"},
            "skipped_tasks": dict(skipped_tasks or {}), "skipped_methods": {t: r.skipped for t, r in runs.items()},
            "forward_backward_s_per_example": {t: r.fb_seconds / len(tasks[t]) for t, r in runs.items()},
            "timings": timings, "total_s": round(sum(float(v or 0) for d in timings.values() for v in d.values()), 1),
            "metrics": {m: {"direction": d, "source": s} for m, (d, s) in METRICS.items()},
            "seed": cfg["seed"], "load_average": list(os.getloadavg()), "cpu_count": os.cpu_count(),
            "torch_threads": config.threads(cfg.get("threads"), "load") or torch.get_num_threads(), **(meta or {})}


def sweep_claim(task: str, sweep: Mapping, tokens: Sequence[str], n_boot: int = 200) -> dict:
    """'Rankings do not depend on the replacement token': the lowest Kendall τ (over swept metrics and token pairs)
    between the method rankings under two tokens, recomputed on resampled examples."""
    iv = R.stability_interval({t: sweep["per_example"][t] for t in tokens}, list(sweep["tau"]), n_boot)
    return {"claim": f"{task}: method rankings do not depend on the replacement token (Kendall τ > 0.8 between "
                     f"{'/'.join(TOKEN_LABELS[x] for x in tokens)} on every swept metric)",
            "interval": iv, "margin": 0.8, "kind": "greater",
            "detail": f"lowest τ on {sweep['n']} examples, examples resampled ({n_boot} draws)"}


def claims(cfg: Mapping, quality: Mapping, runs: Mapping[str, TaskRun], sweep: Mapping, rand: Mapping) -> list:
    """Per task: no single best method, agreement of the metrics, every method beats random, the token does not
    move the rankings, randomisation changes the explanations and leaves the model untouched."""
    out = []
    for t, q in quality.items():
        pe = runs[t].per_example
        out += [R.no_single_best_claim(t, q, pe), R.metric_agreement_claim(t, pe)]
        out += [R.beats_random_claim(t, pe)] if "random" in pe else []
    out += [sweep_claim(t, s, list(cfg["tokens"])) for t, s in sweep.items() if s]
    for t, r in rand.items():
        out += R.randomisation_claims(t, r["rho"], r["layers"], r["original_untouched"]) if r else []
    return out


def run(cfg: Mapping) -> dict:
    """Everything, in order: tasks, explanations + cost, quality, token sweep, randomisation, results."""
    started = time.perf_counter()
    tasks, skipped = load_tasks(cfg)
    if not tasks:
        raise ExperimentError("no task to run: " + "; ".join(f"{t}: {r}" for t, r in skipped.items()))
    runs, quality, sweep, rand = {}, {}, {}, {}
    for t, task in tasks.items():  # one task after the other
        runs[t] = explain_task(task, cfg)
        quality[t] = quality_table(task, runs[t], cfg)
        sweep[t], rand[t] = token_sweep(task, runs[t], cfg, quality[t]), randomisation_check(task, runs[t], cfg)
    res = build_results(cfg, tasks, runs, quality, sweep, rand, skipped,
                        meta={"elapsed_s": round(time.perf_counter() - started, 1)})
    return {"tasks": tasks, "skipped_tasks": skipped, "runs": runs, "quality": quality, "sweep": sweep,
            "randomisation": rand, "results": res}


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
    from lab.results import export_csv
    from lab.runner import profile_outputs  # non-default profiles write under results/<profile>/, as notebooks do

    try:
        cfg = settings(args.profile, tasks=args.tasks, methods=args.methods, token=args.token, mode=args.mode,
                       n=args.n, train_missing=False if args.no_train else None)
        with profile_outputs(args.profile):
            out = run(cfg)
            path, tables = out["results"].save(), export_csv(out["results"])
            costs = {t: r.cost for t, r in out["runs"].items()}
            figs = {} if args.no_figures else viz_benchmark.figures(out["quality"], costs, TASK_LABELS)
            for name, fig in figs.items():
                lab.save_figure(fig, NOTEBOOK, name)
    except (ExperimentError, lab.metrics.MetricInputError) as err:
        print(f"python -m lab benchmark: {err}", file=sys.stderr)
        return 2
    for t, q in out["quality"].items():
        print(f"\n== {TASK_LABELS[t]} ==\n{viz_benchmark.quality_cost_frame(q, out['runs'][t].cost).to_string()}")
        print("skipped: " + ("; ".join(f"{m} ({r})" for m, r in out["runs"][t].skipped.items()) or "none"))
    print("".join(f"task {t} skipped: {r}\n" for t, r in out["skipped_tasks"].items()))
    print(f"results: {path}; tables: {tables[0].parent if tables else '-'}")
    return 0


def widget_renderer(tasks: Mapping[str, Task], runs: Mapping[str, TaskRun], cfg: Mapping):
    """render(task, metric, n, token) -> Figure: one metric for every method on the first n examples, recomputed
    with the chosen replacement token (text; images ignore it)."""

    def render(task: str, metric: str, n: int, token: str):
        if task not in tasks:
            raise ExperimentError(f"task {task!r} was not run; choose from {', '.join(tasks)}")
        t, applicable = tasks[task], protocols.columns(tasks[task])
        if metric not in applicable:
            raise ExperimentError(f"{metric} does not apply to {task}; choose from {', '.join(applicable)}")
        n = max(1, min(int(n), len(t)))
        values = {m: method_metrics(t, runs[task], m, cfg, token, n, [metric])[0].get(metric, float("nan"))
                  for m in runs[task].methods}
        tok = f", token {TOKEN_LABELS[token]}" if t.modality == "text" and metric in REPLACEMENT_METRICS else ""
        return viz_benchmark.metric_bars(values, METRICS[metric][0] == "higher", metric,
                                         f"{TASK_LABELS[task]}: {metric} on {n} examples{tok}")

    return render
