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
magnitude between examples).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np
import torch

import lab
from lab import cache
from lab.metrics.perturbation import deletion_curve, merge_wordpieces, replace_top_k, word_groups
from lab.results import Results
from lab.stats import Interval, StatsInputError, bootstrap, combine, decide, paired_difference, unpaired_difference

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
CLASS_OF_INTEREST = {"sst5": "very positive", "sst2": "positive", "yelp": "positive", "imdb": "positive"}
DELETION_MODES = ("pad", "delete", "replace")  # [PAD] kept attended (authors) | removal | [MASK]
# Per-sentence normalisation of |R| before vocabulary means. "max" (|R| / max |R|) is the active line of the authors'
# `load_attribution_scores` (lrp_visualize.ipynb; softmax is commented out there); "softmax" of |R| << 1 is ~1/n per
# token, so its vocabulary means follow sentence length rather than relevance (tests/test_wu_ong.py shows it).
SENTENCE_NORMS = ("max", "softmax", "l1")
CACHE_VERSION = 2

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


class WuOngInputError(ValueError):
    """A bad parameter of notebook 04 (one-line message)."""


def settings(profile: str, datasets: Sequence[str] | None = None, scale: float = 1.0,
             deletion_modes: Sequence[str] = ("pad", "delete"), sentence_norm: str = "max") -> dict:
    """Sizes of the run for `profile` (smoke | default | paper); `scale` multiplies every sample size (e.g. 0.2 on a
    busy machine; at least 4 examples are kept); `datasets` picks a subset of DATASETS (smoke: the first two);
    `deletion_modes`: DELETION_MODES to run, the first decides the claims; `sentence_norm`: one of SENTENCE_NORMS
    (Table 1's authors' aggregation and Fig. 3)."""
    if profile not in ("smoke", "default", "paper"):
        raise WuOngInputError(f"profile must be smoke, default or paper, got {profile!r}")
    datasets = list(DATASETS if datasets is None else datasets)
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown or not datasets:
        raise WuOngInputError(f"datasets must be a non-empty subset of {', '.join(DATASETS)}, got {datasets}")
    deletion_modes = [deletion_modes] if isinstance(deletion_modes, str) else list(deletion_modes)
    if not deletion_modes or any(m not in DELETION_MODES for m in deletion_modes):
        raise WuOngInputError(f"deletion_modes must be a non-empty list of {DELETION_MODES}, got {deletion_modes!r}")
    if sentence_norm not in SENTENCE_NORMS:
        raise WuOngInputError(f"sentence_norm must be one of {SENTENCE_NORMS}, got {sentence_norm!r}")
    if not 0 < float(scale) <= 10:
        raise WuOngInputError(f"scale must be in (0, 10], got {scale}")
    if profile == "smoke":
        datasets = datasets[:2]
        cfg = {"model_profile": "smoke", "seed_datasets": datasets[:1], "n_deletion": 4, "max_words": 2,
               "n_seed": 4, "n_words": 8, "min_count": 1, "shared_min_count": 1, "max_length": 24,
               "batch_size": 16, "progress": False}
    else:
        # per dataset: (deletion examples, seed-pair examples, vocabulary examples); IMDB reviews are ~5x longer
        # default: sized to fit ~45 min with training on 2 shared CPU cores (measured: see the notebook)
        sizes = {"default": {"sst5": (60, 60, 600), "sst2": (60, 60, 300), "yelp": (60, 60, 300),
                             "imdb": (30, 30, 90)},
                 "paper": {"sst5": (1000, 1000, 2000), "sst2": (1000, 1000, 2000), "yelp": (1000, 1000, 2000),
                           "imdb": (500, 500, 1000)}}[profile]
        cfg = {"model_profile": "default", "seed_datasets": list(datasets), "max_words": 10,
               "n_deletion": {d: sizes[d][0] for d in DATASETS}, "n_seed": {d: sizes[d][1] for d in DATASETS},
               "n_words": {d: sizes[d][2] for d in DATASETS}, "min_count": 5, "shared_min_count": 3,
               "max_length": None, "batch_size": 32, "progress": True}
    for key in ("n_deletion", "n_seed", "n_words"):
        value = cfg[key]
        cfg[key] = ({d: max(4, round(v * scale)) for d, v in value.items()} if isinstance(value, Mapping)
                    else max(4, round(value * scale)))
    return {"profile": profile, "datasets": datasets, "scale": float(scale), "deletion_mode": deletion_modes[0],
            "deletion_modes": deletion_modes, "sentence_norm": sentence_norm,
            "seeds": [0, 1], **cfg, "started": time.time()}


def _per_dataset(value, dataset: str):
    return value[dataset] if isinstance(value, Mapping) else value


def model_recipe(dataset: str, cfg: Mapping, role: str = "main", seed: int = 0) -> tuple[str, dict]:
    """(preset profile, overrides) of the classifier of `dataset` for `role` "main" or "pair" (Table 1)."""
    if dataset not in DATASETS:
        raise WuOngInputError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if role not in ("main", "pair"):
        raise WuOngInputError(f"role must be 'main' or 'pair', got {role!r}")
    if cfg["model_profile"] == "smoke":
        return "smoke", dict(SMOKE_OVERRIDES)
    main = MAIN_OVERRIDES[dataset]
    if role == "pair" or main is None:
        return "default", dict(PAIR_OVERRIDES[dataset])
    return "default", dict(main)


def load_model(dataset: str, cfg: Mapping, role: str = "main", seed: int = 0):
    """The fine-tuned classifier (`lab.models.training.FineTuned`), trained and cached on first use."""
    from lab.models.training import fine_tune_preset, torch_threads

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


