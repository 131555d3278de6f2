"""Notebook 02 (Chefer et al. on BERT, ERASER Movie Reviews): encoding, batching, F1, class support, claims.

A tiny WordPiece tokenizer (built from an in-memory vocabulary, offline) whose ids follow tests/models.py's convention
([PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4) drives a tiny random BERT.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import lab
from lab.data.base import TextExample
from lab.errors import ExplainInputError
from functools import partial

from lab.experiments import chefer_bert as cb
from lab.experiments import chefer_bert_results as cbr
from lab.explainers.batch import explain_many
from lab.metrics import rationales
from lab.viz import chefer_bert as viz_cb
from tests.models import text_batch, tiny_bert

WORDS = ["a", "good", "bad", "film", "plot", "the", "is", "was", "great", "awful", "movie", "acting", "dull",
         "fun", "and", "but", "story", "not", "very", ".", ","]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s", "##ly", "##ing"]


@pytest.fixture(scope="module")
def tok():
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab={t: i for i, t in enumerate(VOCAB)}, do_lower_case=True)


def review(words: str, rationale: str, label: int, uid: str) -> TextExample:
    w = tuple(words.split())
    r = tuple(int(c) for c in rationale)
    assert len(w) == len(r)
    return TextExample(" ".join(w), label, words=w, rationale=r, uid=uid)


EXAMPLES = [
    review("the film was great fun and the acting is good", "0001110001", 1, "r0"),
    review("a dull plot and awful acting but the story is fun", "01110100000", 0, "r1"),
    review("the movie is not very good", "000111", 0, "r2"),
    review("films was fun", "110", 1, "r3"),
    review("a bad bad film", "0110", 0, "r4"),
    review("great great acting and a good story", "1100000", 1, "r5"),
]


@pytest.fixture
def model():
    m = tiny_bert(num_labels=2, seed=3)
    m.config.id2label = {0: "NEG", 1: "POS"}
    m.config.label2id = {"NEG": 0, "POS": 1}
    return m


@pytest.fixture
def ctx(model, tok, lab_dirs):
    cfg = cb.settings("smoke", max_length=16, n_examples=6, n_faithfulness=3, n_class_support=4, n_ig=2,
                      ig_steps=2, ks=(2, 4, 8), progress=False, use_cache=False)
    return cb.setup(cfg, classifier=(model, tok), examples=EXAMPLES)


def test_encode_reviews_flags_every_word_piece_of_rationale_words(tok):
    inputs, rationale, kept, words = cb.encode_reviews([EXAMPLES[3], EXAMPLES[4]], tok, max_length=16)
    tokens = tok.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
    assert tokens[:6] == ["[CLS]", "film", "##s", "was", "fun", "[SEP]"]
    assert rationale[0, :6].tolist() == [False, True, True, True, False, False]  # "films" -> two rationale pieces
    assert rationale[1, :6].tolist() == [False, False, True, True, False, False]
    assert not rationale[inputs["attention_mask"] == 0].any()  # padding is never rationale
    assert kept.tolist() == [3, 4]
    assert words[0, :6].tolist() == [-1, 0, 0, 1, 2, -1] and (words[inputs["attention_mask"] == 0] == -1).all()
    short, r_short, kept_short, _ = cb.encode_reviews([EXAMPLES[0]], tok, max_length=5)  # [CLS] + 3 pieces + [SEP]
    assert short["input_ids"].shape == (1, 5) and kept_short.tolist() == [3]
    assert r_short[0].tolist() == [False, False, False, False, False]  # "great fun" was cut off


def test_encode_reviews_rejects_examples_without_rationale(tok):
    with pytest.raises(cb.ExperimentError, match="ERASER"):
        cb.encode_reviews([TextExample("a film", 1)], tok, 16)


@pytest.mark.parametrize("method", ["chefer", "rollout", "attn_gradcam"])
def test_explain_many_batching_matches_one_review_at_a_time(model, tok, method):
    inputs, _, _, _ = cb.encode_reviews(EXAMPLES, tok, 16)
    targets = torch.tensor([e.label for e in EXAMPLES])
    batched = explain_many(model, inputs, method, targets, batch_size=4, sort=False).scores
    single = explain_many(model, inputs, method, targets, batch_size=1).scores
    assert batched.shape == inputs["input_ids"].shape
    assert torch.allclose(batched, single, atol=1e-5)
    assert (batched[inputs["attention_mask"] == 0] == 0).all()
    assert batched.abs().sum() > 0


def test_subsets_are_nested_prefixes_and_counterfactual_is_the_other_class(ctx):
    ex, faith, support, ig = (ctx.subset(k) for k in ("examples", "faithfulness", "class_support", "ig"))
    assert len(ex) == 6 and sorted(ex.tolist()) == list(range(6))
    assert faith.tolist() == ex[:3].tolist() and support.tolist() == ex[:4].tolist() and ig.tolist() == ex[:2].tolist()
    idx = torch.arange(6)
    assert (ctx.counterfactual(idx) == 1 - ctx.labels).all()


def test_figure3_oracle_scores_are_exact_and_reversed_scores_score_zero(ctx):
    idx = ctx.subset("examples")
    content = (ctx.valid[idx] & ~ctx.special[idx]).float()
    oracle = ctx.rationale[idx].float() * content + 0.01 * torch.rand(content.shape) * content
    ctx.cfg["ks"] = (1, 30)
    f = cb.figure3_results(ctx, {"oracle": oracle, "reversed": -oracle}, unit="word_piece")
    sizes = ctx.rationale[idx].sum(1).double()
    recall = 1 / sizes  # the top-1 token is a rationale token: P = 1, R = 1 / |rationale|
    assert f["precision"]["oracle"][0] == 1.0
    assert np.isclose(f["macro"]["oracle"][0], float((2 * recall / (1 + recall)).mean()))
    assert np.isclose(f["micro"]["oracle"][0], 2 * (6 / sizes.sum()) / (1 + 6 / sizes.sum()))
    assert f["macro"]["reversed"][0] == 0.0 and f["n"]["oracle"] == 6
    # k = 30 takes every content token: R = 1, P = |rationale| / |content|, for any scores
    p = sizes / content.sum(1).double()
    assert np.isclose(f["macro"]["reversed"][1], float((2 * p / (1 + p)).mean()))


def test_word_level_takes_the_max_over_pieces():
    scores = torch.tensor([[9.0, 1.0, 5.0, 2.0, 7.0, 0.0], [9.0, 3.0, 0.0, 0.0, 0.0, 0.0]])
    words = torch.tensor([[-1, 0, 0, 1, 2, -1], [-1, 0, -1, -1, -1, -1]])
    rationale = torch.tensor([[0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0]]).bool()
    ws, wr, wv = rationales.word_level(scores, words, rationale)
    assert ws.tolist() == [[5.0, 2.0, 7.0], [3.0, 0.0, 0.0]]
    assert wr.tolist() == [[True, False, False], [True, False, False]]
    assert wv.tolist() == [[True, True, True], [True, False, False]]


def test_figure3_word_unit_ranks_words_not_pieces(ctx):
    idx = ctx.subset("examples")
    content = (ctx.valid[idx] & ~ctx.special[idx]).float()
    oracle = ctx.rationale[idx].float() * content + 0.01 * torch.rand(content.shape) * content
    ctx.cfg["ks"] = (2,)
    assert ctx.cfg["f1_unit"] == "word"  # the authors' reading is the default
    pieces = cb.figure3_results(ctx, {"oracle": oracle}, unit="word_piece")
    words = cb.figure3_results(ctx, {"oracle": oracle})
    n_words = torch.tensor([sum(EXAMPLES[i].rationale) for i in idx.tolist()], dtype=torch.float64)
    recall = 2 / n_words  # every review has >= 2 rationale words: the top-2 words are rationale words
    assert np.allclose(words["per_doc"]["oracle"][:, 0], (2 * recall / (1 + recall)).numpy())
    r3 = idx.tolist().index(3)  # "films was fun": the two rationale words are three pieces
    assert words["per_doc"]["oracle"][r3, 0] == 1.0 and np.isclose(pieces["per_doc"]["oracle"][r3, 0], 0.8)
    assert words["unit"] == "word"
    with pytest.raises(cb.ExperimentError, match="f1_unit"):
        cb.settings("smoke", f1_unit="sentence")


def test_pair_agreement_distinguishes_same_reversed_and_different_maps():
    gen = torch.Generator().manual_seed(0)
    gt = torch.rand(8, 30, generator=gen)
    content = torch.ones(8, 30, dtype=torch.bool)
    same = rationales.pair_agreement(gt, gt * 2, content, top=5)
    mirror = rationales.pair_agreement(gt, -gt, content, top=5)
    other = rationales.pair_agreement(gt, torch.rand(8, 30, generator=gen), content, top=5)
    zero = rationales.pair_agreement(gt, torch.zeros(8, 30), content, top=5)
    assert np.allclose(same["rho"], 1) and np.allclose(same["overlap"], 1)
    assert np.allclose(mirror["rho"], -1) and np.allclose(mirror["overlap"], 0)
    assert abs(np.median(other["rho"])) < 0.5 and other["overlap"].mean() < 0.5
    assert zero["cf_constant"].all() and np.isnan(zero["rho"]).all()

    def verdict(a):
        return cb.support_verdict(a["overlap"].mean(), np.median(a["rho"]), a["cf_constant"].mean())

    assert verdict(same) == "same map"
    assert verdict(mirror) == "sign reversal"
    assert verdict(other) == "both classes"
    assert verdict(zero) == "degenerate"
    assert rationales.pair_agreement(gt, -gt, content, top=20)["overlap"].mean() == 0.5  # 20 of 30: the tops must meet


def test_special_token_mass_finds_sep(ctx):
    idx = ctx.subset("examples")
    cls, sep = rationales.cls_sep_masks(ctx.valid[idx], ctx.special[idx])
    assert cls[:, 0].all() and sep.sum(1).eq(1).all()  # one [SEP] per single-segment review
    scores = ctx.valid[idx].float() * 0.1 + sep.float() * 5 + cls.float() * 10
    r = cb.special_token_mass(ctx, {"peaked": scores})["rows"]["peaked"]
    assert r["sep_top_fraction"] == 1.0
    assert cb.special_token_mass(ctx, {"peaked": scores})["sep_top"]["peaked"].all()
    n = ctx.valid[idx].sum(1).double()
    expected = (5.1 / (10.1 + 5.1 + 0.1 * (n - 2))).mean()
    assert np.isclose(r["sep_share"], float(expected), atol=1e-5)
    assert r["cls_share"] > r["sep_share"] > 0


def test_pick_reviews_one_per_category(ctx):
    ctx.logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # labels 1 0 0 1 0 1 -> correct, correct, mistaken, mistaken, correct, correct
    picked = viz_cb.pick_reviews(cb.review_index(ctx))
    assert list(picked) == ["NEG correct", "NEG mistaken", "POS correct", "POS mistaken"]
    assert picked["NEG mistaken"] == 2 and picked["POS mistaken"] == 3
    assert picked["NEG correct"] == 4  # the shortest NEG review predicted NEG
    assert cb.category(ctx, 3) == "POS mistaken"
    assert [i for _, i in viz_cb.review_choices(cb.review_index(ctx), "NEG correct")] == [1, 4]


def _fig3(levels: dict[str, list[float]], n=30, noise=0.02, seed=0):
    """Per-review token-F1 [n, 3] around the given per-k levels."""
    rng = np.random.default_rng(seed)
    per_doc = {m: np.asarray(v) + noise * rng.standard_normal((n, len(v))) for m, v in levels.items()}
    return {"ks": [10, 20, 30], "per_doc": per_doc, "macro": {m: list(v.mean(0)) for m, v in per_doc.items()},
            "n": {m: n for m in levels}}


def _agreement(overlap, rho, n=30, seed=0):
    rng = np.random.default_rng(seed)
    return {"overlap": np.clip(overlap + 0.05 * rng.standard_normal(n), 0, 1),
            "rho": np.clip(rho + 0.05 * rng.standard_normal(n), -1, 1), "cf_constant": np.zeros(n, dtype=bool)}


def _claim_inputs(ctx):
    ctx.cfg["profile"] = "default"
    ctx.logits = torch.nn.functional.one_hot(ctx.labels, 2).double()  # every review classified correctly
    ctx.model_info.update(n_test=6)
    support = {"per_review": {"chefer": _agreement(0.3, 0.1), "lrp": _agreement(0.95, 0.9),
                              "attn_gradcam": _agreement(0.05, -0.6)}}
    special = {"rows": {"rollout": {"sep_share_without_cls": 0.3, "uniform_share": 0.01, "cls_share": 0.5}},
               "sep_top": {"rollout": np.arange(30) % 5 != 0}}  # [SEP] on top in 80 % of reviews
    return support, special


def _verdicts(ctx, fig3, support, special):
    from lab.results import Results

    res = Results(cb.NOTEBOOK, ctx.cfg["profile"])
    for c in cbr.claims(ctx, fig3, support, special):
        res.add_claim(**c)
    return {c["claim"]: c["verdict"] for c in res.claims}


def test_claims_follow_the_paired_intervals(ctx):
    support, special = _claim_inputs(ctx)
    good = _fig3({"chefer": [0.2, 0.3, 0.4], "rollout": [0.1, 0.2, 0.3]})
    verdicts = _verdicts(ctx, good, support, special)
    assert len(verdicts) == 7 and set(verdicts.values()) == {"holds"}, verdicts
    bad = _fig3({"chefer": [0.2, 0.3, 0.25], "rollout": [0.1, 0.35, 0.3]})
    verdicts = _verdicts(ctx, bad, support, special)
    assert verdicts[next(c for c in verdicts if "highest token-F1" in c)] == "fails"
    assert verdicts[next(c for c in verdicts if "rises with k" in c)] == "fails"
    assert list(verdicts.values()).count("fails") == 2
    tied = _fig3({"chefer": [0.2, 0.3, 0.4], "rollout": [0.2, 0.3, 0.4]})  # equal up to noise: undecided
    assert _verdicts(ctx, tied, support, special)[next(c for c in verdicts if "highest token-F1" in c)] \
        == "inconclusive"
    ctx.cfg["profile"] = "smoke"
    assert set(_verdicts(ctx, good, support, special).values()) == {"not evaluated"}


def test_support_claims_three_ways(ctx):
    support, _ = _claim_inputs(ctx)
    cfg = ctx.cfg
    assert cbr.support_criteria(support["per_review"]["lrp"], cfg)["same"] == "holds"
    # LRP also "both classes" → "only Chefer" fails; a 2-review chefer pair decides nothing about the overlap
    support["per_review"]["lrp"] = _agreement(0.1, 0.3, seed=1)
    claims = {c["claim"]: c["verdict"] for c in cbr.support_claims(support, cfg)}
    assert claims[next(c for c in claims if "only Chefer" in c)] == "fails"
    two = {"overlap": np.array([0.2, 0.8]), "rho": np.array([0.1, np.nan]), "cf_constant": np.array([False, False])}
    crit = cbr.support_criteria(two, cfg)
    assert crit["distinct"] == "inconclusive" and crit["not_mirror"] == "inconclusive"  # one finite ρ decides nothing
    none = {"overlap": np.zeros(3), "rho": np.full(3, np.nan), "cf_constant": np.ones(3, dtype=bool)}
    crit = cbr.support_criteria(none, cfg)
    assert crit["live"] == "fails" and crit["mirror"] == crit["not_mirror"] == "fails"


def test_settings_reject_unknown_values():
    with pytest.raises(cb.ExperimentError, match="profile"):
        cb.settings("huge")
    with pytest.raises(cb.ExperimentError, match="method"):
        cb.settings("smoke", methods=["chefer", "nope"])
    with pytest.raises(cb.ExperimentError, match="setting"):
        cb.settings("smoke", n_reviews=3)
    with pytest.raises(cb.ExperimentError, match="n_faithfulness"):
        cb.settings("smoke", n_faithfulness=0)
    with pytest.raises(cb.ExperimentError, match="ks"):
        cb.settings("smoke", ks=(20, 10))
    assert cb.settings("default", n_examples=None)["n_examples"] == cb.PROFILES["default"]["n_examples"]
    assert cb.method_params(cb.settings("smoke"), "integrated_gradients")["steps"] == 4


def test_pipeline_end_to_end(ctx, lab_dirs):
    methods = ("chefer", "rollout", "attn_gradcam", "lrp", "integrated_gradients")
    maps = cb.compute_maps(ctx, methods)
    assert maps["chefer"].shape[0] == 6 and maps["integrated_gradients"].shape[0] == 2
    fig3 = cb.figure3_results(ctx, maps)
    faith = cb.faithfulness_results(ctx, maps)
    assert faith["rows"]["chefer"]["n"] == 3 and faith["rows"]["integrated_gradients"]["n"] == 2
    support = cb.class_support(ctx, maps, ("chefer", "lrp"))
    assert set(support["rows"]) == {"chefer", "lrp"} and support["maps"]["chefer"].shape[0] == 4
    special = cb.special_token_mass(ctx, maps)
    words = cb.figure3_results(ctx, maps, unit="word")
    with pytest.raises(cb.ExperimentError, match="unit"):
        cb.figure3_results(ctx, maps, unit="sentence")
    res = cbr.build_results(ctx, fig3, faith, support, special, words)
    data = res.to_dict()
    assert data["tables"]["figure3_token_f1_macro_word"]["rows"]["chefer"]["k=2"]["ours"] == words["macro"]["chefer"][0]
    row = data["tables"]["figure3_token_f1_macro"]["rows"]["chefer"]
    assert row["k=2"]["paper"] is None and 0 <= row["k=2"]["ours"] <= 1
    assert {"comprehensiveness", "sufficiency", "comp@1%", "suff@50%"} <= set(
        data["tables"]["eraser_faithfulness"]["rows"]["lrp"])
    assert all(c["holds"] is None and c["verdict"] == "not evaluated" for c in data["claims"])  # smoke profile
    assert fig3["per_doc"]["chefer"].shape == (6, 3) and support["per_review"]["lrp"]["overlap"].shape == (4,)
    assert np.allclose(fig3["per_doc"]["chefer"].mean(0), fig3["macro"]["chefer"])
    row = data["tables"]["figure3_chefer_paired"]["rows"]["chefer − lrp (k=4)"]
    assert row["ΔF1"]["ours"] == pytest.approx(fig3["macro"]["chefer"][1] - fig3["macro"]["lrp"][1])
    assert row["n"]["ours"] == 6
    assert res.save().exists()
    assert viz_cb.figure3_frame(fig3).shape == (5, 5)  # n, k=2, k=4, k=8, max_se


def test_review_panels_and_widget_show_each_map(ctx):
    maps = [cb.review_map(ctx, 0, "chefer", t) for t in ("ground truth", "counterfactual")]
    maps.append(cb.review_map(ctx, 0, "rollout", "counterfactual"))  # class-agnostic: the ground-truth map
    view = cb.review_view(ctx, 0)
    n = int(ctx.valid[0].sum())
    assert len(view["tokens"]) == n - 1 and view["tokens"][-1] == "[SEP]"  # [CLS] hidden
    assert [m["class"] for m in maps] == [view["gold"], view["counterfactual"], view["gold"]]
    assert maps[2]["target"] is None and not torch.equal(maps[0]["scores"], maps[1]["scores"])
    fig = viz_cb.review_panels(view, maps, cb.LABELS)
    assert len(fig.axes) == 4 and "class-agnostic" in fig.axes[3].get_title("left")  # rationale, chefer GT / CF, rollout
    render = viz_cb.review_renderer(partial(cb.review_view, ctx), partial(cb.review_map, ctx), cb.LABELS)
    fig = render(review=1, methods=["chefer", "rollout"], target="NEG", k=2, top_k_only=True)
    assert len(fig.axes) == 3
    top = cb.review_map(ctx, 1, "chefer", "NEG", k=2)
    assert top["top_k"].sum() == 2 and top["class"] == "NEG"
    with pytest.raises(cb.ExperimentError, match="target"):
        cb.review_map(ctx, 1, "chefer", "neutral")
    with pytest.raises(ValueError, match="pick a review"):
        render(review=-1)


def test_maps_are_memoised_as_one_explanation_set(ctx, monkeypatch):
    import lab.explainers.batch as batch

    ctx.cfg["use_cache"], ctx.model_id = True, "tiny-test-model"
    calls = []
    real = batch.explain
    monkeypatch.setattr(batch, "explain", lambda model, rows, *a, **k: calls.append(len(rows["input_ids"]))
                        or real(model, rows, *a, **k))
    first = cb.explain_reviews(ctx, "chefer", [0, 1, 2])
    assert calls == [3] and first.scores.shape == (3, ctx.inputs["input_ids"].shape[1])
    again = cb.explain_reviews(ctx, "chefer", [0, 1, 2])  # the same reviews and classes: loaded, not explained
    assert calls == [3] and torch.equal(again.scores, first.scores)
    other = cb.explain_reviews(ctx, "chefer", [0, 1, 2], "counterfactual")  # another class: computed
    assert calls == [3, 3] and not torch.allclose(other.scores, first.scores)
    assert torch.equal(other.targets, ctx.counterfactual(torch.tensor([0, 1, 2])))


def test_faithfulness_is_memoised_per_map(ctx, monkeypatch):
    ctx.cfg["use_cache"], ctx.model_id = True, "tiny-test-model"
    maps = cb.compute_maps(ctx, ["chefer", "random"])
    first = cb.faithfulness_results(ctx, maps)
    calls = []
    real = cb.comprehensiveness_sufficiency
    monkeypatch.setattr(cb, "comprehensiveness_sufficiency", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert cb.faithfulness_results(ctx, maps) == first and calls == []
    changed = {"chefer": -maps["chefer"]}  # another map of the same reviews is computed, not looked up
    assert cb.faithfulness_results(ctx, changed)["rows"]["chefer"] != first["rows"]["chefer"] and calls == [1]


def test_chefer_rolls_out_from_the_last_block_as_the_authors_pipeline_does():
    """bert_pipeline.py calls generate_LRP with start_layer=11 (the last of 12 blocks): 02 passes start_layer=-1,
    which counts from the end like a Python index; 0 (every block, Eq. 16 as printed) stays available."""
    assert cb.method_params(cb.settings("smoke"), "chefer")["start_layer"] == -1
    assert cb.method_params(cb.settings("smoke", start_layer=0), "chefer")["start_layer"] == 0
    model, batch = tiny_bert(layers=3), text_batch(lengths=(6, 4))
    last = lab.explain(model, batch, "chefer", target=[0, 1], start_layer=-1).scores
    assert torch.equal(last, lab.explain(model, batch, "chefer", target=[0, 1], start_layer=2).scores)
    assert not torch.allclose(last, lab.explain(model, batch, "chefer", target=[0, 1], start_layer=0).scores)
    with pytest.raises(ExplainInputError, match=r"start_layer must be in -3\.\.2"):
        lab.explain(model, batch, "chefer", target=[0, 1], start_layer=-4)
