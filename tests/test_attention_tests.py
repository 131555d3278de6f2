"""Jain & Wallace attention tests (lab.analysis.attention_tests): permutations, adversaries, importance, τ summaries, and the
Transformer view that decodes the last block from fixed value vectors."""
import functools
import math

import numpy as np
import pytest
import torch

from lab import stats
from lab.analysis import attention_tests as at
from lab.experiments import jain_wallace as jw
from lab.experiments import jain_wallace_results as jwr
from lab.metrics.agreement import jsd, tvd
from lab.models import rnn
from lab.results import Results
from lab.viz import jain_wallace as vz
from tests.models import text_batch, tiny_bert, tiny_roberta, unbatch


def tiny_rnn(encoder="lstm", pair=False, num_classes=2, seed=0):
    torch.manual_seed(seed)
    cfg = rnn.RNNConfig(vocab_size=20, num_classes=num_classes, encoder=encoder, embed_dim=6, hidden=4, pair=pair)
    return rnn.AttentionClassifier(cfg).double().eval()


def encoded(lengths, pair=False, seed=0):
    gen = np.random.default_rng(seed)
    ids = [gen.integers(2, 20, n).tolist() for n in lengths]
    q = [gen.integers(2, 20, 3).tolist() for _ in lengths] if pair else None
    return rnn.EncodedSet(ids, [0] * len(lengths), q, list(range(len(lengths))))


def view_with(decode_fn, alpha, mask):
    """A view whose decode is `decode_fn(alpha [B, K, T]) -> probs` (counts calls)."""
    box = {"calls": 0}

    def decode(a):
        box["calls"] += 1
        return decode_fn(a)

    with torch.no_grad():
        probs = decode_fn(alpha[:, None])[:, 0]
    return at.AttentionView(alpha, mask, probs, decode), box


# ---------------------------------------------------------------- permutations
def test_permutations_shuffle_only_valid_positions_and_share_them_across_heads():
    gen = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    alpha = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.0], [0.7, 0.3, 0.0, 0.0, 0.0]])
    p = at.permute_attention(alpha, mask, 50, gen)
    assert p.shape == (2, 50, 5)
    for b in range(2):
        n = int(mask[b].sum())
        for k in range(50):
            assert sorted(p[b, k, :n].tolist()) == pytest.approx(sorted(alpha[b, :n].tolist()))
            assert (p[b, k, n:] == 0).all()
    assert len({tuple(r.tolist()) for r in p[0]}) > 5  # actually random
    heads = torch.stack([alpha, alpha * 2, alpha * 3], dim=1)  # [B, H, T]
    ph = at.permute_attention(heads, mask, 7, torch.Generator().manual_seed(1))
    assert ph.shape == (2, 7, 3, 5)
    assert torch.allclose(ph[:, :, 1], 2 * ph[:, :, 0]) and torch.allclose(ph[:, :, 2], 3 * ph[:, :, 0])


def test_left_padding_is_refused():
    with pytest.raises(at.AttentionTestError, match="right-padded"):
        at.permute_attention(torch.ones(1, 3) / 2, torch.tensor([[False, True, True]]), 2, torch.Generator())


def test_permutation_test_uses_one_decoder_call_and_measures_tvd():
    model = tiny_rnn("average")
    batch = rnn.make_batch(encoded([6, 3, 5]))
    view = at.rnn_view(model, batch)
    counting, box = view_with(view.decode, view.alpha, view.mask)
    res = at.permutation_test(counting, n=100, seed=0)
    assert box["calls"] == 1 and res.tvd.shape == (3, 100)
    # recompute one permutation's output by hand: TVD(ŷ^p, ŷ)
    perm = at.permute_attention(view.alpha, view.mask, 100, torch.Generator().manual_seed(0))
    enc = model.encode(batch)
    direct = model.probabilities(model.decode(enc.h, perm[:, 7], enc.query))
    assert torch.allclose(res.tvd[:, 7], 0.5 * (direct - view.probs).abs().sum(-1))
    assert torch.allclose(res.median_tvd, torch.as_tensor(np.median(res.tvd.numpy(), axis=1)))
    assert torch.allclose(res.max_attention, view.alpha.max(-1).values)