# ---- relevance ---------------------------------------------------------------------------------------------
@dataclass
class Relevance:
    """Token relevance of one method on a tokenised set of examples (rows padded to one width)."""

    method: str
    scores: torch.Tensor  # [N, S] token scores (0 on padding)
    tokens: list[list[str]]
    special: torch.Tensor  # [N, S] bool: [CLS]/[SEP]/padding
    target: torch.Tensor  # [N]
    probs: torch.Tensor  # [N, C] the model's class probabilities on the intact input
    seconds: float = 0.0

    def normalised(self, i: int, norm: str | None = None) -> torch.Tensor:
        """Token scores of example i; with `norm` (SENTENCE_NORMS), |R| normalised over the example's tokens
        ([CLS]/[SEP] included, padding excluded, as the authors' `tokens[:seq_len]`), 0 on padding."""
        scores = self.scores[i]
        if norm is None:
            return scores
        valid = torch.tensor([t != "[PAD]" for t in self.tokens[i]])
        a = scores.abs().masked_fill(~valid, 0.0)
        if norm == "softmax":
            out = torch.softmax(a.masked_fill(~valid, float("-inf")), -1)
        elif norm == "max":
            out = a / a.max() if a.max() > 0 else a
        elif norm == "l1":
            out = a / a.sum() if a.sum() > 0 else a
        else:
            raise WuOngInputError(f"sentence norm must be one of {SENTENCE_NORMS}, got {norm!r}")
        return out.masked_fill(~valid, 0.0)

    def words(self, i: int, norm: str | None = None) -> tuple[list[str], np.ndarray]:
        """(words, word scores) of example i: WordPiece scores (normalised per sentence with `norm`) summed per
        word, special tokens dropped."""
        return merge_wordpieces(self.tokens[i], self.normalised(i, norm), reduce="sum",
                                special=self.special[i].tolist())


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> dict:
    """Padded model inputs for `texts` (truncated to `max_length` tokens)."""
    if not texts:
        raise WuOngInputError("no texts to explain")
    return dict(tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"))


def _target_tensor(target, n: int) -> torch.Tensor | None:
    if target is None or (isinstance(target, str) and target == "predicted"):
        return None
    t = torch.as_tensor(target).long().reshape(-1)
    return t.expand(n).clone() if t.numel() == 1 else t


def explain_method(model, tokenizer, inputs: Mapping, method: str, target=None, batch_size: int = 32,
                   progress: bool = False) -> Relevance:
    """Token relevance of `method` (a key of METHODS, or "Random") for every row of `inputs`, in batches.

    target: class index per example / one for all / None ("predicted").
    """
    if method != RANDOM and method not in METHODS:
        raise WuOngInputError(f"method must be one of {', '.join([*METHODS, RANDOM])}, got {method!r}")
    n, width = (int(x) for x in inputs["input_ids"].shape)
    targets = _target_tensor(target, n)
    explainer, params = METHODS.get(method, ("random", {"seed": 0}))
    lengths = inputs["attention_mask"].sum(1)
    order = torch.argsort(lengths, stable=True)  # batches of similar length, each trimmed to its longest row
    scores = torch.zeros(n, width, dtype=torch.float64)
    special = torch.ones(n, width, dtype=torch.bool)
    target_out = torch.zeros(n, dtype=torch.long)
    probs, tokens = None, [None] * n
    t0 = time.perf_counter()
    starts = range(0, n, int(batch_size))
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=method, unit="batch", leave=False, dynamic_ncols=True)
    for s in starts:
        idx = order[s:s + batch_size]
        w = int(lengths[idx].max())
        batch = {k: v[idx, :w] for k, v in inputs.items()}
        tgt = None if targets is None else targets[idx]
        exp = lab.explain(model, batch, explainer, target=tgt, tokenizer=tokenizer, **params)
        p = exp.probabilities.detach().double().cpu()
        sc = exp.scores.detach().double().cpu()
        if probs is None:
            probs = torch.zeros(n, p.shape[1], dtype=torch.float64)
        scores[idx, :w] = sc
        special[idx, :w] = exp.special.cpu() | ~exp.valid.cpu()
        target_out[idx] = exp.target.cpu()
        probs[idx] = p
        for j, i in enumerate(idx.tolist()):
            tokens[i] = list(exp.tokens[j]) + ["[PAD]"] * (width - w)
    return Relevance(method, scores, tokens, special, target_out, probs, seconds=time.perf_counter() - t0)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cache_file(ft, prefix: str, **key):
    """The memo entry (`lab.cache.memo_entry`: keyed by the code digest too) of a result for classifier `ft`
    (None for an uncached in-memory model)."""
    if ft.path is None:
        return None
    return cache.memo_entry("wu_ong", prefix, v=CACHE_VERSION, model=str(ft.path),
                            train=ft.metrics.get("train_seconds"), **key)


def _load(entry):
    return entry.load() if entry is not None else None


def _store(entry, obj) -> None:
    if entry is not None:
        entry.store(obj)


def cached_relevance(ft, texts: Sequence[str], method: str, target, max_length: int, batch_size: int = 32,
                     progress: bool = False) -> tuple[dict, Relevance]:
    """(inputs, Relevance) for `texts`, cached on disk under the model, texts, method, target and length."""
    inputs = tokenize(ft.tokenizer, texts, max_length)
    target_key = target if target is None or isinstance(target, (int, str)) else _digest(list(map(int, target)))
    path = _cache_file(ft, f"rel-{method}", texts=_digest(list(texts)), method=method,
                       params=METHODS.get(method, ("random", {})), target=target_key, max_length=max_length)
    data = _load(path)
    if data is not None:
        return inputs, Relevance(**data)
    from lab.models.training import torch_threads

    with torch_threads():
        rel = explain_method(ft.model, ft.tokenizer, inputs, method, target, batch_size, progress)
    _store(path, rel.__dict__)
    return inputs, rel


