"""Offline datasets in their original public formats, read from `lab.config.data_dir()` (LAB_DATA_DIR).

    load("sst2", "dev")            -> TextDataset of TextExample(text, label, ...)
    DATASETS                        name -> DatasetSpec(description, folder, splits, label_names)
    describe() / format_status()    what is present: path, split sizes, label balance, OK/missing
    encode_words / align_rationale  ERASER word rationales -> word-piece masks aligned with the model input
"""
from .base import DatasetFormatError, DatasetMissingError, TextDataset, TextExample
from .eraser import align_rationale, encode_words
from .registry import DATASETS, DatasetSpec, describe, format_status, load

__all__ = [
    "DATASETS",
    "DatasetFormatError",
    "DatasetMissingError",
    "DatasetSpec",
    "TextDataset",
    "TextExample",
    "align_rationale",
    "describe",
    "encode_words",
    "format_status",
    "load",
]
