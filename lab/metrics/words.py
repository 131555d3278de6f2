"""Words from sub-word tokens: merge word pieces into words (WordPiece '##', RoBERTa/GPT-2 'Ġ', SentencePiece
'▁') and the word groups [B, S] that the perturbation metrics (`lab.metrics.perturbation`) rank as units."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lab.metrics import MetricInputError

REDUCES = ("sum", "max", "mean")
SPECIAL_TOKENS = frozenset({"[CLS]", "[SEP]", "[PAD]", "[MASK]", "<s>", "</s>", "<pad>", "<mask>", "<cls>", "<sep>"})
WORD_START_PREFIXES = ("Ġ", "▁")  # GPT-2/RoBERTa byte-level BPE, SentencePiece


def _word_index(tokens: Sequence[str], special=None) -> list[int]:
    """Word index per token (-1 for special tokens): WordPiece '##' pieces continue the previous word; with
    RoBERTa/SentencePiece tokens ('Ġ'/'▁' marks a word start) unmarked pieces continue it."""
    prefix_scheme = any(t.startswith(WORD_START_PREFIXES) for t in tokens)
    index, word, prev_content = [], -1, False
    for i, tok in enumerate(tokens):
        is_special = tok in SPECIAL_TOKENS if special is None else bool(special[i])
        if is_special:
            index.append(-1)
            prev_content = False
            continue
        continues = tok.startswith("##") or (prefix_scheme and not tok.startswith(WORD_START_PREFIXES))
        if not (continues and prev_content):
            word += 1
        index.append(word)
        prev_content = True
    return index


def _piece_text(tok: str) -> str:
    if tok.startswith("##"):
        return tok[2:]
    if tok.startswith(WORD_START_PREFIXES):
        return tok[1:]
    return tok


def merge_wordpieces(tokens: Sequence[str], scores, reduce: str = "sum", special=None) -> tuple[list[str], np.ndarray]:
    """Merge sub-word tokens into words: (words, word scores), special tokens dropped.

    WordPiece: '##' marks a continuation; RoBERTa/GPT-2 ('Ġ') and SentencePiece ('▁') mark a word start, so an
    unmarked piece continues the previous word (punctuation attached without a space joins the word, as
    whitespace splitting would). A word's score is the sum / max / mean of its pieces' scores.
    `special` (optional bool per token) overrides the default special-token strings.
    """
    if reduce not in REDUCES:
        raise MetricInputError(f"reduce must be one of {', '.join(map(repr, REDUCES))}, got {reduce!r}")
    values = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=float).reshape(-1)
    if len(values) != len(tokens):
        raise MetricInputError(f"merge_wordpieces: {len(tokens)} tokens but {len(values)} scores")
    index = _word_index(tokens, special)
    n = max(index) + 1 if index else 0
    words = [""] * n
    pieces: list[list[float]] = [[] for _ in range(n)]
    for tok, w, v in zip(tokens, index, values):
        if w >= 0:
            words[w] += _piece_text(tok)
            pieces[w].append(v)
    agg = {"sum": np.sum, "max": np.max, "mean": np.mean}[reduce]
    return words, np.array([agg(p) for p in pieces], dtype=float)


def word_groups(tokens: Sequence[Sequence[str]], special_mask=None) -> torch.Tensor:
    """groups [B, S] for the perturbation metrics: word index per token (WordPiece '##' / 'Ġ' rules of
    `merge_wordpieces`), -1 for special tokens (default [CLS]/[SEP]/[PAD]/<s>/</s>/<pad> strings, or
    `special_mask`). `tokens` is a batch of token lists of equal length (e.g. Explanation.tokens)."""
    if tokens and isinstance(tokens[0], str):
        tokens = [tokens]
    width = max(len(t) for t in tokens)
    out = torch.full((len(tokens), width), -1, dtype=torch.long)
    special = None if special_mask is None else torch.as_tensor(special_mask).bool().reshape(len(tokens), -1)
    for i, row in enumerate(tokens):
        out[i, :len(row)] = torch.tensor(_word_index(row, None if special is None else special[i].tolist()),
                                         dtype=torch.long)
    return out


def groups_from_word_ids(word_ids: Sequence[Sequence[int | None]]) -> torch.Tensor:
    """groups [B, S] from a fast tokenizer's `encoding.word_ids(i)` lists (None for special tokens): a new group
    starts wherever the word id changes, so the two segments of a pair never share a group."""
    width = max(len(w) for w in word_ids)
    out = torch.full((len(word_ids), width), -1, dtype=torch.long)
    for i, row in enumerate(word_ids):
        group, prev = -1, None
        for t, w in enumerate(row):
            if w is None:
                prev = None
                continue
            if w != prev:
                group += 1
            out[i, t] = group
            prev = w
    return out
