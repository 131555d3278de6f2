"""Notebook 04 (Wu & Ong): batched relevance, word statistics, seed / cross-dataset correlations, deletion, claims.

A tiny WordPiece tokenizer (in-memory vocabulary, ids as in tests/models.py) drives a tiny random BERT.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lab
from lab import cache
from lab.experiments import ExperimentError
from lab.experiments import wu_ong as wo
from lab.experiments import wu_ong_results as wr
from lab.experiments import wu_ong_words as ww
from lab.explainers.batch import ExplanationSet
from lab.models.training import FineTuned
from lab.results import Results
from lab.stats import StatsInputError
from lab.viz import wu_ong as wv
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


def _rel(words_scores: list[tuple[list[str], list[float]]]) -> ExplanationSet:
    """An ExplanationSet whose rows are [CLS] w1 ... wn [SEP] [PAD]... with the given word scores."""
    n, width = len(words_scores), max(len(w) for w, _ in words_scores) + 3
    scores = torch.zeros(n, width)
    special = torch.ones(n, width, dtype=torch.bool)
    valid = torch.zeros(n, width, dtype=torch.bool)
    tokens = []
    for i, (words, s) in enumerate(words_scores):
        tokens.append(["[CLS]", *words, "[SEP]"])
        scores[i, 1:1 + len(words)] = torch.tensor(s)
        special[i, 1:1 + len(words)] = False
        valid[i, :len(words) + 2] = True
    return ExplanationSet("saliency", {}, scores, torch.zeros(n, dtype=torch.long), torch.zeros(n, 2), valid, special,
                          tokens=tokens)


def test_settings_and_recipes():
    with pytest.raises(ExperimentError, match="profile"):
        wo.settings("huge")
    paper = wo.settings("paper")
    assert paper["n_words"]["sst5"] == 2000 and paper["min_count"] == 5  # Table 2: 2,000 sentences, frequency >= 5
    cfg = wo.settings("default")
    assert wo.settings("default", scale=0.5)["n_deletion"]["sst5"] == round(0.5 * cfg["n_deletion"]["sst5"])
    # SST-5's main model is the seed-0 model of its Table 1 pair; the pair differs only in the seed
    assert wo.model_recipe("sst5", cfg, "main") == wo.model_recipe("sst5", cfg, "pair")
    assert wo.model_recipe("imdb", cfg, "main") != wo.model_recipe("imdb", cfg, "pair")
    assert wo.model_recipe("yelp", wo.settings("smoke"), "pair") == ("smoke", wo.SMOKE_OVERRIDES)
    with pytest.raises(ExperimentError, match="dataset"):
        wo.model_recipe("semeval", cfg)


def test_settings_are_one_declaration_with_the_old_behaviour():
    """`settings` is an ExperimentSettings: unknown keys are refused by name; smoke keeps the first two datasets
    (one seed pair) and `scale` still sizes every sample (at least 4 examples)."""
    assert isinstance(wo.settings, lab.experiments.ExperimentSettings)
    with pytest.raises(ExperimentError, match="unknown setting"):
        wo.settings("smoke", n_examples=3)
    cfg = wo.settings("smoke", datasets=["yelp", "imdb", "sst2"], deletion_modes="delete", scale=0.1)
    assert cfg["datasets"] == ["yelp", "imdb"] and cfg["seed_datasets"] == ["yelp"]
    assert cfg["deletion_modes"] == ["delete"] and cfg["deletion_mode"] == "delete" and cfg["n_words"] == 4
    assert wo.settings("default", datasets=None)["seed_datasets"] == list(wo.DATASETS)
    for bad, match in (({"datasets": ["semeval"]}, "datasets must be"), ({"scale": 0}, "scale must be")):
        with pytest.raises(ExperimentError, match=match):
            wo.settings("default", **bad)


def test_explain_set_batched_sorted_equals_one_call(ft, tok):
    inputs = wo.tokenize(tok, TEXTS, 32)
    rel = wo.explain_set(ft, inputs, "GS", target=[1, 0, 1, 0, 1, 1], batch_size=2)
    ref = lab.explain(ft.model, inputs, "saliency", target=[1, 0, 1, 0, 1, 1], tokenizer=tok, **wo.METHODS["GS"][1])
    assert torch.allclose(rel.scores, ref.scores, atol=1e-5)  # every row back in its input position
    assert rel.tokens == [t[:int(v.sum())] for t, v in zip(ref.tokens, ref.valid)]
    assert torch.equal(rel.special, ref.special | ~ref.valid) and torch.equal(rel.valid, ref.valid)
    assert rel.targets.tolist() == [1, 0, 1, 0, 1, 1]
    assert torch.allclose(rel.probabilities, ref.probabilities, atol=1e-6)


def test_explain_set_is_memoised_for_a_cached_classifier(ft, tok, lab_dirs, tmp_path):
    """One cache (`lab.cache`, through `explain_many`): a classifier on disk gets its explanations stored once; the
    same call is then a hit, another target another entry; an in-memory classifier stores nothing."""
    inputs = wo.tokenize(tok, TEXTS[:3], 32)
    wo.explain_set(ft, inputs, "LAT", 1)
    assert not (lab_dirs["cache"] / "explanations").exists()
    on_disk = FineTuned(ft.model, tok, {"train_seconds": 1.0}, tmp_path / "model", label_names=ft.label_names)
    first = wo.explain_set(on_disk, inputs, "LAT", 1)
    hits = cache.MEMO_STATS["hits"]
    again = wo.explain_set(on_disk, inputs, "LAT", 1)
    assert cache.MEMO_STATS["hits"] == hits + 1
    assert torch.equal(first.scores, again.scores) and first.tokens == again.tokens
    wo.explain_set(on_disk, inputs, "LAT", 0)
    assert len(list((lab_dirs["cache"] / "explanations").glob("*/value.pt"))) == 2


def test_lrp_methods_are_the_wu_ong_readings(ft, tok):
    """LRP = the authors' code reading; LRP-paper = alpha-beta with normalised add/matmul from R^(0) = f_c(x)."""
    inputs = wo.tokenize(tok, TEXTS[:3], 32)
    rel = wo.explain_set(ft, inputs, "LRP", target=0, batch_size=8)
    ref = lab.explain(ft.model, inputs, "lrp_wu_ong", target=0, tokenizer=tok, reading="code")
    assert torch.allclose(rel.scores, ref.scores, atol=1e-6)
    paper = wo.explain_set(ft, inputs, "LRP-paper", target=0, batch_size=8)
    old = lab.explain(ft.model, inputs, "lrp_alpha_beta", target=0, tokenizer=tok, add="normalized",
                      matmul="normalized")
    p0 = old.probabilities[:, 0]
    assert torch.allclose(paper.scores, old.scores * p0[:, None], atol=1e-6)
    assert (rel.scores >= 0).all() and (paper.scores >= 0).all()  # absolute sum over dimensions


