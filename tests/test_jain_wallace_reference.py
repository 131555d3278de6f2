"""lab's Jain & Wallace analyses against the authors' own code (successar/AttentionExplanation), run by
tools/reference/attention_explanation/generate.py on a tiny BiLSTM and a tiny Average encoder (the authors' tanh
configuration) with fixed weights and three fixed inputs: tests/fixtures/attention_explanation/reference.json.

Criteria (issue 18): Spearman ≥ 0.99 and max-normalised difference ≤ 1e-3 per instance for attention, gradient
importance and leave-one-out; |Δ| ≤ 1e-3 for Kendall τ, JSD and outputs. Their inputs carry <SOS>/<EOS>, which their
attention masks; ours are the interior tokens (the fixture's boundary embeddings and LSTM biases are 0, so the
interior states are the same). What cannot match, and why:
- our `permutation_test` and `adversarial_attention` draw their own random numbers (torch generator; the authors
  use np.random and torch's global RNG over <SOS>/<EOS>-padded shapes), so their statistics are compared on the
  authors' recorded permutations and final adversarial attentions: decoding them and the JSD/TVD they give;
- the authors' ε-max JSD (PlottingBC) counts an adversary as feasible at |Δŷ| ≤ 0.05, not the ε = 0.01 its
  optimisation used, and falls back to the original attention (JSD 0); the test reproduces that reading separately.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from lab.analysis import attention_tests as at
from lab.metrics import agreement
from lab.models import rnn

FIXTURE = Path(__file__).parent / "fixtures" / "attention_explanation" / "reference.json"
REF = json.loads(FIXTURE.read_text())


def ours(name: str) -> rnn.AttentionClassifier:
    """Our classifier with the fixture's weights (their parameter names mapped to ours), float64."""
    m = REF["models"][name]
    cfg = rnn.RNNConfig(vocab_size=REF["vocab_size"], num_classes=2, encoder=name, attention="tanh",
                        embed_dim=REF["embed_dim"], hidden=REF["hidden"], average_reading="authors")
    model = rnn.AttentionClassifier(cfg)
    rename = {"embedding.weight": "embedding.weight", "projection.weight": "encoder.proj.weight",
              "projection.bias": "encoder.proj.bias", "attention.attn1.weight": "attention.w1.weight",
              "attention.attn1.bias": "attention.w1.bias", "attention.attn2.weight": "attention.v.weight",
              "linear_1.weight": "out.weight", "linear_1.bias": "out.bias"}
    state = {}
    for part in ("encoder", "decoder"):
        for k, v in m["weights"][part].items():
            state[rename.get(k, f"encoder.{k}")] = torch.tensor(v)
    model.load_state_dict(state)
    return model.double().eval()


def batch_of(name: str) -> tuple[rnn.Batch, list[dict]]:
    inst = REF["models"][name]["instances"]
    data = rnn.EncodedSet([i["ids"][1:-1] for i in inst], [0] * len(inst))
    return rnn.make_batch(data), inst


def inner(values) -> np.ndarray:
    return np.asarray(values[1:-1], float)


def assert_same_ranking_and_values(mine, theirs, what):
    mine, theirs = np.asarray(mine, float), np.asarray(theirs, float)
    scale = max(np.abs(theirs).max(), 1e-12)
    assert np.abs(mine - theirs).max() / scale <= 1e-3, (what, mine, theirs)
    if np.ptp(theirs) > 0:
        assert spearmanr(mine, theirs)[0] >= 0.99, (what, mine, theirs)


MODELS = sorted(REF["models"])


