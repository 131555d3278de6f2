"""Notebook 05's readings and checks (lab.experiments.jain_wallace, jain_wallace_results): the Average encoder's two readings, the
authors' adversary penalty, the premise-reliance check and the ε-max JSD relative to its reachable maximum."""
import itertools

import numpy as np
import pytest
import torch

from lab.analysis import attention_tests as at
from lab.experiments import jain_wallace as jw
from lab.experiments import jain_wallace_results as jwr
from lab.metrics.agreement import Correlation, jsd
from lab.models import rnn
from lab.results import Results
from lab.viz import jain_wallace as vz


def analysis(dataset="sst_jw", encoder="lstm", n=60, tau=None, attention=None, **kw):
    """An Analysis with chosen per-instance values (no model)."""
    probs = np.tile([0.1, 0.9], (n, 1))
    tau = tau or {m: np.full(n, 0.3) for m in ("attn_grad", "attn_loo", "grad_loo")}
    arrays = dict(perm_median_tvd=np.full(n, 0.01), max_attention=np.linspace(0.2, 0.9, n),
                  adv_eps_max_jsd=np.full(n, 0.65), adv_any_iterate=np.zeros(n), adv_feasible=np.ones(n, bool))
    arrays.update(kw)
    return at.Analysis(dataset=dataset, encoder=encoder, label_names=("negative", "positive"), tokens=[["a"]] * n,
                       attention=attention or [], importance={}, correlated=[], probs=probs,
                       labels=np.ones(n, int), tau={m: Correlation(np.asarray(v, float), np.zeros(n))
                                                    for m, v in tau.items()},
                       perm_alpha=[], perm_probs=np.zeros((n, 2)), adv_alpha=[], adv_probs=np.zeros((0, 2)),
                       epsilon=0.01, timings={"permutation_s_per_instance": 0.0,
                                              "adversarial_s_per_instance": 0.0}, **arrays)


def test_reachable_max_jsd_is_the_largest_jsd_any_attention_reaches():
    """Against a brute force over the simplex's vertices and a dense grid of distributions on three tokens."""
    alpha = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    grid = [torch.tensor([a, b, 1 - a - b], dtype=torch.float64) for a, b in
            itertools.product(np.linspace(0, 1, 41), repeat=2) if a + b <= 1 + 1e-12]
    best = max(float(jsd(q.clamp_min(0), alpha)) for q in grid)
    assert at.reachable_max_jsd(alpha.numpy()) == pytest.approx(best, abs=1e-9)
    assert at.reachable_max_jsd(alpha.numpy()) == pytest.approx(float(jsd(torch.eye(3, dtype=torch.float64)[2],
                                                                              alpha)), abs=1e-12)
    assert at.reachable_max_jsd([0.5, 0.5]) == pytest.approx(0.2158, abs=1e-4)  # far below ln 2 on two tokens
    assert at.reachable_max_jsd([1.0, 0.0]) == pytest.approx(at.LN2)


def test_fig7_relative_claim_credits_short_inputs_the_absolute_one_cannot():
    """Two-token inputs with α̂ = (0.5, 0.5) can reach JSD 0.216 at most: an adversary at 0.2 is 93 % of the way,
    although it is far from ln 2. The absolute claim fails, the relative one holds."""
    n = 80
    a = analysis(n=n, attention=[np.array([0.5, 0.5])] * n, adv_eps_max_jsd=np.full(n, 0.2))
    assert np.allclose(a.adv_relative_jsd, 0.2 / at.reachable_max_jsd([0.5, 0.5]))
    out = jwr.counterfactual_claims(jw.settings("default", encoders=("lstm",)), {("sst_jw", "lstm"): a})
    verdicts = {c["claim"][:22]: c["verdict"] for c in out if c["claim"].startswith("Fig. 7")}
    assert verdicts == {"Fig. 7: adversarial at": "fails", "Fig. 7, relative to ea": "holds"}
    assert jwr.adversarial_rows({("sst_jw", "lstm"): a})["SST / BiLSTM"]["frac_relative_jsd_above_0.87"] == 1.0


def tiny_pair_model():
    torch.manual_seed(0)
    cfg = rnn.RNNConfig(vocab_size=20, num_classes=3, encoder="lstm", embed_dim=6, hidden=4, pair=True)
    return rnn.AttentionClassifier(cfg).double().eval()


def test_context_zeroed_is_the_decoder_on_the_query_alone():
    """Premise reliance: ŷ with Σ_t α_t h_t = 0 is softmax(W_o tanh(b_p + W_q Q + b_q)), whatever the premise."""
    model = tiny_pair_model()
    data = rnn.EncodedSet([[2, 5, 7, 9], [3, 4]], [0, 1], [[6, 8], [10, 11, 12]])
    batch = rnn.make_batch(data)
    view = at.rnn_view(model, batch)
    zeroed = at.context_zeroed(view)
    q = model.encode(batch).query
    expected = torch.softmax(model.out(torch.tanh(model.linear_p.bias + model.linear_q(q))), -1)
    assert torch.allclose(zeroed, expected, atol=1e-12)
    other = rnn.make_batch(rnn.EncodedSet([[13, 14], [15, 16, 17, 18]], [0, 1], data.query_ids))
    assert torch.allclose(at.context_zeroed(at.rnn_view(model, other)), zeroed, atol=1e-12)
    assert not torch.allclose(view.probs, zeroed)