def test_random_and_bad_method(ft, tok):
    inputs = wo.tokenize(tok, TEXTS[:2], 32)
    a = wo.explain_set(ft, inputs, "Random")
    b = wo.explain_set(ft, inputs, "Random")
    assert torch.equal(a.scores, b.scores) and a.scores[~a.special].min() > 0
    with pytest.raises(ExperimentError, match="method"):
        wo.explain_set(ft, inputs, "IG")


def test_words_merge_wordpieces_and_statistics_drop_punctuation():
    rel = _rel([(["film", "##s", "was", "fun", "."], [1.0, 2.0, 0.5, 4.0, 9.0]),
                (["fun", ",", "film"], [2.0, 9.0, 1.0])])
    words, scores = wo.words(rel, 0)
    assert words == ["films", "was", "fun", "."] and np.allclose(scores, [3.0, 0.5, 4.0, 9.0])
    stats = ww.word_statistics(rel)
    assert "." not in stats and "," not in stats
    assert stats["fun"] == (3.0, 2) and stats["films"] == (3.0, 1)
    top, bottom = ww.top_bottom_words(stats, k=2, min_count=1)
    assert top == ["films", "fun"] and bottom == ["was", "film"]  # ties broken alphabetically
    top, bottom = ww.top_bottom_words(stats, k=5, min_count=2)
    assert top == ["fun"] == bottom


def test_seed_correlation():
    a = _rel([(["a", "b", "c", "d"], [1.0, 2.0, 3.0, 4.0]), (["x", "y", "z"], [3.0, 1.0, 2.0])])
    same = ww.seed_correlation(a, a)
    assert same["mean"] == pytest.approx(1.0) and same["pooled"] == pytest.approx(1.0) and same["n"] == 2
    b = _rel([(["a", "b", "c", "d"], [8.0, 6.0, 4.0, 2.0]), (["x", "y", "z"], [30.0, 10.0, 20.0])])
    r = ww.seed_correlation(a, b)
    assert r["mean"] == pytest.approx(0.0)  # -1 and +1
    assert r["per_example"] == pytest.approx([-1.0, 1.0])
    assert -1 < r["pooled"] < 1
    c = _rel([(["a", "b", "c", "e"], [1.0, 2.0, 3.0, 4.0]), (["x", "y", "z"], [3.0, 1.0, 2.0])])
    with pytest.raises(ExperimentError, match="tokenise"):
        ww.seed_correlation(a, c)


