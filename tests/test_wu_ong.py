"""Notebook 04 (Wu & Ong): batched relevance, word statistics, seed / cross-dataset correlations, deletion, claims.

A tiny WordPiece tokenizer (in-memory vocabulary, ids as in tests/models.py) drives a tiny random BERT.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lab
from lab.experiments import wu_ong as wo
from lab.models.training import FineTuned
from tests.models import tiny_bert

WORDS = ["a", "good", "bad", "film", "plot", "the", "is", "was", "great", "awful", "movie", "acting", "dull",
         "fun", "and", "but", "story", "not", "very", ".", ","]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s", "##ly", "##ing"]
TEXTS = ["the film was great fun and the acting is good", "a dull plot .", "the movie is not very good",
         "films was fun", "a bad bad film , awful", "great great acting and a good story"]


@pytest.fixture(scope="module")
def tok():
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab={t: i for i, t in enumerate(VOCAB)}, do_lower_case=True)


@pytest.fixture(scope="module")
def ft(tok):
    m = tiny_bert(num_labels=2, seed=3, dtype=torch.float32)
    m.config.id2label = {0: "negative", 1: "positive"}
    m.config.label2id = {"negative": 0, "positive": 1}
    return FineTuned(m, tok, {}, None, label_names=("negative", "positive"))


def _rel(words_scores: list[tuple[list[str], list[float]]]) -> wo.Relevance:
    """A Relevance whose rows are [CLS] w1 ... wn [SEP] [PAD]... with the given word scores."""
    width = max(len(w) for w, _ in words_scores) + 3
    scores = torch.zeros(len(words_scores), width, dtype=torch.float64)
    special = torch.ones(len(words_scores), width, dtype=torch.bool)
    tokens = []
    for i, (words, s) in enumerate(words_scores):
        row = ["[CLS]", *words, "[SEP]"]
        tokens.append(row + ["[PAD]"] * (width - len(row)))
        scores[i, 1:1 + len(words)] = torch.tensor(s, dtype=torch.float64)
        special[i, 1:1 + len(words)] = False
    n = len(words_scores)
    return wo.Relevance("GS", scores, tokens, special, torch.zeros(n, dtype=torch.long),
                        torch.full((n, 2), 0.5, dtype=torch.float64))


def test_settings_and_recipes():
    with pytest.raises(wo.WuOngInputError, match="profile"):
        wo.settings("huge")
    paper = wo.settings("paper")
    assert paper["n_words"]["sst5"] == 2000 and paper["min_count"] == 5  # Table 2: 2,000 sentences, frequency >= 5
    cfg = wo.settings("default")
    assert wo.settings("default", scale=0.5)["n_deletion"]["sst5"] == round(0.5 * cfg["n_deletion"]["sst5"])
    # SST-5's main model is the seed-0 model of its Table 1 pair; the pair differs only in the seed
    assert wo.model_recipe("sst5", cfg, "main") == wo.model_recipe("sst5", cfg, "pair")
    assert wo.model_recipe("imdb", cfg, "main") != wo.model_recipe("imdb", cfg, "pair")
    assert wo.model_recipe("yelp", wo.settings("smoke"), "pair") == ("smoke", wo.SMOKE_OVERRIDES)
    with pytest.raises(wo.WuOngInputError, match="dataset"):
        wo.model_recipe("semeval", cfg)


def test_explain_method_batched_sorted_equals_one_call(ft, tok):
    inputs = wo.tokenize(tok, TEXTS, 32)
    rel = wo.explain_method(ft.model, tok, inputs, "GS", target=1, batch_size=2)
    ref = lab.explain(ft.model, inputs, "saliency", target=1, tokenizer=tok, gradient_of="probability")
    assert torch.allclose(rel.scores, ref.scores.double(), atol=1e-5)
    assert rel.tokens == ref.tokens
    assert torch.equal(rel.special, ref.special | ~ref.valid)
    assert torch.equal(rel.target, torch.ones(len(TEXTS), dtype=torch.long))


def test_lrp_is_scaled_by_the_class_probability(ft, tok):
    inputs = wo.tokenize(tok, TEXTS[:3], 32)
    rel = wo.explain_method(ft.model, tok, inputs, "LRP", target=0, batch_size=8)
    ref = lab.explain(ft.model, inputs, "lrp_alpha_beta", target=0, tokenizer=tok, alpha=1.0, beta=0.0)
    p0 = ref.probabilities[:, 0].double()
    assert torch.allclose(rel.scores, ref.scores.double() * p0[:, None], atol=1e-6)
    assert (rel.scores >= 0).all()  # absolute sum over dimensions


def test_random_and_bad_method(ft, tok):
    inputs = wo.tokenize(tok, TEXTS[:2], 32)
    a = wo.explain_method(ft.model, tok, inputs, "Random")
    b = wo.explain_method(ft.model, tok, inputs, "Random")
    assert torch.equal(a.scores, b.scores) and a.scores[~a.special].min() > 0
    with pytest.raises(wo.WuOngInputError, match="method"):
        wo.explain_method(ft.model, tok, inputs, "IG")


def test_words_merge_wordpieces_and_statistics_drop_punctuation():
    rel = _rel([(["film", "##s", "was", "fun", "."], [1.0, 2.0, 0.5, 4.0, 9.0]),
                (["fun", ",", "film"], [2.0, 9.0, 1.0])])
    words, scores = rel.words(0)
    assert words == ["films", "was", "fun", "."] and np.allclose(scores, [3.0, 0.5, 4.0, 9.0])
    stats = wo.word_statistics(rel)
    assert "." not in stats and "," not in stats
    assert stats["fun"] == (3.0, 2) and stats["films"] == (3.0, 1)
    top, bottom = wo.top_bottom_words(stats, k=2, min_count=1)
    assert top == ["films", "fun"] and bottom == ["was", "film"]  # ties broken alphabetically
    top, bottom = wo.top_bottom_words(stats, k=5, min_count=2)
    assert top == ["fun"] == bottom


def test_seed_correlation():
    a = _rel([(["a", "b", "c", "d"], [1.0, 2.0, 3.0, 4.0]), (["x", "y", "z"], [3.0, 1.0, 2.0])])
    same = wo.seed_correlation(a, a)
    assert same["mean"] == pytest.approx(1.0) and same["pooled"] == pytest.approx(1.0) and same["n"] == 2
    b = _rel([(["a", "b", "c", "d"], [8.0, 6.0, 4.0, 2.0]), (["x", "y", "z"], [30.0, 10.0, 20.0])])
    r = wo.seed_correlation(a, b)
    assert r["mean"] == pytest.approx(0.0)  # -1 and +1
    assert -1 < r["pooled"] < 1
    c = _rel([(["a", "b", "c", "e"], [1.0, 2.0, 3.0, 4.0]), (["x", "y", "z"], [3.0, 1.0, 2.0])])
    with pytest.raises(wo.WuOngInputError, match="tokenise"):
        wo.seed_correlation(a, c)


def test_cross_dataset_matrix_and_shared_vocabulary():
    base = {"good": (2.0, 5), "bad": (1.0, 5), "film": (0.1, 5), "rare": (9.0, 1)}
    neg = {w: (-m, c) for w, (m, c) in base.items()}
    other = {"good": (2.0, 5), "bad": (1.0, 5), "film": (0.1, 5), "extra": (0.0, 9)}
    vocab = {"d1": {"GS": base}, "d2": {"GS": neg}, "d3": {"GS": other}}
    shared, mats = wo.cross_dataset(vocab, min_count=3)
    assert shared == ["bad", "film", "good"]
    m = mats["GS"]
    assert m.shape == (3, 3) and np.allclose(np.diag(m), 1.0)
    assert m[0, 1] == pytest.approx(-1.0) and m[0, 2] == pytest.approx(1.0) and np.allclose(m, m.T)


def test_deletion_curve_and_perturbed_example(ft, tok, lab_dirs):
    texts = TEXTS
    inputs = wo.tokenize(tok, texts, 32)
    with torch.no_grad():
        labels = ft.model(**inputs).logits.argmax(-1).tolist()  # every example is "correct"
    rel = {m: wo.explain_method(ft.model, tok, inputs, m, target=labels) for m in [*wo.METHODS, wo.RANDOM]}
    ds = wo.DeletionSet("toy", ft, texts, labels, inputs, rel)
    wo.run_deletion(ds, max_words=3, progress=False)
    for method, curve in ds.curves.items():
        assert curve["n_examples"] == len(texts)
        assert curve["accuracy"][0] == 1.0 and len(curve["accuracy"]) == 4
    summary = wo.deletion_summary(ds)
    assert set(summary) == {*wo.METHODS, wo.RANDOM}
    assert summary["GS"]["auc"] == pytest.approx(float(ds.curves["GS"]["accuracy"].mean()))
    p = wo.perturbed_example(ds, "GS", 0, 2)
    words, scores = rel["GS"].words(0)
    top2 = set(np.argsort(-scores, kind="stable")[:2])
    assert p["removed"].sum() == 2 and set(np.flatnonzero(p["removed"])) == top2
    assert p["remaining"].split() == [w for i, w in enumerate(words) if i not in top2]
    # the perturbed prediction is the model's prediction on the remaining text
    with torch.no_grad():
        direct = ft.model(**wo.tokenize(tok, [p["remaining"]], 32)).logits.softmax(-1)[0].double().numpy()
    assert np.allclose(p["probs_after"], direct, atol=1e-5)
    fig = wo.render_deletion({"toy": ds})("toy", "LAT", 1, 1)
    assert fig is not None
    with pytest.raises(wo.WuOngInputError, match="sentence index"):
        wo.perturbed_example(ds, "GS", 99, 1)


def _fake_inputs():
    def summary(gs, lat, rnd):
        return {"GS": {"auc": gs}, "GI": {"auc": gs}, "LRP": {"auc": gs + 0.01}, "LAT": {"auc": lat},
                wo.RANDOM: {"auc": rnd}}

    summaries = {"sst5": summary(0.3, 0.7, 0.72), "imdb": summary(0.4, 0.8, 0.78)}
    seeds = {"sst5": {m: {"mean": 0.9, "pooled": 0.9} for m in wo.METHODS},
             "imdb": {m: {"mean": 0.8, "pooled": 0.8} for m in wo.METHODS}}
    matrices = {m: np.array([[1.0, 0.7], [0.7, 1.0]]) for m in wo.METHODS}
    return summaries, seeds, matrices


@pytest.mark.parametrize("smoke", [False, True])
def test_claims(smoke):
    summaries, seeds, matrices = _fake_inputs()
    res = wo.Results(wo.NOTEBOOK, "smoke" if smoke else "default")
    wo._claims(res, smoke, summaries, seeds, matrices)
    holds = [c["holds"] for c in res.claims]
    assert len(holds) == 6
    if smoke:
        assert all(h is None for h in holds)
    else:
        assert all(h is True for h in holds), res.claims
    seeds["imdb"]["GS"]["mean"] = 0.95  # IMDb no longer the least consistent for GS
    res2 = wo.Results(wo.NOTEBOOK, "default")
    wo._claims(res2, False, summaries, seeds, matrices)
    assert [c["holds"] for c in res2.claims if "long texts" in c["claim"]] == [False]


def test_paper_values_are_complete():
    for d in wo.DATASETS:
        assert set(wo.PAPER_TABLE1[d]) == set(wo.METHODS) and d in wo.PAPER_ACCURACY
        assert all(0 < v < 1 for v in wo.PAPER_TABLE1[d].values())
    assert all(len(v) == 10 for v in wo.PAPER_TABLE2.values()) and len(wo.RANKS) == 10
    assert not math.isnan(wo.PAPER_TABLE1["sst5"]["GS"])


def test_cached_relevance_round_trip(ft, tok, lab_dirs, tmp_path):
    on_disk = FineTuned(ft.model, tok, {"train_seconds": 1.0}, tmp_path / "model", label_names=ft.label_names)
    _, first = wo.cached_relevance(on_disk, TEXTS[:3], "LAT", 1, 32)
    files = list((lab_dirs["cache"] / "wu_ong").glob("rel-LAT-*/value.pt"))
    assert len(files) == 1
    _, again = wo.cached_relevance(on_disk, TEXTS[:3], "LAT", 1, 32)
    assert torch.equal(first.scores, again.scores) and first.tokens == again.tokens
    wo.cached_relevance(on_disk, TEXTS[:3], "LAT", 0, 32)  # another target: another entry
    assert len(list((lab_dirs["cache"] / "wu_ong").glob("rel-LAT-*/value.pt"))) == 2