def test_an_output_that_ignores_attention_is_never_changed_by_permutation():
    mask = torch.ones(2, 4, dtype=torch.bool)
    alpha = torch.softmax(torch.randn(2, 4), -1)
    view, _ = view_with(lambda a: torch.full((*a.shape[:-1], 2), 0.5), alpha, mask)
    assert (at.permutation_test(view, n=10).median_tvd == 0).all()


# ---------------------------------------------------------------- adversaries
def test_jsd_bounds_and_finite_gradients_at_zero_entries():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]], requires_grad=True)
    q = torch.tensor([[0.0, 0.0, 1.0], [0.2, 0.3, 0.5]])
    d = jsd(p, q, differentiable=True)
    assert d[0].item() == pytest.approx(math.log(2), abs=1e-6) and d[1].item() == pytest.approx(0, abs=1e-7)
    logits = torch.tensor([[0.0, 1.0, float("-inf")]], requires_grad=True)
    (g,) = torch.autograd.grad(jsd(torch.softmax(logits, -1), torch.tensor([[0.5, 0.5, 0.0]]), differentiable=True).sum(),
                               logits)
    assert torch.isfinite(g).all()


def test_differentiable_distances_keep_the_dtype_broadcast_and_equal_the_exact_ones():
    """`agreement.tvd/jsd(differentiable=True)`, the form the adversary optimises: float32 stays float32 (the exact
    form computes in float64), shapes broadcast (the adversaries' pairwise JSD), values agree with the exact form."""
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(2, 4, 6), -1)
    q = torch.softmax(torch.randn(2, 1, 6), -1)
    assert jsd(p, q, differentiable=True).dtype == torch.float32 and tvd(p, q, differentiable=True).dtype == torch.float32
    assert torch.allclose(jsd(p, q, differentiable=True).double(), jsd(p, q.expand_as(p)), atol=1e-6)
    assert torch.allclose(tvd(p, q, differentiable=True).double(), tvd(p, q.expand_as(p)), atol=1e-6)
    pairwise = jsd(p[:, :, None], p[:, None], differentiable=True)
    assert pairwise.shape == (2, 4, 4) and torch.allclose(pairwise, pairwise.transpose(1, 2))


def test_adversary_reaches_the_jsd_bound_when_the_output_ignores_attention():
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2], dtype=torch.bool)
    alpha = torch.tensor([[0.9, 0.02, 0.02, 0.02, 0.02, 0.02], [0.25, 0.25, 0.25, 0.25, 0.0, 0.0]])
    view, box = view_with(lambda a: torch.full((*a.shape[:-1], 2), 0.5), alpha, mask)
    res = at.adversarial_attention(view, k=3, epsilon=0.01, steps=200, lr=0.05)
    assert box["calls"] == 201  # all instances and all k adversaries in one decoder call per step
    assert res.alphas.shape == (2, 3, 6) and (res.alphas[1, :, 4:] == 0).all()
    assert torch.allclose(res.alphas.sum(-1), torch.ones(2, 3))
    assert (res.tvd == 0).all()
    assert res.eps_max_jsd[0] > 0.6  # moved away from the peak
    assert (res.eps_max_jsd <= math.log(2) + 1e-6).all()
    assert (res.any_iterate_eps_max_jsd >= res.eps_max_jsd - 1e-6).all()


