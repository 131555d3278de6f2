"""One protocol for all: every registered explainer × every applicable metric, with its cost (notebook 07).

None of the five papers compares all methods under one protocol: each picks its own replacement token, step grid,
target class and model. This module runs every explainer on the same fine-tuned models and scores each with every
metric that applies, under one documented protocol; the notebook `07_benchmark` and `python -m lab benchmark`
call it in order:

    cfg = settings("default")                        # profile -> tasks, subset sizes, protocol
    tasks = load_tasks(cfg)                          # SST-2 and ERASER Movies classifiers, the ViT (cached)
    runs = {t: explain_task(tasks[t], cfg) for t in tasks}        # scores/maps + cost columns per method
    quality = {t: quality_table(tasks[t], runs[t], cfg) for t in tasks}   # method × metric
    sweep = {t: token_sweep(tasks[t], runs[t], cfg) for t in text tasks}  # [PAD] vs [MASK] vs [UNK]
    rand = {t: randomisation_check(tasks[t], runs[t], cfg) for t in tasks}  # re-initialised top layers
    res = benchmark_results.build_results(cfg, tasks, runs, quality, sweep, rand)  # results/07_benchmark.json

The protocol (our choices, stated once):
- Every method explains the model's **predicted** class of each example; perturbation metrics follow p(ŷ) (the
  Wu & Ong deletion curve measures accuracy against the gold label, on the initially correct examples, as the paper).
- Units are word pieces (text) — [CLS]/[SEP]/padding are never perturbed — and patches/pixels (images).
- **Replacement token: [PAD]** (`token="pad"`): the top units are *replaced* by [PAD] with the attention mask
  unchanged, for every text perturbation metric (AOPC/LOdds as the Mask-LRP code, AUC_rep as Kim et al.'s text;
  ERASER and Wu & Ong delete tokens instead: `mode="delete"` reproduces that for comprehensiveness/sufficiency and
  the deletion curve). The erasure explainer uses the same token. `token="mask"` / `"unk"` are the alternatives;
  `token_sweep` recomputes the replacement metrics with each (explanations fixed) and reports how the rankings move.
- Grids: AOPC/LOdds at 1/9..9/9 of the units (Mask-LRP code), comprehensiveness/sufficiency at ERASER's 1/5/10/20/50 %,
  AUC_rep up to 20 % (normalised, Kim et al.), deletion accuracy at 0..`deletion_max` units removed (area = mean
  accuracy), token-F1 of the top-k word pieces averaged over `ks` (Chefer Fig. 5; Movies only), Kendall τ of each
  method's scores with leave-one-out per example (Jain & Wallace), images: positive/negative perturbation AUC with
  the test-set mean colour and segmentation pixel accuracy / mAP / mIoU (Chefer Tables 1-2, `chefer_vit`).
- Cost: seconds per example of the method on the benchmark's batches, the ratio to one forward+backward pass on the
  same batches (`lab.bench.forward_backward`) and the peak resident-memory growth (`lab.bench.PeakMemory`).
- Sanity checks: the `random` explainer is a row of every table; the model-randomisation check re-initialises the
  top `randomise_layers` blocks and the classification head of a *copy* of the model and reports, per method, the
  Spearman ρ between the explanations of the trained and the randomised model (≈1: the method ignores the weights).
"""
from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

import lab
from lab import bench, cache, config
from lab.experiments import ExperimentError, merge_settings
from lab.experiments import chefer_bert as cb
from lab.experiments import chefer_vit as cv
from lab.metrics import protocols
from lab.metrics.agreement import kendall_tau, spearman
from lab.metrics.perturbation import ERASER_BINS, MASK_LRP_FRACTIONS
from lab.explainers.batch import explain_many, predict_logits, trim_rows
from lab.models.adapters import get_adapter
from lab.progress import progress as progress_bar

NOTEBOOK = "07_benchmark"
TASKS = ("sst2", "movies", "vit")
TASK_LABELS = {"sst2": "SST-2 (MiniLM)", "movies": "ERASER Movies (MiniLM)", "vit": "procedural shapes (ViT)"}
TOKENS = ("pad", "mask", "unk")
TOKEN_LABELS = {"pad": "[PAD]", "mask": "[MASK]", "unk": "[UNK]"}
MODES = ("replace", "delete")