def test_premise_rows_report_changed_predictions_with_intervals():
    n = 40
    a = analysis("snli", n=n)
    zeroed = a.probs.copy()
    zeroed[:10] = [0.8, 0.2]  # a quarter of the predictions flip
    a.context_zeroed_probs = zeroed
    row = jwr.premise_rows({("snli", "lstm"): a, ("sst_jw", "lstm"): analysis()})
    assert list(row) == ["SNLI / BiLSTM"]  # single-sequence tasks have no premise
    r = row["SNLI / BiLSTM"]
    assert r["changed_prediction"] == 0.25 and r["changed_prediction_ci_low"] < 0.25 < r["changed_prediction_ci_high"]
    assert r["mean_tvd"] == pytest.approx(0.25 * 0.7) and r["accuracy_zeroed"] == 0.75


def test_average_reading_and_adversary_penalty_are_named_settings():
    cfg = jw.settings("default")
    assert cfg["average_reading"] == "authors" and cfg["adversary_penalty"] == "authors"
    assert jw.other_average(cfg) == "average:appendix"
    assert jw.other_average(jw.settings("default", compare_average_reading=False)) is None
    assert jw.other_average(jw.settings("default", encoders=("lstm",))) is None
    # the authors' AdversaryMulti weighs each adversary's hinge by 500; ours divides λ by k
    assert jw.adversary_lambda(cfg) == 500 * 5 and jw.adversary_lambda({**cfg, "adversary_penalty": "paper"}) == 500
    for key, bad in (("average_reading", "relu"), ("adversary_penalty", "mine")):
        with pytest.raises(jw.ExperimentError, match=f"{key} must be one of"):
            jw.settings("default", **{key: bad})


def test_adversary_cross_is_checked_against_its_own_choices():
    """adversary_cross ("authors" 2/k² | "paper" Eq. 1) has its own constant: it no longer follows
    ADVERSARY_PENALTIES (which it was validated against), so a new penalty reading is no cross weight."""
    assert jw.ADVERSARY_CROSSES == ("authors", "paper")
    assert jw.settings.choices["adversary_cross"] is jw.ADVERSARY_CROSSES
    assert jw.adversary_cross_weight(jw.settings("default", adversary_cross="paper")) is None
    with pytest.raises(jw.ExperimentError, match="adversary_cross must be one of 'authors', 'paper', got 'mine'"):
        jw.settings("default", adversary_cross="mine")


def test_model_config_builds_each_average_reading():
    class Task:
        spec = jw.TASKS["sst_jw"]
        vocab = [0] * 30
        label_names = ("negative", "positive")
        train = rnn.EncodedSet([[2]], [0])

    cfg = jw.settings("default")
    authors, appendix = jw.model_config(Task, "average", cfg), jw.model_config(Task, "average:appendix", cfg)
    assert (authors.average_reading, authors.hidden_dim) == ("authors", 128)
    assert (appendix.encoder, appendix.average_reading, appendix.hidden_dim) == ("average", "appendix", 256)
    assert authors.key() != appendix.key()


def reading_analyses(n=60):
    """SST and IMDB analyses whose τ sit at 0.35 (BiLSTM), 0.72 (Average, authors) and 0.4 (Average, appendix)."""
    rng = np.random.default_rng(0)
    analyses = {}
    for name in ("sst_jw", "imdb"):
        for enc, level in (("lstm", 0.35), ("average", 0.72), ("average:appendix", 0.4)):
            tau = {m: level + rng.normal(0, 0.02, n) for m in ("attn_grad", "attn_loo", "grad_loo")}
            analyses[name, enc] = analysis(name, enc, n, tau)
    return analyses


def test_reading_comparison_lists_both_verdicts_and_adds_the_changed_claims():
    """The authors' Average τ_g sits in 0.65–0.80 (holds); the appendix's at 0.4 does not (fails): the table has
    both verdicts, and the appendix reading's claim is added beside the default one."""
    res = jwr.add_claims(Results(jw.NOTEBOOK, "default"), jw.settings("default"), {}, reading_analyses(), None)
    frame = vz.readings_frame(res)
    key = next(k for k in frame.index if k.startswith("Average-encoder attention–gradient"))
    assert frame.loc[key].to_dict() == {"authors": "holds", "appendix": "fails"}
    texts = [c["claim"] for c in res.claims if c["claim"].startswith("Average-encoder attention–gradient")]
    assert len(texts) == 2 and texts[1].endswith("(ReLU/256, appendix) reading")
    assert "change verdict" in vz.discussion_markdown(res)
    assert not any("ReLU/256" in c["claim"] for c in res.claims if c["claim"].startswith("Fig. 6"))  # same verdict


def test_smoke_lists_the_same_reading_claims_but_evaluates_none():
    """Under smoke the other reading's claims that differ are still listed (the claims are those of a default run)
    while every verdict, in the claims and in the readings table, is "not evaluated" (`Results.add_claim`'s rule);
    the discussion then says nothing about readings."""
    analyses = reading_analyses()
    runs = {p: jwr.add_claims(Results(jw.NOTEBOOK, p), jw.settings(p, encoders=("lstm", "average")), {}, analyses,
                              None) for p in ("default", "smoke")}
    assert [c["claim"] for c in runs["smoke"].claims] == [c["claim"] for c in runs["default"].claims]
    assert {c["verdict"] for c in runs["smoke"].claims} == {"not evaluated"}
    frame = vz.readings_frame(runs["smoke"])
    assert len(frame) == len(vz.readings_frame(runs["default"])) > 0 and (frame == "not evaluated").all().all()
    assert "two readings" not in vz.discussion_markdown(runs["smoke"])