def test_cross_dataset_matrix_and_shared_vocabulary():
    base = {"good": (2.0, 5), "bad": (1.0, 5), "film": (0.1, 5), "rare": (9.0, 1)}
    neg = {w: (-m, c) for w, (m, c) in base.items()}
    other = {"good": (2.0, 5), "bad": (1.0, 5), "film": (0.1, 5), "extra": (0.0, 9)}
    vocab = {"d1": {"GS": base}, "d2": {"GS": neg}, "d3": {"GS": other}}
    shared, mats = ww.cross_dataset(vocab, min_count=3)
    assert shared == ["bad", "film", "good"]
    m = mats["GS"]
    assert m.shape == (3, 3) and np.allclose(np.diag(m), 1.0)
    assert m[0, 1] == pytest.approx(-1.0) and m[0, 2] == pytest.approx(1.0) and np.allclose(m, m.T)


def test_deletion_curve_and_perturbed_example(ft, tok, lab_dirs):
    texts = TEXTS
    inputs = wo.tokenize(tok, texts, 32)
    with torch.no_grad():
        labels = ft.model(**inputs).logits.argmax(-1).tolist()  # every example is "correct"
    rel = {m: wo.explain_set(ft, inputs, m, target=labels) for m in [*wo.METHODS, wo.RANDOM]}
    ds = wo.DeletionSet("toy", ft, texts, labels, inputs, rel)
    wo.run_deletion(ds, max_words=3, progress=False)
    for method, curve in ds.curves.items():
        assert curve["n_examples"] == len(texts)
        assert curve["accuracy"][0] == 1.0 and len(curve["accuracy"]) == 4
    summary = wo.deletion_summary(ds)
    assert set(summary) == {*wo.METHODS, wo.RANDOM}
    assert summary["GS"]["auc"] == pytest.approx(float(ds.curves["GS"]["accuracy"].mean()))
    per = wo.per_example_auc(ds)
    assert set(per) == set(summary) and len(per["GS"]) == len(texts)
    assert per["GS"].mean() == pytest.approx(summary["GS"]["auc"])  # the table's auc is the mean of these
    # the results file: paired deletion intervals and every claim decided (the default profile)
    vocab = {d: {m: ww.word_statistics(rel[m]) for m in wo.METHODS} for d in ("sst5", "sst2")}
    shared, matrices = ww.cross_dataset(vocab, 1)
    seeds = {"sst5": {m: ww.seed_correlation(rel[m], rel[m]) for m in wo.METHODS}}
    pad = wo.run_deletion(wo.in_mode(ds, "pad"), max_words=3)
    cfg = wo.settings("smoke", deletion_modes=["delete", "pad"])
    res = wr.build_results("default", cfg, {"sst5": ft}, {"sst5": ds}, seeds, vocab, matrices, shared,
                           deletion_beside={"pad": {"sst5": pad}})
    row = res.tables["fig1_deletion_paired"]["rows"]["GS (sst5)"]
    assert row["Δauc"]["ours"] == pytest.approx(summary["GS"]["auc"] - summary[wo.RANDOM]["auc"])
    assert row["Δauc_low"]["ours"] <= row["Δauc"]["ours"] <= row["Δauc_high"]["ours"] and row["n"]["ours"] == 6
    assert "fig1_deletion_paired_pad" in res.tables and "(pad deletion)" in res.claims[4]["claim"]
    assert len(res.claims) == 11 and all(c["verdict"] != "not evaluated" for c in res.claims), res.claims
    text = wv.reading_markdown(res, wo.METHODS, wr.SPEEDUP_MARGIN)
    gs = row["Δauc"]["ours"]
    assert f"sst5 {gs:+.3f}" in text and "Seeds, GS" in text and "Across datasets" in text
    p = wo.perturbed_example(ds, "GS", 0, 2)
    words, scores = wo.words(rel["GS"], 0)
    top2 = set(np.argsort(-scores, kind="stable")[:2])
    assert p["removed"].sum() == 2 and set(np.flatnonzero(p["removed"])) == top2
    assert p["remaining"].split() == [w for i, w in enumerate(words) if i not in top2]
    # the perturbed prediction is the model's prediction on the remaining text
    with torch.no_grad():
        direct = ft.model(**wo.tokenize(tok, [p["remaining"]], 32)).logits.softmax(-1)[0].double().numpy()
    assert np.allclose(p["probs_after"], direct, atol=1e-5)
    fig = wv.render_deletion(wo.perturber({"toy": ds}))("toy", "LAT", 1, 1)
    assert fig is not None
    with pytest.raises(ExperimentError, match="sentence index"):
        wo.perturbed_example(ds, "GS", 99, 1)