def test_adversary_stays_close_when_the_output_reads_the_attention():
    """ŷ = (α_0, 1 − α_0): any feasible adversary keeps α_0 within ε, so its JSD to α̂ is bounded well below ln 2."""
    mask = torch.ones(1, 3, dtype=torch.bool)
    alpha = torch.tensor([[0.8, 0.1, 0.1]])

    def decode(a):
        return torch.stack([a[..., 0], 1 - a[..., 0]], -1)

    view, _ = view_with(decode, alpha, mask)
    res = at.adversarial_attention(view, k=4, epsilon=0.01, steps=300)
    ok = res.tvd <= 0.01
    assert (res.alphas[..., 0][ok] - 0.8).abs().max() <= 0.0100001
    assert res.eps_max_jsd.item() < 0.1  # (0.8, 0.2, 0) vs (0.8, 0.1, 0.1) is the most it could move


def test_adversary_argument_checks():
    view, _ = view_with(lambda a: torch.full((*a.shape[:-1], 2), 0.5), torch.ones(1, 2) / 2, torch.ones(1, 2).bool())
    with pytest.raises(at.AttentionTestError, match="k must be"):
        at.adversarial_attention(view, k=1)


# ---------------------------------------------------------------- importance (RNN)
def test_gradient_importance_is_abs_grad_dot_embedding_with_attention_detached():
    model = tiny_rnn("lstm", num_classes=3)
    batch = rnn.make_batch(encoded([5, 3]))
    g = at.gradient_importance(model, batch)
    assert g.shape == batch.ids.shape and (g[~batch.mask] == 0).all() and (g[batch.mask] >= 0).all()
    e = model.embed(batch.ids).detach().requires_grad_(True)
    out = model(batch, embeds=e, detach_attention=True)
    probs = model.probabilities(out.logits)
    y = probs[0, probs[0].argmax()]
    (grad,) = torch.autograd.grad(y, e)
    assert torch.allclose(g[0], (grad[0] * e[0]).sum(-1).abs() * batch.mask[0])


def test_leave_one_out_removes_each_token_in_turn():
    model = tiny_rnn("lstm", pair=True)
    data = encoded([4, 1, 3], pair=True)
    batch = rnn.make_batch(data)
    loo = at.leave_one_out_tvd(model, batch)
    ref = model.probabilities(model(batch).logits)
    ids = data.ids[0]
    for t in range(4):
        removed = rnn.EncodedSet([ids[:t] + ids[t + 1:]], [0], [data.query_ids[0]], [0])
        p = model.probabilities(model(rnn.make_batch(removed)).logits)[0]
        assert loo[0, t].item() == pytest.approx(0.5 * (p - ref[0]).abs().sum().item(), abs=1e-6)
    assert torch.isnan(loo[1]).all()  # a single-token input has no leave-one-out
    assert torch.isnan(loo[2, 3:]).all() and torch.isfinite(loo[2, :3]).all()


# ---------------------------------------------------------------- τ summaries
def test_kendall_per_instance_drops_nan_positions_and_summary_groups():
    a = [np.array([1.0, 2, 3, np.nan]), np.array([3.0, 2, 1]), np.array([1.0])]
    b = [np.array([1.0, 2, 3, 4]), np.array([1.0, 2, 3]), np.array([2.0])]
    corr = at.kendall_per_instance(a, b)
    assert corr.statistic[0] == pytest.approx(1.0) and corr.statistic[1] == pytest.approx(-1.0)
    assert np.isnan(corr.statistic[2])
    s = at.summarise_tau(corr, [0, 0, 1])
    assert s[0]["mean"] == pytest.approx(0.0) and s[0]["std"] == pytest.approx(1.0) and s[0]["n"] == 2
    assert np.isnan(s[1]["mean"]) and s[1]["sig_frac"] == 0.0
    long = [np.arange(30.0)] * 2
    assert at.summarise_tau(at.kendall_per_instance(long, long), ["x", "x"])["x"]["sig_frac"] == 1.0