def lrp_conservation(ft, dataset: str, cfg: Mapping, n: int = 8, seed: int = 0) -> dict:
    """How far each LRP reading (`LRP_READINGS`) is from conserving relevance on `n` test examples of `dataset`:
    {reading: {"median_abs_delta", "max_abs_delta", "median_rel_delta", "n"}} of |sum R - R^(0)| (R^(0) = f_c(x):
    the logit for the code reading, the probability otherwise) and of that over |R^(0)|; 0 = conserved."""
    from lab.models.training import torch_threads

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
    relevance: dict  # method -> Relevance (target: gold class)
    curves: dict = field(default_factory=dict)  # method -> deletion_curve output
    mode: str = "delete"

    @property
    def groups(self) -> torch.Tensor:
        any_rel = next(iter(self.relevance.values()))
        return word_groups(any_rel.tokens, any_rel.special)


def deletion_set(dataset: str, ft, cfg: Mapping, seed: int = 0) -> DeletionSet:
    """Explain `n_deletion` test examples of `dataset` (gold class as target) with every method + Random."""
    texts, labels = test_texts(dataset, _per_dataset(cfg["n_deletion"], dataset), seed)
    max_length = model_max_length(ft, cfg)
    relevance = {}
    inputs = None
    for method in [*METHODS, RANDOM]:
        inputs, relevance[method] = cached_relevance(ft, texts, method, labels, max_length, cfg["batch_size"],
                                                     cfg["progress"])
    return DeletionSet(dataset, ft, texts, labels, inputs, relevance, mode=cfg["deletion_mode"])


def in_mode(ds: DeletionSet, mode: str) -> DeletionSet:
    """The same examples and relevance for a deletion run in another mode (curves not yet computed)."""
    return replace(ds, curves={}, mode=mode)


def _deletion_token(ds: DeletionSet, mode: str) -> tuple[str, int | None]:
    """(deletion_curve mode, token id) of a DELETION_MODES entry."""
    tokenizer = ds.fine_tuned.tokenizer
    if mode == "pad":
        return "replace", tokenizer.pad_token_id or 0
    if mode == "replace":
        return "replace", tokenizer.mask_token_id
    return "delete", None


def run_deletion(ds: DeletionSet, max_words: int, mode: str | None = None, progress: bool = False) -> DeletionSet:
    """Fig. 1: accuracy vs the number of words removed (most relevant first) for every method."""
    mode = mode or ds.mode
    if mode not in DELETION_MODES:
        raise WuOngInputError(f"deletion_mode must be one of {DELETION_MODES}, got {mode!r}")
    from lab.models.training import torch_threads

    ds.mode = mode
    groups = ds.groups
    curve_mode, token_id = _deletion_token(ds, mode)
    for method, rel in ds.relevance.items():
        path = _cache_file(ds.fine_tuned, f"del-{method}", texts=_digest(ds.texts), labels=_digest(ds.labels),
                           method=method, params=METHODS.get(method, ("random", {})), mode=mode,
                           max_words=int(max_words), width=int(ds.inputs["input_ids"].shape[1]))
        curve = _load(path)
        if curve is None:
            with torch_threads():
                curve = deletion_curve(ds.fine_tuned.model, ds.inputs, rel.scores, ds.labels, max_words, mode=curve_mode,
                                       special_mask=rel.special, groups=groups, token_id=token_id,
                                       progress=progress)
            _store(path, curve)
        ds.curves[method] = curve
    return ds


def deletion_summary(ds: DeletionSet) -> dict:
    """{method: {"auc": mean accuracy over 0..max_words, "acc@k": accuracy after k words}} for one dataset."""
    out = {}
    for method, curve in ds.curves.items():
        acc = curve["accuracy"].numpy()
        row = {"auc": float(np.mean(acc))}
        for k in (1, 3, 5, 10):
            if k < len(acc):
                row[f"acc@{k}"] = float(acc[k])
        out[method] = row
    return out


def per_example_auc(ds: DeletionSet) -> dict[str, np.ndarray]:
    """{method: [M] each initially-correct example's mean correctness over 0..max_words}; the examples are the same
    for every method (those the model classifies correctly before deletion), so methods pair row by row."""
    return {m: c["correct"].double().mean(1).numpy() for m, c in ds.curves.items()}


def deletion_figure(sets: Mapping[str, DeletionSet]):
    """Fig. 1: one panel per dataset, accuracy vs #words removed, one line per method."""
    import matplotlib.pyplot as plt

    from lab.viz import perturbation_curves

    names = list(sets)
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        ds = sets[name]
        curves = {m: c["accuracy"] for m, c in ds.curves.items()}
        x = next(iter(ds.curves.values()))["x"]
        n = next(iter(ds.curves.values()))["n_examples"]
        done = {"delete": "removed", "pad": "set to [PAD]", "replace": "set to [MASK]"}[ds.mode]
        perturbation_curves(x, curves, ax=ax, xlabel=f"# words {done}",
                            ylabel="accuracy", title=f"{name} (n={n})")
        ax.set_ylim(-0.02, 1.02)
    fig.tight_layout()
    return fig


