"""Each LRP rule against an independently written slow reference (explicit loops over the paper's sums)."""
import itertools

import numpy as np
import pytest
import torch

from lab.relevance import rules

RNG = np.random.default_rng(0)


def _data(n_in=5, n_out=4, batch=2):
    x = RNG.normal(size=(batch, n_in))
    w = RNG.normal(size=(n_out, n_in))
    r = RNG.normal(size=(batch, n_out))
    return x, w, r


def _ref_subset_rule(x, w, r, keep):
    """R_j = sum_i [x_j w_ij 1(keep)] / sum_j' [x_j' w_ij' 1(keep)] R_i (Chefer Eq. 2 restricted to a subset)."""
    out = np.zeros_like(x)
    for b, i in itertools.product(range(x.shape[0]), range(w.shape[0])):
        contrib = np.array([x[b, j] * w[i, j] if keep(x[b, j], w[i, j]) else 0.0 for j in range(x.shape[1])])
        z = contrib.sum()
        if z != 0:
            out[b] += contrib / z * r[b, i]
    return out


def _t(*arrays):
    return [torch.tensor(a) for a in arrays]


def test_eq6_positive_subset_rule_matches_reference():
    x, w, r = _data()
    ref = _ref_subset_rule(x, w, r, lambda xj, wij: xj * wij >= 0)
    ours = rules.rule_alpha_beta(*_t(x, w, r), alpha=1.0, beta=0.0)
    assert np.allclose(ours.numpy(), ref, atol=1e-6)


def test_eq4_matches_reference_and_doubles():
    x, w, r = _data(n_in=8)
    r = np.abs(r)
    # GELU-like mixed-sign inputs; every output has a positive-positive and a negative-negative pair
    x[:, 0], x[:, 1] = np.abs(x[:, 0]), -np.abs(x[:, 1])
    w[:, 0], w[:, 1] = np.abs(w[:, 0]), -np.abs(w[:, 1])
    ref = _ref_subset_rule(x, w, r, lambda xj, wij: xj > 0 and wij > 0) + _ref_subset_rule(
        x, w, r, lambda xj, wij: xj < 0 and wij < 0)
    ours = rules.rule_eq4(*_t(x, w, r))
    assert np.allclose(ours.numpy(), ref, atol=1e-6)
    # Eq. 5: with mixed-sign inputs and both sums non-empty, the total relevance doubles
    assert np.allclose(ours.sum(1).numpy(), 2 * r.sum(1), rtol=1e-6)


def test_alpha_beta_matches_reference():
    x, w, r = _data()
    alpha, beta = 2.0, 1.0
    pos = _ref_subset_rule(x, w, r, lambda xj, wij: xj * wij > 0)
    neg = _ref_subset_rule(x, w, r, lambda xj, wij: xj * wij < 0)
    ours = rules.rule_alpha_beta(*_t(x, w, r), alpha=alpha, beta=beta)
    assert np.allclose(ours.numpy(), alpha * pos - beta * neg, atol=1e-6)


def test_epsilon_rule_matches_reference():
    x, w, r = _data()
    bias = RNG.normal(size=w.shape[0])
    eps = 1e-3
    ref = np.zeros_like(x)
    for b, i in itertools.product(range(x.shape[0]), range(w.shape[0])):
        z = x[b] @ w[i] + bias[i]
        z = z + eps * (1 if z >= 0 else -1)
        ref[b] += x[b] * w[i] / z * r[b, i]
    ours = rules.rule_epsilon(*_t(x, w, r), bias=torch.tensor(bias), epsilon=eps)
    assert np.allclose(ours.numpy(), ref, atol=1e-6)


def test_zb_rule_matches_reference_and_conserves():
    x, w, r = _data()
    low, high = -3.0, 3.0
    ref = np.zeros_like(x)
    for b, i in itertools.product(range(x.shape[0]), range(w.shape[0])):
        terms = x[b] * w[i] - low * np.maximum(w[i], 0) - high * np.minimum(w[i], 0)
        ref[b] += terms / terms.sum() * r[b, i]
    ours = rules.rule_zb(*_t(x, w, r), low=low, high=high)
    assert np.allclose(ours.numpy(), ref, atol=1e-6)
    assert np.allclose(ours.sum(1).numpy(), r.sum(1), rtol=1e-6)


def _ref_normalize(ru, rv, total):
    """Sec. 3.2: R_u * sum|R_u| / (sum|R_u| + sum|R_v|) * sum R / sum R_u."""
    au, av = np.abs(ru).sum(), np.abs(rv).sum()
    return ru * au / (au + av) * total / ru.sum(), rv * av / (au + av) * total / rv.sum()