# ---------------------------------------------------------------- the Transformer view
@pytest.mark.parametrize("make", [tiny_bert, tiny_roberta])
def test_transformer_view_decodes_its_own_attention_exactly(make):
    model = make(num_labels=3)
    batch = text_batch(lengths=(7, 4, 5))
    view = at.transformer_view(model, batch)
    assert view.alpha.shape == (3, 4, 7) and view.heads
    with torch.no_grad():
        logits = model(**batch).logits
    assert torch.allclose(view.probs, logits.softmax(-1), atol=1e-10)
    again = view.decode(view.alpha[:, None])[:, 0]
    assert torch.allclose(again, view.probs, atol=1e-10)
    assert torch.allclose(view.shown.sum(-1), torch.ones(3, dtype=view.shown.dtype))
    # every head given the same (head-mean) row is a different model output in general
    shared = view.decode(view.shown[:, None])[:, 0]
    assert not torch.allclose(shared, view.probs, atol=1e-6)
    # the view of one unpadded row agrees with the padded batch
    single = at.transformer_view(model, unbatch(batch, 1))
    assert torch.allclose(single.probs[0], view.probs[1], atol=1e-10)
    assert len(model._forward_hooks) == 0 and all(len(m._forward_hooks) == 0 for m in model.modules())


def test_transformer_permutation_and_adversary_run_batched():
    model = tiny_bert(num_labels=2)
    batch = text_batch(lengths=(6, 4))
    view = at.transformer_view(model, batch)
    perm = at.permutation_test(view, n=20)
    assert perm.tvd.shape == (2, 20) and perm.median_alpha.shape == (2, 6)
    assert torch.allclose(perm.median_alpha.sum(-1), torch.ones(2, dtype=perm.median_alpha.dtype))
    adv = at.adversarial_attention(view, k=3, epsilon=0.05, steps=15)
    assert adv.alphas.shape == (2, 3, 6) and (adv.alphas[1, :, 4:] == 0).all()
    feasible = adv.tvd <= 0.05
    best = adv.jsd.where(feasible, torch.zeros_like(adv.jsd)).max(1).values
    assert torch.allclose(adv.eps_max_jsd, best)


def test_adversary_cross_weight_is_eq1_by_default_and_the_authors_mean_over_ordered_pairs_when_asked():
    """Eq. 1 weighs Σ_{i<j} JSD by 1/(k(k−1)); the authors' `cross_jsd.sum(0).mean()` averages over all k² ordered
    pairs, i.e. 2/k² on Σ_{i<j}. An explicit 1/(k(k−1)) is the default bit for bit; 2/k² pushes adversaries apart."""
    from lab.experiments import jain_wallace as jw

    view = at.transformer_view(tiny_bert(num_labels=2), text_batch(lengths=(6, 4)))
    run = lambda w: at.adversarial_attention(view, k=3, epsilon=0.05, steps=15, cross_weight=w)  # noqa: E731
    assert torch.equal(run(None).alphas, run(1 / 6).alphas)
    assert not torch.allclose(run(2 / 9).alphas, run(None).alphas)
    assert jw.adversary_cross_weight(jw.settings("smoke")) == pytest.approx(2 / 25)
    assert jw.adversary_cross_weight(jw.settings("smoke", adversary_cross="paper")) is None
    assert jw.protocol(jw.settings("smoke")).cross_weight == pytest.approx(2 / 25)


class DigitTokenizer:
    """Texts of space-separated content ids -> [CLS] ids [SEP] (the tiny models' convention), right-padded."""

    def __call__(self, texts, padding=True, truncation=True, max_length=128, return_tensors="pt"):
        rows = [[2, *map(int, t.split())][:max_length - 1] + [3] for t in texts]
        width = max(map(len, rows))
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        return {"input_ids": ids, "attention_mask": (ids != 0).long(), "token_type_ids": torch.zeros_like(ids)}

    def convert_ids_to_tokens(self, ids):
        return [f"t{i}" for i in ids]


