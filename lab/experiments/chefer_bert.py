"""Chefer, Gur & Wolf 2021 on BERT: Figure 3 (token-F1@k against the ERASER Movie Reviews rationales), the
supplement's text heatmaps (Figs. 15-33) and, beyond the paper, ERASER comprehensiveness / sufficiency.

Everything the notebook `02_chefer_bert` computes lives here, as small functions it calls in order:

    cfg = settings("default")                  # profile -> sizes, methods, method parameters
    ctx = setup(cfg)                           # classifier, encoded test reviews, rationale masks, predictions
    maps = compute_maps(ctx)                   # {method: scores [n, S]} explaining the ground-truth class
    fig3 = figure3_results(ctx, maps)          # token-F1 at k = 10..80, per-document (macro) and pooled (micro)
    faith = faithfulness_results(ctx, maps)    # ERASER comprehensiveness / sufficiency (AOPC over 1/5/10/20/50 %)
    support = class_support(ctx, maps)         # ground-truth vs counterfactual maps ("support for both classes")
    special = special_token_mass(ctx, maps)    # how much of each map lies on [SEP] / [CLS] (rollout claim)
    res = build_results(ctx, fig3, faith, support, special)

Protocol (REPRODUCTION_SPEC 000.3-000.4), and our choices where the paper is silent:
- The classifier explains reviews truncated to `max_length` (512) word pieces; the model input is built with
  `lab.data.encode_words`, so the rationale mask (`lab.data.align_rationale`: every word piece of a rationale word
  is rationale, special tokens never) lines up with the scores by construction.
- A method's predicted rationale is its top-k content word pieces ([CLS]/[SEP]/padding excluded), k = 10..80, for the
  ground-truth class (the paper: "support the (ground truth) classification").
- Token-F1 follows ERASER's scorer: per-document P/R/F1 averaged over documents ("macro", reported, the ERASER
  `instance_macro` numbers) and pooled counts ("micro", also recorded). Rationale words cut off by the truncation do
  not count (they are not in the model's input).
- Comprehensiveness / sufficiency delete the top-k % word pieces (ERASER bins 1, 5, 10, 20, 50 %) and measure the
  probability of the explained (ground-truth) class; ERASER uses the predicted class, which is the same for every
  correctly classified review.
- GradCAM weights each head by its gradient averaged over the whole attention map (Chefer's BERT code,
  `weight_from="matrix"`); rollout follows Eq. 17 as printed (no row normalisation, as the authors' code).
"""
from __future__ import annotations

from lab.experiments import ExperimentError, merge_settings
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

import lab
import lab.viz
from lab import cache, config
from lab.data import align_rationale, encode_words
from lab.explainers.batch import explain_many, predict_logits, trim_rows
from lab.metrics.agreement import spearman
from lab.metrics.perturbation import ERASER_BINS, comprehensiveness_sufficiency, groups_from_word_ids, top_k_mask
from lab.metrics.rationales import token_f1_at_k, token_f1_curve

NOTEBOOK = "02_chefer_bert"
PAPER_METHODS = ("chefer", "partial_lrp", "raw_attention", "attn_gradcam", "lrp", "rollout")
EXTRA_METHODS = ("gae", "saliency", "grad_x_input", "integrated_gradients")
# Supplement Figs. 15-33: panels (b)-(i) show these methods for the ground-truth and the counterfactual class.
PAIR_METHODS = ("chefer", "partial_lrp", "attn_gradcam", "lrp")
SINGLE_METHODS = ("rollout", "raw_attention")  # panels (j), (k): class-agnostic
KS = tuple(range(10, 90, 10))
LABELS = {"chefer": "Ours (Chefer)", "partial_lrp": "partial LRP", "raw_attention": "raw attention",
          "attn_gradcam": "GradCAM", "lrp": "LRP", "rollout": "rollout", "gae": "GAE", "saliency": "saliency",
          "grad_x_input": "grad×input", "integrated_gradients": "integrated gradients"}
# The authors' code reading (lab.explainers.relevance.READINGS; pinned by tests/test_reference_chefer.py): it
# produced the paper's numbers. The text reading is `reading="text"` on these three methods.
METHOD_PARAMS: dict[str, dict] = {"attn_gradcam": {"weight_from": "matrix"}, "chefer": {"reading": "code"},
                                  "partial_lrp": {"reading": "code"}, "lrp": {"reading": "code"}}
CATEGORIES = (("NEG", True), ("NEG", False), ("POS", True), ("POS", False))
TARGETS = ("ground truth", "counterfactual", "predicted")
# Fig. 3 unit: "word_piece" ranks word pieces; "word" (the authors' pipeline) scores each ERASER word by the max over
# its pieces and ranks words against the word rationale.
F1_UNITS = ("word_piece", "word")

