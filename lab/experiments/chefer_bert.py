"""Chefer, Gur & Wolf 2021 on BERT: Figure 3 (token-F1@k against the ERASER Movie Reviews rationales), the
supplement's text heatmaps (Figs. 15-33) and, beyond the paper, ERASER comprehensiveness / sufficiency. The notebook
calls settings -> setup -> compute_maps -> figure3_results, faithfulness_results, class_support, special_token_mass
-> `chefer_bert_results.build_results`; `lab.viz.chefer_bert` draws what review_view / review_map return.

Our choices where the paper is silent (REPRODUCTION_SPEC 000.3-000.4): reviews are truncated to `max_length` word
pieces, encoded with `lab.data.encode_words` so the rationale mask (`align_rationale`: every piece of a rationale
word, never a special token) lines up with the scores; rationale words cut off do not count. A method's predicted
rationale is its top-k content units for the ground-truth class; token-F1 follows ERASER's scorer (per-document
"macro", reported, and pooled "micro"). Comprehensiveness / sufficiency delete the top-k % word pieces and read the
ground-truth class probability (ERASER: the predicted one, the same for every correct review). GradCAM averages each
head's gradient over the whole map (Chefer's code); rollout follows Eq. 17 as printed (no row normalisation).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

import lab
from lab import cache, config
from lab.data import align_rationale, encode_words
from lab.experiments import ExperimentError, ExperimentSettings
from lab.explainers.batch import ExplanationSet, explain_many, predict_logits, trim_rows
from lab.metrics import rationales
from lab.metrics.perturbation import ERASER_BINS, comprehensiveness_sufficiency, groups_from_word_ids, top_k_mask
from lab.metrics.rationales import pair_agreement, token_f1_at_k

NOTEBOOK = "02_chefer_bert"
PAPER_METHODS = ("chefer", "partial_lrp", "raw_attention", "attn_gradcam", "lrp", "rollout")
EXTRA_METHODS = ("gae", "saliency", "grad_x_input", "integrated_gradients")
# Supplement Figs. 15-33: panels (b)-(i) show these methods for the ground-truth and the counterfactual class.
PAIR_METHODS = ("chefer", "partial_lrp", "attn_gradcam", "lrp")
SINGLE_METHODS = ("rollout", "raw_attention")  # panels (j), (k): class-agnostic
LABELS = {"chefer": "Ours (Chefer)", "partial_lrp": "partial LRP", "raw_attention": "raw attention",
          "attn_gradcam": "GradCAM", "lrp": "LRP", "rollout": "rollout", "gae": "GAE", "saliency": "saliency",
          "grad_x_input": "grad×input", "integrated_gradients": "integrated gradients"}
# The authors' code reading (lab.explainers.relevance.READINGS; pinned by tests/test_reference_chefer.py): it
# produced the paper's numbers. The text reading is `reading="text"` on these three methods.
METHOD_PARAMS: dict[str, dict] = {"attn_gradcam": {"weight_from": "matrix"}, "chefer": {"reading": "code"},
                                  "partial_lrp": {"reading": "code"}, "lrp": {"reading": "code"}}
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
              pair_methods=PAIR_METHODS, ks=tuple(range(10, 90, 10)), bins=ERASER_BINS, seed=0, ig_batch_size=1,
              ig_internal_batch=8, overlap_below=0.5, mirror_below=-0.2, support_top=20, sep_majority=0.5,
              accuracy_target=0.85, f1_step_tolerance=0.01, f1_unit="word", use_cache=True, progress=True,
              start_layer=-1)
# start_layer of Chefer's rollout (Eq. 16): -1, the last block only, is the authors' BERT pipeline (bert_pipeline.py
# calls generate_LRP with its default start_layer=11, the last of BERT-base's 12 blocks); 0 rolls out every block, as
# the equation reads and as their ViT code does.


def _check(cfg: dict) -> None:
    if not cfg["methods"]:
        raise ExperimentError("methods is empty; pick at least one of " + ", ".join(lab.EXPLAINERS))
    if sorted(int(k) for k in cfg["ks"]) != [int(k) for k in cfg["ks"]] or min(cfg["ks"]) < 1:
        raise ExperimentError(f"ks must be increasing positive integers, got {list(cfg['ks'])}")


settings = ExperimentSettings(PROFILES, COMMON, methods=("methods", "pair_methods"), choices={"f1_unit": F1_UNITS},
                              positive=("n_test", "n_examples", "n_faithfulness", "n_class_support", "n_ig"),
                              check=_check)


@dataclass
class Context:
    """The classifier, every test review encoded to [N, S] (right-padded), its rationale mask and word index (-1:
    special or padding), the valid / special ([CLS], [SEP], padding) masks and the predictions."""

    model: torch.nn.Module
    tokenizer: Any
    label_names: tuple[str, ...]
    cfg: dict
    examples: list
    inputs: dict
    rationale: torch.Tensor
    valid: torch.Tensor
    special: torch.Tensor
    logits: torch.Tensor
    order: torch.Tensor  # seeded permutation of 0..N-1; subsets are its prefixes
    model_id: str | None = None
    model_info: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    words: torch.Tensor | None = None

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


def encode_reviews(examples: Sequence, tokenizer, max_length: int):
    """(inputs [N, S] right-padded, rationale mask [N, S], leading words kept [N], word index [N, S]) of ERASER
    examples, each encoded with `encode_words` and its word rationale mapped with `align_rationale`."""
    if not examples:
        raise ExperimentError("no reviews to encode")
    missing = [i for i, e in enumerate(examples) if e.words is None or e.rationale is None]
    if missing:
        raise ExperimentError(f"examples {missing[:5]} have no words/rationale: this experiment needs ERASER examples")
    encodings = [encode_words(e.words, tokenizer, max_length) for e in examples]
    width = max(len(enc["input_ids"]) for enc in encodings)
    ids = torch.full((len(examples), width), tokenizer.pad_token_id or 0, dtype=torch.long)
    mask, types = torch.zeros_like(ids), torch.zeros_like(ids)
    rationale = torch.zeros_like(ids, dtype=torch.bool)
    kept = torch.zeros(len(examples), dtype=torch.long)
    for i, (e, enc) in enumerate(zip(examples, encodings)):
        n = len(enc["input_ids"])
        ids[i, :n], mask[i, :n] = torch.tensor(enc["input_ids"]), 1
        if "token_type_ids" in enc:
            types[i, :n] = torch.tensor(enc["token_type_ids"])
        rationale[i, :n] = torch.tensor(align_rationale(e.words, e.rationale, tokenizer, max_length, encoding=enc))
        kept[i] = 1 + max((w for w in enc.word_ids() if w is not None), default=-1)
    groups = groups_from_word_ids([enc.word_ids() for enc in encodings])
    words = torch.full_like(ids, -1)
    words[:, :groups.shape[1]] = groups
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, rationale, kept, words


def load_classifier(cfg: Mapping):
    """(model, tokenizer, label_names, info, model_id): a ready `checkpoint` or `model` fine-tuned on ERASER Movies
    train with the `model_profile` preset of `lab.models.training` (cached)."""
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
            model_id += ":" + cache.digest(record)
        return model, tok, names, info, model_id
    ft = fine_tune_preset(cfg["dataset"], cfg["model_profile"], model=cfg["model"], seed=cfg["seed"])
    info = {k: ft.metrics.get(k) for k in ("eval_accuracy", "eval_split", "n_eval", "n_train", "train_seconds",
                                             "hparams", "model")}
    info.update(checkpoint=str(ft.path), trained_here=True)
    model_id = None if ft.path is None else f"{ft.path}:{cache.digest(ft.metrics)}"
    return ft.model, ft.tokenizer, tuple(ft.label_names), info, model_id


def setup(cfg: Mapping, classifier=None, examples: Sequence | None = None) -> Context:
    """Load (or fine-tune) the classifier, encode every test review and predict it. `classifier`: a (model,
    tokenizer) to use instead; `examples`: ERASER examples instead of `lab.data.load(dataset, split)`."""
    start = time.perf_counter()
    if classifier is None:
        model, tok, names, info, model_id = load_classifier(cfg)
    else:
        (model, tok), info, model_id = classifier, {"checkpoint": None, "trained_here": False}, None
        names = tuple(model.config.id2label[i] for i in range(model.config.num_labels))
    model.eval()
    if examples is None:
        data = lab.data.load(cfg["dataset"], cfg["split"]).subset(cfg["n_test"], seed=int(cfg["seed"]))
        examples, names = list(data.examples), tuple(data.label_names)
    examples = list(examples)
    inputs, rationale, kept, words = encode_reviews(examples, tok, cfg["max_length"])
    prepared = (adapter := lab.explainers.base.get_adapter(model)).prepare(inputs)
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(int(cfg["seed"])))
    ctx = Context(model, tok, names, dict(cfg), examples, inputs, rationale, adapter.valid_mask(prepared).cpu(),
                  adapter.special_mask(prepared).cpu(), torch.zeros(len(examples), len(names)), order, model_id,
                  info, started=start, words=words)
    t0 = time.perf_counter()
    with config.torch_threads():
        ctx.logits = _cached(ctx, "predict", {"max_length": cfg["max_length"]}, lambda: {
            "logits": predict_logits(model, inputs, cfg["perturb_batch"], cfg["progress"])})["logits"]
    ctx.timings["predict_all_s"] = round(time.perf_counter() - t0, 1)
    n_kept = [int(k) for k in kept]
    info.update(test_accuracy=float(ctx.correct.double().mean()), n_test=len(examples),
                truncated_reviews=int(sum(k < len(e.words) for k, e in zip(n_kept, examples))),
                rationale_words_visible=float(sum(sum(e.rationale[:k]) for k, e in zip(n_kept, examples))
                                              / max(1, sum(sum(e.rationale) for e in examples))),
                reviews_without_visible_rationale=int((~rationale.any(1)).sum()),
                num_layers=model.config.num_hidden_layers, hidden_size=model.config.hidden_size,
                num_heads=model.config.num_attention_heads, model_type=model.config.model_type)
    ctx.timings["setup_s"] = round(time.perf_counter() - start, 1)
    return ctx


def method_params(cfg: Mapping, method: str) -> dict:
    """Explainer parameters of a method in this experiment (IG: steps and internal batch from the profile)."""
    params = dict(METHOD_PARAMS.get(method, {}))
    if method == "chefer":
        params["start_layer"] = int(cfg["start_layer"])
    if method == "integrated_gradients":
        params.update(steps=int(cfg["ig_steps"]), internal_batch_size=int(cfg["ig_internal_batch"]))
    return params


def _cached(ctx: Context, kind: str, key_params: dict, compute):
    """compute(), memoised in `lab.cache` per classifier, reviews and `key_params` when the classifier has a stable
    id and `use_cache` is on."""
    enabled = bool(ctx.cfg.get("use_cache")) and ctx.model_id is not None
    return cache.memoize("chefer_bert", kind, compute, enabled=enabled, model=ctx.model_id,
                         reviews=cache.digest([e.uid for e in ctx.examples]), **key_params)


def explain_reviews(ctx: Context, method: str, idx, target: str = "ground truth") -> ExplanationSet:
    """The maps [n, S] (full padded width) of the reviews `idx` for their ground-truth, counterfactual or predicted
    class: one `explain_many` call in the reviews' order, memoised in `lab.cache` when `use_cache` is on."""
    idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
    if target not in TARGETS:
        raise ExperimentError(f"target must be one of {TARGETS}, got {target!r}")
    targets = {"ground truth": ctx.labels[idx], "predicted": ctx.predicted[idx]}.get(target)
    targets = ctx.counterfactual(idx) if targets is None else targets
    batch = ctx.cfg["ig_batch_size"] if method == "integrated_gradients" else ctx.cfg["batch_size"]
    with config.torch_threads():
        return explain_many(ctx.model, trim_rows(ctx.inputs, idx, trim=False), method, targets, batch_size=batch,
                            sort=False, progress=ctx.cfg["progress"], desc=f"{method} ({target})",
                            use_cache=bool(ctx.cfg["use_cache"]), key=ctx.model_id, **method_params(ctx.cfg, method))