def test_transformer_analysis_explains_through_explain_many_as_chunk_by_chunk():
    """Oracle: `lab.explain` on each chunk's own tokenisation (shortest texts first, chunks of 3) and the view of
    each sentence alone; results come back in the input order."""
    import lab

    model, tok = tiny_bert(num_labels=2), DigitTokenizer()
    gen = np.random.default_rng(0)
    texts = [" ".join(map(str, gen.integers(5, 60, n))) for n in (6, 2, 9, 4, 3, 7, 5)]
    proto = at.Protocol(n_permutations=5, k=2, steps=2, chunk=3)
    a = at.analyse_transformer(model, tok, texts, [0, 1] * 3 + [0], proto, label_names=("a", "b"))
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), 3):
        idx = order[start:start + 3]
        inputs = tok([texts[i] for i in idx])
        for name, method, params in at.TRANSFORMER_IMPORTANCE:
            scores = lab.explain(model, inputs, method, **params).scores.detach().float()
            for j, i in enumerate(idx):
                assert np.array_equal(a.importance[name][i], scores[j, :len(a.tokens[i])].numpy()), (name, i)
    for i, text in enumerate(texts):
        alone = at.transformer_view(model, tok([text]))
        assert np.allclose(a.attention[i], alone.shown[0].float().numpy(), atol=1e-6)
        assert a.tokens[i][0] == "t2" and not a.correlated[i][0] and a.correlated[i][1:-1].all()
    assert a.adv_eps_max_jsd.shape == (7,) and set(a.tau) >= {"chefer_grad", "chefer_loo"}


def test_rnn_analysis_records_do_not_depend_on_the_chunking():
    """Importance and attention per instance are the same in chunks of 2 as in one chunk, and equal the direct
    calls; only the instances' order of analysis changes."""
    model, data = tiny_rnn(), encoded([5, 3, 7, 2, 6])
    vocab = rnn.Vocab(list(range(100, 118)), type("Tok", (), {"convert_ids_to_tokens": lambda self, ids: ids})())
    run = lambda chunk: at.analyse_rnn(model, data, [4, 0, 2], 2, 0.01, at.Protocol(n_permutations=4, steps=2,  # noqa: E731
                                                                                    chunk=chunk, adv_chunk=chunk),
                                       vocab=vocab, dataset="sst_jw", encoder="lstm", label_names=("a", "b"))
    small, whole = run(2), run(64)
    batch = rnn.make_batch(data, [4, 0, 2])
    grad = at.gradient_importance(model, batch)
    for i, r in enumerate((4, 0, 2)):
        n = len(data.ids[r])
        assert np.allclose(small.importance["gradient"][i], whole.importance["gradient"][i], atol=1e-12)
        assert np.allclose(small.importance["loo"][i], whole.importance["loo"][i], atol=1e-12)
        assert np.allclose(small.attention[i], whole.attention[i], atol=1e-7)
        assert np.allclose(whole.importance["gradient"][i], grad[i, :n].numpy(), atol=1e-12)
    assert small.adv_eps_max_jsd.shape == (2,) and len(small) == 3


def test_amsgrad_adam_matches_torch_optim():
    torch.manual_seed(0)
    a = torch.randn(3, 4, dtype=torch.float64)
    b = a.clone().requires_grad_(True)
    ours = at.AmsgradAdam(a, lr=0.05)
    ref = torch.optim.Adam([b], lr=0.05, amsgrad=True)
    for step in range(25):
        grad = torch.randn(3, 4, dtype=torch.float64) * (1 + step % 3)
        ours.step(grad)
        b.grad = grad.clone()
        ref.step()
    assert torch.allclose(a, b.detach(), atol=1e-12)


# ---------------------------------------------------------------- the notebook's experiment module
def toy_task(n=12):
    class Tok:
        unk_token, unk_token_id = "[UNK]", 1

        def convert_ids_to_tokens(self, ids):
            return [f"w{i}" for i in ids]

    data = encoded([3 + i % 5 for i in range(n)], seed=1)
    data.labels = [i % 2 for i in range(n)]
    vocab = rnn.Vocab(list(range(100, 118)), Tok())
    return jw.Task("sst_jw", jw.TASKS["sst_jw"], vocab, data, data, data, ("negative", "positive"), list(range(n)), 4)


