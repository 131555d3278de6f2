"""Parsers for the plain-text datasets, each reading its original public format.

Every parser has the signature `parse(paths, split) -> (examples, label_names)`; `paths` are the files the
registry (registry.py) lists for the split, already checked to exist.
"""
from __future__ import annotations

import re
from pathlib import Path

from .base import TextExample
from .readers import format_error, iter_csv, iter_lines, parse_label, split_tsv

Parsed = tuple[list[TextExample], tuple[str, ...]]

BINARY_SENTIMENT = ("negative", "positive")
SST5_LABELS = ("very negative", "negative", "neutral", "positive", "very positive")
SNLI_LABELS = ("entailment", "neutral", "contradiction")
AGNEWS_LABELS = ("World", "Sports", "Business", "Sci/Tech")  # original class ids 1..4
# agn2_*.csv: checked against test.csv, label 1 is exactly the Sports class and 0 the three others.
AGNEWS_BINARY_LABELS = ("other", "sports")


# ---------------------------------------------------------------- SST-2 (GLUE TSV)
def parse_sst2(paths: tuple[Path, ...], split: str) -> Parsed:
    """GLUE SST-2: `sentence<TAB>label` with a header; several files are concatenated in order."""
    examples = []
    for path in paths:
        for number, line in iter_lines(path, skip_header="sentence\tlabel"):
            sentence, label = split_tsv(path, number, line, 2)
            examples.append(TextExample(sentence.strip(), parse_label(path, number, label, 2), uid=f"{path.name}:{number}"))
    return examples, BINARY_SENTIMENT


# ---------------------------------------------------------------- SST PTB trees
_LEAF = re.compile(r"\((\d+) ([^\s()]+)\)")
_ROOT = re.compile(r"\((\d+)\s")
_PTB_ESCAPES = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}


def _unescape_ptb(token: str) -> str:
    token = _PTB_ESCAPES.get(token, token)
    return token.replace("\\/", "/").replace("\\*", "*")


def _parse_tree(path: Path, number: int, line: str) -> tuple[int, list[str]]:
    """(root label, leaves) of one bracketed tree such as `(3 (2 The) (4 (3 gorgeously) ...))`."""
    depth = 0
    for char in line:
        depth += char == "("
        depth -= char == ")"
        if depth < 0:
            break
    root = _ROOT.match(line)
    leaves = _LEAF.findall(line)
    if depth != 0 or root is None or not leaves:
        raise format_error(path, number, "not a bracketed PTB tree (unbalanced parentheses or no leaves)")
    return int(root.group(1)), [_unescape_ptb(word) for _, word in leaves]


def _sst_trees(path: Path) -> list[tuple[int, str, int]]:
    """(root label 0-4, sentence, line number) for every tree in the file."""
    out = []
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        label, words = _parse_tree(path, number, line.strip())
        if not 0 <= label <= 4:
            raise format_error(path, number, f"root label {label} outside 0..4")
        out.append((label, " ".join(words), number))
    return out


def parse_sst5(paths: tuple[Path, ...], split: str) -> Parsed:
    """Sentence-level SST: the root label of each tree (5 classes), text = its leaves."""
    (path,) = paths
    examples = [TextExample(text, label, uid=f"{path.name}:{n}") for label, text, n in _sst_trees(path)]
    return examples, SST5_LABELS


def parse_sst_binary(paths: tuple[Path, ...], split: str) -> Parsed:
    """Binarised SST trees: root labels 0,1 -> negative, 3,4 -> positive, neutral (2) dropped."""
    (path,) = paths
    examples = [
        TextExample(text, int(label > 2), uid=f"{path.name}:{n}") for label, text, n in _sst_trees(path) if label != 2
    ]
    return examples, BINARY_SENTIMENT


def parse_sst_jw(paths: tuple[Path, ...], split: str) -> Parsed:
    """Jain & Wallace's binarised SST: one CSV `text,label,exp_split`; keep the rows of `split`."""
    (path,) = paths
    examples = []
    for number, (text, label, exp_split) in iter_csv(path, 3, header=["text", "label", "exp_split"]):
        if exp_split not in ("train", "dev", "test"):
            raise format_error(path, number, f"exp_split {exp_split!r} is not train/dev/test")
        if exp_split == split:
            examples.append(TextExample(text, parse_label(path, number, label, 2), uid=f"{path.name}:{number}"))
    return examples, BINARY_SENTIMENT


# ---------------------------------------------------------------- IMDB subset, Yelp sentences
def parse_imdb(paths: tuple[Path, ...], split: str) -> Parsed:
    """CSV without header: `idx,text,label`."""
    (path,) = paths
    examples = [
        TextExample(text, parse_label(path, number, label, 2), uid=idx)
        for number, (idx, text, label) in iter_csv(path, 3)
    ]
    return examples, BINARY_SENTIMENT