def compute_maps(ctx: Context, methods: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """{method: scores [n, S]} explaining the ground-truth class of the "examples" subset (IG: the "ig" subset)."""
    out = {}
    for method in methods or ctx.cfg["methods"]:
        idx = ctx.subset("ig" if method == "integrated_gradients" else "examples")
        got = explain_reviews(ctx, method, idx)
        out[method] = got.scores
        ctx.timings[f"explain_{method}_s_per_review"] = round(got.total_seconds / len(idx), 2)
    return out


def _rows_for(ctx: Context, scores: torch.Tensor) -> torch.Tensor:
    """The review indices a score tensor covers (a prefix of the examples subset)."""
    return ctx.order[:scores.shape[0]]


def figure3_results(ctx: Context, maps: Mapping[str, torch.Tensor], unit: str | None = None) -> dict:
    """Fig. 3: token-F1 of each method's top-k units vs the rationale at k in cfg["ks"] (`rationales.f1_by_k`; `unit`
    default cfg["f1_unit"]): ks, unit, macro / se / micro / precision / recall {method: [K]} (macro: per-document
    mean, reported), n {method: reviews}, per_doc {method: [n, K]} (rows in review order: methods pair on prefixes)."""
    ks, unit = [int(k) for k in ctx.cfg["ks"]], unit or ctx.cfg["f1_unit"]
    if unit not in F1_UNITS:
        raise ExperimentError(f"unit must be one of {', '.join(F1_UNITS)}, got {unit!r}")
    out = {"ks": ks, "unit": unit, **{k: {} for k in ("macro", "se", "micro", "precision", "recall", "n", "per_doc")}}
    for method, scores in maps.items():
        idx = _rows_for(ctx, scores)
        f1 = rationales.f1_by_k(scores, ctx.rationale[idx], ctx.valid[idx], ks, special_mask=ctx.special[idx],
                                words=ctx.words[idx] if unit == "word" else None)
        for key, value in {**f1, "n": len(idx)}.items():
            out[key][method] = value
    return out


def faithfulness_results(ctx: Context, maps: Mapping[str, torch.Tensor]) -> dict:
    """ERASER comprehensiveness (higher better) and sufficiency (lower better) of each method's ground-truth-class
    map on the "faithfulness" subset: AOPC over cfg["bins"], top-k % word pieces deleted / kept; memoised per
    classifier, reviews and map (the seconds are those of the run that computed it)."""
    rows, curves, bins = {}, {}, [float(b) for b in ctx.cfg["bins"]]
    n = len(ctx.subset("faithfulness"))
    for method, scores in maps.items():
        m = min(n, scores.shape[0])
        idx = _rows_for(ctx, scores)[:m]
        width = max(int(ctx.valid[idx].sum(1).max()), 1)

        def compute(idx=idx, s=scores[:m, :width], width=width):
            t0 = time.perf_counter()
            with config.torch_threads():
                r = comprehensiveness_sufficiency(ctx.model, trim_rows(ctx.inputs, idx), s, bins=ctx.cfg["bins"],
                                                  label="gold", labels=ctx.labels[idx],
                                                  special_mask=ctx.special[idx][:, :width], mode="delete",
                                                  batch_size=ctx.cfg["perturb_batch"], progress=ctx.cfg["progress"])
            return {**r, "seconds": time.perf_counter() - t0}

        r = _cached(ctx, f"faithfulness-{method}", {"rows": idx.tolist(), "scores": cache.digest(scores[:m, :width]),
                                                    "bins": bins, "max_length": ctx.cfg["max_length"]}, compute)
        ctx.timings[f"faithfulness_{method}_s_per_review"] = round(r["seconds"] / m, 2)
        rows[method] = {"comprehensiveness": r["comprehensiveness_mean"], "sufficiency": r["sufficiency_mean"],
                        "n": m}
        curves[method] = {"comprehensiveness": r["comp_curve"].tolist(), "sufficiency": r["suff_curve"].tolist()}
    return {"rows": rows, "curves": curves, "bins": bins}


def support_verdict(top_overlap: float, median_rho: float, cf_constant_fraction: float = 0.0,
                    overlap_below: float = 0.5, mirror_below: float = -0.2) -> str:
    """Our criterion for the supplement's "support for both classes": 'degenerate' (the counterfactual map is
    constant in most reviews), 'same map' (mean top-k overlap >= overlap_below), 'sign reversal' (different tokens,
    median ρ <= mirror_below) or 'both classes' (different tokens, not each other's reverse)."""
    if cf_constant_fraction > 0.5 or not np.isfinite(median_rho):
        return "degenerate"
    if top_overlap >= overlap_below:
        return "same map"
    return "sign reversal" if median_rho <= mirror_below else "both classes"


def class_support(ctx: Context, maps: Mapping[str, torch.Tensor], methods: Sequence[str] | None = None) -> dict:
    """Explain the counterfactual class of the "class_support" reviews and compare with the ground-truth map: rows
    {method: median_rho, mean_rho, top_overlap, cf_constant_fraction, verdict, n}, maps (the counterfactual ones)
    and per_review {method: `pair_agreement` arrays} (what the claims' intervals resample)."""
    idx = ctx.subset("class_support")
    rows, cf_maps, per_review = {}, {}, {}
    for method in [m for m in (methods or ctx.cfg["pair_methods"]) if m in maps]:
        m = min(len(idx), maps[method].shape[0])
        got = explain_reviews(ctx, method, idx[:m], "counterfactual")
        cf_maps[method] = got.scores
        ctx.timings[f"explain_{method}_counterfactual_s_per_review"] = round(got.total_seconds / m, 2)
        a = pair_agreement(maps[method][:m], got.scores, ctx.valid[idx[:m]] & ~ctx.special[idx[:m]],
                           ctx.cfg["support_top"])
        median = float(np.nanmedian(a["rho"])) if np.isfinite(a["rho"]).any() else float("nan")
        row = {"median_rho": median, "mean_rho": float(np.nanmean(a["rho"])) if np.isfinite(median) else None,
               "top_overlap": float(a["overlap"].mean()), "cf_constant_fraction": float(a["cf_constant"].mean()),
               "n": m}
        row["verdict"] = support_verdict(row["top_overlap"], median, row["cf_constant_fraction"],
                                         ctx.cfg["overlap_below"], ctx.cfg["mirror_below"])
        rows[method], per_review[method] = row, a
    return {"rows": rows, "maps": cf_maps, "per_review": per_review}


def special_token_mass(ctx: Context, maps: Mapping[str, torch.Tensor]) -> dict:
    """Mean share of each map's positive mass on [SEP] and on [CLS], and how often [SEP] is the top token other
    than [CLS] (supplement: "rollout focuses mostly on [SEP]"); sep_top {method: [n] bool} per review."""
    rows, sep_tops = {}, {}
    for method, scores in maps.items():
        idx = _rows_for(ctx, scores)
        mass = rationales.special_token_mass(scores, ctx.valid[idx], ctx.special[idx])
        rows[method] = {k: float(mass[k].mean()) for k in ("sep_share", "cls_share", "sep_share_without_cls",
                                                            "uniform_share")}
        rows[method]["sep_top_fraction"] = float(mass["sep_top"].double().mean())
        sep_tops[method] = mass["sep_top"].numpy()
    return {"rows": rows, "sep_top": sep_tops}


# ---- what the review figures and the widget show (drawn by lab.viz.chefer_bert) ----------------------------


def category(ctx: Context, i: int) -> str:
    return f"{ctx.label_names[ctx.examples[i].label]} {'correct' if bool(ctx.correct[i]) else 'mistaken'}"


def review_index(ctx: Context) -> list[dict]:
    """Per review: index, uid, category ("NEG mistaken"), number of tokens and whether a rationale is visible."""
    return [{"index": i, "uid": e.uid, "category": category(ctx, i), "tokens": int(ctx.valid[i].sum()),
             "rationale": bool(ctx.rationale[i].any())} for i, e in enumerate(ctx.examples)]


def review_view(ctx: Context, i: int) -> dict:
    """Review i as the panels show it ([CLS] hidden, [SEP] shown): uid, category, tokens, rationale, class names of
    the ground truth / prediction / counterfactual and p(prediction)."""
    if i is None or not 0 <= int(i) < len(ctx.examples):
        raise ExperimentError(f"pick a review: an index in 0..{len(ctx.examples) - 1}, got {i}")
    n, i = int(ctx.valid[i].sum()), int(i)
    pred, names = int(ctx.predicted[i]), ctx.label_names
    return {"uid": ctx.examples[i].uid, "category": category(ctx, i), "rationale": ctx.rationale[i, 1:n].float(),
            "tokens": ctx.tokenizer.convert_ids_to_tokens(ctx.inputs["input_ids"][i, 1:n].tolist()),
            "gold": names[int(ctx.labels[i])], "predicted": names[pred], "p": float(ctx.logits[i].softmax(-1)[pred]),
            "counterfactual": names[int(ctx.counterfactual(torch.tensor([i]))[0])]}


def review_map(ctx: Context, i: int, method: str, target: str = "ground truth", k: int | None = None) -> dict:
    """One method's map of review i without [CLS] for a target (a TARGETS entry or a class name): method, target
    (None for a class-agnostic method, which explains the ground truth), class name, scores and, with `k`, its
    top-k mask and token-F1@k (`token_f1_at_k`)."""
    if target not in TARGETS and target not in ctx.label_names:
        raise ExperimentError(f"target must be one of {list(TARGETS) + list(ctx.label_names)}, got {target!r}")
    idx = torch.tensor([int(i)])
    if target in ctx.label_names:
        cls = ctx.label_names.index(target)
        target = "ground truth" if cls == int(ctx.labels[i]) else "counterfactual"
        if target == "counterfactual" and cls != int(ctx.counterfactual(idx)[0]):
            raise ExperimentError("with more than two classes pick 'counterfactual' or the ground-truth class")
    specific = lab.EXPLAINERS[method].class_specific
    got = explain_reviews(ctx, method, idx, target if specific else "ground truth")
    n, content = int(ctx.valid[i].sum()), ctx.valid[idx] & ~ctx.special[idx]
    out = {"method": method, "target": target if specific else None, "scores": got.scores[0, 1:n],
           "class": ctx.label_names[int(got.targets[0])]}
    if k is not None:
        out["f1"] = token_f1_at_k(got.scores, ctx.rationale[idx], ctx.valid[idx], int(k), special_mask=ctx.special[idx])
        out["top_k"] = top_k_mask(got.scores, special_mask=~content, k=int(k)).float()[0, 1:n]
    return out