def test_experiment_settings_reject_unknown_names():
    with pytest.raises(jw.ExperimentError, match="unknown profile"):
        jw.settings("huge")
    with pytest.raises(jw.ExperimentError, match="unknown dataset"):
        jw.settings("smoke", datasets=("mnist",))
    assert jw.per_dataset({"imdb": 256, None: 128}, "imdb") == 256 and jw.per_dataset({None: 128}, "snli") == 128


def test_rnn_analysis_tables_and_figures_fit_together():
    task = toy_task()
    cfg = jw.settings("smoke", progress=False, adv_steps=5, chunk=5, adv_chunk=3)
    model = rnn.AttentionClassifier(rnn.RNNConfig(vocab_size=20, num_classes=2, embed_dim=6, hidden=4)).eval()
    trained = rnn.TrainedRNN(model, task.vocab, {"train_seconds": 1.0})
    a = jw.analyse_rnn(task, trained, cfg)
    assert len(a) == 12 and a.probs.shape == (12, 2) and a.adv_eps_max_jsd.shape == (4,)
    assert [len(x) for x in a.attention] == [len(s) for s in task.test.ids]  # instance order kept
    assert np.allclose([x.sum() for x in a.attention], 1.0, atol=1e-5)
    assert set(a.tau) == {"attn_grad", "attn_loo", "grad_loo"} and len(a.tau["attn_grad"].statistic) == 12
    analyses = {("sst_jw", "lstm"): a}
    rows = jwr.table2_rows(analyses)
    assert all(k.startswith("SST / class") for k in rows) and "tau_g_bilstm" in next(iter(rows.values()))
    assert set(jwr.permutation_rows(analyses)) == set(jwr.adversarial_rows(analyses)) == {"SST / BiLSTM"}
    res = jwr.add_claims(Results(jw.NOTEBOOK, "smoke"), cfg, {}, analyses, None)
    assert res.claims and all(c["verdict"] == "not evaluated" for c in res.claims)  # smoke: not tested
    assert any("interval" in c for c in res.claims)  # the intervals are still recorded
    fig = vz.instance_panels(a, 0)
    assert len(fig.axes) == 3  # original, permuted, adversarial
    with pytest.raises(ValueError, match="instance must be in 0..11"):
        vz.instance_renderer(analyses)("sst_jw", "lstm", 12)
    with pytest.raises(ValueError, match="no analysis for imdb/lstm"):
        vz.instance_renderer(analyses)("imdb", "lstm", 0)


