"""Notebook 06 on the protocol layer: Hugging Face targets go through `explain_many` with the same numbers as one
`lab.explain` call, each batch's marginalisation extras come back at their own rows, the estimator study and its
cost ratio, the settings checks, and the figures/widget of `lab.viz.input_marginalization` from plain data."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import lab.explainers.marginalization as M
from lab.explainers.base import explain
from lab.explainers.batch import explain_many
from lab.models.cnn import TextConfig, build_text_classifier, random_subset
from tests.models import CLS_ID, SEP_ID, VOCAB, tiny_bert, unbatch
from tests.test_marginalization import batch, mlm  # noqa: F401 (fixtures: a tiny masked LM, three padded rows)


@pytest.fixture(scope="module")
def bert32():
    return tiny_bert(num_labels=3, dtype=torch.float32)


def special(batch):
    return ~batch["attention_mask"].bool() | torch.isin(batch["input_ids"], torch.tensor([CLS_ID, SEP_ID]))


def test_weight_of_evidence_equals_one_explain_call_and_marginalize(bert32, mlm, batch):
    """The HF path (explain_many: sorted, trimmed batches) gives exactly the scores of the former single
    `lab.explain` call on the padded batch; the CNN path is `marginalize` itself."""
    params = dict(candidates="truncate", sigma=1e-3, renormalize=True, max_candidates=None)
    cached = M.CachedMLM(mlm)  # a callable, not a module: explain_many must not digest it when not caching
    got = M.weight_of_evidence(bert32, batch, special(batch), cached, max_batch=7, **params)
    with torch.no_grad():
        predicted = bert32(**batch).logits.argmax(-1)
    assert torch.equal(got["target"], predicted)
    once = explain(bert32, batch, "input_marginalization", target=predicted, mlm=cached, max_batch=7, **params)
    assert torch.equal(got["scores"], once.scores.double())
    assert torch.equal(got["n_candidates"], once.extras["n_candidates"])
    assert got["cost"]["classifier_rows"] == once.extras["cost"]["classifier_rows"]
    erased = M.weight_of_evidence(bert32, batch, special(batch), erasure="unk", target=1)
    assert torch.equal(erased["scores"], explain(bert32, batch, "erasure", target=[1, 1, 1], token="unk",
                                                 max_batch=256).scores.double())
    torch.manual_seed(0)
    cnn = build_text_classifier(TextConfig(VOCAB, 2, "cnn", embed_dim=8, filters=4)).double().eval()
    mine = M.weight_of_evidence(cnn, batch, special(batch), mlm, target=[1, 0, 1], **params)
    fn = M.classifier_log_probs(cnn)
    ref = M.marginalize(fn, batch, torch.tensor([1, 0, 1]), special(batch), mlm, max_batch=256, **params)
    assert torch.equal(mine["scores"], ref["scores"]) and mine["cost"]["classifier_rows"] == ref["cost"]["classifier_rows"]


def test_merged_extras_put_each_batch_back_at_its_rows(bert32, mlm, batch):
    """Batches of 2 rows sorted by length: candidates, their counts and the cost are those of each row alone."""
    s = explain_many(bert32, batch, "input_marginalization", [0, 1, 2], batch_size=2, mlm=mlm, sigma=1e-2,
                     keep_candidates=True)
    assert len(s.extras) == 2 and s.extras[0][0].tolist() == [0, 2]  # longest first: rows 0 (6), 2 (5), then 1
    merged = M.merged_extras(s)
    rows = 0
    for i in range(3):
        one = explain(bert32, unbatch(batch, i), "input_marginalization", target=[i], mlm=mlm, sigma=1e-2,
                      keep_candidates=True)
        n = one.scores.shape[1]
        assert torch.equal(merged["n_candidates"][i, :n], one.extras["n_candidates"][0])
        for (r, pos), (ids, log_w, log_py) in one.extras["candidates"].items():
            got = merged["candidates"][(i, pos)]
            assert r == 0 and torch.equal(got[0], ids) and torch.equal(got[1], log_w) and torch.equal(got[2], log_py)
        rows += one.extras["cost"]["classifier_rows"]
    assert merged["cost"]["classifier_rows"] == rows
    assert len(merged["candidates"]) == int((merged["n_candidates"] > 0).sum())


def test_estimator_errors_and_cost_ratio():
    content = torch.tensor([[False, True, True, False]])
    exact = torch.tensor([[0.0, 1.0, 2.0, 0.0]], dtype=torch.float64)
    calls = []

    def score(candidates, show, **params):
        calls.append((candidates, show, params))
        if candidates == "truncate":
            noise = params["sigma"] * 100  # σ = 0 is the exact sum
            return {"scores": exact + noise, "cost": {"classifier_rows": 10 / (1 + params["sigma"] * 1000)}}
        err = 1.0 / params["n_samples"] * (1 + params["seed"])
        return {"scores": exact - err, "cost": {"classifier_rows": 2 * params["n_samples"]}}

    study = M.estimator_errors(score, content, sigmas=(1e-2, 1e-3), sample_sizes=(2, 10), seeds=(0, 1), progress=True)
    assert calls[0] == ("truncate", True, {"sigma": 0.0, "max_candidates": None})
    assert study["n_tokens"] == 2 and study["full_rows_per_token"] == 5.0
    trunc, mc = study["rows"][:2], study["rows"][2:]
    assert trunc[0]["mae"] == pytest.approx(1.0) and trunc[0]["abs_errors"] == pytest.approx([1.0, 1.0])
    assert trunc[1]["rows_per_token"] == pytest.approx(10 / 2 / 2)
    assert mc[0]["mae"] == pytest.approx((0.5 + 1.0) / 2) and mc[0]["mae_std"] == pytest.approx(0.25)
    assert mc[1]["rows_per_token"] == pytest.approx(10.0)
    ratio = M.cost_ratio(study, sigma=1e-3)  # truncation error 0.1: no MC size reaches it (0.75, 0.15)
    assert ratio["truncation_mae"] == pytest.approx(0.1) and ratio["mc_n"] is None and ratio["ratio"] is None
    ratio = M.cost_ratio(study, sigma=1e-2)  # error 1.0: n = 2 (0.75) matches at 2 rows per token
    assert ratio["mc_n"] == 2 and ratio["ratio"] == pytest.approx(2.0 / (10 / 11 / 2))


def test_settings_check_deletions_and_sizes():
    from lab.experiments import input_marginalization as im

    assert im.settings("smoke", n_auc=3)["n_auc"] == 3
    with pytest.raises(im.ExperimentError, match=r"unknown deletion\(s\)"):
        im.settings("default", deletions=["mlm", "zero"])
    with pytest.raises(im.ExperimentError, match="n_auc_bert must be >= 1"):
        im.settings("default", n_auc_bert=0)
    with pytest.raises(im.ExperimentError, match="unknown profile"):
        im.settings("fast")


def test_random_subset_is_seeded_and_keeps_the_order():
    items = list(range(20))
    a = random_subset(items, 5, seed=3)
    rows = sorted(np.random.default_rng(3).permutation(20)[:5])
    assert a == rows and random_subset(items, 5, seed=3) == a
    assert random_subset(items, None) == items and random_subset(items, 50) == items


# ---------------------------------------------------------------- figures and widget from plain data
def view(pair: bool = False):
    tokens = ["[CLS]", "good", "film", "[SEP]"] + (["fine", "[SEP]"] if pair else ["[PAD]", "[PAD]"])
    valid = torch.tensor([[True] * (6 if pair else 4) + [False] * (0 if pair else 2)])
    special = torch.tensor([[t in ("[CLS]", "[SEP]", "[PAD]") for t in tokens]]) | ~valid
    scores = torch.tensor([[0.0, 0.5, -0.25, 0.0, 0.75, 0.0]], dtype=torch.float64)
    cands = {(0, 1): (["great", "bad"], torch.tensor([-0.1, -2.4]), torch.tensor([-0.05, -3.0]))}
    run = {"scores": scores, "target": torch.tensor([1]), "log_probs": torch.tensor([[-2.0, -0.2]]),
           "candidates": cands}
    return {"tokens": [tokens], "valid": valid, "special": special, "runs": {("lstm", "marg"): run}}


def test_sentence_panel_keeps_content_and_draws_a_pairs_middle_sep():
    from lab.viz import input_marginalization as V

    title, tokens, vals = V.sentence_panel(view(), ("lstm", "marg"), 0, "t")
    assert (title, tokens) == ("t", ["good", "film"]) and vals.tolist() == [0.5, -0.25]
    _, tokens, vals = V.sentence_panel(view(pair=True), ("lstm", "marg"), 0, "t")
    assert tokens == ["good", "film", "|", "fine"] and vals.tolist() == [0.5, -0.25, 0.0, 0.75]


def test_renderer_checks_the_text_and_draws_the_candidates():
    from lab.viz import input_marginalization as V

    calls = []

    def explain(texts, runs, pairs, keep, **overrides):
        calls.append((texts, runs, pairs, keep, overrides))
        v = view(pair=pairs is not None)
        v["runs"] = {runs[0]: v["runs"][("lstm", "marg")]}
        return v

    render = V.renderer(explain, {"lstm": "BiLSTM", "snli": "SNLI"}, pair_models=["snli"])
    with pytest.raises(ValueError, match="type a sentence"):
        render("  ", "lstm", "marg", -4.0, 100, 0)
    with pytest.raises(ValueError, match="premise | hypothesis"):
        render("a man sleeps", "snli", "marg", -4.0, 100, 0)
    assert isinstance(render("good film", "lstm", "marg", -2.0, 10, 0), Figure)
    assert calls[-1] == (["good film"], [("lstm", "marg")], None, True, {"sigma": 10 ** -2.0, "n_samples": 10})
    assert isinstance(render("a man | sleeps", "snli", "marg", -4.0, 100, 3), Figure)  # clamped to the last token
    assert calls[-1][0] == ["a man"] and calls[-1][2] == ["sleeps"]
    fig = V.candidates_figure(view(), ("lstm", "marg"), 2, "no candidates kept at 'film'")
    assert isinstance(fig, Figure)