# ---- Table 1: robustness to initialisation -----------------------------------------------------------------
def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def seed_correlation(rel_a: Relevance, rel_b: Relevance, min_words: int = 3) -> dict:
    """Pearson correlation of the word scores of two models on the same examples.

    Returns {"mean": mean over examples (with >= min_words words) of the per-example r, "pooled": r over all
    (example, word) pairs, "n": examples used, "per_example": those examples' r}.
    """
    if len(rel_a.tokens) != len(rel_b.tokens):
        raise WuOngInputError(f"the two relevance sets have {len(rel_a.tokens)} and {len(rel_b.tokens)} examples")
    per, all_a, all_b = [], [], []
    for i in range(len(rel_a.tokens)):
        wa, sa = rel_a.words(i)
        wb, sb = rel_b.words(i)
        if wa != wb:
            raise WuOngInputError(f"example {i}: the two models tokenise it differently")
        all_a.append(sa)
        all_b.append(sb)
        if len(sa) >= min_words:
            r = _pearson(sa, sb)
            if math.isfinite(r):
                per.append(r)
    pooled = _pearson(np.concatenate(all_a), np.concatenate(all_b)) if all_a else float("nan")
    return {"mean": float(np.mean(per)) if per else float("nan"), "pooled": pooled, "n": len(per),
            "per_example": per}


def wordpiece_means(rel: Relevance, norm: str) -> dict[str, tuple[float, int]]:
    """{WordPiece: (mean over its occurrences of the per-sentence `norm`-alised |R|, count)}; special tokens and
    punctuation dropped (the authors' vocabulary-level means, `load_attribution_scores`)."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for i, tokens in enumerate(rel.tokens):
        values, special = rel.normalised(i, norm).tolist(), rel.special[i].tolist()
        for t, v, sp in zip(tokens, values, special):
            if not sp and is_word(t):
                sums[t] += v
                counts[t] += 1
    return {t: (sums[t] / counts[t], counts[t]) for t in sums}


def vocabulary_seed_correlation(rel_a: Relevance, rel_b: Relevance, norm: str, min_count: int = 1) -> dict:
    """Table 1 as the authors aggregate: Pearson r over WordPieces (seen >= min_count times) of the two models'
    vocabulary-level means of per-sentence normalised |R|. {"r", "n" WordPieces, "pairs" [W, 2] means}."""
    a, b = wordpiece_means(rel_a, norm), wordpiece_means(rel_b, norm)
    shared = sorted(t for t in a if t in b and a[t][1] >= min_count)
    pairs = np.array([[a[t][0], b[t][0]] for t in shared], dtype=float).reshape(len(shared), 2)
    return {"r": _pearson(pairs[:, 0], pairs[:, 1]), "n": len(shared), "pairs": pairs}


def seed_table(dataset: str, cfg: Mapping, models: Sequence | None = None, seed: int = 0) -> dict:
    """Table 1 row of `dataset`: {method: seed_correlation(...) plus "vocabulary": vocabulary_seed_correlation(...)}
    and the two models' info under "_models"."""
    if models is None:
        models = [load_model(dataset, cfg, "pair", s) for s in cfg["seeds"]]
    ft_a, ft_b = models[0], models[1]
    texts, _ = test_texts(dataset, _per_dataset(cfg["n_seed"], dataset), seed)
    max_length = model_max_length(ft_a, cfg)
    row = {}
    for method in METHODS:
        target = class_index(ft_a, dataset)
        _, ra = cached_relevance(ft_a, texts, method, target, max_length, cfg["batch_size"], cfg["progress"])
        _, rb = cached_relevance(ft_b, texts, method, target, max_length, cfg["batch_size"], cfg["progress"])
        row[method] = {**seed_correlation(ra, rb),
                       "vocabulary": vocabulary_seed_correlation(ra, rb, cfg["sentence_norm"], cfg["min_count"])}
    row["_models"] = [model_info(m) for m in models]
    return row


# ---- Table 2 and Fig. 3: mean relevance per word -----------------------------------------------------------
_HAS_ALNUM = re.compile(r"[a-z0-9]", re.IGNORECASE)


def is_word(word: str) -> bool:
    """False for punctuation-only tokens (Table 2 excludes punctuation)."""
    return bool(_HAS_ALNUM.search(word))