def test_rnn_analysis_is_memoised_per_model_and_instances(lab_dirs, monkeypatch):
    task = toy_task()
    cfg = jw.settings("smoke", progress=False, adv_steps=5, chunk=5, adv_chunk=3, use_cache=True)
    model = rnn.AttentionClassifier(rnn.RNNConfig(vocab_size=20, num_classes=2, embed_dim=6, hidden=4)).eval()
    trained = rnn.TrainedRNN(model, task.vocab, {"train_seconds": 1.0})
    first = jw.analyse_rnn(task, trained, cfg)
    calls = []
    real = at.analyse_rnn
    monkeypatch.setattr(at, "analyse_rnn", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = jw.analyse_rnn(task, trained, cfg)
    assert calls == [] and np.array_equal(again.tau["attn_grad"].statistic, first.tau["attn_grad"].statistic)
    assert np.array_equal(again.adv_eps_max_jsd, first.adv_eps_max_jsd)
    with torch.no_grad():
        next(model.parameters()).add_(0.1)
    jw.analyse_rnn(task, trained, cfg)  # other weights: recomputed
    jw.analyse_rnn(task, trained, {**cfg, "n_permutations": 7})  # another protocol: recomputed
    assert calls == [1, 1]


def fake_analysis(dataset, encoder="lstm", n=60, tau=None, seed=0, label_names=("negative", "positive"), **kw):
    """An Analysis with chosen per-instance values (no model): τ columns, permutation and adversarial arrays."""
    from lab.metrics.agreement import Correlation

    rng = np.random.default_rng(seed)
    c = len(label_names)
    probs = np.full((n, c), 0.1 / max(c - 1, 1))
    probs[np.arange(n), kw.pop("predicted", np.arange(n) % c)] = 0.9
    tau = tau or {m: np.full(n, 0.3) for m in ("attn_grad", "attn_loo", "grad_loo")}
    taus = {m: Correlation(np.asarray(v, float), np.zeros(n)) for m, v in tau.items()}
    arrays = dict(perm_median_tvd=rng.uniform(0, 0.02, n), max_attention=rng.uniform(0.2, 0.9, n),
                  adv_eps_max_jsd=rng.uniform(0.62, 0.69, n), adv_any_iterate=np.zeros(n), adv_feasible=np.ones(n))
    arrays.update(kw)
    return at.Analysis(dataset=dataset, encoder=encoder, label_names=tuple(label_names), tokens=[["a"]] * n,
                       attention=[], importance={}, correlated=[], probs=probs, labels=np.zeros(n, int), tau=taus,
                       perm_alpha=[], perm_probs=np.zeros((n, c)), adv_alpha=[], adv_probs=np.zeros((0, c)),
                       epsilon=0.01, **arrays)


def test_snli_table2_pairs_our_classes_with_the_papers_by_name():
    """The paper's SNLI order is neutral, contradiction, entailment (Fig. 2 caption); ours is entailment, neutral,
    contradiction: our class 0 (entailment) must sit beside the paper's class 2."""
    from lab.data.text import SNLI_LABELS
    n = 30
    tau = {m: np.full(n, 0.5) for m in ("attn_grad", "attn_loo", "grad_loo")}
    a = fake_analysis("snli", n=n, tau=tau, label_names=SNLI_LABELS)
    rows = jwr.table2_rows({("snli", "lstm"): a})
    paper = jw.PAPER_TABLE2["snli"]
    for ours, name in enumerate(SNLI_LABELS):
        row = next(r for k, r in rows.items() if k.startswith(f"SNLI / class {ours}"))
        p = paper[("neutral", "contradiction", "entailment").index(name)]
        assert row["tau_g_bilstm"] == (p[0][0], 0.5) and row["tau_loo_bilstm_sig"][0] == p[2][2]
    assert jwr.paper_class("sst_jw", 1, ("negative", "positive")) == 1  # binary tasks keep their indices


def jw_cfg():
    return jw.settings("default", encoders=("lstm", "average"))


def verdict_of(claims, prefix):
    """The verdict of the one claim starting with `prefix` (claims: dicts with "claim" and "verdict")."""
    found = [c["verdict"] for c in claims if c["claim"].startswith(prefix)]
    assert len(found) == 1, (prefix, [c["claim"] for c in claims])
    return found[0]


def test_jw_claims_are_decided_by_paired_intervals():
    """Known per-instance τ: Average beats BiLSTM everywhere (holds); the BiLSTM mean τ_g 0.375 sits inside
    0.30–0.45 (holds) while the Average's 0.5 lies outside 0.65–0.80 (fails); a noisy gap near the margin is
    inconclusive."""
    rng = np.random.default_rng(0)
    n, analyses = 200, {}
    for k, name in enumerate(("sst_jw", "imdb")):
        lstm = {"attn_grad": 0.375 + rng.normal(0, 0.02, n), "attn_loo": 0.3 + rng.normal(0, 0.02, n),
                "grad_loo": 0.5 + rng.normal(0, 0.5, n)}
        avg = {"attn_grad": 0.5 + rng.normal(0, 0.02, n), "attn_loo": 0.7 + rng.normal(0, 0.02, n),
               "grad_loo": 0.6 + rng.normal(0, 0.02, n)}
        analyses[name, "lstm"] = fake_analysis(name, "lstm", n, lstm, seed=k)
        analyses[name, "average"] = fake_analysis(name, "average", n, avg, seed=k)
    res = jwr.add_claims(Results(jw.NOTEBOOK, "default"), jw_cfg(), {}, analyses, None)
    v = functools.partial(verdict_of, res.claims)
    assert v("BiLSTM attention–gradient τ_g") == "holds"
    assert v("Average-encoder attention–gradient τ_g") == "fails"
    assert v("τ_g is higher for the Average encoder") == "holds"
    assert v("Fig. 3:") == "inconclusive"  # gap 0.2 ± noise: straddles the margin
    assert v("Fig. 5:") == "holds"  # 0.4 > 0.25
    assert v("Fig. 7: adversarial attention is often near the JSD bound ln 2 ≈ 0.69 (BiLSTM)") == "holds"
    assert all("interval" in c for c in res.claims if c["claim"].startswith(("Fig. 3", "Fig. 5", "BiLSTM")))


def test_jw_fig6_claim_counts_peaked_instances_that_barely_move():
    n = 200
    mx = np.linspace(0.1, 0.9, n)
    moved = fake_analysis("sst_jw", "lstm", n, perm_median_tvd=np.where(mx > 0.5, 0.3, 0.0), max_attention=mx)
    still = fake_analysis("imdb", "lstm", n, max_attention=mx)  # every Δŷ^med < 0.02
    cfg = jw.settings("default", encoders=("lstm",))
    claims = lambda analyses: jwr.add_claims(Results(jw.NOTEBOOK), cfg, {}, analyses, None).claims  # noqa: E731
    assert verdict_of(claims({("imdb", "lstm"): still}), "Fig. 6") == "holds"
    assert verdict_of(claims({("imdb", "lstm"): still, ("sst_jw", "lstm"): moved}), "Fig. 6") == "fails"


def test_jw_performance_interval_and_discussion_come_from_results():
    perf = {"SST": {"test_lstm": (0.81, 0.84), "test_lstm_ci_low": (None, 0.82), "test_lstm_ci_high": (None, 0.86),
                    "n_test": (None, 1800)},
            "bAbI 1": {"test_lstm": (1.0, 0.90), "test_lstm_ci_low": (None, 0.88),
                       "test_lstm_ci_high": (None, 0.92), "n_test": (None, 1000)}}
    res = Results(jw.NOTEBOOK, "default")
    jwr.add_performance(res, perf)
    jwr.add_claims(res, jw.settings("default", encoders=("lstm",)), perf, {}, None)
    assert verdict_of(res.claims, "Table 1: the BiLSTM's test performance on SST") == "holds"
    assert verdict_of(res.claims, "Table 1: the BiLSTM's test performance on bAbI 1") == "fails"
    text = vz.discussion_markdown(res)
    assert "Average:" not in text  # no Average models: no empty list
    assert "SST 0.840 [0.820, 0.860] (paper 0.81); bAbI 1 0.900 [0.880, 0.920] (paper 1.00)" in text


def test_jw_transformer_claims_pair_the_shared_instances():
    rng = np.random.default_rng(0)
    lstm = fake_analysis("sst_jw", "lstm", 60, {"attn_loo": 0.4 + rng.normal(0, 0.05, 60)})
    tau = {"attn_loo": 0.1 + rng.normal(0, 0.05, 40), "chefer_loo": 0.3 + rng.normal(0, 0.05, 40)}
    tr = fake_analysis("sst_jw", "transformer", 40, tau)
    out = jwr.transformer_claims(tr, lstm)
    assert out[0]["interval"].n == 40 and stats.decide(out[0]["interval"], 0.05, "less") == "holds"
    assert stats.decide(out[1]["interval"], 0.0, "greater") == "holds"
    assert stats.decide(out[2]["interval"], 0.05, "less") == "holds"  # Δŷ^med < 0.02 everywhere