def _fake_inputs(n=50, seed=0):
    """Per-example deletion AUCs (GS/GI/LRP 0.3 below Random, LAT at Random), seed r's near 0.9 / 0.8 (IMDb lower),
    and per-word means that agree across two datasets."""
    rng = np.random.default_rng(seed)

    def noisy(level, size=n, sd=0.02):
        return level + sd * rng.standard_normal(size)

    def aucs(rnd):
        return {"GS": noisy(rnd - 0.3), "GI": noisy(rnd - 0.3), "LRP": noisy(rnd - 0.3), "LAT": noisy(rnd),
                wo.RANDOM: noisy(rnd)}

    deletion = {"sst5": aucs(0.7), "imdb": aucs(0.8)}
    seeds = {"sst5": {m: {"per_example": list(noisy(0.9, sd=0.01))} for m in wo.METHODS},
             "imdb": {m: {"per_example": list(noisy(0.8, sd=0.01))} for m in wo.METHODS}}
    words = rng.standard_normal(100)
    vectors = {m: np.stack([words, words + 0.3 * rng.standard_normal(100)], 1) for m in wo.METHODS}
    return deletion, seeds, vectors


@pytest.mark.parametrize("smoke", [False, True])
def test_claims_hold_on_synthetic_examples(smoke):
    deletion, seeds, vectors = _fake_inputs()
    res = Results(wo.NOTEBOOK, "smoke" if smoke else "default")
    wr._claims(res, {"delete": deletion}, seeds, vectors, main="delete")
    verdicts = [c["verdict"] for c in res.claims]
    assert len(verdicts) == 7  # the cross-dataset claim: authors' readings, then the readings beside
    assert set(verdicts) == ({"not evaluated"} if smoke else {"holds"}), res.claims
    assert all("[" in c["detail"] for c in res.claims)


def test_claims_fail_or_stay_open_on_synthetic_examples():
    deletion, seeds, vectors = _fake_inputs()
    deletion["imdb"]["LRP"] = deletion["imdb"][wo.RANDOM] + 0.01  # LRP no faster than random on IMDb
    fast, spread, lat = wr.deletion_claims(deletion)
    assert fast["verdict"] == "fails" and "imdb auc_LRP − auc_random" in fast["detail"] and spread["verdict"] == "fails"
    assert lat["verdict"] == "holds"
    seeds["imdb"] = {m: dict(v) for m, v in seeds["sst5"].items()}  # IMDb as consistent as SST-5: not lower
    seeds["imdb"]["GS"] = {"per_example": list(np.array(seeds["sst5"]["GS"]["per_example"])[::-1])}
    band, lower = wr.seed_claims(seeds)
    assert band["verdict"] == "holds" and lower["verdict"] in ("inconclusive", "fails")
    rng = np.random.default_rng(1)
    unrelated = {"GS": rng.standard_normal((200, 3))}
    assert wr.cross_claims(unrelated)[0]["verdict"] == "fails"
    # two words only: the interval over words is as wide as it gets
    assert wr.cross_claims({"GS": np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 1.9]])})[0]["verdict"] == "inconclusive"

    # a reading shown beside the authors' (LRP-paper) gets its own row and does not decide the authors' claim
    rng = np.random.default_rng(0)
    base = rng.normal(size=(60, 1))
    agree = base + 0.05 * rng.normal(size=(60, 3))
    rows = wr.cross_claims({"GS": agree, "LRP": agree.copy(), "LRP-paper": rng.normal(size=(60, 3))})
    assert [r["verdict"] for r in rows] == ["holds", "fails"] and "LRP-paper" in rows[1]["claim"] \
        and "LRP-paper" not in rows[0]["detail"]