def word_statistics(rel: Relevance, norm: str | None = None) -> dict[str, tuple[float, int]]:
    """{word: (mean relevance over its occurrences, count)} over all examples; punctuation dropped; `norm`: the
    per-sentence normalisation of |R| first (SENTENCE_NORMS), None = raw scores."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for i in range(len(rel.tokens)):
        words, scores = rel.words(i, norm)
        for w, s in zip(words, scores):
            w = w.lower()
            if is_word(w):
                sums[w] += float(s)
                counts[w] += 1
    return {w: (sums[w] / counts[w], counts[w]) for w in sums}


def top_bottom_words(stats: Mapping[str, tuple[float, int]], k: int = 5, min_count: int = 5) -> tuple[list, list]:
    """(top k, bottom k) words by mean relevance among words seen at least `min_count` times (ties by word)."""
    eligible = [(w, m) for w, (m, c) in stats.items() if c >= min_count]
    ranked = sorted(eligible, key=lambda wm: (-wm[1], wm[0]))
    top = [w for w, _ in ranked[:k]]
    bottom = [w for w, _ in sorted(eligible, key=lambda wm: (wm[1], wm[0]))[:k]]
    return top, bottom


def vocabulary_relevance(dataset: str, ft, cfg: Mapping, seed: int = 0, norm: str | None = None) -> dict:
    """{method: word_statistics(., norm)} on `n_words` test examples of `dataset` (class of interest as target)."""
    texts, _ = test_texts(dataset, _per_dataset(cfg["n_words"], dataset), seed)
    max_length = model_max_length(ft, cfg)
    target = class_index(ft, dataset)
    out = {}
    for method in METHODS:
        _, rel = cached_relevance(ft, texts, method, target, max_length, cfg["batch_size"], cfg["progress"])
        out[method] = word_statistics(rel, norm)
    return out


def shared_vocabulary(per_dataset: Mapping[str, Mapping[str, tuple[float, int]]], min_count: int = 3) -> list[str]:
    """Words seen at least `min_count` times in every dataset (sorted)."""
    sets = [{w for w, (_, c) in stats.items() if c >= min_count} for stats in per_dataset.values()]
    return sorted(set.intersection(*sets)) if sets else []


def word_vectors(per_dataset: Mapping[str, Mapping[str, tuple[float, int]]], vocabulary: Sequence[str]) -> np.ndarray:
    """[W, D]: the per-word mean relevance of every `vocabulary` word (rows) in each dataset (columns)."""
    return np.array([[per_dataset[d][w][0] for d in per_dataset] for w in vocabulary], dtype=float).reshape(
        len(vocabulary), len(per_dataset))


def correlation_matrix(vectors: np.ndarray) -> np.ndarray:
    """[D, D] Pearson r between the columns of `vectors` [W, D] (NaN where a column is constant)."""
    d = vectors.shape[1]
    return np.array([[_pearson(vectors[:, i], vectors[:, j]) for j in range(d)] for i in range(d)]).reshape(d, d)


def cross_dataset_matrix(per_dataset: Mapping[str, Mapping[str, tuple[float, int]]],
                         vocabulary: Sequence[str]) -> np.ndarray:
    """Fig. 3: Pearson correlation between datasets of the per-word mean relevance on `vocabulary` [D, D]."""
    return correlation_matrix(word_vectors(per_dataset, vocabulary))


def cross_dataset(vocab: Mapping[str, Mapping[str, Mapping]], min_count: int = 3) -> tuple[list[str], dict]:
    """Fig. 3 for every method: (shared vocabulary, {method: [D, D] Pearson matrix}) from
    `vocab[dataset][method]` word statistics (`vocabulary_relevance`)."""
    datasets = list(vocab)
    if len(datasets) < 2:
        raise WuOngInputError("the cross-dataset comparison needs at least two datasets")
    methods = list(next(iter(vocab.values())))
    shared = shared_vocabulary({d: vocab[d][methods[0]] for d in datasets}, min_count)
    return shared, {m: cross_dataset_matrix({d: vocab[d][m] for d in datasets}, shared) for m in methods}


def cross_dataset_figure(matrices: Mapping[str, np.ndarray], datasets: Sequence[str], n_words: int):
    """Fig. 3: one 4x4 correlation matrix per method."""
    import matplotlib.pyplot as plt

    from lab.viz import heatmap_matrix

    fig, axes = plt.subplots(1, len(matrices), figsize=(3.3 * len(matrices), 3.0), squeeze=False)
    for ax, (method, m) in zip(axes[0], matrices.items()):
        heatmap_matrix(m, list(datasets), list(datasets), ax=ax, vmin=-1, vmax=1, cmap="RdBu_r",
                       colorbar=False, title=f"{method} ({n_words} shared words)")
    fig.tight_layout()
    return fig


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
        "settings": {k: v for k, v in cfg.items() if k not in ("progress", "started")},
        "elapsed_s": round(time.time() - cfg["started"], 1) if "started" in cfg else None,
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
    rows = {f"{d} {reading}": {k: (None, _round(v, 6)) for k, v in c.items()}
            for d, per in conservation.items() for reading, c in per.items()}
    res.add_table("lrp_conservation", "LRP conservation per reading (`lrp_wu_ong`): |sum R - R^(0)| on a few test "
                  "examples, R^(0) = f_c(x) (logit for the code reading, probability otherwise); rel = over |R^(0)|; "
                  "0 = conserved", rows, direction={c: "lower" for c in ("median_abs_delta", "max_abs_delta",
                                                                         "median_rel_delta")})


def _deletion_tables(res: Results, mode: str, sets: Mapping[str, DeletionSet], aucs: Mapping, main: bool) -> None:
    suffix = "" if main else f"_{mode}"
    summaries = {d: deletion_summary(ds) for d, ds in sets.items()}
    rows = {m: {f"{d} {col}": (None, _round(v)) for d, s in summaries.items() for col, v in s[m].items()}
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
    acc = {d: {f"seed {m.get('seed')} accuracy_%": (None, _round(100 * m["eval_accuracy"], 2)
                                                    if m.get("eval_accuracy") is not None else None)
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
                          {a: {b: (None, _round(m[i, j])) for j, b in enumerate(names)} for i, a in enumerate(names)})


def _deletion_intervals(aucs: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    rows = {}
    for d, a in aucs.items():
        for m in METHODS:
            iv, _ = _part(lambda m=m, a=a: paired_difference(a[m], a[RANDOM]), 0.0, "less")
            rows[f"{m} ({d})"] = {"Δauc": None if iv is None else iv.estimate,
                                  "Δauc_low": None if iv is None else iv.low,
                                  "Δauc_high": None if iv is None else iv.high, "n": len(a[RANDOM])}
    return rows


# ---- claims: bootstrap intervals over examples (deletion, seeds) and over shared words (Fig. 3) ---------------------
SPEEDUP_MARGIN, SPREAD_MARGIN, LAT_MARGIN = 0.05, 0.05, 0.05  # auc differences the claims need (accuracy units)
SEED_BAND = (0.75, 0.95)  # "about 0.8-0.9"
CROSS_MIN_R = 0.5


def _part(make: Any, margin: float, kind: str) -> tuple[Interval | None, str]:
    """(interval, verdict) of one part of a claim; 'not evaluated' when there are no values to resample."""
    try:
        iv = make()
    except StatsInputError:
        return None, "not evaluated"
    return iv, decide(iv, margin, kind)


def _say(label: str, iv: Interval | None, verdict: str) -> str:
    return f"{label} {iv if iv is not None else 'no values'} → {verdict}"


def deletion_claims(aucs: Mapping[str, Mapping[str, np.ndarray]], mode: str | None = None
                    ) -> list[tuple[str, str, str]]:
    """(claim, verdict, detail) of the Fig. 1 claims from per-example deletion AUCs {dataset: {method: [M]}};
    `mode` (a DELETION_MODES entry) is named in the claims; LRP-paper, when present, gets its own claim."""
    tag = f" ({mode} deletion)" if mode else ""
    fast, spread, lat = {}, {}, {}
    for d, a in aucs.items():
        for m in ("GS", "GI", "LRP"):
            fast[(d, m)] = _part(lambda m=m, a=a: paired_difference(a[m], a[RANDOM]), -SPEEDUP_MARGIN, "less")
        three = np.stack([a[m] for m in ("GS", "GI", "LRP")], 1)
        spread[d] = _part(lambda t=three: bootstrap(t, lambda x: float(np.ptp(x.mean(0)))), SPREAD_MARGIN, "less")
        lat[d] = _part(lambda a=a: paired_difference(a["LAT"], a[RANDOM]), LAT_MARGIN, "within")
    out = [
        (f"GS, GI and LRP drop accuracy faster than random deletion on every dataset (auc at least {SPEEDUP_MARGIN} "
         f"below random){tag}", combine(v for _, v in fast.values()),
         "; ".join(_say(f"{d} auc_{m} − auc_random", *p) for (d, m), p in fast.items())),
        (f"GS, GI and LRP drop similarly (auc spread <= {SPREAD_MARGIN} on every dataset){tag}",
         combine(v for _, v in spread.values()), "; ".join(_say(f"{d} spread", *p) for d, p in spread.items())),
        (f"LAT is no better than random deletion (|auc_LAT - auc_random| <= {LAT_MARGIN} on every dataset){tag}",
         combine(v for _, v in lat.values()),
         "; ".join(_say(f"{d} auc_LAT − auc_random", *p) for d, p in lat.items())),
    ]
    if all("LRP-paper" in a for a in aucs.values()):
        paper = {d: _part(lambda a=a: paired_difference(a["LRP-paper"], a[RANDOM]), -SPEEDUP_MARGIN, "less")
                 for d, a in aucs.items()}
        out.append((f"LRP, paper-text reading (conserving), drops accuracy faster than random deletion on every "
                    f"dataset (auc at least {SPEEDUP_MARGIN} below random){tag}", combine(v for _, v in paper.values()),
                    "; ".join(_say(f"{d} auc_LRP-paper − auc_random", *p) for d, p in paper.items())))
    return out


def seed_claims(seeds: Mapping[str, Mapping]) -> list[tuple[str, str, str]]:
    """(claim, verdict, detail) of the Table 1 claims from the per-example seed-to-seed r of every cell."""
    lo, hi = SEED_BAND
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    cells = {(d, m): _part(lambda r=row[m]["per_example"]: bootstrap(np.asarray(r, dtype=float) - mid), half,
                           "within") for d, row in seeds.items() for m in METHODS}
    def show(iv):  # back from r − mid to r
        return "no values" if iv is None else f"{iv.estimate + mid:.3f} [{iv.low + mid:.3f}, {iv.high + mid:.3f}]"

    out = [(f"seed-to-seed correlation is about 0.8-0.9 (every cell of Table 1 within {lo}-{hi})",
            combine(v for _, v in cells.values()),
            "; ".join(f"{d} {m} r {show(iv)} (n={len(seeds[d][m]['per_example'])}) → {v}"
                      for (d, m), (iv, v) in cells.items()))]
    if "imdb" in seeds and len(seeds) > 1:
        parts = {(m, d): _part(lambda m=m, d=d: unpaired_difference(seeds["imdb"][m]["per_example"],
                                                                    seeds[d][m]["per_example"]), 0.0, "less")
                 for m in METHODS for d in seeds if d != "imdb"}
        out.append(("correlation is lower on long texts (IMDb below every sentence-level dataset, per method)",
                    combine(v for _, v in parts.values()),
                    "; ".join(_say(f"{m} r_imdb − r_{d}", *p) for (m, d), p in parts.items())))
    if all("vocabulary" in row[m] for row in seeds.values() for m in METHODS):
        out.append(_vocabulary_seed_claim(seeds))
    return out


def _vocabulary_seed_claim(seeds: Mapping[str, Mapping]) -> tuple[str, str, str]:
    """Table 1 as the authors aggregate: r over WordPieces of vocabulary-level means, resampling the WordPieces."""
    lo, hi = SEED_BAND
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    cells = {(d, m): _part(lambda p=row[m]["vocabulary"]["pairs"]: bootstrap(
        p, lambda x: _pearson(x[:, 0], x[:, 1]) - mid), half, "within") for d, row in seeds.items() for m in METHODS}
    return (f"seed-to-seed correlation is about 0.8-0.9 with the authors' aggregation (r over WordPieces of "
            f"vocabulary-level means, every cell within {lo}-{hi})", combine(v for _, v in cells.values()),
            "; ".join(f"{d} {m} r " + ("no values" if iv is None else
                                       f"{iv.estimate + mid:.3f} [{iv.low + mid:.3f}, {iv.high + mid:.3f}]") +
                      f" (n={seeds[d][m]['vocabulary']['n']} WordPieces) → {v}" for (d, m), (iv, v) in cells.items()))


def cross_claims(vectors: Mapping[str, np.ndarray]) -> list[tuple[str, str, str]]:
    """(claim, verdict, detail) of the Fig. 3 claim from {method: [W, D] per-word means}, resampling the words."""
    def mean_off_diagonal(v):
        m = correlation_matrix(v)
        off = m[~np.eye(len(m), dtype=bool)]
        return float(np.nanmean(off)) if np.isfinite(off).any() else 0.0

    parts = {m: _part(lambda v=v: bootstrap(v, mean_off_diagonal), CROSS_MIN_R, "greater")
             for m, v in vectors.items()}
    out = []
    for beside in (False, True):  # the authors' readings decide the claim; the text/L2 readings get their own row
        ps = {m: p for m, p in parts.items() if (m in PAPER_METHOD) == beside}
        if ps:
            what = "every method" if not beside else "the readings beside the authors' (" + ", ".join(ps) + ")"
            out.append((f"relevance is consistent across datasets (mean off-diagonal Pearson r >= {CROSS_MIN_R} for "
                        f"{what})", combine(v for _, v in ps.values()),
                        "; ".join(_say(f"{m} mean r over words", *p) for m, p in ps.items())))
    return out


def _claims(res: Results, aucs: Mapping, seeds: Mapping, vectors: Mapping, main: str | None = None) -> None:
    """aucs: {deletion mode: {dataset: {method: [M]}}}, the `main` mode's claims first."""
    order = sorted(aucs, key=lambda mode: mode != main)
    rows = [c for mode in order if aucs[mode] for c in deletion_claims(aucs[mode], mode)] + \
        (seed_claims(seeds) if seeds else []) + (cross_claims(vectors) if vectors else [])
    for claim, verdict, detail in rows:
        res.add_claim(claim, verdict=verdict, detail=detail)


