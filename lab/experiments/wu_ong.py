"""Notebook 04: Wu & Ong (2021), "On Explaining Your Explanations of BERT" (Figs. 1-3, Tables 1-2, appendix tables).

Four attribution methods on BERT-style sentiment classifiers, compared by

- a deletion test (Fig. 1): accuracy of the initially correct test examples as their most relevant words are removed;
- robustness to initialisation (Table 1): Pearson correlation of word relevance between two fine-tunes (seeds);
- consistency across datasets (Fig. 3): Pearson correlation of per-word mean relevance on the shared vocabulary;
- top/bottom words by mean relevance (Table 2; Tables 4-6 in the appendix).

Methods (`METHODS`), as in the paper's Sec. 3 and footnote 1 (word score = sum of its WordPiece scores). Where the
text and the authors' code (frankaging/BERT-LRP) differ, the code's reading is the default and the text's (or the
workbook's earlier) reading is computed beside it:

- GS  = `saliency` of the logit, squared L2 norm over embedding dims (their code; Eq. 1); beside it GS-L2 = the L2
  norm of the gradient of the class probability (the workbook's earlier reading of Eq. 1);
- GI  = `grad_x_input` (variant "l2") of f_c(x) (Eq. 2);
- LRP = `lrp_wu_ong` reading "code" (their `backward_lrp`, R^(0) = the logit); beside it LRP-paper = reading "paper"
  (alpha = 1, beta = 0, normalised add and matmul: conserves relevance, R^(0) = f_c(x)); token score = sum_d |R_d|;
  the readings are documented in `lab.explainers.relevance.WU_ONG_READINGS`;
- LAT = `lat` with heads summed, unit relevance at [CLS], no residual (Eq. 10);
- Random = uniform random word order (deletion test only).

Choices the paper leaves open, stated here: relevance for Tables 1-2 and Fig. 3 is for the "class of interest" (very
positive / positive); the deletion test explains the gold (= predicted, since only correct examples are kept) class;
deletion modes (`DELETION_MODES`): "pad" replaces a word's pieces by [PAD] and keeps them attended (their code,
the default), "delete" removes them (the sequence gets shorter), "replace" substitutes [MASK]. Table 1: the
authors' aggregation (Pearson r over WordPieces of the vocabulary-level means of per-sentence normalised |R|, see
`SENTENCE_NORMS`) beside the mean over test examples of the per-example Pearson r over words (and the pooled r).
Fig. 3 correlates per-word means of per-sentence normalised |R| (raw means beside: their scale varies by orders of
magnitude between examples). Here: settings, models, relevance and the deletion test; Tables 1-2 and Fig. 3 in
`lab.experiments.wu_ong_words`; paper values, tables and claims in `wu_ong_results`; figures and the generated text in
`lab.viz.wu_ong`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np
import torch

import lab
from lab import cache
from lab.config import torch_threads
from lab.experiments import ExperimentError, ExperimentSettings
from lab.explainers.batch import ExplanationSet, explain_many
from lab.metrics.perturbation import deletion_curve, merge_wordpieces, replace_top_k, word_groups

NOTEBOOK = "04_wu_ong"
DATASETS = ("sst5", "sst2", "yelp", "imdb")
# (explainer, parameters) per method of the paper
METHODS: dict[str, tuple[str, dict]] = {
    "GS": ("saliency", {"gradient_of": "logit", "norm": "squared_l2"}),
    "GI": ("grad_x_input", {"variant": "l2", "gradient_of": "probability"}),
    "LRP": ("lrp_wu_ong", {"reading": "code"}),
    "LAT": ("lat", {"heads": "sum", "start": "cls"}),
    "GS-L2": ("saliency", {"gradient_of": "probability"}),
    "LRP-paper": ("lrp_wu_ong", {"reading": "paper"}),
}
PAPER_METHOD = {"GS-L2": "GS", "LRP-paper": "LRP"}  # readings shown beside the authors': the paper's row they share
LRP_READINGS = ("code", "paper", "naive")  # conservation is reported for each (`lrp_wu_ong` readings)
RANDOM = "Random"
RANDOM_METHOD = ("random", {"seed": 0})
CLASS_OF_INTEREST = {"sst5": "very positive", "sst2": "positive", "yelp": "positive", "imdb": "positive"}
DELETION_MODES = ("pad", "delete", "replace")  # [PAD] kept attended (authors) | removal | [MASK]
# Per-sentence normalisation of |R| before vocabulary means. "max" (|R| / max |R|) is the active line of the authors'
# `load_attribution_scores` (lrp_visualize.ipynb; softmax is commented out there); "softmax" of |R| << 1 is ~1/n per
# token, so its vocabulary means follow sentence length rather than relevance (tests/test_wu_ong.py shows it).
SENTENCE_NORMS = ("max", "softmax", "l1")

# ---- models ------------------------------------------------------------------------------------------------
_PINNED = {"freeze_layers": 0, "freeze_embeddings": False, "warmup": 0.1, "weight_decay": 0.01}
# The classifiers of Figs. 1 and 3 and Table 2 (default profile). sst2/yelp/imdb are the workbook's cached
# fine-tunes (the same recipes as notebook 03); SST-5 has no earlier model, it is the seed-0 model of its pair.
MAIN_OVERRIDES: dict[str, dict[str, Any] | None] = {
    "sst5": None,  # -> PAIR_OVERRIDES["sst5"], seed 0
    "sst2": {},  # the SST-2 preset as is
    "yelp": {**_PINNED, "lr": 5e-5, "train_split": "dev", "eval_split": "test", "train_size": 8000,
             "eval_size": 2000, "max_length": 64, "epochs": 1, "batch_size": 32},
    "imdb": {**_PINNED, "lr": 5e-5, "train_split": "dev", "eval_split": "test", "train_size": 3000,
             "eval_size": 1000, "max_length": 128, "epochs": 1, "batch_size": 16},
}
# Table 1: two fine-tunes per dataset that differ only in the seed (classifier-head initialisation and data
# order), with a cheaper recipe than the paper's (3 epochs on the full data) so that both fit on 2 CPU cores.
_PAIR = {**_PINNED, "epochs": 1, "lr": 1e-4, "batch_size": 32}
PAIR_OVERRIDES: dict[str, dict[str, Any]] = {
    "sst5": {**_PAIR, "train_split": "train", "train_size": 4000, "eval_split": "test", "eval_size": None,
             "max_length": 64},
    "sst2": {**_PAIR, "train_split": "train", "train_size": 2000, "eval_split": "dev", "eval_size": None,
             "max_length": 64},
    "yelp": {**_PAIR, "train_split": "dev", "train_size": 2000, "eval_split": "test", "eval_size": 2000,
             "max_length": 64},
    "imdb": {**_PAIR, "train_split": "dev", "train_size": 1000, "eval_split": "test", "eval_size": 1000,
             "max_length": 128, "train_max_length": 64, "batch_size": 16},
}
SMOKE_OVERRIDES = {"train_size": 16, "eval_size": 16, "max_length": 32}
TEST_SPLIT = {"sst5": "test", "sst2": "dev", "yelp": "test", "imdb": "test"}  # sst2 "dev" = the GLUE dev set


# per dataset: (deletion examples, seed-pair examples, vocabulary examples); IMDB reviews are ~5x longer.
# default: sized to fit ~45 min with training on 2 shared CPU cores (measured: see the notebook)
_SIZES = {"default": {"sst5": (60, 60, 600), "sst2": (60, 60, 300), "yelp": (60, 60, 300), "imdb": (30, 30, 90)},
          "paper": {"sst5": (1000, 1000, 2000), "sst2": (1000, 1000, 2000), "yelp": (1000, 1000, 2000),
                    "imdb": (500, 500, 1000)}}


def _sized(profile: str) -> dict:
    sizes = _SIZES[profile]
    return {"model_profile": "default", "max_words": 10, "n_deletion": {d: sizes[d][0] for d in DATASETS},
            "n_seed": {d: sizes[d][1] for d in DATASETS}, "n_words": {d: sizes[d][2] for d in DATASETS},
            "min_count": 5, "shared_min_count": 3, "max_length": None, "batch_size": 32, "progress": True}


PROFILES = {"smoke": {"model_profile": "smoke", "n_deletion": 4, "max_words": 2, "n_seed": 4, "n_words": 8,
                      "min_count": 1, "shared_min_count": 1, "max_length": 24, "batch_size": 16, "progress": False},
            "default": _sized("default"), "paper": _sized("paper")}
COMMON = {"datasets": DATASETS, "scale": 1.0, "deletion_modes": ("pad", "delete"), "sentence_norm": "max",
          "seeds": [0, 1]}


def _check(cfg: dict) -> None:
    """Checks `datasets`, `deletion_modes` and `scale`, then derives: smoke keeps the first two datasets (and one
    seed pair), `deletion_mode` is the first mode (it decides the claims), `scale` multiplies every sample size
    (at least 4 examples are kept)."""
    datasets = list(cfg["datasets"])
    if not datasets or any(d not in DATASETS for d in datasets):
        raise ExperimentError(f"datasets must be a non-empty subset of {', '.join(DATASETS)}, got {datasets}")
    modes = cfg["deletion_modes"]
    modes = [modes] if isinstance(modes, str) else list(modes)
    if not modes or any(m not in DELETION_MODES for m in modes):
        raise ExperimentError(f"deletion_modes must be a non-empty list of {DELETION_MODES}, got {modes!r}")
    if not 0 < float(cfg["scale"]) <= 10:
        raise ExperimentError(f"scale must be in (0, 10], got {cfg['scale']}")
    smoke = cfg["profile"] == "smoke"
    datasets = datasets[:2] if smoke else datasets
    cfg.update(datasets=datasets, seed_datasets=datasets[:1] if smoke else list(datasets), scale=float(cfg["scale"]),
               deletion_modes=modes, deletion_mode=modes[0])
    for key in ("n_deletion", "n_seed", "n_words"):
        v = cfg[key]
        cfg[key] = ({d: max(4, round(n * cfg["scale"])) for d, n in v.items()} if isinstance(v, Mapping)
                    else max(4, round(v * cfg["scale"])))


# settings(profile, datasets=..., scale=..., deletion_modes=..., sentence_norm=...) -> the run's sizes
settings = ExperimentSettings(PROFILES, COMMON, choices={"sentence_norm": SENTENCE_NORMS}, check=_check)


def _per_dataset(value, dataset: str):
    return value[dataset] if isinstance(value, Mapping) else value


def model_recipe(dataset: str, cfg: Mapping, role: str = "main", seed: int = 0) -> tuple[str, dict]:
    """(preset profile, overrides) of the classifier of `dataset` for `role` "main" or "pair" (Table 1)."""
    if dataset not in DATASETS:
        raise ExperimentError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if role not in ("main", "pair"):
        raise ExperimentError(f"role must be 'main' or 'pair', got {role!r}")
    if cfg["model_profile"] == "smoke":
        return "smoke", dict(SMOKE_OVERRIDES)
    main = MAIN_OVERRIDES[dataset]
    if role == "pair" or main is None:
        return "default", dict(PAIR_OVERRIDES[dataset])
    return "default", dict(main)


def load_model(dataset: str, cfg: Mapping, role: str = "main", seed: int = 0):
    """The fine-tuned classifier (`lab.models.training.FineTuned`), trained and cached on first use."""
    from lab.models.training import fine_tune_preset

    profile, overrides = model_recipe(dataset, cfg, role, seed)
    with torch_threads():
        ft = fine_tune_preset(dataset, profile, seed=seed, **overrides)
    ft.model.eval()
    return ft


def model_info(ft) -> dict:
    """What the results file records about one classifier."""
    keys = ("eval_accuracy", "eval_split", "n_eval", "n_train", "train_seconds", "hparams", "model", "seed")
    return {**{k: ft.metrics.get(k) for k in keys}, "checkpoint": str(ft.path)}


# ---- data --------------------------------------------------------------------------------------------------
def test_texts(dataset: str, n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """(texts, gold labels) of `n` test examples drawn at random with `seed` (all when n exceeds the split)."""
    from lab.data import load

    data = load(dataset, TEST_SPLIT[dataset])
    data = data.subset(min(int(n), len(data)), seed=seed)
    return [e.text for e in data], [int(e.label) for e in data]


def class_index(ft, dataset: str) -> int:
    """Index of the class of interest ("very positive" / "positive") in the classifier's labels."""
    names = list(ft.label_names or ())
    wanted = CLASS_OF_INTEREST[dataset]
    if wanted in names:
        return names.index(wanted)
    return ft.model.config.num_labels - 1  # label names unknown: the last class is the most positive


