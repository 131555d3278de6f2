"""The dataset registry: one spec per dataset (folder, files per split, parser), `load`, and a status table."""
from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import config
from . import eraser, text
from .base import DatasetFormatError, DatasetMissingError, TextDataset

_DEV_NAMES = ("dev", "val", "validation")  # interchangeable when a dataset has exactly one of them


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    folder: str  # under the data directory
    files: dict[str, tuple[str, ...]]  # split -> files (relative to folder) that split needs
    parse: Callable  # (paths, split) -> (examples, label_names)
    label_names: tuple[str, ...] | None  # None: derived from the data (bAbI answer vocabulary)
    hub: str = ""  # a hub dataset users may download themselves when online
    note: Callable | None = field(default=None, compare=False)  # (paths) -> str, shown by describe()

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.files)

    def resolve_split(self, split: str) -> str:
        """The canonical split name, accepting dev/val/validation for whichever of them exists."""
        if split in self.files:
            return split
        if split in _DEV_NAMES:
            dev = [s for s in self.files if s in _DEV_NAMES]
            if len(dev) == 1:
                return dev[0]
        raise ValueError(f"unknown split {split!r} for dataset {self.name!r}; available: {', '.join(self.splits)}")


def _snli_note(paths: tuple[Path, ...]) -> str:
    return f"{text.snli_skipped_rows(paths[0])} rows without a gold label skipped"


_BABI = ("qa1_single-supporting-fact_train.txt", "qa1_single-supporting-fact_test.txt")

_SPECS = [
    DatasetSpec("sst2", "GLUE SST-2 sentences (train = GLUE train, dev = GLUE dev, labelled)", "sst2",
                {"train": ("train.tsv", "dev.tsv"), "dev": ("test.tsv",)}, text.parse_sst2, text.BINARY_SENTIMENT,
                hub="nyu-mll/glue (config sst2)"),
    DatasetSpec("sst5", "Stanford Sentiment Treebank, sentence level, 5 classes (root labels)", "sst",
                {s: (f"{s}.txt",) for s in ("train", "dev", "test")}, text.parse_sst5, text.SST5_LABELS,
                hub="SetFit/sst5"),
    DatasetSpec("sst_binary", "SST trees, root label binarised (0,1 -> 0; 3,4 -> 1; neutral dropped)", "sst",
                {s: (f"{s}.txt",) for s in ("train", "dev", "test")}, text.parse_sst_binary, text.BINARY_SENTIMENT,
                hub="SetFit/sst2"),
    DatasetSpec("sst_jw", "SST binarised as in Jain & Wallace (2019), their train/dev/test split", "sst",
                {s: ("sst_binary_jw.csv",) for s in ("train", "dev", "test")}, text.parse_sst_jw,
                text.BINARY_SENTIMENT),
    DatasetSpec("movies", "ERASER Movie Reviews with human rationales (per-word masks)", "movies",
                {s: (f"{s}.jsonl", "docs") for s in ("train", "val", "test")}, eraser.parse_movies,
                eraser.MOVIES_LABELS, hub="movie_rationales"),
    DatasetSpec("imdb", "IMDB reviews (subset: lowercased, punctuation stripped)", "imdb",
                {s: (f"{s}.csv",) for s in ("dev", "test")}, text.parse_imdb, text.BINARY_SENTIMENT,
                hub="stanfordnlp/imdb (full, not this subset)"),
    DatasetSpec("yelp", "Yelp polarity sentences (Shen et al. 2017 release)", "yelp",
                {s: (f"sentiment.{s}.0", f"sentiment.{s}.1") for s in ("dev", "test")}, text.parse_yelp,
                text.BINARY_SENTIMENT, hub="yelp_polarity (documents, not this sentence release)"),
    DatasetSpec("snli", "SNLI premise/hypothesis pairs (no train split offline)", "snli",
                {s: (f"{s}.tsv",) for s in ("validation", "test")}, text.parse_snli, text.SNLI_LABELS,
                hub="stanfordnlp/snli", note=_snli_note),
    DatasetSpec("agnews", "AG News, 4 classes (test = original test CSV, dev = 10k drawn from train)", "agnews",
                {"test": ("test.csv",), "dev": ("dev_from_train.tsv",)}, text.parse_agnews, text.AGNEWS_LABELS,
                hub="fancyzhx/ag_news"),
    DatasetSpec("agnews_binary", "AG News binary subset AGN-2 (label 1 = Sports, 0 = the other classes)", "agnews",
                {"test": ("agn2_test.csv",), "validation": ("agn2_validation.csv",)}, text.parse_agnews_binary,
                text.AGNEWS_BINARY_LABELS),
    DatasetSpec("babi1", "bAbI task 1 (single supporting fact), en-10k; label = answer word", "babi",
                {"train": (_BABI[0],), "test": (_BABI[1], _BABI[0])}, text.parse_babi, None,
                hub="facebook/babi_qa (en-10k-qa1)"),
]
DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    return DATASETS[name]