def parse_yelp(paths: tuple[Path, ...], split: str) -> Parsed:
    """Shen et al. (2017) Yelp: one sentence per line; the label is the file suffix (.0 / .1)."""
    examples = []
    for path in paths:
        label = parse_label(path, 0, path.suffix.lstrip("."), 2)
        for number, line in iter_lines(path):
            if not line.strip():
                raise format_error(path, number, "empty line")
            examples.append(TextExample(line.strip(), label, uid=f"{path.name}:{number}"))
    return examples, BINARY_SENTIMENT


# ---------------------------------------------------------------- SNLI
def parse_snli(paths: tuple[Path, ...], split: str) -> Parsed:
    """`premise<TAB>hypothesis<TAB>label` with a header; rows without a gold label (-1 / empty) are skipped."""
    (path,) = paths
    examples = []
    for number, line in iter_lines(path, skip_header="premise\thypothesis\tlabel"):
        premise, hypothesis, label = split_tsv(path, number, line, 3)
        if label.strip() in ("", "-1"):
            continue  # no annotator majority; counted by skipped_rows()
        examples.append(TextExample(premise, parse_label(path, number, label, 3), text_pair=hypothesis, uid=str(number)))
    return examples, SNLI_LABELS


def snli_skipped_rows(path: Path) -> int:
    """How many rows parse_snli drops for lacking a gold label."""
    return sum(1 for _, line in iter_lines(path, skip_header="premise\thypothesis\tlabel") if line.rsplit("\t", 1)[-1].strip() in ("", "-1"))


# ---------------------------------------------------------------- AG News
def parse_agnews(paths: tuple[Path, ...], split: str) -> Parsed:
    """The two AG News files differ: the original test CSV and the dev_from_train text<TAB>class TSV."""
    return (parse_agnews_csv if paths[0].suffix == ".csv" else parse_agnews_tsv)(paths, split)


def parse_agnews_csv(paths: tuple[Path, ...], split: str) -> Parsed:
    """Original AG News CSV `class(1-4),title,description` -> label class-1, text `title description`."""
    (path,) = paths
    examples = [
        TextExample(f"{title} {description}", parse_label(path, number, label, 4, offset=1), uid=f"{path.name}:{number}")
        for number, (label, title, description) in iter_csv(path, 3)
    ]
    return examples, AGNEWS_LABELS


def parse_agnews_tsv(paths: tuple[Path, ...], split: str) -> Parsed:
    """dev_from_train.tsv: `text<TAB>class name` (no header, no title column)."""
    (path,) = paths
    index = {name: i for i, name in enumerate(AGNEWS_LABELS)}
    examples = []
    for number, line in iter_lines(path):
        text, name = split_tsv(path, number, line, 2)
        if name not in index:
            raise format_error(path, number, f"class {name!r} is not one of {', '.join(AGNEWS_LABELS)}")
        examples.append(TextExample(text, index[name], uid=f"{path.name}:{number}"))
    return examples, AGNEWS_LABELS


def parse_agnews_binary(paths: tuple[Path, ...], split: str) -> Parsed:
    """agn2_*.csv (no header): `idx,text,label`, label 1 = Sports, 0 = World/Business/Sci-Tech."""
    (path,) = paths
    examples = [
        TextExample(text, parse_label(path, number, label, 2), uid=idx) for number, (idx, text, label) in iter_csv(path, 3)
    ]
    return examples, AGNEWS_BINARY_LABELS


# ---------------------------------------------------------------- bAbI task 1
def _babi_questions(path: Path) -> list[tuple[str, str, str, int]]:
    """(story so far, question, answer, line number) for each question line of a bAbI text file.

    Format: `<id> <sentence>` lines, the id restarting at 1 with each story; question lines are
    `<id> <question>\\t<answer>\\t<supporting ids>`.
    """
    out, story = [], []
    for number, line in iter_lines(path):
        head, _, rest = line.partition(" ")
        if not head.isdigit() or not rest:
            raise format_error(path, number, "expected '<id> <sentence>'")
        if head == "1":
            story = []
        if "\t" in rest:
            fields = rest.split("\t")
            if len(fields) != 3 or not fields[1].strip():
                raise format_error(path, number, "question line must be '<id> <question>\\t<answer>\\t<supporting ids>'")
            out.append((" ".join(story), fields[0].strip(), fields[1].strip(), number))
        else:
            story.append(rest.strip())
    return out


def parse_babi(paths: tuple[Path, ...], split: str) -> Parsed:
    """Each question is an example: text = story sentences so far, text_pair = question,
    label = index of the answer in the sorted answer vocabulary of the train file (paths[-1])."""
    path, train_path = paths[0], paths[-1]
    vocabulary = tuple(sorted({answer for _, _, answer, _ in _babi_questions(train_path)}))
    index = {word: i for i, word in enumerate(vocabulary)}
    examples = []
    for story, question, answer, number in _babi_questions(path):
        if answer not in index:
            raise format_error(path, number, f"answer {answer!r} never occurs in {train_path.name}")
        examples.append(TextExample(story, index[answer], text_pair=question, uid=f"{path.name}:{number}"))
    return examples, vocabulary
