"""Notebook 04 (Wu & Ong 2021), the word-level studies: robustness to initialisation (Table 1: Pearson r of word
relevance between two seeds, per example and as the authors aggregate), top/bottom words by mean relevance (Table 2,
appendix Tables 4-6) and consistency across datasets (Fig. 3), from the `ExplanationSet`s of `lab.experiments.wu_ong`.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

import numpy as np

from lab.experiments import ExperimentError
from lab.experiments.wu_ong import (METHODS, _per_dataset, class_index, explain_set, load_model, model_info,
                                    model_max_length, normalised, test_texts, tokenize, words)
from lab.explainers.batch import ExplanationSet


# ---- Table 1: robustness to initialisation -----------------------------------------------------------------
def pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two samples (NaN for fewer than two values or a constant sample)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def seed_correlation(rel_a: ExplanationSet, rel_b: ExplanationSet, min_words: int = 3) -> dict:
    """Pearson correlation of the word scores of two models on the same examples.

    Returns {"mean": mean over examples (with >= min_words words) of the per-example r, "pooled": r over all
    (example, word) pairs, "n": examples used, "per_example": those examples' r}.
    """
    if len(rel_a.tokens) != len(rel_b.tokens):
        raise ExperimentError(f"the two relevance sets have {len(rel_a.tokens)} and {len(rel_b.tokens)} examples")
    per, all_a, all_b = [], [], []
    for i in range(len(rel_a.tokens)):
        wa, sa = words(rel_a, i)
        wb, sb = words(rel_b, i)
        if wa != wb:
            raise ExperimentError(f"example {i}: the two models tokenise it differently")
        all_a.append(sa)
        all_b.append(sb)
        if len(sa) >= min_words:
            r = pearson_r(sa, sb)
            if math.isfinite(r):
                per.append(r)
    pooled = pearson_r(np.concatenate(all_a), np.concatenate(all_b)) if all_a else float("nan")
    return {"mean": float(np.mean(per)) if per else float("nan"), "pooled": pooled, "n": len(per),
            "per_example": per}


def wordpiece_means(es: ExplanationSet, norm: str) -> dict[str, tuple[float, int]]:
    """{WordPiece: (mean over its occurrences of the per-sentence `norm`-alised |R|, count)}; special tokens and
    punctuation dropped (the authors' vocabulary-level means, `load_attribution_scores`)."""
    return _means((t, v) for i, tokens in enumerate(es.tokens)
                  for t, v, sp in zip(tokens, normalised(es, i, norm).tolist(), es.special[i].tolist())
                  if not sp and is_word(t))


def vocabulary_seed_correlation(rel_a: ExplanationSet, rel_b: ExplanationSet, norm: str, min_count: int = 1) -> dict:
    """Table 1 as the authors aggregate: Pearson r over WordPieces (seen >= min_count times) of the two models'
    vocabulary-level means of per-sentence normalised |R|. {"r", "n" WordPieces, "pairs" [W, 2] means}."""
    a, b = wordpiece_means(rel_a, norm), wordpiece_means(rel_b, norm)
    shared = sorted(t for t in a if t in b and a[t][1] >= min_count)
    pairs = np.array([[a[t][0], b[t][0]] for t in shared], dtype=float).reshape(len(shared), 2)
    return {"r": pearson_r(pairs[:, 0], pairs[:, 1]), "n": len(shared), "pairs": pairs}


def seed_table(dataset: str, cfg: Mapping, models: Sequence | None = None, seed: int = 0) -> dict:
    """Table 1 row of `dataset`: {method: seed_correlation(...) plus "vocabulary": vocabulary_seed_correlation(...)}
    and the two models' info under "_models"."""
    if models is None:
        models = [load_model(dataset, cfg, "pair", s) for s in cfg["seeds"]]
    ft_a, ft_b = models[0], models[1]
    texts, _ = test_texts(dataset, _per_dataset(cfg["n_seed"], dataset), seed)
    inputs = [tokenize(ft.tokenizer, texts, model_max_length(ft_a, cfg)) for ft in (ft_a, ft_b)]
    target, row = class_index(ft_a, dataset), {}
    for method in METHODS:
        ra, rb = (explain_set(ft, x, method, target, cfg["batch_size"], cfg["progress"])
                  for ft, x in zip((ft_a, ft_b), inputs))
        row[method] = {**seed_correlation(ra, rb),
                       "vocabulary": vocabulary_seed_correlation(ra, rb, cfg["sentence_norm"], cfg["min_count"])}
    row["_models"] = [model_info(m) for m in models]
    return row


# ---- Table 2 and Fig. 3: mean relevance per word -----------------------------------------------------------
_HAS_ALNUM = re.compile(r"[a-z0-9]", re.IGNORECASE)


def is_word(word: str) -> bool:
    """False for punctuation-only tokens (Table 2 excludes punctuation)."""
    return bool(_HAS_ALNUM.search(word))


def _means(pairs: Iterable[tuple[str, float]]) -> dict[str, tuple[float, int]]:
    """{key: (mean of its values, count)} of (key, value) pairs, keys in first-seen order."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for key, value in pairs:
        sums[key] += value
        counts[key] += 1
    return {k: (sums[k] / counts[k], counts[k]) for k in sums}


def word_statistics(es: ExplanationSet, norm: str | None = None) -> dict[str, tuple[float, int]]:
    """{word: (mean relevance over its occurrences, count)} over all examples; punctuation dropped; `norm`: the
    per-sentence normalisation of |R| first (SENTENCE_NORMS), None = raw scores."""
    return _means((w.lower(), float(s)) for i in range(len(es.tokens)) for w, s in zip(*words(es, i, norm))
                  if is_word(w))


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
    inputs = tokenize(ft.tokenizer, texts, model_max_length(ft, cfg))
    return {m: word_statistics(explain_set(ft, inputs, m, class_index(ft, dataset), cfg["batch_size"],
                                           cfg["progress"]), norm) for m in METHODS}


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
    return np.array([[pearson_r(vectors[:, i], vectors[:, j]) for j in range(d)] for i in range(d)]).reshape(d, d)


def cross_dataset_matrix(per_dataset: Mapping[str, Mapping[str, tuple[float, int]]],
                         vocabulary: Sequence[str]) -> np.ndarray:
    """Fig. 3: Pearson correlation between datasets of the per-word mean relevance on `vocabulary` [D, D]."""
    return correlation_matrix(word_vectors(per_dataset, vocabulary))


def cross_dataset(vocab: Mapping[str, Mapping[str, Mapping]], min_count: int = 3) -> tuple[list[str], dict]:
    """Fig. 3 for every method: (shared vocabulary, {method: [D, D] Pearson matrix}) from
    `vocab[dataset][method]` word statistics (`vocabulary_relevance`)."""
    datasets = list(vocab)
    if len(datasets) < 2:
        raise ExperimentError("the cross-dataset comparison needs at least two datasets")
    methods = list(next(iter(vocab.values())))
    shared = shared_vocabulary({d: vocab[d][methods[0]] for d in datasets}, min_count)
    return shared, {m: cross_dataset_matrix({d: vocab[d][m] for d in datasets}, shared) for m in methods}