def _interval_text(c: Mapping) -> str:
    if c["Δauc"]["ours"] is None:
        return "no values"
    return f"{c['Δauc']['ours']:+.3f} [{c['Δauc_low']['ours']:+.3f}, {c['Δauc_high']['ours']:+.3f}]"


def _deletion_lines(t: Mapping, sizes: Mapping, profile: str) -> list[str]:
    lines = []
    for name in [n for n in t if n.startswith("fig1_deletion_paired")]:
        rows, mode = t[name]["rows"], t[name]["caption"].split("(")[1].split(")")[0]
        for m in METHODS:
            cells = [(r.split(" (")[1][:-1], c) for r, c in rows.items() if r.startswith(f"{m} (")]
            lines.append(f"- **Deletion ({mode}), {m}** − Random (mean accuracy over 0..{sizes.get('max_words')} words; "
                         "< 0 = steeper than random): " + ", ".join(f"{d} {_interval_text(c)}" for d, c in cells) + ".")
        if profile != "smoke":  # smoke samples decide nothing (as Results.add_claim)
            lines.append(_lrp_finding(rows, mode))
    return lines


def _lrp_finding(rows: Mapping, mode: str) -> str:
    """The plain statement of whether any LRP reading beats random deletion (whole interval below -margin)."""
    beats = [r for r, c in rows.items() if r.startswith("LRP") and c["Δauc_high"]["ours"] is not None
             and c["Δauc_high"]["ours"] < -SPEEDUP_MARGIN]
    if beats:
        return f"- **LRP vs random ({mode})**: beats random deletion (interval below −{SPEEDUP_MARGIN}) in " + \
            ", ".join(beats) + "."
    return (f"- **Finding ({mode}): no LRP reading beats random deletion** — for neither the authors' code reading "
            f"nor the paper-text reading does the paired 95 % interval of auc − auc_random lie below "
            f"−{SPEEDUP_MARGIN} on any dataset.")