def test_claim_parts_without_values_are_not_evaluated():
    deletion, seeds, vectors = _fake_inputs()
    deletion["sst5"] = {m: np.zeros(0) for m in deletion["sst5"]}  # no example classified correctly
    fast = wr.deletion_claims(deletion)[0]
    assert fast["verdict"] == "not evaluated" and "no values" in fast["detail"]
    seeds["imdb"]["GS"]["per_example"] = []
    assert wr.seed_claims(seeds)[1]["verdict"] == "not evaluated"


def test_unpaired_difference():
    from lab.stats import unpaired_difference

    iv = unpaired_difference(np.full(30, 0.8) + np.linspace(0, 0.01, 30), np.full(20, 0.9))
    assert iv.estimate == pytest.approx(0.805 - 0.9) and iv.high < 0 and iv.n == 50
    with pytest.raises(StatsInputError):
        unpaired_difference([], [1.0])


def test_paper_values_are_complete():
    for d in wo.DATASETS:
        assert set(wr.PAPER_TABLE1[d]) == {wr._paper(m) for m in wo.METHODS} and d in wr.PAPER_ACCURACY
        assert all(0 < v < 1 for v in wr.PAPER_TABLE1[d].values())
    assert all(len(v) == 10 for v in wr.PAPER_TABLE2.values()) and len(wr.RANKS) == 10
    assert not math.isnan(wr.PAPER_TABLE1["sst5"]["GS"])


def test_pad_deletion_keeps_the_words_attended(ft, tok):
    """The authors' deletion: a word's pieces become [PAD] with attention mask 1; the prediction is the model's on
    exactly that input."""
    inputs = wo.tokenize(tok, TEXTS[:2], 32)
    rel = {"GS": wo.explain_set(ft, inputs, "GS", target=[0, 1])}
    ds = wo.in_mode(wo.DeletionSet("toy", ft, TEXTS[:2], [0, 1], inputs, rel), "pad")
    p = wo.perturbed_example(ds, "GS", 0, 2)
    assert p["remaining"].split().count("[PAD]") == 2
    words, scores = wo.words(rel["GS"], 0)
    top2 = set(np.argsort(-scores, kind="stable")[:2])
    row = {k: v[:1].clone() for k, v in inputs.items()}
    groups = ds.groups[0].tolist()
    for pos, g in enumerate(groups):
        if g in top2:
            row["input_ids"][0, pos] = tok.pad_token_id
    assert int(row["attention_mask"].sum()) == int(inputs["attention_mask"][0].sum())
    with torch.no_grad():
        direct = ft.model(**row).logits.softmax(-1)[0].double().numpy()
    assert np.allclose(p["probs_after"], direct, atol=1e-5)


def test_sentence_normalisations():
    rel = _rel([(["good", "film"], [3.0, -1.0]), (["dull"], [0.5])])
    soft = wo.normalised(rel, 0, "softmax")
    assert soft[:4].sum().item() == pytest.approx(1.0) and soft[4:].abs().sum() == 0  # [CLS] w w [SEP]; pads 0
    assert soft[1] > soft[2] > soft[0]  # |3| > |-1| > 0 ([CLS])
    assert wo.normalised(rel, 0, "max")[1].item() == 1.0
    assert wo.normalised(rel, 0, "l1")[:4].sum().item() == pytest.approx(1)
    assert torch.equal(wo.normalised(rel, 0), rel.scores[0].double())
    with pytest.raises(ExperimentError, match="sentence norm must be one of"):
        wo.normalised(rel, 0, "l2")


def test_authors_aggregation_ignores_per_sentence_scale():
    """Per-sentence normalised vocabulary means do not see a per-example rescaling (which the raw per-word means
    and the pooled correlation do): r = 1 between a relevance and its per-sentence rescaled copy."""
    rows = [(["good", "film"], [3.0, 1.0]), (["dull", "film"], [0.5, 2.0]), (["good", "dull"], [1.0, 4.0])]
    a = _rel(rows)
    b = _rel([(w, [v * f for v in s]) for (w, s), f in zip(rows, (1.0, 100.0, 0.01))])
    for norm in ("max", "l1"):
        out = ww.vocabulary_seed_correlation(a, b, norm)
        assert out["r"] == pytest.approx(1.0) and out["n"] == 3 and out["pairs"].shape == (3, 2)
    assert ww.seed_correlation(a, b)["pooled"] < 0.99
    means = ww.wordpiece_means(a, "l1")
    assert means["film"][0] == pytest.approx((1 / 4 + 2 / 2.5) / 2) and means["film"][1] == 2


