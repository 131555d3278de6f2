"""Notebook 07: every registered explainer × every applicable metric protocol (`lab.metrics.protocols`), with its
cost, on the workbook's own fine-tuned models (SST-2 and ERASER Movies MiniLMs, the ViT of notebook 01), in order:
`settings` → `load_tasks` → `explain_task` (scores + cost) → `quality_table` → `token_sweep` ([PAD]/[MASK]/[UNK])
→ `randomisation_check`; `benchmark_results` turns them into results/07_benchmark.json.

The protocol, stated once: every method explains the *predicted* class; units are word pieces ([CLS]/[SEP]/padding
never perturbed) or patches; the top units are replaced by `token` (attention mask unchanged; `mode="delete"`
deletes them for ERASER and Wu & Ong as published); images get the test-set mean colour (`fill`). The `random`
explainer is a row of every table; the randomisation check re-initialises a *copy* of the model.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

import lab
from lab import bench, cache, config
from lab.analysis.randomisation import randomised_copy
from lab.experiments import ExperimentError, ExperimentSettings
from lab.experiments import chefer_bert as cb
from lab.experiments import chefer_vit as cv
from lab.explainers.batch import Examples, explain_many, image_examples, predict_logits, text_examples
from lab.metrics import protocols
from lab.metrics.perturbation import ERASER_BINS, MASK_LRP_FRACTIONS
from lab.metrics.ranking import METRICS, ranking_stability
from lab.models.adapters import get_adapter
from lab.progress import progress as progress_bar

NOTEBOOK = "07_benchmark"
TASKS = ("sst2", "movies", "vit")
TASK_LABELS = {"sst2": "SST-2 (MiniLM)", "movies": "ERASER Movies (MiniLM)", "vit": "procedural shapes (ViT)"}
TOKENS, MODES = ("pad", "mask", "unk"), ("replace", "delete")
TOKEN_LABELS = {t: f"[{t.upper()}]" for t in TOKENS}
TEXT_METRICS, IMAGE_METRICS = protocols.TEXT_METRICS, protocols.IMAGE_COLUMNS
REPLACEMENT_METRICS = TEXT_METRICS[:6]
COST_COLUMNS = ("s_per_example", "ratio_fb", "peak_mb")
MARGINALIZATION = "input_marginalization"  # needs a masked LM (lab.models.mlm) and ~|candidates| forwards per token
ALL_METHODS = tuple(lab.EXPLAINERS)

# n: examples explained per task; n_sweep / n_random: prefixes of them for the token sweep / randomisation check
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(model_profile="smoke",
                  methods=("chefer", "rollout", "saliency", "leave_one_out", "erasure", "random"),
                  n={"sst2": 2, "movies": 1, "vit": 8}, n_sweep={"sst2": 1, "movies": 0, "vit": 0},
                  n_random={"sst2": 1, "movies": 1, "vit": 4}, movies_max_length=32, ks=(5, 10), deletion_max=2,
                  ig_steps=4, sweep_metrics=("aopc", "lodds"), marginalization=False, use_cache=False),
    "default": dict(model_profile="default", methods=ALL_METHODS, n={"sst2": 24, "movies": 3, "vit": 64},
                    n_sweep={"sst2": 12, "movies": 1, "vit": 0}, n_random={"sst2": 8, "movies": 1, "vit": 16},
                    movies_max_length=128, ks=(5, 10, 20, 40), deletion_max=10, ig_steps=16,
                    sweep_metrics=("aopc", "lodds"), marginalization=False),
    "paper": dict(model_profile="default", methods=ALL_METHODS, n={"sst2": 400, "movies": 40, "vit": 500},
                  n_sweep={"sst2": 200, "movies": 20, "vit": 0}, n_random={"sst2": 100, "movies": 10, "vit": 100},
                  movies_max_length=512, ks=tuple(range(10, 90, 10)), deletion_max=10, ig_steps=50,
                  sweep_metrics=REPLACEMENT_METRICS, marginalization=True),
}
COMMON = dict(tasks=TASKS, token="pad", tokens=TOKENS, mode="replace", fractions=MASK_LRP_FRACTIONS,
              bins=ERASER_BINS, image_fractions=cv.COMMON["fractions"], auc_rep_stop=0.2, min_tokens=8,
              max_candidates=None, randomise_layers=2, fill="mean", batch_size=8, ig_internal_batch=32,
              perturb_batch=64, seed=0, threads=None, train_missing=True, progress=True, use_cache=True)
# Settings that cannot change a computed value (sizes of the other stages are covered by the keys' digests).
_NOT_PROTOCOL = ("progress", "threads", "train_missing", "use_cache", "methods", "tasks", "n", "n_sweep", "n_random")


def _check(cfg: dict) -> None:
    """Tasks, tokens, swept metrics and subset sizes (a dict names some tasks; an int names all)."""
    for key, allowed in (("tasks", TASKS), ("tokens", TOKENS), ("sweep_metrics", REPLACEMENT_METRICS)):
        cfg[key] = tuple(cfg[key])
        bad = [t for t in cfg[key] if t not in allowed]
        if bad or (key == "tasks" and not cfg[key]):
            raise ExperimentError(f"unknown or no {key} {bad}; choose from {', '.join(allowed)}")
    if not cfg["methods"]:
        raise ExperimentError(f"no methods; registered: {', '.join(lab.EXPLAINERS)}")
    for key in ("n", "n_sweep", "n_random"):
        given = cfg[key] if isinstance(cfg[key], Mapping) else dict.fromkeys(TASKS, cfg[key])
        sizes = {**PROFILES[cfg["profile"]][key], **{t: v for t, v in given.items() if v is not None}}
        for t, v in sizes.items():
            if int(v) < (key == "n"):
                raise ExperimentError(f"{key}[{t!r}] must be >= {int(key == 'n')}, got {v}")
        cfg[key] = {t: int(v) for t, v in sizes.items()}


settings = ExperimentSettings(PROFILES, COMMON, methods=("methods",), choices={"token": TOKENS, "mode": MODES},
                              positive=("randomise_layers",), check=_check)


# ---- tasks: model + examples (`lab.explainers.batch.Examples`) --------------------------------------------
Task = Examples
text_task = text_examples


def image_task(name: str, model, test, cfg: Mapping, info: dict | None = None) -> Task:
    """A vision task from a ViT classifier and a `lab.data.images.ImageDataset`; removed pixels get `fill`."""
    ctx = cv.Context(model, test, test, {"fill": cfg["fill"], "batch_size": cfg["batch_size"]}, {})
    return image_examples(name, model, test, cv.fill_value(ctx), info)


def _model_cached(task: str, cfg: Mapping) -> bool:
    from lab.models import training, vit

    return cache.is_complete(vit.cache_path(vit.vit_settings(cfg["model_profile"]), cfg["seed"]) if task == "vit"
                             else training.checkpoint_path(task, profile=cfg["model_profile"], seed=cfg["seed"]))


def cached_mlm(cfg: Mapping):
    """The masked LM of input marginalisation when it is wanted and already cached (never trained here), else None."""
    from lab.models import mlm as mlm_models

    profile = "smoke" if cfg["model_profile"] == "smoke" else "default"
    if (MARGINALIZATION not in cfg["methods"] or not cfg.get("marginalization")
            or not cache.is_complete(mlm_models.mlm_path(profile, seed=cfg["seed"]))):
        return None
    return mlm_models.mlm_preset(profile, seed=cfg["seed"], progress=False).model


def sst2_task(cfg: Mapping) -> Task:
    """The SST-2 classifier (cached) on `n` dev sentences of at least `min_tokens` tokens (notebook 03's evaluation
    set, seeded), with Mask-LRP's head mask from notebook 03's cached head statistics."""
    from lab.experiments import mask_lrp as ml
    from lab.models.training import fine_tune_preset

    ft = fine_tune_preset("sst2", cfg["model_profile"], seed=cfg["seed"], progress=cfg["progress"])
    ev = ml.evaluation_set(ft, "sst2", {"n_eval": {"sst2": cfg["n"]["sst2"]}, "seed": cfg["seed"],
                                        "min_gold_prob": {}, "min_tokens": cfg["min_tokens"]})
    head_mask, info = None, {"checkpoint": str(ft.path), "eval_accuracy": ft.accuracy,
                             "split": ft.metrics.get("eval_split")}
    if "mask_lrp" in cfg["methods"]:
        mcfg = ml.settings(cfg["model_profile"] if cfg["model_profile"] in ml.PROFILES else "default",
                           progress=cfg["progress"])
        head_mask = ml.masks_from(ml.model_statistics(ft, "sst2", mcfg), mcfg)["mask_lrp"]
        info["mask_lrp_heads_kept"] = int(head_mask.sum())
    return text_task("sst2", ft.model, ev.inputs, ev.labels, ft.tokenizer, label_names=ft.label_names, info=info,
                     head_mask=head_mask)


def movies_task(cfg: Mapping) -> Task:
    """The ERASER Movies classifier (`chefer_bert.setup`) on `n` test reviews cut to `movies_max_length` word
    pieces, with their rationale masks."""
    ctx = cb.setup(cb.settings("smoke" if cfg["model_profile"] == "smoke" else "default", n_test=cfg["n"]["movies"],
                               max_length=cfg["movies_max_length"], seed=cfg["seed"], progress=cfg["progress"],
                               model_profile=cfg["model_profile"]))
    info = {k: ctx.model_info.get(k) for k in ("checkpoint", "eval_accuracy", "truncated_reviews",
                                                 "reviews_without_visible_rationale")}
    return text_task("movies", ctx.model, ctx.inputs, ctx.labels, ctx.tokenizer, rationale=ctx.rationale,
                     label_names=ctx.label_names, info={**info, "max_length": cfg["movies_max_length"]})


def vit_task(cfg: Mapping) -> Task:
    """The ViT of notebook 01 (`chefer_vit.setup`, cached) on `n` test images with their object masks."""
    ctx = cv.setup(cv.settings(cfg["model_profile"] if cfg["model_profile"] in cv.PROFILES else "default",
                               n_examples=cfg["n"]["vit"], n_pairs=1, seed=cfg["seed"], fill=cfg["fill"],
                               progress=cfg["progress"]))
    return image_task("vit", ctx.model, ctx.test, cfg, info={k: ctx.model_info.get(k) for k in
                                                             ("checkpoint", "test_accuracy", "grid", "num_layers")})


TASK_BUILDERS = {"sst2": sst2_task, "movies": movies_task, "vit": vit_task}


def load_tasks(cfg: Mapping) -> tuple[dict[str, Task], dict[str, str]]:
    """({task: Task}, {skipped task: reason}). With `train_missing=False` a task whose model is not cached is
    skipped instead of trained; a missing dataset skips its task."""
    from lab.data.base import DatasetMissingError

    tasks, skipped = {}, {}
    for name in cfg["tasks"]:
        start = time.perf_counter()
        try:
            if not cfg["train_missing"] and not _model_cached(name, cfg):
                skipped[name] = f"no cached {cfg['model_profile']} model (train_missing=False)"
                continue
            with config.torch_threads(cfg.get("threads"), "load"):
                tasks[name] = TASK_BUILDERS[name](cfg)
        except DatasetMissingError as err:
            skipped[name] = str(err).split(". ")[0]
            continue
        tasks[name].mlm = cached_mlm(cfg) if tasks[name].modality == "text" else None
        tasks[name].info["setup_s"] = round(time.perf_counter() - start, 1)
    return tasks, skipped


# ---- explanations and their cost ---------------------------------------------------------------------------


class MethodSkipped(Exception):
    """A method that cannot run on a task (the message is the reason)."""


@dataclass
class TaskRun:
    """Explanations of every method on one task, the reference forward+backward time and the cost rows."""

    scores: dict[str, torch.Tensor] = field(default_factory=dict)  # text [N, S]; vision native maps [N, h, w]
    cost: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    fb_seconds: float = float("nan")  # one forward+backward over all examples
    timings: dict[str, float] = field(default_factory=dict)  # seconds of each stage (explain, metrics, ...)
    per_example: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # {method: {metric: [n]}}

    @property
    def methods(self) -> list[str]:
        return list(self.scores)


def _stage(run: TaskRun, stage: str, cfg: Mapping, items: Sequence, desc: str):
    """The items with a progress bar, under the thread policy; the stage's seconds go to run.timings."""
    started = time.perf_counter()
    with config.torch_threads(cfg.get("threads"), "load"):
        yield from progress_bar(items, desc, cfg["progress"], total=len(items))
    run.timings[stage] = round(time.perf_counter() - started, 1)