def split_paths(spec: DatasetSpec, split: str, data_dir=None) -> tuple[Path, ...]:
    """The files a split needs; DatasetMissingError naming the first absent one and how to provide it."""
    root = Path(data_dir).expanduser().resolve() if data_dir is not None else config.data_dir()
    paths = tuple(root / spec.folder / f for f in spec.files[split])
    for path in paths:
        if not path.exists():
            hub = f", or (online) download the hub dataset '{spec.hub}' yourself" if spec.hub else ""
            raise DatasetMissingError(
                f"dataset {spec.name!r} split {split!r} is missing: {path} does not exist. Set LAB_DATA_DIR "
                f"(now {root}) to a folder holding {spec.folder}/ with the public release copied unchanged "
                f"(see the data README){hub}."
            )
    return paths


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=64)
def _parse_cached(name: str, split: str, paths: tuple[Path, ...], stamps: tuple) -> tuple[tuple, tuple[str, ...]]:
    """Parsed examples keyed by the files' paths (and mtime/size, so an edited file is re-read)."""
    try:
        examples, label_names = DATASETS[name].parse(paths, split)
    except (IsADirectoryError, NotADirectoryError, PermissionError) as err:
        raise DatasetFormatError(f"{err.filename}: cannot be read as part of dataset {name!r} ({err.strerror})") from None
    return tuple(examples), tuple(label_names)


def load(name: str, split: str, data_dir=None) -> TextDataset:
    """The examples of one split, read from `<data_dir>/<folder>/` (default: LAB_DATA_DIR)."""
    spec = get_spec(name)
    split = spec.resolve_split(split)
    paths = split_paths(spec, split, data_dir)
    examples, label_names = _parse_cached(spec.name, split, paths, tuple(_stamp(p) for p in paths))
    return TextDataset(spec.name, split, label_names, list(examples), source=str(paths[0]))


# ---------------------------------------------------------------- status report (`python -m lab data`)
def describe(data_dir=None) -> list[dict]:
    """One row per dataset: name, description, path, status (OK / missing / malformed), splits
    ({split: size}), balance ({split: {label name: count}}), and message (+ short) for anything not OK."""
    root = Path(data_dir).expanduser().resolve() if data_dir is not None else config.data_dir()
    rows = []
    for spec in DATASETS.values():
        row = {"name": spec.name, "description": spec.description, "path": str(root / spec.folder),
               "status": "OK", "splits": {}, "balance": {}, "message": ""}
        for split in spec.splits:
            try:
                dataset = load(spec.name, split, root)
            except (DatasetMissingError, DatasetFormatError) as err:
                if row["status"] == "OK":  # report the first problem
                    missing = isinstance(err, DatasetMissingError)
                    row["status"] = "missing" if missing else "malformed"
                    row["message"] = str(err)
                    row["short"] = f"not found: {_first_absent(spec, split, root)}" if missing else str(err)
                continue
            counts = Counter(dataset.labels)
            row["splits"][split] = len(dataset)
            row["balance"][split] = {label: counts[i] for i, label in enumerate(dataset.label_names)}
            if spec.note is not None and not row["message"]:
                row["message"] = spec.note(split_paths(spec, split, root))
        rows.append(row)
    return rows


def _first_absent(spec: DatasetSpec, split: str, root: Path) -> Path:
    return next(p for p in (root / spec.folder / f for f in spec.files[split]) if not p.exists())


def _balance(counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    return " · ".join(f"{label} {n:,} ({100 * n / total:.0f}%)" for label, n in counts.items())


def format_status(rows: list[dict] | None = None, data_dir=None) -> str:
    """A plain-text table of `describe()`: one line per split, the path and status on the dataset's first line."""
    rows = describe(data_dir) if rows is None else rows
    root = Path(data_dir).expanduser().resolve() if data_dir is not None else config.data_dir()
    lines = [f"data directory: {root}  (set LAB_DATA_DIR to change)",
             f"{'dataset':<14} {'status':<9} {'split':<11} {'examples':>9}  label balance"]
    for row in rows:
        first = f"{row['name']:<14} {row['status']:<9} "
        message = row.get("short", row["message"])
        if not row["splits"]:
            lines.append(first + message)
            continue
        for i, (split, n) in enumerate(row["splits"].items()):
            prefix = first if i == 0 else " " * len(first)
            lines.append(f"{prefix}{split:<11} {n:>9,}  {_balance(row['balance'][split])}")
        lines.append(" " * len(first) + f"path: {row['path']}" + (f"  — {message}" if message else ""))
    if any(row["status"] == "missing" for row in rows):
        lines.append("missing datasets: copy their public releases (unchanged) under the data directory, "
                     "or set LAB_DATA_DIR to a folder that holds them; see the data README.")
    return "\n".join(lines)