PROFILES: dict[str, dict[str, Any]] = {
    # n_test: test reviews encoded and predicted (None: all 199; accuracy and the figure reviews come from them);
    # the other n_* are the reviews explained (None: all), nested prefixes of one seeded shuffle of those.
    "smoke": dict(model_profile="smoke", max_length=64, n_test=40, n_examples=4, n_faithfulness=2, n_class_support=2,
                  n_ig=2, ig_steps=4, batch_size=4, perturb_batch=40),
    # default: sized for ~20 min of explaining on 2 CPU cores (LRP through 512 tokens costs ~10 forward passes)
    "default": dict(model_profile="default", max_length=512, n_test=None, n_examples=32, n_faithfulness=12,
                    n_class_support=12, n_ig=6, ig_steps=16, batch_size=4, perturb_batch=16),
    "paper": dict(model_profile="default", max_length=512, n_test=None, n_examples=None, n_faithfulness=None,
                  n_class_support=None, n_ig=None, ig_steps=50, batch_size=4, perturb_batch=16),
}
COMMON = dict(dataset="movies", split="test", model=None, checkpoint=None, methods=PAPER_METHODS + EXTRA_METHODS,
              pair_methods=PAIR_METHODS, ks=KS, bins=ERASER_BINS, seed=0, ig_batch_size=1, ig_internal_batch=8,
              overlap_below=0.5, mirror_below=-0.2, support_top=20, sep_majority=0.5, accuracy_target=0.85,
              f1_step_tolerance=0.01, f1_unit="word", use_cache=True, progress=True)
CACHE_KIND = "chefer_bert"
CACHE_VERSION = 1


def settings(profile: str = "default", **overrides) -> dict:
    """The profile's sizes plus the shared protocol settings; `None` overrides keep the profile's value."""
    cfg = merge_settings(PROFILES, COMMON, profile, overrides)
    cfg["methods"] = tuple(cfg["methods"])
    cfg["pair_methods"] = tuple(cfg["pair_methods"])
    bad = [m for m in cfg["methods"] + cfg["pair_methods"] if m not in lab.EXPLAINERS]
    if bad:
        raise ExperimentError(f"unknown method(s) {bad}; registered: {', '.join(lab.EXPLAINERS)}")
    if cfg["f1_unit"] not in F1_UNITS:
        raise ExperimentError(f"f1_unit must be one of {', '.join(F1_UNITS)}, got {cfg['f1_unit']!r}")
    if not cfg["methods"]:
        raise ExperimentError("methods is empty; pick at least one of " + ", ".join(lab.EXPLAINERS))
    for key in ("n_test", "n_examples", "n_faithfulness", "n_class_support", "n_ig"):
        if cfg[key] is not None and int(cfg[key]) < 1:
            raise ExperimentError(f"{key} must be >= 1 or None (all reviews), got {cfg[key]}")
    if sorted(int(k) for k in cfg["ks"]) != [int(k) for k in cfg["ks"]] or min(cfg["ks"]) < 1:
        raise ExperimentError(f"ks must be increasing positive integers, got {list(cfg['ks'])}")
    return cfg


# ---- context: classifier + encoded reviews ----------------------------------------------------------------


@dataclass
class Context:
    """The classifier, every test review encoded to [N, S] (padded), its rationale mask and the predictions."""

    model: torch.nn.Module
    tokenizer: Any
    label_names: tuple[str, ...]
    cfg: dict
    examples: list
    inputs: dict
    rationale: torch.Tensor  # [N, S] bool, word pieces of rationale words
    valid: torch.Tensor  # [N, S] bool, real tokens
    special: torch.Tensor  # [N, S] bool, [CLS] / [SEP] / padding
    logits: torch.Tensor  # [N, C]
    order: torch.Tensor  # seeded permutation of 0..N-1; subsets are its prefixes
    model_id: str | None = None
    model_info: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    words: torch.Tensor | None = None  # [N, S] word index of each token, -1 for special tokens and padding

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([e.label for e in self.examples], dtype=torch.long)

    @property
    def predicted(self) -> torch.Tensor:
        return self.logits.argmax(-1)

    @property
    def correct(self) -> torch.Tensor:
        return self.predicted == self.labels

    def subset(self, name: str) -> torch.Tensor:
        """Review indices of a subset ("examples", "faithfulness", "class_support", "ig"): nested prefixes."""
        n_all = len(self.examples)
        n = self.cfg["n_examples"] or n_all
        if name != "examples":
            n = min(n, self.cfg[f"n_{name}"] or n_all)
        return self.order[:min(n, n_all)]

    def counterfactual(self, idx: torch.Tensor) -> torch.Tensor:
        """The most probable class other than the ground truth (for two classes: the other one)."""
        logits = self.logits[idx].clone()
        logits[torch.arange(len(idx)), self.labels[idx]] = -float("inf")
        return logits.argmax(-1)