def test_softmax_of_small_scores_follows_sentence_length_not_relevance():
    """Why "max" is the default: with |R| << 1, softmax(|R|) ~ 1/n, so two unrelated relevances agree (r ~ 1)."""
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(30)]
    rows = [list(rng.choice(vocab, size=int(rng.integers(2, 12)), replace=False)) for _ in range(200)]
    a = _rel([(w, list(1e-4 * rng.random(len(w)))) for w in rows])
    b = _rel([(w, list(1e-4 * rng.random(len(w)))) for w in rows])
    assert ww.vocabulary_seed_correlation(a, b, "softmax")["r"] > 0.99
    assert abs(ww.vocabulary_seed_correlation(a, b, "max")["r"]) < 0.5
    assert wo.settings("smoke")["sentence_norm"] == "max"


def test_vocabulary_seed_claim_is_decided_over_wordpieces():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(400)
    good = {"per_example": [0.85] * 5, "vocabulary": {"pairs": np.stack([x, x + 0.6 * rng.standard_normal(400)], 1),
                                                      "n": 400}}
    seeds = {"sst5": {m: good for m in wo.METHODS}}
    claim = wr.seed_claims(seeds)[-1]
    assert "authors' aggregation" in claim["claim"] and claim["verdict"] == "holds", claim
    bad = {**good, "vocabulary": {"pairs": rng.standard_normal((400, 2)), "n": 400}}
    assert wr.seed_claims({"sst5": {**seeds["sst5"], "LRP": bad}})[-1]["verdict"] == "fails"


def test_no_lrp_reading_beating_random_is_said_plainly():
    """The LRP finding is stated once the pad-deletion claims are decided; under smoke `Results.add_claim` leaves
    them undecided, so the text says nothing (no smoke rule of its own)."""
    def reading(profile, rows):
        res = Results(wo.NOTEBOOK, profile)
        res.add_table("fig1_deletion_paired", "Fig. 1 (pad): paired", rows)
        res.add_claim("GS, GI and LRP drop accuracy faster than random deletion (pad deletion)", verdict="fails")
        return wv.reading_markdown(res, wo.METHODS, wr.SPEEDUP_MARGIN)

    cell = {"Δauc": -0.01, "Δauc_low": -0.03, "Δauc_high": 0.01, "n": 40}
    rows = {f"{m} (sst5)": cell for m in wo.METHODS}
    assert "no LRP reading beats random deletion" in reading("default", rows)
    text = reading("default", {**rows, "LRP (sst5)": {**cell, "Δauc": -0.3, "Δauc_low": -0.35, "Δauc_high": -0.25}})
    assert "no LRP reading" not in text and "beats random deletion (interval below −0.05) in LRP (sst5)" in text
    assert "LRP reading" not in reading("smoke", rows)  # smoke samples decide nothing
    assert "Deletion (pad), GS" in reading("smoke", rows)


def test_settings_reject_bad_modes_and_norms():
    assert wo.settings("smoke")["deletion_modes"] == ["pad", "delete"]
    with pytest.raises(ExperimentError, match="deletion_modes must be"):
        wo.settings("smoke", deletion_modes=["drop"])
    with pytest.raises(ExperimentError, match="sentence_norm must be"):
        wo.settings("smoke", sentence_norm="l2")


def test_figures_are_pure_functions_of_the_data():
    """lab.viz.wu_ong draws from plain data: deletion curves per dataset and method, correlation matrices."""
    curve = {"x": torch.arange(3), "accuracy": torch.tensor([1.0, 0.5, 0.25]), "n_examples": 4}
    fig = wv.deletion_figure({"sst5": {"GS": curve, wo.RANDOM: curve}, "sst2": {"GS": curve, wo.RANDOM: curve}}, "pad")
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["sst5 (n=4)", "sst2 (n=4)"]
    assert axes[0].get_xlabel() == "# words set to [PAD]" and len(axes[0].get_lines()) == 2
    fig = wv.cross_dataset_figure({"GS": np.eye(2), "LAT": np.eye(2)}, ["a", "b"], 7)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["GS (7 shared words)", "LAT (7 shared words)"]
    panels = {"GS": {"words": ["good", "film"], "scores": np.array([1.0, 0.2]), "target": "positive", "p": 0.9}}
    assert wv.example_figure(panels) is not None