def _memo(cfg: Mapping, prefix: str, compute, **key):
    """compute(), memoised in LAB_CACHE_DIR under `key`, the protocol settings and the code (`use_cache`)."""
    protocol = {k: v for k, v in cfg.items() if k not in _NOT_PROTOCOL}
    return cache.memoize("benchmark", prefix, compute, enabled=bool(cfg.get("use_cache")), protocol=protocol, **key)


def method_params(task: Task, method: str, cfg: Mapping) -> dict:
    """Explainer parameters under the protocol (registry defaults otherwise); MethodSkipped when it cannot run."""
    if task.modality not in lab.EXPLAINERS[method].modalities:
        raise MethodSkipped(f"no {task.modality} support")
    if method == MARGINALIZATION and not cfg.get("marginalization"):
        raise MethodSkipped("off in this profile (marginalization=False): it runs the classifier on ~|candidates| "
                            "copies per token (minutes per sentence here); see notebook 06")
    if method == MARGINALIZATION and task.mlm is None:
        raise MethodSkipped("no cached masked LM (lab.models.mlm.mlm_preset; notebook 06 trains it)")
    if method == "mask_lrp" and task.head_mask is None:
        raise MethodSkipped("no head statistics for this model (Mask-LRP's syntactic/positional heads come from "
                            "dependency parses: notebook 03 computes them for SST-2)")
    return {MARGINALIZATION: {"mlm": task.mlm, "max_candidates": cfg["max_candidates"]},
            "mask_lrp": {"head_mask": task.head_mask},
            "integrated_gradients": {"steps": int(cfg["ig_steps"]),
                                     "internal_batch_size": int(cfg["ig_internal_batch"])},
            "erasure": {"token": cfg["token"]} if task.modality == "text" else {}}.get(method, {})