def model_max_length(ft, cfg: Mapping) -> int:
    """Tokens read per example: the profile's cap, else the length the classifier was trained to read."""
    if cfg.get("max_length"):
        return int(cfg["max_length"])
    return int((ft.metrics.get("hparams") or {}).get("max_length", 128))


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> dict:
    """Padded model inputs for `texts` (truncated to `max_length` tokens)."""
    if not texts:
        raise ExperimentError("no texts to explain")
    return dict(tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"))


# ---- relevance: one `ExplanationSet` per method (`explain_many`) -------------------------------------------
def _memo(model_key: str | None, prefix: str, compute, **key):
    """compute(), memoised in `lab.cache` under the classifier's weights (`model_key`, None: not memoised), `key`
    and the code."""
    return cache.memoize("wu_ong", prefix, compute, enabled=model_key is not None, model=model_key, **key)


def _model_key(ft) -> str | None:
    """Digest of a cached classifier's weights (None for an in-memory model: nothing is memoised for it)."""
    return None if ft.path is None else cache.digest(ft.model)


def explain_set(ft, inputs: Mapping, method: str, target=None, batch_size: int = 32,
                progress: bool = False) -> ExplanationSet:
    """Token relevance of `method` (a key of METHODS, or RANDOM) for every row of `inputs` (`explain_many`, memoised
    for a cached classifier); target: class index per example / one for all / None (predicted). The batches hold
    rows sorted by length, shortest first (the order every earlier run used, so no number moved)."""
    if method != RANDOM and method not in METHODS:
        raise ExperimentError(f"method must be one of {', '.join([*METHODS, RANDOM])}, got {method!r}")
    explainer, params = METHODS.get(method, RANDOM_METHOD)
    n = int(inputs["input_ids"].shape[0])
    order = torch.argsort(inputs["attention_mask"].sum(1), stable=True)
    targets = None if target is None else torch.as_tensor(target, dtype=torch.long).reshape(-1).expand(n)[order]
    with torch_threads():
        es = explain_many(ft.model, {k: v[order] for k, v in inputs.items()}, explainer, targets, sort=False,
                          batch_size=batch_size, progress=progress, desc=method, tokenizer=ft.tokenizer,
                          use_cache=ft.path is not None, key=_model_key(ft), **params)
    back = torch.argsort(order)
    rows = {k: getattr(es, k)[back] for k in ("scores", "targets", "logits", "valid", "special", "input_ids")}
    return replace(es, **rows, tokens=[es.tokens[i] for i in back.tolist()],
                   deltas=None if es.deltas is None else es.deltas[back])


def normalised(es: ExplanationSet, i: int, norm: str | None = None) -> torch.Tensor:
    """Token scores [S] of example i (float64); with `norm` (SENTENCE_NORMS), |R| normalised over the example's
    tokens ([CLS]/[SEP] included, padding excluded, as the authors' `tokens[:seq_len]`), 0 on padding."""
    scores = es.scores[i].double()
    if norm is None:
        return scores
    valid = es.valid[i]
    a = scores.abs().masked_fill(~valid, 0.0)
    if norm == "softmax":
        out = torch.softmax(a.masked_fill(~valid, float("-inf")), -1)
    elif norm == "max":
        out = a / a.max() if a.max() > 0 else a
    elif norm == "l1":
        out = a / a.sum() if a.sum() > 0 else a
    else:
        raise ExperimentError(f"sentence norm must be one of {SENTENCE_NORMS}, got {norm!r}")
    return out.masked_fill(~valid, 0.0)


def words(es: ExplanationSet, i: int, norm: str | None = None) -> tuple[list[str], np.ndarray]:
    """(words, word scores) of example i: WordPiece scores (normalised per sentence with `norm`) summed per word,
    special tokens dropped."""
    n = len(es.tokens[i])
    return merge_wordpieces(es.tokens[i], normalised(es, i, norm)[:n], reduce="sum", special=es.special[i, :n].tolist())


def lrp_conservation(ft, dataset: str, cfg: Mapping, n: int = 8, seed: int = 0) -> dict:
    """How far each LRP reading (`LRP_READINGS`) is from conserving relevance on `n` test examples of `dataset`:
    {reading: {"median_abs_delta", "max_abs_delta", "median_rel_delta", "n"}} of |sum R - R^(0)| (R^(0) = f_c(x):
    the logit for the code reading, the probability otherwise) and of that over |R^(0)|; 0 = conserved."""
    texts, _ = test_texts(dataset, n, seed)
    inputs = tokenize(ft.tokenizer, texts, model_max_length(ft, cfg))
    out = {}
    for reading in LRP_READINGS:
        with torch_threads():
            exp = lab.explain(ft.model, inputs, "lrp_wu_ong", target=class_index(ft, dataset), reading=reading)
        delta = exp.delta.detach().abs().double().cpu().numpy()
        start = exp.logits if exp.params["start"] == "logit" else exp.probabilities
        r0 = start.detach().double().cpu().gather(1, exp.target.cpu()[:, None]).reshape(-1).abs().numpy()
        out[reading] = {"median_abs_delta": float(np.median(delta)), "max_abs_delta": float(np.max(delta)),
                        "median_rel_delta": float(np.median(delta / np.maximum(r0, 1e-12))), "n": len(texts)}
    return out


# ---- Fig. 1: deletion test ---------------------------------------------------------------------------------
@dataclass
class DeletionSet:
    """One dataset's deletion test: the model, the examples, their relevance and the accuracy curves."""

    dataset: str
    fine_tuned: Any
    texts: list[str]
    labels: list[int]
    inputs: dict
    relevance: dict  # method -> ExplanationSet (target: gold class)
    curves: dict = field(default_factory=dict)  # method -> deletion_curve output
    mode: str = "delete"

    @property
    def groups(self) -> torch.Tensor:
        any_rel = next(iter(self.relevance.values()))
        return word_groups(any_rel.tokens, any_rel.special)


def deletion_set(dataset: str, ft, cfg: Mapping, seed: int = 0) -> DeletionSet:
    """Explain `n_deletion` test examples of `dataset` (gold class as target) with every method + Random."""
    texts, labels = test_texts(dataset, _per_dataset(cfg["n_deletion"], dataset), seed)
    inputs = tokenize(ft.tokenizer, texts, model_max_length(ft, cfg))
    relevance = {m: explain_set(ft, inputs, m, labels, cfg["batch_size"], cfg["progress"]) for m in [*METHODS, RANDOM]}
    return DeletionSet(dataset, ft, texts, labels, inputs, relevance, mode=cfg["deletion_mode"])


def in_mode(ds: DeletionSet, mode: str) -> DeletionSet:
    """The same examples and relevance for a deletion run in another mode (curves not yet computed)."""
    if mode not in DELETION_MODES:
        raise ExperimentError(f"deletion_mode must be one of {DELETION_MODES}, got {mode!r}")
    return replace(ds, curves={}, mode=mode)


def _deletion_token(ds: DeletionSet) -> tuple[str, int | None]:
    """(deletion_curve mode, token id) of the set's DELETION_MODES entry."""
    tokenizer = ds.fine_tuned.tokenizer
    return {"pad": ("replace", tokenizer.pad_token_id or 0), "replace": ("replace", tokenizer.mask_token_id)}.get(
        ds.mode, ("delete", None))


def run_deletion(ds: DeletionSet, max_words: int, progress: bool = False) -> DeletionSet:
    """Fig. 1: accuracy vs the number of words removed (most relevant first) for every method, in `ds.mode`."""
    groups, model_key = ds.groups, _model_key(ds.fine_tuned)
    curve_mode, token_id = _deletion_token(ds)
    for method, es in ds.relevance.items():
        def compute(es=es):
            with torch_threads():
                return deletion_curve(ds.fine_tuned.model, ds.inputs, es.scores.double(), ds.labels, max_words,
                                      mode=curve_mode, special_mask=es.special, groups=groups, token_id=token_id,
                                      progress=progress)
        ds.curves[method] = _memo(model_key, f"del-{method}", compute, inputs=cache.digest(ds.inputs),
                                  scores=cache.digest(es.scores), labels=list(ds.labels), mode=ds.mode,
                                  max_words=int(max_words))
    return ds


def deletion_summary(ds: DeletionSet) -> dict:
    """{method: {"auc": mean accuracy over 0..max_words, "acc@k": accuracy after k words}} for one dataset."""
    out = {}
    for method, curve in ds.curves.items():
        acc = curve["accuracy"].numpy()
        out[method] = {"auc": float(np.mean(acc)), **{f"acc@{k}": float(acc[k]) for k in (1, 3, 5, 10) if k < len(acc)}}
    return out


def per_example_auc(ds: DeletionSet) -> dict[str, np.ndarray]:
    """{method: [M] each initially-correct example's mean correctness over 0..max_words}; the examples are the same
    for every method (those the model classifies correctly before deletion), so methods pair row by row."""
    return {m: c["correct"].double().mean(1).numpy() for m, c in ds.curves.items()}


def perturbed_example(ds: DeletionSet, method: str, index: int, n_words: int) -> dict:
    """Example `index` of a deletion set with its `n_words` most relevant words (by `method`) removed in `ds.mode`:
    {"words", "scores", "removed" (bool per word), "remaining" text, "probs_before"/"probs_after", "label",
    "label_names", "index"}."""
    if method not in ds.relevance:
        raise ExperimentError(f"method must be one of {', '.join(ds.relevance)}, got {method!r}")
    if not 0 <= int(index) < len(ds.texts):
        raise ExperimentError(f"sentence index must be in 0..{len(ds.texts) - 1}, got {index}")
    es, i = ds.relevance[method], int(index)
    row = {k: v[i:i + 1] for k, v in ds.inputs.items()}
    ws, scores = words(es, i)
    n_words = max(0, min(int(n_words), len(ws)))
    curve_mode, token_id = _deletion_token(ds)
    out = replace_top_k(row["input_ids"], row["attention_mask"], es.scores[i:i + 1].double(), es.special[i:i + 1],
                        k=n_words, mode=curve_mode, groups=ds.groups[i:i + 1], token_type_ids=row.get("token_type_ids"),
                        token_id=token_id or 0, pad_id=ds.fine_tuned.tokenizer.pad_token_id or 0)
    removed = np.zeros(len(ws), dtype=bool)
    removed[sorted(range(len(ws)), key=lambda w: (-scores[w], w))[:n_words]] = True
    with torch.no_grad():
        probs = ds.fine_tuned.model(**out).logits.softmax(-1)[0].double()
    shown = {"replace": "[MASK]", "pad": "[PAD]"}.get(ds.mode, "")
    remaining = " ".join(w if not r else shown for w, r in zip(ws, removed))
    return {"words": ws, "scores": scores, "removed": removed, "remaining": " ".join(remaining.split()),
            "probs_before": es.probabilities[i].double().numpy(), "probs_after": probs.numpy(),
            "label": ds.labels[i], "label_names": ds.fine_tuned.label_names or tuple(range(len(probs))), "index": i}


def perturber(sets: Mapping[str, DeletionSet]):
    """The widget's data: (dataset, method, sentence, n_words) -> `perturbed_example` (sentence clipped)."""
    def perturb(dataset: str, method: str, sentence: int, n_words: int) -> dict:
        if dataset not in sets:
            raise ExperimentError(f"dataset must be one of {', '.join(sets)}, got {dataset!r}")
        return perturbed_example(sets[dataset], method, min(int(sentence), len(sets[dataset].texts) - 1), n_words)
    return perturb


def example_panels(ds: DeletionSet, index: int = 0) -> dict:
    """Fig. 2 data: {method: {"words", "scores", "target" (label name), "p" (its probability)}} of one example."""
    names = ds.fine_tuned.label_names or ()
    out = {}
    for method, es in ds.relevance.items():
        ws, scores = words(es, index)
        tgt = int(es.targets[index])
        out[method] = {"words": ws, "scores": scores, "target": names[tgt] if tgt < len(names) else tgt,
                       "p": float(es.probabilities[index, tgt])}
    return out