def test_add_rules_match_reference():
    u, v, r = RNG.normal(size=(1, 6)), RNG.normal(size=(1, 6)), RNG.normal(size=(1, 6))
    ru_ref, rv_ref = u / (u + v) * r, v / (u + v) * r  # Eq. 8 on a sum: generic rule
    ru, rv = rules.add_relevance(*_t(u, v, r), rule="z")
    assert np.allclose(ru.numpy(), ru_ref) and np.allclose(rv.numpy(), rv_ref)
    assert np.isclose((ru + rv).sum().item(), r.sum())  # Lemma 1: addition conserves
    nu, nv = rules.add_relevance(*_t(u, v, r), rule="normalized")
    nu_ref, nv_ref = _ref_normalize(ru_ref, rv_ref, r.sum())
    assert np.allclose(nu.numpy(), nu_ref, atol=1e-6) and np.allclose(nv.numpy(), nv_ref, atol=1e-6)


def test_matmul_naive_doubles_and_normalized_conserves():
    a, b = RNG.uniform(0.1, 1, size=(1, 3, 4)), RNG.uniform(0.1, 1, size=(1, 4, 2))
    r = RNG.uniform(0.1, 1, size=(1, 3, 2))
    z = a[0] @ b[0]
    ra_ref = np.zeros((3, 4))
    rb_ref = np.zeros((4, 2))
    for i, k, j in itertools.product(range(3), range(4), range(2)):
        ra_ref[i, k] += a[0, i, k] * b[0, k, j] / z[i, j] * r[0, i, j]
        rb_ref[k, j] += a[0, i, k] * b[0, k, j] / z[i, j] * r[0, i, j]
    ra, rb = rules.matmul_relevance(*_t(a, b, r), rule="naive")
    assert np.allclose(ra[0].numpy(), ra_ref) and np.allclose(rb[0].numpy(), rb_ref)
    # Lemma 1: computed naively each operand receives the full relevance, so the total doubles
    assert np.isclose(ra.sum().item() + rb.sum().item(), 2 * r.sum())
    na, nb = rules.matmul_relevance(*_t(a, b, r), rule="normalized")
    assert np.isclose(na.sum().item() + nb.sum().item(), r.sum())
    ha, hb = rules.matmul_relevance(*_t(a, b, r), rule="halve")
    assert np.allclose(ha.numpy(), ra.numpy() / 2)


def test_explosion_example_eqs_10_11_and_normalisation_bounds():
    """u = (e^a, e^b), v = (1 - e^a, 1 - e^b), R = (1, 1): conservation holds but values explode; the
    normalisation (Lemma 2) bounds each operand's total by the incoming total."""
    a_, b_ = 5.0, 6.0
    u = torch.tensor([[np.exp(a_), np.exp(b_)]])
    v = 1 - u
    r = torch.ones(1, 2, dtype=torch.float64)
    ru, rv = rules.add_relevance(u, v, r, rule="z")
    assert torch.allclose(ru, u) and torch.allclose(rv, v)
    assert ru.abs().max() > 100 and torch.isclose((ru + rv).sum(), r.sum())
    nu, nv = rules.add_relevance(u, v, r, rule="normalized")
    assert torch.isclose(nu.sum() + nv.sum(), r.sum())
    for part in (nu.sum(), nv.sum()):
        assert 0 <= part <= r.sum() + 1e-12


def test_abs_sum_variant_differs_from_sum_abs():
    ru = torch.tensor([[2.0, -1.0]], dtype=torch.float64)
    rv = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    total = torch.tensor([[3.0]], dtype=torch.float64)
    paper = rules.normalize_pair(ru, rv, total, "sum_abs")
    code = rules.normalize_pair(ru, rv, total, "abs_sum")
    assert not torch.allclose(paper[0], code[0])
    for nu, nv in (paper, code):
        assert torch.isclose(nu.sum() + nv.sum(), total.sum())


def test_mask_heads_conserves_and_zeroes_masked_heads():
    r = torch.tensor(RNG.uniform(0.1, 1, size=(2, 3, 4, 4)))
    mask = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    masked = rules.mask_heads(r, mask)
    assert torch.all(masked[:, 1] == 0)
    assert torch.allclose(masked.sum((1, 2, 3)), r.sum((1, 2, 3)))
    assert torch.equal(rules.mask_heads(r, torch.ones(3, dtype=torch.float64)), r)


@pytest.mark.parametrize("rule", ["eq4", "alpha_beta", "epsilon"])
def test_linear_function_backward_uses_rule(rule):
    x, w, r = _t(*_data())
    x.requires_grad_(True)
    out = rules.LinearRelevance.apply(x, w, None, rule, {"alpha": 1.0, "beta": 0.0, "epsilon": 1e-6}, rules.Mode())
    assert torch.allclose(out, x @ w.t())
    (got,) = torch.autograd.grad(out, x, r)
    assert torch.allclose(got, rules.LINEAR_RULES[rule](x.detach(), w, r, bias=None, alpha=1.0, beta=0.0, epsilon=1e-6))