def explain_all(task: Task, method: str, cfg: Mapping, model=None, n: int | None = None) -> torch.Tensor:
    """Scores of `method` for the first n examples (default all), explaining task.targets: text [n, S], vision
    native maps [n, h, w]. Batches in the task's order (`sort=False`: the recorded runs' batches)."""
    n = len(task) if n is None else min(int(n), len(task))
    batch = 1 if method == "integrated_gradients" and task.modality == "text" else cfg["batch_size"]
    return explain_many(task.model if model is None else model, {k: v[:n] for k, v in task.inputs.items()}, method,
                        task.targets[:n], batch_size=batch, sort=False, **method_params(task, method, cfg)).scores


def reference_seconds(task: Task, cfg: Mapping) -> float:
    """Seconds of one forward+backward pass (`lab.bench.forward_backward`) over every example, in the explainers'
    batches (median of 3 after a warm-up)."""
    def once():
        t0 = time.perf_counter()
        for idx in torch.arange(len(task)).split(cfg["batch_size"]):
            bench.forward_backward(task.model, task.rows(idx), task.targets[idx])
        return time.perf_counter() - t0

    return float(np.median([once() for _ in range(4)][1:]))


def _timed_explain(task: Task, method: str, cfg: Mapping, fb_seconds: float) -> dict:
    """Scores of `method`, the seconds and peak MB they took, and the forward+backward reference of the same run."""
    with bench.PeakMemory() as mem:
        t0 = time.perf_counter()
        scores = explain_all(task, method, cfg)
    return {"scores": scores, "seconds": time.perf_counter() - t0, "peak_mb": mem.peak_mb, "fb_seconds": fb_seconds}


