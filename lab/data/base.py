"""Typed examples shared by every loader."""
from __future__ import annotations

from dataclasses import dataclass, field


class DatasetMissingError(FileNotFoundError):
    """A dataset's files are not where the data-directory setting points."""


class DatasetFormatError(ValueError):
    """A dataset file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class TextExample:
    """One classification example.

    text / text_pair: the input (text_pair for NLI premise/hypothesis, or bAbI story/question).
    label: integer class index.
    words: the original whitespace tokens, when the dataset is pre-tokenised (ERASER), else None.
    rationale: per-word 0/1 human rationale aligned with `words` (ERASER), else None.
    uid: stable identifier within the dataset (annotation id, line number ...).
    """

    text: str
    label: int
    text_pair: str | None = None
    words: tuple[str, ...] | None = None
    rationale: tuple[int, ...] | None = None
    uid: str = ""


@dataclass
class TextDataset:
    name: str
    split: str
    label_names: tuple[str, ...]
    examples: list[TextExample] = field(default_factory=list)
    source: str = ""  # path the data was read from

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return TextDataset(self.name, self.split, self.label_names, self.examples[i], self.source)
        return self.examples[i]

    def __iter__(self):
        return iter(self.examples)

    @property
    def labels(self) -> list[int]:
        return [e.label for e in self.examples]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def subset(self, n: int | None, seed: int = 0) -> "TextDataset":
        """A deterministic random subset of n examples (all when n is None or >= len)."""
        import random

        if n is None or n >= len(self.examples):
            return self
        idx = sorted(random.Random(seed).sample(range(len(self.examples)), n))
        return TextDataset(self.name, self.split, self.label_names, [self.examples[i] for i in idx], self.source)

    def to_hf(self):
        """A `datasets.Dataset` view (text, text_pair, label)."""
        import datasets

        return datasets.Dataset.from_dict(
            {
                "text": [e.text for e in self.examples],
                "text_pair": [e.text_pair for e in self.examples],
                "label": [e.label for e in self.examples],
            }
        )