# metric -> (direction, where it comes from); "higher"/"lower" is better
METRICS: dict[str, tuple[str, str]] = {
    "aopc": ("higher", "Mask-LRP Eq. 12 (AOPC, top 1/9..9/9 replaced)"),
    "lodds": ("lower", "Mask-LRP Eq. 13 (LOdds)"),
    "comprehensiveness": ("higher", "ERASER comprehensiveness (AOPC over 1/5/10/20/50 %)"),
    "sufficiency": ("lower", "ERASER sufficiency"),
    "deletion_accuracy": ("lower", "Wu & Ong Fig. 1: mean accuracy as 0..k units are removed"),
    "auc_rep": ("lower", "Kim et al. AUC_rep (p(ŷ) as units are replaced, up to 20 %)"),
    "kendall_loo": ("higher", "Jain & Wallace: Kendall τ with leave-one-out"),
    "token_f1": ("higher", "Chefer Fig. 5 / ERASER: token-F1 of the top-k vs rationales (mean over k)"),
    "positive_auc": ("lower", "Chefer Table 1: accuracy AUC, most relevant pixels removed first"),
    "negative_auc": ("higher", "Chefer Table 1: accuracy AUC, least relevant pixels removed first"),
    "pixel_accuracy": ("higher", "Chefer Table 2: segmentation pixel accuracy"),
    "mAP": ("higher", "Chefer Table 2: segmentation mAP"),
    "mIoU": ("higher", "Chefer Table 2: segmentation mIoU"),
}
TEXT_METRICS = ("aopc", "lodds", "comprehensiveness", "sufficiency", "deletion_accuracy", "auc_rep", "kendall_loo",
                "token_f1")
IMAGE_METRICS = ("positive_auc", "negative_auc", "pixel_accuracy", "mAP", "mIoU", "kendall_loo")
REPLACEMENT_METRICS = ("aopc", "lodds", "comprehensiveness", "sufficiency", "deletion_accuracy", "auc_rep")
COST_COLUMNS = ("s_per_example", "ratio_fb", "peak_mb")
MARGINALIZATION = "input_marginalization"  # needs a masked LM (lab.models.mlm) and ~|candidates| forwards per token
SMOKE_METHODS = ("chefer", "rollout", "saliency", "leave_one_out", "erasure", "random")

PROFILES: dict[str, dict[str, Any]] = {
    # n: examples explained per task; n_sweep: examples of the token sweep (a prefix); n_random: of the
    # randomisation check (a prefix)
    "smoke": dict(model_profile="smoke", methods=SMOKE_METHODS, n={"sst2": 2, "movies": 1, "vit": 8},
                  n_sweep={"sst2": 1, "movies": 0, "vit": 0}, n_random={"sst2": 1, "movies": 1, "vit": 4},
                  movies_max_length=32, ks=(5, 10), deletion_max=2, ig_steps=4, sweep_metrics=("aopc", "lodds"),
                  marginalization=False, use_cache=False),
    # default: sized for <= ~20 min on 2 CPU cores with cached models (see the notebook for measured times)
    "default": dict(model_profile="default", methods=None, n={"sst2": 24, "movies": 3, "vit": 64},
                    n_sweep={"sst2": 12, "movies": 1, "vit": 0}, n_random={"sst2": 8, "movies": 1, "vit": 16},
                    movies_max_length=128, ks=(5, 10, 20, 40), deletion_max=10, ig_steps=16,
                    sweep_metrics=("aopc", "lodds"), marginalization=False),
    "paper": dict(model_profile="default", methods=None, n={"sst2": 400, "movies": 40, "vit": 500},
                  n_sweep={"sst2": 200, "movies": 20, "vit": 0}, n_random={"sst2": 100, "movies": 10, "vit": 100},
                  movies_max_length=512, ks=tuple(range(10, 90, 10)), deletion_max=10, ig_steps=50,
                  sweep_metrics=REPLACEMENT_METRICS, marginalization=True),
}
COMMON = dict(tasks=TASKS, token="pad", tokens=TOKENS, mode="replace", fractions=MASK_LRP_FRACTIONS,
              bins=ERASER_BINS, auc_rep_stop=0.2, min_tokens=8, max_candidates=None, randomise_layers=2, fill="mean",
              batch_size=8, ig_internal_batch=32, perturb_batch=64, seed=0, threads=None, train_missing=True, progress=True,
              use_cache=True)
# Settings that cannot change a computed value (sizes of the other stages are covered by the keys' digests).
_NOT_PROTOCOL = ("progress", "threads", "train_missing", "use_cache", "methods", "tasks", "n", "n_sweep", "n_random")