@pytest.mark.parametrize("name", MODELS)
def test_attention_and_output_match_the_authors(name):
    model = ours(name)
    batch, inst = batch_of(name)
    view = at.rnn_view(model, batch)
    for i, ref in enumerate(inst):
        n = len(ref["ids"]) - 2
        assert_same_ranking_and_values(view.alpha[i, :n], inner(ref["attention"]), f"{name} attention {i}")
        assert float(view.probs[i, 1]) == pytest.approx(ref["prediction"], abs=1e-5)
        assert float(view.alpha[i].max()) == pytest.approx(ref["max_attention"], abs=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_gradient_and_leave_one_out_importance_match_the_authors(name):
    """Their gradient_mem 'XxE[X]' (attention detached) up to |·| and the per-instance normalisation of
    process_grads (max-normalised here); their remove_and_run |ŷ(x₋ₜ) − ŷ(x)|, which is our TVD for two classes."""
    model = ours(name)
    batch, inst = batch_of(name)
    grad = at.gradient_importance(model, batch)
    loo = at.leave_one_out_tvd(model, batch)
    for i, ref in enumerate(inst):
        n = len(ref["ids"]) - 2
        assert_same_ranking_and_values(grad[i, :n], np.abs(inner(ref["gradient_xxex"])), f"{name} gradient {i}")
        assert_same_ranking_and_values(loo[i, :n], inner(ref["loo_ydiff"]), f"{name} LOO {i}")


@pytest.mark.parametrize("name", MODELS)
def test_kendall_tau_matches_the_authors(name):
    model = ours(name)
    batch, inst = batch_of(name)
    view = at.rnn_view(model, batch)
    grad, loo = at.gradient_importance(model, batch), at.leave_one_out_tvd(model, batch)
    n = [len(r["ids"]) - 2 for r in inst]
    rows = lambda t: [t[i, :k].double().numpy() for i, k in enumerate(n)]  # noqa: E731
    attn, g, l_ = rows(view.alpha), rows(grad), rows(loo)
    for key, (a, b) in {"tau_attn_grad": (attn, g), "tau_attn_loo": (attn, l_), "tau_grad_loo": (g, l_)}.items():
        mine = at.kendall_per_instance(a, b).statistic
        theirs = [r[key] for r in inst]
        assert np.allclose(mine, theirs, atol=1e-3), (name, key, mine, theirs)


@pytest.mark.parametrize("name", MODELS)
def test_the_authors_permutations_decode_to_the_same_outputs(name):
    """Our decoder on the authors' recorded permutations (100 per instance) gives their outputs, and the median
    output difference Δŷ^med (their med_diff) follows; our own draws differ (a different RNG)."""
    model = ours(name)
    batch, inst = batch_of(name)
    view = at.rnn_view(model, batch)
    for i, ref in enumerate(inst):
        n = len(ref["ids"]) - 2
        perm = torch.as_tensor(ref["permutations"])  # [P, n]
        alpha = view.alpha[i, :n][perm]  # α_perm[t] = α[perm[t]], as their torch.gather
        single = at.rnn_view(model, rnn.make_batch(rnn.EncodedSet([ref["ids"][1:-1]], [0])))
        with torch.no_grad():
            p1 = single.decode(alpha[None])[0, :, 1]
        assert np.allclose(p1.numpy(), ref["permutation_predictions"], atol=1e-5)
        med = float(np.median(np.abs(p1.numpy() - float(view.probs[i, 1]))))
        assert med == pytest.approx(ref["median_output_difference"], abs=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_the_authors_adversarial_attention_gives_the_same_jsd_and_outputs(name):
    """Their final adversarial attentions (k = 5): our decoder gives their outputs and our JSD their JSD; the
    ε-max JSD in their plotting code's reading (feasible at |Δŷ| ≤ 0.05, else the original attention) follows."""
    model = ours(name)
    batch, inst = batch_of(name)
    view = at.rnn_view(model, batch)
    for i, ref in enumerate(inst):
        n = len(ref["ids"]) - 2
        adv = torch.as_tensor(ref["adversarial_attention"], dtype=torch.float64)[:, 1:n + 1]  # [k, n]
        single = at.rnn_view(model, rnn.make_batch(rnn.EncodedSet([ref["ids"][1:-1]], [0])))
        with torch.no_grad():
            probs = single.decode(adv[None])[0]
        assert np.allclose(probs[:, 1].numpy(), ref["adversarial_predictions"], atol=1e-5)
        jsd = agreement.jsd(adv, view.alpha[i, :n][None].double(), differentiable=True)
        assert np.allclose(jsd.numpy(), ref["adversarial_jsd"], atol=1e-3)
        tvd = agreement.tvd(probs, single.probs, differentiable=True)
        emax = float(torch.where(tvd <= 0.05, jsd, torch.zeros_like(jsd)).max())
        assert emax == pytest.approx(ref["emax_jsd_authors"], abs=1e-3)


def test_the_fixture_is_the_authors_configuration():
    """The Average model the authors configure (generate_average_config) is tanh with m = hidden_size."""
    enc = REF["models"]["average"]["config"]["model"]["encoder"]
    assert enc["activation"] == "tanh" and enc["projection"] and enc["hidden_size"] == REF["hidden"]
    assert ours("average").cfg.hidden_dim == REF["hidden"]
    assert FIXTURE.stat().st_size < 200_000
