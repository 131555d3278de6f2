"""ERASER Movie Reviews (DeYoung et al. 2020) with human rationales, and word -> word-piece alignment.

Format: `{split}.jsonl`, one annotation per line with `annotation_id`, `classification` (POS/NEG) and
`evidences` (a list of groups, each a list of spans `{docid, start_token, end_token, text}` with
`end_token` exclusive) indexing the whitespace tokens of `docs/<docid>` (all lines flattened).
"""
from __future__ import annotations

import json
from pathlib import Path

from .base import TextExample
from .readers import format_error, iter_lines, read_text

MOVIES_LABELS = ("NEG", "POS")


def read_doc(path: Path) -> tuple[str, ...]:
    """The document's tokens in order (sentences are lines, tokens are space-separated)."""
    return tuple(read_text(path).split())


def _spans(path: Path, number: int, record: dict) -> list[dict]:
    """Every evidence span of an annotation, checked for the fields the loader uses."""
    groups = record.get("evidences") or []
    spans = [span for group in groups for span in (group if isinstance(group, list) else [group])]
    for span in spans:
        if not isinstance(span, dict) or not {"docid", "start_token", "end_token"} <= span.keys():
            raise format_error(path, number, "evidence span lacks docid/start_token/end_token")
    return spans


def _rationale(path: Path, number: int, words: tuple[str, ...], spans: list[dict]) -> tuple[int, ...]:
    """Per-word 0/1 mask: the union of all evidence spans [start_token, end_token) (empty spans occur in test)."""
    mask = [0] * len(words)
    for span in spans:
        start, end = span["start_token"], span["end_token"]
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= len(words)):
            raise format_error(path, number, f"evidence span {start}..{end} outside document of {len(words)} tokens")
        mask[start:end] = [1] * (end - start)
    return tuple(mask)


def _records(jsonl: Path):
    """(line number, annotation dict) for each non-empty line of an ERASER split file."""
    for number, line in iter_lines(jsonl):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise format_error(jsonl, number, f"invalid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(record, dict) or record.get("classification") not in MOVIES_LABELS or "annotation_id" not in record:
            raise format_error(jsonl, number, "expected an object with annotation_id and classification POS/NEG")
        yield number, record


def parse_movies(paths: tuple[Path, ...], split: str) -> tuple[list[TextExample], tuple[str, ...]]:
    """paths = (split jsonl, docs folder). Label NEG=0, POS=1; uid = annotation_id."""
    jsonl, docs = paths
    examples = []
    for number, record in _records(jsonl):
        spans = _spans(jsonl, number, record)
        docid = spans[0]["docid"] if spans else record["annotation_id"]
        if any(span["docid"] != docid for span in spans):
            raise format_error(jsonl, number, "evidence spans point into more than one document")
        doc_path = docs / docid
        if not doc_path.is_file():
            raise format_error(jsonl, number, f"document {doc_path} does not exist")
        words = read_doc(doc_path)
        examples.append(
            TextExample(
                text=" ".join(words),
                label=MOVIES_LABELS.index(record["classification"]),
                words=words,
                rationale=_rationale(jsonl, number, words, spans),
                uid=record["annotation_id"],
            )
        )
    return examples, MOVIES_LABELS


def evidence_spans(jsonl: Path) -> list[tuple[str, int, int, str]]:
    """(docid, start_token, end_token, text) of every evidence in a split file, for checking against docs."""
    return [
        (s["docid"], s["start_token"], s["end_token"], s.get("text", ""))
        for number, record in _records(jsonl)
        for s in _spans(jsonl, number, record)
    ]


# ---------------------------------------------------------------- rationale alignment for word-piece models
def encode_words(words, tokenizer, max_length: int, **kwargs):
    """Tokenise pre-split words (`is_split_into_words=True`), truncated to max_length; extra kwargs go to the tokenizer.

    Use this encoding as the model input so that `align_rationale` masks line up with it by construction.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer; word_ids() alignment needs one")
    return tokenizer(list(words), is_split_into_words=True, truncation=True, max_length=max_length, **kwargs)


def align_rationale(words, rationale, tokenizer, max_length: int, encoding=None) -> list[int]:
    """Per-token 0/1 rationale for `encode_words(words, tokenizer, max_length)`.

    Every word piece of a rationale word is 1, special tokens ([CLS], [SEP], padding) are 0; the list
    has exactly as many entries as the encoding's input_ids. Pass `encoding` to reuse one already made.
    """
    if len(words) != len(rationale):
        raise ValueError(f"{len(words)} words but a rationale of length {len(rationale)}")
    encoding = encoding if encoding is not None else encode_words(words, tokenizer, max_length)
    return [0 if w is None else int(bool(rationale[w])) for w in encoding.word_ids()]