def _seed_lines(t: Mapping) -> list[str]:
    lines = []
    for name, label in (("table1_seed_pearson", "per-example r over words"),
                        ("table1_seed_vocabulary", "authors' aggregation, r over WordPieces")):
        cols = t.get(name, {}).get("rows", {})
        for m in METHODS:
            vals = {d: c[m]["ours"] for d, c in cols.items() if c[m]["ours"] is not None}
            if vals:
                paper = ", ".join(f"{d} {cols[d][m]['paper']}" for d in vals)
                lines.append(f"- **Seeds, {m}** ({label}): r " + ", ".join(f"{d} {v:.3f}" for d, v in vals.items())
                             + f" (paper: {paper}).")
    return lines


def _cross_line(t: Mapping, meta: Mapping, suffix: str, label: str) -> list[str]:
    cross = {m: t[f"fig3_cross_dataset_{m}{suffix}"]["rows"] for m in METHODS if f"fig3_cross_dataset_{m}{suffix}" in t}
    if not cross:
        return []
    means = {}
    for m, rows in cross.items():
        off = [c["ours"] for a, r in rows.items() for b, c in r.items() if a != b and c["ours"] is not None]
        means[m] = f"{np.mean(off):.3f}" if off else "n/a"
    return [f"- **Across datasets** ({label}; {meta.get('n_shared_words')} shared words), mean off-diagonal r: " +
            ", ".join(f"{m} {v}" for m, v in means.items()) + "."]


