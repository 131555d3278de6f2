"""Line-numbered readers shared by the loaders: every problem becomes a one-line DatasetFormatError."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterator

from .base import DatasetFormatError


def format_error(path: Path, line: int, reason: str) -> DatasetFormatError:
    """`<file>:<line>: <reason>` — the single-line message every malformed input produces."""
    return DatasetFormatError(f"{path}:{line}: {reason}")


def read_text(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as f:  # newline="": keep \r inside quoted CSV fields
            return f.read()
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise format_error(path, line, "not valid UTF-8") from None


def iter_lines(path: Path, skip_header: str | None = None) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline); checks and skips an expected header row."""
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # trailing newline
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if number == 1 and skip_header is not None:
            if line.strip() != skip_header:
                raise format_error(path, 1, f"expected header {skip_header!r}, found {line[:60]!r}")
            continue
        yield number, line


def split_tsv(path: Path, number: int, line: str, n_fields: int) -> list[str]:
    """Tab-separated fields, no quoting (GLUE and SNLI text contains bare quote characters)."""
    fields = line.split("\t")
    if len(fields) != n_fields:
        raise format_error(path, number, f"expected {n_fields} tab-separated fields, found {len(fields)}")
    return fields


def iter_csv(path: Path, n_fields: int, header: list[str] | None = None) -> Iterator[tuple[int, list[str]]]:
    """(line number where the record ends, fields) of an RFC-4180 CSV file (quoted fields may span lines)."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    try:
        for row in reader:
            if header is not None and reader.line_num == 1:
                if row != header:
                    raise format_error(path, 1, f"expected header {','.join(header)!r}, found {','.join(row)[:60]!r}")
                continue
            if not row:
                continue
            if len(row) != n_fields:
                raise format_error(path, reader.line_num, f"expected {n_fields} comma-separated fields, found {len(row)}")
            yield reader.line_num, row
    except csv.Error as err:
        raise format_error(path, reader.line_num, f"CSV error: {err}") from None


def parse_label(path: Path, number: int, value: str, n_labels: int, offset: int = 0) -> int:
    """An integer label in [offset, offset + n_labels), returned shifted to start at 0."""
    try:
        label = int(value.strip()) - offset
    except ValueError:
        raise format_error(path, number, f"label {value.strip()[:30]!r} is not an integer") from None
    if not 0 <= label < n_labels:
        raise format_error(path, number, f"label {value.strip()!r} outside {offset}..{offset + n_labels - 1}")
    return label