def explain_task(task: Task, cfg: Mapping) -> TaskRun:
    """Every method's explanations of the task, with cost: s/example, ratio to forward+backward, peak MB.
    With `use_cache` each method's scores and cost are memoised (model, examples, parameters, code)."""
    run = TaskRun()
    with config.torch_threads(cfg.get("threads"), "load"):
        run.fb_seconds = reference_seconds(task, cfg)
    for method in _stage(run, "explain_s", cfg, cfg["methods"], f"explain {task.name}"):
        try:
            params = method_params(task, method, cfg)
        except MethodSkipped as skip:
            run.skipped[method] = str(skip)
            continue
        got = _memo(cfg, f"explain-{task.name}-{method}", functools.partial(_timed_explain, task, method, cfg,
                                                                          run.fb_seconds),
                    task=task.fingerprint, method=method, params=cache.digest(params))
        run.scores[method] = got["scores"]
        run.cost[method] = {"s_per_example": got["seconds"] / len(task), "ratio_fb": got["seconds"] / got["fb_seconds"],
                            "peak_mb": got["peak_mb"]}
    return run


# ---- quality -------------------------------------------------------------------------------------------------


def token_id(task: Task, token: str) -> int:
    """Id of [PAD]/[MASK]/[UNK] for the task's model (tokenizer, else the config / known vocabulary)."""
    from lab.explainers.perturbation import replacement_id

    if token not in TOKENS:
        raise ExperimentError(f"token must be one of {', '.join(TOKENS)}, got {token!r}")
    tid = getattr(task.tokenizer, f"{token}_token_id", None)
    return int(tid) if tid is not None else replacement_id(get_adapter(task.model), token)


def method_metrics(task: Task, run: TaskRun, method: str, cfg: Mapping, token: str | None = None,
                   n: int | None = None, metrics: Sequence[str] | None = None):
    """One method's metrics (`lab.metrics.protocols.examples_protocols`): ({metric: mean}, {metric: [n] values});
    token: the replacement token (default the protocol's); τ with leave-one-out is not defined for itself."""
    ids = (token_id(task, cfg["token"] if token is None else token), token_id(task, "pad")) if task.modality == "text" \
        else (None, None)
    reference = run.scores.get("leave_one_out") if method != "leave_one_out" else None
    return protocols.examples_protocols(task, run.scores[method], cfg, *ids, n, metrics, reference)