def reading_markdown(results: Results) -> str:
    """The notebook's "reading the results" bullets, generated from the results file (no hard-coded numbers)."""
    t, meta = results.tables, results.meta
    sizes = meta.get("settings", {})
    lines = [f"Sizes of this run: deletion examples {sizes.get('n_deletion')}, seed-pair examples "
             f"{sizes.get('n_seed')}, vocabulary examples {sizes.get('n_words')}."]
    lines += _deletion_lines(t, sizes, results.profile)
    if "lrp_conservation" in t:
        lines.append("- **LRP conservation**, median |ΣR − R⁽⁰⁾| / |R⁽⁰⁾| per dataset and reading: " + ", ".join(
            f"{r} {c['median_rel_delta']['ours']:.3g}" for r, c in t["lrp_conservation"]["rows"].items()) +
            " (0 = conserved).")
    lines += _seed_lines(t)
    lines += _cross_line(t, meta, "", f"per-sentence {meta.get('sentence_norm')}(|R|)")
    lines += _cross_line(t, meta, "_raw", "raw per-word means")
    tables = meta.get("word_tables") or {}
    if tables:
        d = next(iter(tables))
        lines.append(f"- **Words ({d})**, top 5: " + "; ".join(f"{m}: {', '.join(v['top'])}"
                                                                for m, v in tables[d].items()) + ".")
    return "\n".join(lines)


# ---- example figure and widget -----------------------------------------------------------------------------
def example_figure(ds: DeletionSet, index: int = 0):
    """Fig. 2 style: one test example's word relevance under every method (gold class as target)."""
    from lab.viz import token_heatmap_panels

    names = ds.fine_tuned.label_names or ()
    panels = []
    for method, rel in ds.relevance.items():
        words, scores = rel.words(index)
        tgt = int(rel.target[index])
        label = names[tgt] if tgt < len(names) else tgt
        panels.append((f"{method} (target {label}, p={float(rel.probs[index, tgt]):.2f})", words, scores))
    return token_heatmap_panels(panels)


def perturbed_example(ds: DeletionSet, method: str, index: int, n_words: int, mode: str | None = None) -> dict:
    """Example `index` of a deletion set with its `n_words` most relevant words (by `method`) removed:
    {"words", "scores", "removed" (bool per word), "remaining" text, "probs" before/after, "label"}."""
    mode = mode or ds.mode
    if method not in ds.relevance:
        raise WuOngInputError(f"method must be one of {', '.join(ds.relevance)}, got {method!r}")
    if not 0 <= int(index) < len(ds.texts):
        raise WuOngInputError(f"sentence index must be in 0..{len(ds.texts) - 1}, got {index}")
    rel = ds.relevance[method]
    row = {k: v[index:index + 1] for k, v in ds.inputs.items()}
    groups = ds.groups[index:index + 1]
    words, scores = rel.words(index)
    n_words = max(0, min(int(n_words), len(words)))
    tokenizer, model = ds.fine_tuned.tokenizer, ds.fine_tuned.model
    curve_mode, token_id = _deletion_token(ds, mode)
    out = replace_top_k(row["input_ids"], row["attention_mask"], rel.scores[index:index + 1],
                        rel.special[index:index + 1], k=n_words, mode=curve_mode, groups=groups,
                        token_type_ids=row.get("token_type_ids"), token_id=token_id or 0,
                        pad_id=tokenizer.pad_token_id or 0)
    order = sorted(range(len(words)), key=lambda w: (-scores[w], w))[:n_words]
    removed = np.zeros(len(words), dtype=bool)
    removed[order] = True
    with torch.no_grad():
        probs = model(**out).logits.softmax(-1)[0].double()
    shown = {"replace": "[MASK]", "pad": "[PAD]"}.get(mode, "")
    remaining = " ".join(w if not r else shown for w, r in zip(words, removed))
    return {"words": words, "scores": scores, "removed": removed, "remaining": " ".join(remaining.split()),
            "probs_before": rel.probs[index].numpy(), "probs_after": probs.numpy(), "label": ds.labels[index]}


def render_deletion(sets: Mapping[str, DeletionSet]):
    """Render function for `lab.widgets.controls`: (dataset, method, sentence, words_deleted) -> Figure."""
    from lab.viz import token_heatmap_panels

    def render(dataset: str, method: str, sentence: int, words_deleted: int):
        if dataset not in sets:
            raise WuOngInputError(f"dataset must be one of {', '.join(sets)}, got {dataset!r}")
        ds = sets[dataset]
        index = min(int(sentence), len(ds.texts) - 1)
        p = perturbed_example(ds, method, index, words_deleted)
        names = ds.fine_tuned.label_names or tuple(range(len(p["probs_after"])))
        before, after = int(np.argmax(p["probs_before"])), int(np.argmax(p["probs_after"]))
        kept = [w for w, r in zip(p["words"], p["removed"]) if not r] or ["(nothing left)"]
        kept_scores = [s for s, r in zip(p["scores"], p["removed"]) if not r] or [0.0]
        return token_heatmap_panels([
            (f"{dataset} #{index} {method} relevance; gold {names[p['label']]}, predicted {names[before]} "
             f"(p={p['probs_before'][before]:.2f})", p["words"], p["scores"]),
            (f"after removing {int(p['removed'].sum())} word(s): predicted {names[after]} "
             f"(p={p['probs_after'][after]:.2f})", kept, kept_scores)])

    return render