def encode_reviews(examples: Sequence, tokenizer, max_length: int
                   ) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Model inputs [N, S] (right-padded), the per-token rationale mask [N, S], the number of leading words that
    made it into the input [N] (fewer than the review's words when truncated) and each token's word index [N, S]
    (-1: special or padding) of ERASER examples.

    Each review is encoded from its words with `encode_words` (truncated to max_length), and its word rationale is
    mapped to word pieces with `align_rationale` on that same encoding.
    """
    if not examples:
        raise ExperimentError("no reviews to encode")
    missing = [i for i, e in enumerate(examples) if e.words is None or e.rationale is None]
    if missing:
        raise ExperimentError(f"examples {missing[:5]} have no words/rationale: this experiment needs ERASER examples")
    encodings = [encode_words(e.words, tokenizer, max_length) for e in examples]
    width = max(len(enc["input_ids"]) for enc in encodings)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(examples), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    rationale = torch.zeros_like(ids, dtype=torch.bool)
    kept = torch.zeros(len(examples), dtype=torch.long)
    for i, (e, enc) in enumerate(zip(examples, encodings)):
        n = len(enc["input_ids"])
        ids[i, :n] = torch.tensor(enc["input_ids"])
        mask[i, :n] = 1
        if "token_type_ids" in enc:
            types[i, :n] = torch.tensor(enc["token_type_ids"])
        rationale[i, :n] = torch.tensor(align_rationale(e.words, e.rationale, tokenizer, max_length, encoding=enc),
                                        dtype=torch.bool)
        kept[i] = 1 + max((w for w in enc.word_ids() if w is not None), default=-1)
    groups = groups_from_word_ids([enc.word_ids() for enc in encodings])
    words = torch.full_like(ids, -1)
    words[:, :groups.shape[1]] = groups
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, rationale, kept, words


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_classifier(cfg: Mapping):
    """(model, tokenizer, label_names, info, model_id): a ready checkpoint (`checkpoint`) or `model` fine-tuned on
    the ERASER Movies training reviews with the `model_profile` preset of `lab.models.training` (cached)."""
    from lab.models.training import fine_tune_preset

    if cfg["checkpoint"]:
        from lab.models.loading import load_classifier as load_model, load_tokenizer

        model, tok = load_model(cfg["checkpoint"]), load_tokenizer(cfg["checkpoint"])
        names = tuple(model.config.id2label[i] for i in range(model.config.num_labels))
        info, model_id = {"checkpoint": str(cfg["checkpoint"]), "trained_here": False}, str(cfg["checkpoint"])
        metrics = Path(str(cfg["checkpoint"])) / "metrics.json"
        if metrics.is_file():  # a checkpoint written by lab.models.training: keep its training record
            record = json.loads(metrics.read_text())
            info.update({k: record.get(k) for k in ("eval_accuracy", "n_train", "train_seconds", "hparams", "model")})
            model_id += ":" + _digest(record)
        return model, tok, names, info, model_id
    ft = fine_tune_preset(cfg["dataset"], cfg["model_profile"], model=cfg["model"], seed=cfg["seed"])
    info = {k: ft.metrics.get(k) for k in ("eval_accuracy", "eval_split", "n_eval", "n_train", "train_seconds",
                                             "hparams", "model")}
    info.update(checkpoint=str(ft.path), trained_here=True)
    model_id = None if ft.path is None else f"{ft.path}:{_digest(ft.metrics)}"
    return ft.model, ft.tokenizer, tuple(ft.label_names), info, model_id


def setup(cfg: Mapping, classifier=None, examples: Sequence | None = None) -> Context:
    """Load (or fine-tune) the classifier, encode every test review and predict it.

    classifier: optional (model, tokenizer) to use instead (tests, or any BERT-family model already loaded);
    examples: optional ERASER examples instead of `lab.data.load(dataset, split)`.
    """
    start = time.perf_counter()
    if classifier is None:
        model, tok, names, info, model_id = load_classifier(cfg)
    else:
        model, tok = classifier
        names = tuple(model.config.id2label[i] for i in range(model.config.num_labels))
        info, model_id = {"checkpoint": None, "trained_here": False}, None
    model.eval()
    if examples is None:
        from lab.data import load

        data = load(cfg["dataset"], cfg["split"]).subset(cfg["n_test"], seed=int(cfg["seed"]))
        examples, names = list(data.examples), tuple(data.label_names)
    examples = list(examples)
    inputs, rationale, kept, words = encode_reviews(examples, tok, cfg["max_length"])
    adapter = lab.explainers.base.get_adapter(model)
    prepared = adapter.prepare(inputs)
    valid, special = adapter.valid_mask(prepared).cpu(), adapter.special_mask(prepared).cpu()
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(int(cfg["seed"])))
    ctx = Context(model, tok, names, dict(cfg), examples, inputs, rationale, valid, special,
                  torch.zeros(len(examples), len(names)), order, model_id, info, started=start, words=words)
    t0 = time.perf_counter()
    with config.torch_threads():
        predicted = _cached(ctx, "predict", {"max_length": cfg["max_length"]},
                            lambda: {"logits": predict_logits(model, inputs, cfg["perturb_batch"], cfg["progress"])})
    ctx.logits = predicted["logits"]
    ctx.timings["predict_all_s"] = round(time.perf_counter() - t0, 1)
    info["test_accuracy"] = float(ctx.correct.double().mean())
    info["n_test"] = len(examples)
    info["truncated_reviews"] = int(sum(int(k) < len(e.words) for k, e in zip(kept, examples)))
    info["rationale_words_visible"] = float(sum(sum(e.rationale[:int(k)]) for k, e in zip(kept, examples))
                                            / max(1, sum(sum(e.rationale) for e in examples)))
    info["reviews_without_visible_rationale"] = int((~rationale.any(1)).sum())
    info.update(num_layers=model.config.num_hidden_layers, hidden_size=model.config.hidden_size,
                num_heads=model.config.num_attention_heads, model_type=model.config.model_type)
    ctx.timings["setup_s"] = round(time.perf_counter() - start, 1)
    return ctx


# ---- explanations -----------------------------------------------------------------------------------------


def method_params(cfg: Mapping, method: str) -> dict:
    """Explainer parameters of a method in this experiment (IG: steps and internal batch from the profile)."""
    params = dict(METHOD_PARAMS.get(method, {}))
    if method == "integrated_gradients":
        params.update(steps=int(cfg["ig_steps"]), internal_batch_size=int(cfg["ig_internal_batch"]))
    return params


def _cached(ctx: Context, kind: str, key_params: dict, compute):
    """compute(), memoised (`lab.cache.memoize`) per classifier, reviews and `key_params` when the classifier has a
    stable id and `use_cache` is on."""
    return cache.memoize(CACHE_KIND, kind, compute, enabled=bool(ctx.cfg.get("use_cache")) and ctx.model_id is not None,
                         model=ctx.model_id, reviews=_digest([e.uid for e in ctx.examples]), **key_params)


def _review_path(ctx: Context, method: str, params: dict, i: int, cls: int) -> cache.MemoEntry | None:
    """Memo entry of one review's map (classifier, code digest, method, parameters, review, class)."""
    if not ctx.cfg.get("use_cache") or ctx.model_id is None:
        return None
    return cache.memo_entry(CACHE_KIND, method, v=CACHE_VERSION, model=ctx.model_id, params=params,
                            max_length=ctx.cfg["max_length"], review=ctx.examples[i].uid,
                            ids=_digest(ctx.inputs["input_ids"][i].tolist()), target=int(cls))


def explain_reviews(ctx: Context, method: str, idx, target: str = "ground truth") -> dict:
    """{"scores": [n, S], "seconds": s} for the reviews `idx` (indices into ctx.examples), explaining the
    ground-truth, counterfactual or predicted class. Each review's map is cached on its own (per classifier,
    explainer code, method, parameters, review and class), so other subsets and the figures reuse it; `seconds` is
    the compute time of those maps (measured when they were made)."""
    idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
    if target not in TARGETS:
        raise ExperimentError(f"target must be one of {TARGETS}, got {target!r}")
    targets = {"ground truth": ctx.labels[idx], "predicted": ctx.predicted[idx]}.get(target)
    if targets is None:
        targets = ctx.counterfactual(idx)
    params = method_params(ctx.cfg, method)
    width = ctx.inputs["input_ids"].shape[1]
    scores, seconds = torch.zeros(len(idx), width), torch.zeros(len(idx))
    paths = [_review_path(ctx, method, params, int(i), int(c)) for i, c in zip(idx, targets)]
    todo = []
    for j, path in enumerate(paths):
        got = path.load() if path is not None else None
        if got is not None:
            scores[j, :got["scores"].shape[0]] = got["scores"]
            seconds[j] = got["seconds"]
        else:
            todo.append(j)
    if todo:
        todo_t = torch.tensor(todo)
        batch = ctx.cfg["ig_batch_size"] if method == "integrated_gradients" else ctx.cfg["batch_size"]
        t0 = time.perf_counter()
        with config.torch_threads():
            new = explain_many(ctx.model, trim_rows(ctx.inputs, idx[todo_t], trim=False), method, targets[todo_t],
                               batch_size=batch, sort=False, progress=ctx.cfg["progress"], desc=f"{method} ({target})",
                               **params).scores
        per_review = (time.perf_counter() - t0) / len(todo)
        scores[todo_t], seconds[todo_t] = new, per_review
        for j in todo:
            if paths[j] is not None:
                n = int(ctx.valid[idx[j]].sum())
                paths[j].store({"scores": scores[j, :n].clone(), "seconds": per_review})
    return {"scores": scores, "seconds": float(seconds.sum())}


def compute_maps(ctx: Context, methods: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """{method: scores [n, S]} explaining the ground-truth class of the "examples" subset (IG: the "ig" subset)."""
    out = {}
    for method in methods or ctx.cfg["methods"]:
        idx = ctx.subset("ig" if method == "integrated_gradients" else "examples")
        got = explain_reviews(ctx, method, idx)
        out[method] = got["scores"]
        ctx.timings[f"explain_{method}_s_per_review"] = round(got["seconds"] / len(idx), 2)
    return out


def _rows_for(ctx: Context, scores: torch.Tensor) -> torch.Tensor:
    """The review indices a score tensor covers (a prefix of the examples subset)."""
    return ctx.order[:scores.shape[0]]


# ---- Figure 3: token-F1 at k -------------------------------------------------------------------------------


def word_level(scores: torch.Tensor, words: torch.Tensor, rationale: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(word scores, word rationale, word valid) [N, W] from token scores [N, S]: a word's score is the max over its
    pieces, it is rationale when any piece is; tokens with word index -1 are ignored."""
    n_words = int(words.max()) + 1 if words.numel() else 0
    keep = words >= 0
    idx = words.clamp(min=0)
    out = torch.full((len(scores), max(n_words, 1)), -float("inf"), dtype=torch.float64)
    out = out.scatter_reduce(1, idx, scores.double().masked_fill(~keep, -float("inf")), "amax")
    rat = torch.zeros_like(out, dtype=torch.long).scatter_reduce(1, idx, (rationale & keep).long(), "amax").bool()
    valid = torch.zeros_like(out, dtype=torch.long).scatter_reduce(1, idx, keep.long(), "amax").bool()
    return out.masked_fill(~valid, 0.0), rat, valid


def figure3_results(ctx: Context, maps: Mapping[str, torch.Tensor], unit: str | None = None) -> dict:
    """Token-F1 of each method's top-k units vs the human rationale, k in cfg["ks"] (Fig. 3); the unit is
    `unit` (default cfg["f1_unit"]): word pieces, or ERASER words scored by the max over their pieces
    (`word_level`).

    Returns ks, macro {method: [K]} (per-document mean, reported), se {method: [K]} (its standard error over
    documents), micro {method: [K]} (pooled), precision / recall {method: [K]} (macro), n {method: reviews} and
    per_doc {method: [n, K]} (each review's F1; rows follow the review order, so methods pair on their prefixes).
    """
    ks, unit = [int(k) for k in ctx.cfg["ks"]], unit or ctx.cfg["f1_unit"]
    if unit not in F1_UNITS:
        raise ExperimentError(f"unit must be one of {', '.join(F1_UNITS)}, got {unit!r}")
    out = {"ks": ks, "unit": unit, "macro": {}, "se": {}, "micro": {}, "precision": {}, "recall": {}, "n": {},
           "per_doc": {}}
    for method, scores in maps.items():
        idx = _rows_for(ctx, scores)
        if unit == "word":
            w_scores, w_rationale, w_valid = word_level(scores, ctx.words[idx][:, :scores.shape[1]],
                                                        ctx.rationale[idx][:, :scores.shape[1]])
            curve = token_f1_curve(w_scores, w_rationale, w_valid, ks)
        else:
            curve = token_f1_curve(scores, ctx.rationale[idx], ctx.valid[idx], ks, special_mask=ctx.special[idx])
        out["macro"][method] = curve["macro_f1"].tolist()
        out["micro"][method] = curve["micro_f1"].tolist()
        docs = [curve["per_k"][k]["f1"].double() for k in ks]
        out["se"][method] = [float(d.std() / len(d) ** 0.5) if len(d) > 1 else float("nan") for d in docs]
        out["precision"][method] = [curve["per_k"][k]["macro_precision"] for k in ks]
        out["recall"][method] = [curve["per_k"][k]["macro_recall"] for k in ks]
        out["n"][method] = len(idx)
        out["per_doc"][method] = torch.stack(docs, 1).numpy()
    return out


# ---- ERASER comprehensiveness / sufficiency ----------------------------------------------------------------


def faithfulness_results(ctx: Context, maps: Mapping[str, torch.Tensor]) -> dict:
    """ERASER comprehensiveness (higher better) and sufficiency (lower better) of each method's ground-truth-class
    map on the "faithfulness" subset: AOPC over cfg["bins"], top-k % word pieces deleted / kept."""
    rows, curves = {}, {}
    n = len(ctx.subset("faithfulness"))
    for method, scores in maps.items():
        m = min(n, scores.shape[0])
        idx = _rows_for(ctx, scores)[:m]
        width = _width(ctx, idx)

        def compute(idx=idx, s=scores[:m, :width], width=width):
            t0 = time.perf_counter()
            with config.torch_threads():
                r = comprehensiveness_sufficiency(ctx.model, trim_rows(ctx.inputs, idx), s, bins=ctx.cfg["bins"],
                                                  label="gold", labels=ctx.labels[idx],
                                                  special_mask=ctx.special[idx][:, :width], mode="delete",
                                                  batch_size=ctx.cfg["perturb_batch"], progress=ctx.cfg["progress"])
            return {**r, "seconds": time.perf_counter() - t0}

        # memoised per classifier, reviews and map (the seconds are those of the run that computed it)
        r = _cached(ctx, f"faithfulness-{method}", {"rows": idx.tolist(), "scores": cache.digest(scores[:m, :width]),
                                                    "bins": [float(b) for b in ctx.cfg["bins"]],
                                                    "max_length": ctx.cfg["max_length"]}, compute)
        ctx.timings[f"faithfulness_{method}_s_per_review"] = round(r["seconds"] / m, 2)
        rows[method] = {"comprehensiveness": r["comprehensiveness_mean"], "sufficiency": r["sufficiency_mean"],
                        "n": m}
        curves[method] = {"comprehensiveness": r["comp_curve"].tolist(), "sufficiency": r["suff_curve"].tolist()}
    return {"rows": rows, "curves": curves, "bins": [float(b) for b in ctx.cfg["bins"]]}


def _width(ctx: Context, idx) -> int:
    return max(int(ctx.valid[idx].sum(1).max()), 1)


# ---- support for both classes, [SEP] mass ------------------------------------------------------------------


def pair_agreement(gt: torch.Tensor, cf: torch.Tensor, content: torch.Tensor, top: int = 20) -> dict:
    """How alike the ground-truth and counterfactual maps of the same reviews are.

    rho [n]: Spearman correlation over content tokens (NaN where a map is constant, e.g. all zero);
    overlap [n]: |top-`top` tokens of GT ∩ of CF| / top; cf_constant [n]: the counterfactual map is constant
    (e.g. all zero after a ReLU).
    """
    rho = np.asarray(spearman(gt, cf, content).statistic, dtype=float).reshape(-1)
    top_gt = top_k_mask(gt, special_mask=~content, k=top)
    top_cf = top_k_mask(cf, special_mask=~content, k=top)
    size = torch.minimum(content.sum(1), torch.tensor(top)).clamp_min(1)
    overlap = ((top_gt & top_cf).sum(1).double() / size).numpy()
    big, small = cf.masked_fill(~content, -float("inf")).amax(1), cf.masked_fill(~content, float("inf")).amin(1)
    cf_constant = (big <= small).numpy()
    return {"rho": rho, "overlap": overlap, "cf_constant": cf_constant}


def support_verdict(top_overlap: float, median_rho: float, cf_constant_fraction: float = 0.0,
                    overlap_below: float = 0.5, mirror_below: float = -0.2) -> str:
    """How a method's counterfactual-class map relates to its ground-truth map (our criterion for the supplement's
    "support for both classes"):

    - 'degenerate': the counterfactual map is all zero / constant in most reviews;
    - 'same map': the two maps highlight mostly the same tokens (mean top-k overlap >= overlap_below);
    - 'sign reversal': they highlight different tokens and are anti-correlated (median ρ <= mirror_below);
    - 'both classes': they highlight different tokens without being each other's reverse.
    """
    if cf_constant_fraction > 0.5 or not np.isfinite(median_rho):
        return "degenerate"
    if top_overlap >= overlap_below:
        return "same map"
    if median_rho <= mirror_below:
        return "sign reversal"
    return "both classes"


def class_support(ctx: Context, maps: Mapping[str, torch.Tensor], methods: Sequence[str] | None = None) -> dict:
    """Explain the counterfactual class of the "class_support" reviews and compare with the ground-truth map.

    Returns rows {method: median_rho, mean_rho, top_overlap, cf_constant_fraction, verdict, n}, the CF maps and
    per_review {method: pair_agreement arrays} (what the claims' intervals resample).
    """
    methods = [m for m in (methods or ctx.cfg["pair_methods"]) if m in maps]
    idx = ctx.subset("class_support")
    rows, cf_maps, per_review = {}, {}, {}
    for method in methods:
        m = min(len(idx), maps[method].shape[0])
        got = explain_reviews(ctx, method, idx[:m], "counterfactual")
        cf_maps[method] = got["scores"]
        ctx.timings[f"explain_{method}_counterfactual_s_per_review"] = round(got["seconds"] / m, 2)
        content = ctx.valid[idx[:m]] & ~ctx.special[idx[:m]]
        a = pair_agreement(maps[method][:m], got["scores"], content, ctx.cfg["support_top"])
        median = float(np.nanmedian(a["rho"])) if np.isfinite(a["rho"]).any() else float("nan")
        row = {"median_rho": median, "mean_rho": float(np.nanmean(a["rho"])) if np.isfinite(median) else None,
               "top_overlap": float(a["overlap"].mean()), "cf_constant_fraction": float(a["cf_constant"].mean()),
               "n": m}
        row["verdict"] = support_verdict(row["top_overlap"], median, row["cf_constant_fraction"],
                                         ctx.cfg["overlap_below"], ctx.cfg["mirror_below"])
        rows[method] = row
        per_review[method] = a
    return {"rows": rows, "maps": cf_maps, "per_review": per_review}


def special_positions(ctx: Context, idx) -> tuple[torch.Tensor, torch.Tensor]:
    """([CLS] mask, [SEP] mask) [n, S] of the reviews idx: [CLS] is position 0, [SEP] the other special tokens."""
    valid, special = ctx.valid[idx], ctx.special[idx]
    cls = torch.zeros_like(valid)
    cls[:, 0] = True
    return cls & valid, special & valid & ~cls


def special_token_mass(ctx: Context, maps: Mapping[str, torch.Tensor]) -> dict:
    """Share of each map's positive mass on [SEP] and on [CLS] (of all valid tokens), and how often [SEP] is the
    highest-scoring token other than [CLS] (Chefer supplement: "rollout focuses mostly on [SEP]"); sep_top
    {method: [n] bool} says per review whether it is."""
    rows, sep_tops = {}, {}
    for method, scores in maps.items():
        idx = _rows_for(ctx, scores)
        cls, sep = special_positions(ctx, idx)
        pos = scores.clamp(min=0) * ctx.valid[idx]
        total = pos.sum(1).clamp_min(1e-30)
        no_cls = scores.masked_fill(cls | ~ctx.valid[idx], -float("inf"))
        top = no_cls.argmax(1)
        sep_top = sep[torch.arange(len(idx)), top]
        content = (ctx.valid[idx] & ~ctx.special[idx]).sum(1).double()
        without_cls = (pos * ~cls).sum(1).clamp_min(1e-30)
        rows[method] = {"sep_share": float(((pos * sep).sum(1) / total).mean()),
                        "cls_share": float(((pos * cls).sum(1) / total).mean()),
                        "sep_share_without_cls": float(((pos * sep).sum(1) / without_cls).mean()),
                        "uniform_share": float((1 / (content + 1)).mean()),
                        "sep_top_fraction": float(sep_top.double().mean())}
        sep_tops[method] = sep_top.numpy()
    return {"rows": rows, "sep_top": sep_tops}


# ---- text heatmaps (supplement Figs. 15-33) -----------------------------------------------------------------


def category(ctx: Context, i: int) -> str:
    e = ctx.examples[i]
    ok = bool(ctx.correct[i])
    return f"{ctx.label_names[e.label]} {'correct' if ok else 'mistaken'}"


def pick_reviews(ctx: Context) -> dict[str, int]:
    """One review per (ground truth, correct / mistaken) category: the shortest with a visible rationale
    (readable figures); a category without any review is left out."""
    lengths = ctx.valid.sum(1)
    has_rationale = ctx.rationale.any(1)
    out = {}
    for name, ok in CATEGORIES:
        if name not in ctx.label_names:
            continue
        label = ctx.label_names.index(name)
        cand = [i for i in range(len(ctx.examples)) if ctx.examples[i].label == label and bool(ctx.correct[i]) == ok
                and bool(has_rationale[i])]
        if cand:
            out[f"{name} {'correct' if ok else 'mistaken'}"] = min(cand, key=lambda i: (int(lengths[i]), i))
    return out


def _tokens(ctx: Context, i: int) -> list[str]:
    n = int(ctx.valid[i].sum())
    return ctx.tokenizer.convert_ids_to_tokens(ctx.inputs["input_ids"][i, :n].tolist())


def _panel(title: str, tokens: list[str], scores: torch.Tensor, n: int):
    """Panel without [CLS] (position 0: rollout and attention put most of their mass there) but with [SEP]."""
    return (title, tokens[1:n], scores[1:n])


def review_panels(ctx: Context, i: int, pair_methods: Sequence[str] = PAIR_METHODS,
                  single_methods: Sequence[str] = SINGLE_METHODS, max_width: int = 120, fontsize: float = 7.0):
    """Supplement-style figure for review i: (a) human rationale, then each pair method for the ground-truth and
    the counterfactual class, then the class-agnostic methods (each panel scaled to its own maximum)."""
    if not 0 <= i < len(ctx.examples):
        raise ExperimentError(f"review index must be in 0..{len(ctx.examples) - 1}, got {i}")
    idx = torch.tensor([i])
    tokens, n = _tokens(ctx, i), int(ctx.valid[i].sum())
    names = ctx.label_names
    gold, pred = int(ctx.labels[i]), int(ctx.predicted[i])
    cf = int(ctx.counterfactual(idx)[0])
    probs = ctx.logits[i].softmax(-1)
    panels = [_panel(f"(a) human rationale — review {ctx.examples[i].uid}: ground truth {names[gold]}, predicted "
                     f"{names[pred]} (p={probs[pred]:.2f})", tokens, ctx.rationale[i].float(), n)]
    letter = iter("bcdefghijklmnopqrstuvwxyz")
    for method in pair_methods:
        for target, cls in (("ground truth", gold), ("counterfactual", cf)):
            s = explain_reviews(ctx, method, idx, target)["scores"][0]
            panels.append(_panel(f"({next(letter)}) {LABELS.get(method, method)} → {names[cls]} ({target})",
                                 tokens, s, n))
    for method in single_methods:
        s = explain_reviews(ctx, method, idx)["scores"][0]
        panels.append(_panel(f"({next(letter)}) {LABELS.get(method, method)} (class-agnostic)", tokens, s, n))
    return lab.viz.token_heatmap_panels(panels, max_width=max_width, fontsize=fontsize)


# ---- interactive view ---------------------------------------------------------------------------------------


def review_choices(ctx: Context, group: str = "all") -> list[tuple[str, int]]:
    """(label, index) of the reviews in a group ("all" or e.g. "NEG mistaken"), for a dropdown."""
    out = []
    for i, e in enumerate(ctx.examples):
        cat = category(ctx, i)
        if group in ("all", cat):
            out.append((f"#{i} {e.uid} — {cat} ({int(ctx.valid[i].sum())} tokens)", i))
    return out


def review_selector(ctx: Context):
    """(group dropdown, review dropdown): choosing a group (label × correctness) filters the reviews."""
    import ipywidgets as W

    groups = ["all"] + [f"{n} {'correct' if ok else 'mistaken'}" for n, ok in CATEGORIES if n in ctx.label_names]
    style = {"description_width": "initial"}
    group = W.Dropdown(options=groups, value="all", description="group", style=style)
    review = W.Dropdown(options=review_choices(ctx), description="review", style=style,
                        layout=W.Layout(width="34em"))

    def refilter(change):
        review.options = review_choices(ctx, change["new"]) or [("(no review in this group)", -1)]

    group.observe(refilter, names="value")
    return group, review


def method_selector(ctx: Context, value=("chefer",)):
    import ipywidgets as W

    return W.SelectMultiple(options=list(ctx.cfg["methods"]), value=tuple(value), description="methods", rows=6,
                            style={"description_width": "initial"})


def target_class(ctx: Context, i: int, target: str) -> tuple[str, int]:
    """(explanation target kind, class index) for a widget choice: a TARGETS entry or a class name."""
    if target in TARGETS:
        idx = torch.tensor([i])
        cls = {"ground truth": ctx.labels[idx], "predicted": ctx.predicted[idx]}.get(target)
        return target, int(cls[0] if cls is not None else ctx.counterfactual(idx)[0])
    if target not in ctx.label_names:
        raise ExperimentError(f"target must be one of {list(TARGETS) + list(ctx.label_names)}, got {target!r}")
    cls = ctx.label_names.index(target)
    kind = "ground truth" if cls == int(ctx.labels[i]) else "counterfactual"
    return kind, cls


def render_review(ctx: Context, review: int, methods: Sequence[str] = ("chefer",), target: str = "ground truth",
                  k: int = 40, top_k_only: bool = False, max_width: int = 120):
    """The human rationale and each method's map for one review; titles give token-F1@k against the rationale.
    With `top_k_only` each map is shown as its top-k word pieces (the predicted rationale of Fig. 3)."""
    if review is None or int(review) < 0:
        raise ExperimentError("pick a review (the chosen group has none)")
    i = int(review)
    if not methods:
        raise ExperimentError("pick at least one method")
    kind, cls = target_class(ctx, i, target)
    if len(ctx.label_names) > 2 and kind == "counterfactual" and cls != int(ctx.counterfactual(torch.tensor([i]))[0]):
        raise ExperimentError("with more than two classes pick 'counterfactual' or the ground-truth class")
    idx = torch.tensor([i])
    tokens, n = _tokens(ctx, i), int(ctx.valid[i].sum())
    content = (ctx.valid[idx] & ~ctx.special[idx])
    panels = [_panel(f"human rationale — {category(ctx, i)}", tokens, ctx.rationale[i].float(), n)]
    for method in methods:
        if kind != "ground truth" and not lab.EXPLAINERS[method].class_specific:
            kind_used = "ground truth"  # class-agnostic: the same map for every class
        else:
            kind_used = kind
        s = explain_reviews(ctx, method, idx, kind_used)["scores"]
        f1 = token_f1_at_k(s, ctx.rationale[idx], ctx.valid[idx], int(k), special_mask=ctx.special[idx])
        shown = top_k_mask(s, special_mask=~content, k=int(k)).float()[0] if top_k_only else s[0]
        panels.append(_panel(f"{LABELS.get(method, method)} → {ctx.label_names[cls]}: F1@{k} = {f1['macro_f1']:.2f} "
                             f"(P {f1['macro_precision']:.2f}, R {f1['macro_recall']:.2f})", tokens, shown, n))
    return lab.viz.token_heatmap_panels(panels, max_width=max_width, fontsize=7.0)


def review_renderer(ctx: Context):
    """render(group, review, methods, target, k, top_k_only) -> Figure, for `lab.widgets.controls`."""

    def render(group: str = "all", review: int = 0, methods=("chefer",), target: str = "ground truth", k: int = 40,
               top_k_only: bool = False):
        return render_review(ctx, review, methods, target, k, top_k_only)

    return render