def settings(profile: str = "default", **overrides) -> dict:
    """The profile's sizes plus the shared protocol; `None` overrides keep the profile's value."""
    cfg = merge_settings(PROFILES, COMMON, profile, overrides)
    cfg["tasks"] = tuple(cfg["tasks"])
    bad = [t for t in cfg["tasks"] if t not in TASKS]
    if bad or not cfg["tasks"]:
        raise ExperimentError(f"unknown or no task(s) {bad}; choose from {', '.join(TASKS)}")
    if cfg["methods"] is None:
        cfg["methods"] = tuple(lab.EXPLAINERS)
    cfg["methods"] = tuple(cfg["methods"])
    bad = [m for m in cfg["methods"] if m not in lab.EXPLAINERS]
    if bad or not cfg["methods"]:
        raise ExperimentError(f"unknown or no method(s) {bad}; registered: {', '.join(lab.EXPLAINERS)}")
    for key in ("token",):
        if cfg[key] not in TOKENS:
            raise ExperimentError(f"token must be one of {', '.join(TOKENS)}, got {cfg[key]!r}")
    cfg["tokens"] = tuple(cfg["tokens"])
    bad = [t for t in cfg["tokens"] if t not in TOKENS]
    if bad:
        raise ExperimentError(f"unknown replacement token(s) {bad}; choose from {', '.join(TOKENS)}")
    if cfg["mode"] not in MODES:
        raise ExperimentError(f"mode must be 'replace' or 'delete', got {cfg['mode']!r}")
    bad = [m for m in cfg["sweep_metrics"] if m not in REPLACEMENT_METRICS]
    if bad:
        raise ExperimentError(f"sweep_metrics {bad} do not replace tokens; choose from {', '.join(REPLACEMENT_METRICS)}")
    for key in ("n", "n_sweep", "n_random"):  # a dict override may name some tasks only; an int names all
        given = cfg[key]
        sizes = {**PROFILES[profile][key], **({t: v for t, v in given.items() if v is not None}
                                              if isinstance(given, Mapping) else {t: given for t in TASKS})}
        for t, v in sizes.items():
            if int(v) < (1 if key == "n" else 0):
                raise ExperimentError(f"{key}[{t!r}] must be >= {1 if key == 'n' else 0}, got {v}")
        cfg[key] = {t: int(v) for t, v in sizes.items()}
    if int(cfg["randomise_layers"]) < 1:
        raise ExperimentError(f"randomise_layers must be >= 1, got {cfg['randomise_layers']}")
    return cfg


def threads(cfg: Mapping) -> int | None:
    """Intra-op threads of the heavy loops (`lab.config.threads`: `threads`, else $LAB_NUM_THREADS, else 1 on a
    loaded machine)."""
    return config.threads(cfg.get("threads"), "load")


# ---- tasks: model + examples ------------------------------------------------------------------------------


@dataclass
class Task:
    """One model and the examples it is benchmarked on (text: padded token ids; vision: normalised images)."""

    name: str
    modality: str  # "text" | "vision"
    model: torch.nn.Module
    inputs: dict  # text: input_ids / attention_mask [/ token_type_ids] [N, S]; vision: pixel_values [N, C, H, W]
    labels: torch.Tensor  # gold [N]
    targets: torch.Tensor  # predicted classes [N] (the class every method explains)
    label_names: tuple[str, ...] = ()
    tokenizer: Any = None
    special: torch.Tensor | None = None  # text [N, S]
    valid: torch.Tensor | None = None  # text [N, S]
    rationale: torch.Tensor | None = None  # text [N, S] (ERASER only)
    vit: cv.Context | None = None  # vision: the chefer_vit context (masks, fill value)
    head_mask: torch.Tensor | None = None  # Mask-LRP's M for this model, when its head statistics exist
    mlm: Any = None  # the masked LM of input marginalisation, when a cached one exists
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def metrics(self) -> tuple[str, ...]:
        if self.modality == "vision":
            return IMAGE_METRICS
        return tuple(m for m in TEXT_METRICS if m != "token_f1" or self.rationale is not None)

    def rows(self, idx) -> dict:
        """Model inputs of examples `idx` (text: cut to their longest sequence)."""
        if self.modality == "vision":
            return {"pixel_values": self.inputs["pixel_values"][torch.as_tensor(idx, dtype=torch.long)]}
        return trim_rows(self.inputs, idx)

    @property
    def content(self) -> torch.Tensor:
        return self.valid & ~self.special

    @functools.cached_property
    def fingerprint(self) -> str:
        """Digest of the model weights, examples, targets and masks: the key of this task's memoised values."""
        masks = None if self.vit is None else self.vit.test.masks
        return cache.digest([self.name, self.modality, self.model, self.inputs, self.labels, self.targets,
                             self.rationale, self.head_mask, masks])