def quality_table(task: Task, run: TaskRun, cfg: Mapping) -> dict[str, dict[str, float]]:
    """{method: {metric: value}} for every explained method under the protocol (the task's `n` examples); the
    per-example values go to run.per_example."""
    out = {}
    for method in _stage(run, "metrics_s", cfg, run.methods, f"metrics {task.name}"):
        reference = run.scores.get("leave_one_out") if method != "leave_one_out" else None
        out[method], run.per_example[method] = _memo(
            cfg, f"metrics-{task.name}-{method}", functools.partial(method_metrics, task, run, method, cfg),
            task=task.fingerprint, method=method, scores=cache.digest(run.scores[method]),
            reference=None if reference is None else cache.digest(reference))
    return out


def token_sweep(task: Task, run: TaskRun, cfg: Mapping, quality: Mapping | None = None) -> dict:
    """The replacement metrics (`sweep_metrics`) recomputed with each token in `tokens` on the first `n_sweep`
    examples (explanations fixed): values {token: {method: {metric: v}}}, per_example, tau {metric: {"pad~mask":
    τ between the method rankings}}, best {metric: {token: method}}, n, token_ids."""
    n = min(cfg["n_sweep"].get(task.name, 0), len(task))
    if task.modality != "text" or n < 1 or len(cfg["tokens"]) < 2:
        return {}
    metrics = list(cfg["sweep_metrics"])
    values, per = {t: {} for t in cfg["tokens"]}, {t: {} for t in cfg["tokens"]}
    steps = [(t, m) for t in cfg["tokens"] for m in run.methods]
    for token, method in _stage(run, "sweep_s", cfg, steps, f"token sweep {task.name}"):
        if quality is not None and token == cfg["token"] and n == len(task) and method in run.per_example:
            values[token][method] = {k: quality[method][k] for k in metrics}
            per[token][method] = {k: run.per_example[method][k] for k in metrics}
            continue
        values[token][method], per[token][method] = _memo(
            cfg, f"sweep-{task.name}-{method}-{token}",
            functools.partial(method_metrics, task, run, method, cfg, token, n, metrics),
            task=task.fingerprint, scores=cache.digest(run.scores[method]), token=token, n=n, metrics=metrics)
    tau, best = ranking_stability(values, metrics)
    return {"values": values, "tau": tau, "best": best, "n": n, "per_example": per,
            "token_ids": {t: token_id(task, t) for t in cfg["tokens"]}}


# ---- model randomisation --------------------------------------------------------------------------------


def randomisation_check(task: Task, run: TaskRun, cfg: Mapping) -> dict:
    """Explain the first `n_random` examples with a copy of the model whose top layers are re-initialised and
    compare with the trained model's explanations (same targets): rows {method: {"spearman": mean ρ, "changed":
    1 - ρ}}, rho {method: [n]}, n, layers, the share of predictions the copy changes, and whether the original
    weights are untouched."""
    n = min(cfg["n_random"].get(task.name, 0), len(task))
    if n < 1:
        return {}
    before = [p.detach().clone() for p in task.model.parameters()]
    clone = randomised_copy(task.model, cfg["randomise_layers"], cfg["seed"])
    logits = predict_logits(clone, {k: v[:n] for k, v in task.inputs.items()}, 64)
    rows, rhos, clone_digest = {}, {}, cache.digest(clone) if cfg.get("use_cache") else None
    for method in _stage(run, "randomisation_s", cfg, run.methods, f"randomised {task.name}"):
        other = _memo(cfg, f"randomised-{task.name}-{method}",
                      functools.partial(explain_all, task, method, cfg, model=clone, n=n), task=task.fingerprint,
                      clone=clone_digest, method=method, n=n, params=cache.digest(method_params(task, method, cfg)))
        rhos[method] = protocols.map_agreement(task, run.scores[method], other, n)
        value = float(np.nanmean(rhos[method])) if np.isfinite(rhos[method]).any() else float("nan")
        rows[method] = {"spearman": value, "changed": 1.0 - value}
    return {"rows": rows, "rho": rhos, "n": n, "layers": int(cfg["randomise_layers"]),
            "original_untouched": all(torch.equal(p, q) for p, q in zip(before, task.model.parameters())),
            "prediction_changed": float((logits.argmax(-1) != task.targets[:n]).double().mean())}