def text_task(name: str, model, inputs: Mapping, labels, tokenizer=None, rationale=None, label_names=(),
              info: dict | None = None, head_mask=None) -> Task:
    """A text task from a classifier and a padded batch (any BERT-family model; tests use tiny random ones)."""
    model.eval()
    inputs = {k: torch.as_tensor(v) for k, v in inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    adapter = get_adapter(model)
    prepared = adapter.prepare(inputs)
    valid, special = adapter.valid_mask(prepared).cpu(), adapter.special_mask(prepared).cpu()
    logits = predict_logits(model, inputs, 64)
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    info = dict(info or {})
    info.setdefault("accuracy_on_examples", float((logits.argmax(-1) == labels).double().mean()))
    return Task(name, "text", model, inputs, labels, logits.argmax(-1), tuple(label_names), tokenizer, special, valid,
                None if rationale is None else torch.as_tensor(rationale).bool(), head_mask=head_mask, info=info)


def image_task(name: str, model, test, cfg: Mapping, info: dict | None = None) -> Task:
    """A vision task from a ViT classifier and a `lab.data.images.ImageDataset` (masks for segmentation)."""
    model.eval()
    info = dict(info or {})
    ctx = cv.Context(model, test, test, {"fill": cfg["fill"], "batch_size": cfg["batch_size"]}, info)
    logits = predict_logits(model, {"pixel_values": test.images}, 64)
    info.setdefault("accuracy_on_examples", float((logits.argmax(-1) == test.labels).double().mean()))
    return Task(name, "vision", model, {"pixel_values": test.images}, test.labels, logits.argmax(-1),
                tuple(test.class_names), vit=ctx, info=info)


def _model_cached(task: str, cfg: Mapping) -> bool:
    from lab import cache
    from lab.models import vit as vit_models
    from lab.models.training import checkpoint_path

    if task == "vit":
        path = vit_models.cache_path(vit_models.vit_settings(cfg["model_profile"]), cfg["seed"])
    else:
        path = checkpoint_path(task, profile=cfg["model_profile"], seed=cfg["seed"])
    return cache.is_complete(path)


def cached_mlm(cfg: Mapping):
    """The masked LM of input marginalisation when it is wanted and already cached (never trained here), else None."""
    if MARGINALIZATION not in cfg["methods"] or not cfg.get("marginalization"):
        return None
    try:
        from lab import cache
        from lab.models import mlm as mlm_models
    except ImportError:
        return None
    profile = "smoke" if cfg["model_profile"] == "smoke" else "default"
    if not cache.is_complete(mlm_models.mlm_path(profile, seed=cfg["seed"])):
        return None
    return mlm_models.mlm_preset(profile, seed=cfg["seed"], progress=False).model


def sst2_task(cfg: Mapping) -> Task:
    """The SST-2 classifier (`fine_tune_preset("sst2", model_profile)`, cached) on `n` dev sentences with at least
    `min_tokens` tokens (notebook 03's evaluation set, seeded), and Mask-LRP's head mask from notebook 03's
    cached head statistics."""
    from lab.experiments import mask_lrp as ml
    from lab.models.training import fine_tune_preset

    ft = fine_tune_preset("sst2", cfg["model_profile"], seed=cfg["seed"], progress=cfg["progress"])
    ecfg = {"n_eval": {"sst2": cfg["n"]["sst2"]}, "seed": cfg["seed"], "min_gold_prob": {},
            "min_tokens": cfg["min_tokens"]}
    ev = ml.evaluation_set(ft, "sst2", ecfg)
    head_mask, info = None, {"checkpoint": str(ft.path), "eval_accuracy": ft.accuracy,
                             "split": ft.metrics.get("eval_split")}
    if "mask_lrp" in cfg["methods"]:
        mcfg = ml.settings(cfg["model_profile"] if cfg["model_profile"] in ml.PROFILES else "default",
                           progress=cfg["progress"])
        head_mask = ml.masks_from(ml.model_statistics(ft, "sst2", mcfg), mcfg)["mask_lrp"]
        info["mask_lrp_heads_kept"] = int(head_mask.sum())
    task = text_task("sst2", ft.model, ev.inputs, ev.labels, ft.tokenizer, label_names=ft.label_names, info=info,
                     head_mask=head_mask)
    task.mlm = cached_mlm(cfg)
    return task


def movies_task(cfg: Mapping) -> Task:
    """The ERASER Movies classifier (`chefer_bert.setup`: `fine_tune_preset("movies", model_profile)`) on `n` test
    reviews truncated to `movies_max_length` word pieces, with their rationale masks."""
    ccfg = cb.settings("smoke" if cfg["model_profile"] == "smoke" else "default", n_test=cfg["n"]["movies"],
                       max_length=cfg["movies_max_length"], seed=cfg["seed"], progress=cfg["progress"],
                       model_profile=cfg["model_profile"])
    ctx = cb.setup(ccfg)
    info = {k: ctx.model_info.get(k) for k in ("checkpoint", "eval_accuracy", "truncated_reviews",
                                                 "reviews_without_visible_rationale")}
    info["max_length"] = cfg["movies_max_length"]
    task = text_task("movies", ctx.model, ctx.inputs, ctx.labels, ctx.tokenizer, rationale=ctx.rationale,
                     label_names=ctx.label_names, info=info)
    task.mlm = cached_mlm(cfg)
    return task


def vit_task(cfg: Mapping) -> Task:
    """The ViT of notebook 01 (`chefer_vit.setup`, trained and cached by `lab.models.vit.train_vit`) on `n` test
    images with their object masks."""
    vcfg = cv.settings(cfg["model_profile"] if cfg["model_profile"] in cv.PROFILES else "default",
                       n_examples=cfg["n"]["vit"], n_pairs=1, seed=cfg["seed"], fill=cfg["fill"],
                       progress=cfg["progress"])
    ctx = cv.setup(vcfg)
    task = image_task("vit", ctx.model, ctx.test, cfg, info={k: ctx.model_info.get(k) for k in
                                                             ("checkpoint", "test_accuracy", "grid", "num_layers")})
    return task


TASK_BUILDERS = {"sst2": sst2_task, "movies": movies_task, "vit": vit_task}


def load_tasks(cfg: Mapping) -> tuple[dict[str, Task], dict[str, str]]:
    """({task: Task}, {skipped task: reason}). With `train_missing=False` a task whose model is not cached is
    skipped instead of trained."""
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
        except DatasetMissingError as err:  # e.g. no ERASER data: benchmark the other models
            skipped[name] = str(err).split(". ")[0]
            continue
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


def method_params(task: Task, method: str, cfg: Mapping) -> dict:
    """Explainer parameters under the protocol (registry defaults otherwise); MethodSkipped when it cannot run."""
    spec = lab.EXPLAINERS[method]
    if task.modality not in spec.modalities:
        raise MethodSkipped(f"no {task.modality} support")
    if method == MARGINALIZATION:
        if not cfg.get("marginalization"):
            raise MethodSkipped("off in this profile (marginalization=False): it runs the classifier on ~|candidates| "
                                "copies per token (minutes per sentence here); see notebook 06")
        if task.mlm is None:
            raise MethodSkipped("no cached masked LM (lab.models.mlm.mlm_preset; notebook 06 trains it)")
        return {"mlm": task.mlm, "max_candidates": cfg["max_candidates"]}
    if method == "mask_lrp":
        if task.head_mask is None:
            raise MethodSkipped("no head statistics for this model (Mask-LRP's syntactic/positional heads come from "
                                "dependency parses: notebook 03 computes them for SST-2)")
        return {"head_mask": task.head_mask}
    if method == "integrated_gradients":
        return {"steps": int(cfg["ig_steps"]), "internal_batch_size": int(cfg["ig_internal_batch"])}
    if method == "erasure" and task.modality == "text":
        return {"token": cfg["token"]}
    return {}


def explain_all(task: Task, method: str, cfg: Mapping, model=None, n: int | None = None,
                progress: bool = False) -> torch.Tensor:
    """Scores of `method` for the first n examples of the task (default all), explaining task.targets: text
    [n, S], vision native maps [n, h, w]. Batches in the task's order (`sort=False`: the recorded runs' batches)."""
    model = task.model if model is None else model
    n = len(task) if n is None else min(int(n), len(task))
    batch = 1 if method == "integrated_gradients" and task.modality == "text" else cfg["batch_size"]
    inputs = {k: v[:n] for k, v in task.inputs.items()}
    return explain_many(model, inputs, method, task.targets[:n], batch_size=batch, sort=False, progress=progress,
                        desc=method, **method_params(task, method, cfg)).scores


def reference_seconds(task: Task, cfg: Mapping) -> float:
    """Seconds of one forward+backward pass (`lab.bench.forward_backward`) over every example, in the same
    batches as the explainers (median of 3 after a warm-up)."""
    starts = range(0, len(task), cfg["batch_size"])

    def once():
        for s in starts:
            idx = torch.arange(s, min(s + cfg["batch_size"], len(task)))
            bench.forward_backward(task.model, task.rows(idx), task.targets[idx])

    once()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _memo(cfg: Mapping, prefix: str, compute, **key):
    """compute(), memoised in LAB_CACHE_DIR under `key`, the protocol settings and the code (`use_cache`)."""
    protocol = {k: v for k, v in cfg.items() if k not in _NOT_PROTOCOL}
    return cache.memoize("benchmark", prefix, compute, enabled=bool(cfg.get("use_cache")), protocol=protocol, **key)


def _timed_explain(task: Task, method: str, cfg: Mapping, fb_seconds: float) -> dict:
    """Scores of `method` on the task, the seconds and peak MB they took, and the forward+backward reference
    measured in the same run (a memoised cost keeps the ratio of the run that measured it)."""
    with bench.PeakMemory() as mem:
        t0 = time.perf_counter()
        scores = explain_all(task, method, cfg)
        seconds = time.perf_counter() - t0
    return {"scores": scores, "seconds": seconds, "peak_mb": mem.peak_mb, "fb_seconds": fb_seconds}


def explain_task(task: Task, cfg: Mapping) -> TaskRun:
    """Every method's explanations of the task, with cost: s/example, ratio to forward+backward, peak MB.
    With `use_cache` each method's scores and cost are memoised (model, examples, parameters, code)."""
    run = TaskRun()
    started = time.perf_counter()
    with config.torch_threads(cfg.get("threads"), "load"):
        run.fb_seconds = reference_seconds(task, cfg)
        bar = progress_bar(cfg["methods"], f"explain {task.name}", cfg["progress"], total=len(cfg["methods"]))
        for method in bar:
            try:
                params = method_params(task, method, cfg)
            except MethodSkipped as skip:
                run.skipped[method] = str(skip)
                continue
            got = _memo(cfg, f"explain-{task.name}-{method}", functools.partial(_timed_explain, task, method, cfg,
                                                                              run.fb_seconds),
                        task=task.fingerprint, method=method, params=cache.digest(params))
            run.scores[method] = got["scores"]
            run.cost[method] = {"s_per_example": got["seconds"] / len(task),
                                "ratio_fb": got["seconds"] / got["fb_seconds"], "peak_mb": got["peak_mb"]}
    run.timings["explain_s"] = round(time.perf_counter() - started, 1)
    return run


# ---- quality -------------------------------------------------------------------------------------------------


def token_id(task: Task, token: str) -> int:
    """Id of [PAD]/[MASK]/[UNK] for the task's model (tokenizer, else the config / known vocabulary)."""
    from lab.explainers.perturbation import replacement_id

    if token not in TOKENS:
        raise ExperimentError(f"token must be one of {', '.join(TOKENS)}, got {token!r}")
    tid = getattr(task.tokenizer, f"{token}_token_id", None) if task.tokenizer is not None else None
    return int(tid) if tid is not None else replacement_id(get_adapter(task.model), token)


def text_units(task: Task, scores: torch.Tensor, token: str, n: int | None = None,
               reference: torch.Tensor | None = None, batch_size: int = 64) -> protocols.TextUnits:
    """The first n examples of a text task with one method's scores, as the metric protocols read them."""
    n = min(len(task) if n is None else int(n), scores.shape[0])
    idx = torch.arange(n)
    rows = task.rows(idx)
    w = rows["input_ids"].shape[1]
    return protocols.TextUnits(
        task.model, rows, scores[:n, :w].double(), task.special[:n, :w], task.content[idx][:, :w],
        task.valid[idx][:, :w], task.labels[idx], token_id(task, token), token_id(task, "pad"), batch_size,
        None if task.rationale is None else task.rationale[idx][:, :w],
        None if reference is None else reference[idx][:, :w])


def text_metrics(task: Task, scores: torch.Tensor, cfg: Mapping, token: str | None = None, n: int | None = None,
                 metrics: Sequence[str] | None = None, reference: torch.Tensor | None = None,
                 model=None, per_example: bool = False):
    """The text metrics (`lab.metrics.protocols`) of one method's scores [N, S] on the first n examples (default
    all). token: the replacement token (default the protocol's); metrics: which columns (default all that apply);
    reference: leave-one-out scores for `kendall_loo`. With `per_example`, returns (means, {metric: [n] values})
    whose nan-means are the means."""
    units = text_units(task, scores, cfg["token"] if token is None else token, n, reference, cfg["perturb_batch"])
    if model is not None:
        units.model = model
    metrics = [m for m in (metrics or task.metrics) if m in task.metrics]
    means, per = protocols.text_protocols(units, metrics, cfg)
    return (means, per) if per_example else means


def image_metrics(task: Task, maps: torch.Tensor, cfg: Mapping, n: int | None = None,
                  metrics: Sequence[str] | None = None, reference: torch.Tensor | None = None,
                  per_example: bool = False):
    """Chefer Tables 1-2 and τ with leave-one-out (`lab.metrics.protocols.image_protocols`) on the first n images;
    with `per_example`, also {metric: [n] per-image values}."""
    n = min(len(task) if n is None else int(n), maps.shape[0])
    test = task.vit.test[:n]
    fractions = cv.COMMON["fractions"]
    units = protocols.ImageUnits(task.model, test.images, test.labels, test.masks, maps[:n],
                                 get_adapter(task.model).grid, cv.fill_value(task.vit), fractions,
                                 cfg["batch_size"] * len(fractions), None if reference is None else reference[:n])
    means, per = protocols.image_protocols(units, metrics or IMAGE_METRICS)
    return (means, per) if per_example else means


def method_metrics(task: Task, run: TaskRun, method: str, cfg: Mapping, token: str | None = None,
                   n: int | None = None, metrics: Sequence[str] | None = None, per_example: bool = False):
    """All applicable metrics of one method (τ with leave-one-out is not defined for leave-one-out itself); with
    `per_example`, (means, per-example values) as `text_metrics` / `image_metrics` return them."""
    reference = run.scores.get("leave_one_out") if method != "leave_one_out" else None
    if task.modality == "vision":
        return image_metrics(task, run.scores[method], cfg, n, metrics, reference, per_example)
    return text_metrics(task, run.scores[method], cfg, token, n, metrics, reference, per_example=per_example)


def quality_table(task: Task, run: TaskRun, cfg: Mapping) -> dict[str, dict[str, float]]:
    """{method: {metric: value}} for every explained method under the protocol (the task's `n` examples)."""
    out = {}
    started = time.perf_counter()
    with config.torch_threads(cfg.get("threads"), "load"):
        for method in progress_bar(run.methods, f"metrics {task.name}", cfg["progress"], total=len(run.methods)):
            reference = run.scores.get("leave_one_out") if method != "leave_one_out" else None
            out[method], run.per_example[method] = _memo(
                cfg, f"metrics-{task.name}-{method}",
                functools.partial(method_metrics, task, run, method, cfg, per_example=True), task=task.fingerprint,
                method=method, scores=cache.digest(run.scores[method]),
                reference=None if reference is None else cache.digest(reference))
    run.timings["metrics_s"] = round(time.perf_counter() - started, 1)
    return out


def directions(metrics: Sequence[str]) -> dict[str, str]:
    return {m: METRICS[m][0] for m in metrics}


# ---- replacement-token sweep ------------------------------------------------------------------------------


def token_sweep(task: Task, run: TaskRun, cfg: Mapping, quality: Mapping | None = None) -> dict:
    """The replacement metrics (`sweep_metrics`) recomputed with each token in `tokens` on the first `n_sweep`
    examples (explanations fixed), and how the method rankings move.

    Returns values {token: {method: {metric: v}}}, tau {metric: {"pad~mask": τ, ...}} (Kendall τ between the
    rankings of the methods under two tokens), best {metric: {token: best method}}, n.
    """
    n = min(cfg["n_sweep"].get(task.name, 0), len(task))
    if task.modality != "text" or n < 1 or len(cfg["tokens"]) < 2:
        return {}
    metrics = list(cfg["sweep_metrics"])
    values: dict[str, dict] = {}
    per: dict[str, dict] = {}
    started = time.perf_counter()
    steps = [(t, m) for t in cfg["tokens"] for m in run.methods]
    with config.torch_threads(cfg.get("threads"), "load"):
        for token, method in progress_bar(steps, f"token sweep {task.name}", cfg["progress"], total=len(steps)):
            if quality is not None and token == cfg["token"] and n == len(task) and method in run.per_example:
                values.setdefault(token, {})[method] = {k: quality[method][k] for k in metrics}
                per.setdefault(token, {})[method] = {k: run.per_example[method][k] for k in metrics}
                continue
            values.setdefault(token, {})[method], per.setdefault(token, {})[method] = _memo(
                cfg, f"sweep-{task.name}-{method}-{token}",
                functools.partial(text_metrics, task, run.scores[method], cfg, token, n, metrics, per_example=True),
                task=task.fingerprint, scores=cache.digest(run.scores[method]), token=token, n=n, metrics=metrics)
    tau, best = {}, {}
    tokens = list(cfg["tokens"])
    for metric in metrics:
        higher = METRICS[metric][0] == "higher"
        vecs = {t: np.array([values[t][m][metric] for m in run.methods]) for t in tokens}
        best[metric] = {t: run.methods[int(np.argmax(v) if higher else np.argmin(v))] for t, v in vecs.items()}
        tau[metric] = {f"{a}~{b}": float(kendall_tau(vecs[a], vecs[b]).statistic)
                       for i, a in enumerate(tokens) for b in tokens[i + 1:]}
    run.timings["sweep_s"] = round(time.perf_counter() - started, 1)
    return {"values": values, "tau": tau, "best": best, "n": n, "token_ids": {t: token_id(task, t) for t in tokens},
            "per_example": per}


# ---- model randomisation --------------------------------------------------------------------------------


def randomised_copy(model: torch.nn.Module, n_layers: int = 2, seed: int = 0) -> torch.nn.Module:
    """A deep copy of `model` with its top `n_layers` blocks and its classification head (pooler / final
    LayerNorm included) re-initialised: Linear weights ~ N(0, initializer_range), biases 0, LayerNorm 1/0
    (Adebayo et al. 2018's cascading randomisation, from the top). The original model is not touched."""
    clone = copy.deepcopy(model).eval()
    adapter = get_adapter(clone)
    n_layers = max(1, min(int(n_layers), len(adapter.layers)))
    std = float(getattr(clone.config, "initializer_range", 0.02))
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for block in [*adapter.layers[-n_layers:], *adapter.head_modules()]:
            for module in block.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.copy_(torch.randn(module.weight.shape, generator=gen, dtype=module.weight.dtype) * std)
                    if module.bias is not None:
                        module.bias.zero_()
                elif isinstance(module, torch.nn.LayerNorm):
                    module.weight.fill_(1.0)
                    module.bias.zero_()
    return clone


def _flat_units(task: Task, scores: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scores [n, units] and the mask of units to correlate (text: content tokens; vision: patches)."""
    if task.modality == "vision":
        return protocols.patch_level(scores[:n], get_adapter(task.model).grid).flatten(1).double(), None
    width = scores.shape[1]
    return scores[:n].double(), task.content[:n, :width]


def randomisation_check(task: Task, run: TaskRun, cfg: Mapping) -> dict:
    """Explain the first `n_random` examples with a copy of the model whose top layers are re-initialised and
    compare with the trained model's explanations (same target classes).

    Returns rows {method: {"spearman": mean ρ, "changed": 1 - ρ}}, n, layers, the share of predictions the
    randomised copy changes, and the check that the original weights are untouched.
    """
    n = min(cfg["n_random"].get(task.name, 0), len(task))
    if n < 1:
        return {}
    started = time.perf_counter()
    before = [p.detach().clone() for p in task.model.parameters()]
    clone = randomised_copy(task.model, cfg["randomise_layers"], cfg["seed"])
    with torch.no_grad():
        logits = predict_logits(clone, {k: v[:n] for k, v in task.inputs.items()}, 64)
    rows, rhos, clone_digest = {}, {}, cache.digest(clone) if cfg.get("use_cache") else None
    with config.torch_threads(cfg.get("threads"), "load"):
        for method in progress_bar(run.methods, f"randomised {task.name}", cfg["progress"], total=len(run.methods)):
            other = _memo(cfg, f"randomised-{task.name}-{method}",
                          functools.partial(explain_all, task, method, cfg, model=clone, n=n), task=task.fingerprint,
                          clone=clone_digest, method=method, n=n,
                          params=cache.digest(method_params(task, method, cfg)))
            a, mask = _flat_units(task, run.scores[method], n)
            b, _ = _flat_units(task, other, n)
            rho = spearman(a, b[:, :a.shape[1]], mask=mask).statistic
            value = float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan")
            rows[method] = {"spearman": value, "changed": 1.0 - value}
            rhos[method] = protocols.as_numpy(rho)
    untouched = all(torch.equal(p, q) for p, q in zip(before, task.model.parameters()))
    run.timings["randomisation_s"] = round(time.perf_counter() - started, 1)
    return {"rows": rows, "rho": rhos, "n": n, "layers": int(cfg["randomise_layers"]), "original_untouched": untouched,
            "prediction_changed": float((logits.argmax(-1) != task.targets[:n]).double().mean())}
