"""AttnLRP (Achtibat et al. 2024) and CP-LRP (Ali et al. 2022) in the relevance engine: each new rule against a slow
reference, both methods against gradient x input through a modified forward written with plain autograd,
conservation once the relevance absorbed by biases is counted, and AttnLRP against LXT 2.1's own output
(tests/fixtures/lxt, written by tools/lxt_reference/generate.py)."""
import json
from pathlib import Path

import pytest
import torch
from scipy.stats import spearmanr

import lab
from lab.models.adapters import ExplainInputError, get_adapter
from lab.relevance import ATTNLRP, CP_LRP, RelevanceOps
from lab.relevance import rules
from tests.reference import bert_from_fixture, padded_batch
from tests.models import text_batch, tiny_bert, tiny_roberta, tiny_vit, unbatch

FIXTURE = Path(__file__).parent / "fixtures" / "lxt" / "attnlrp_bert.json"
METHODS = ["attnlrp", "cp_lrp"]
COMPOSITES = {"attnlrp": ATTNLRP, "cp_lrp": CP_LRP}


def _images(n=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.randn(n, 3, 16, 16, generator=gen, dtype=torch.float64)}


def _lively(model, seed=0):
    """Unit-scale weights and non-zero biases / LayerNorm parameters, so that every rule and every bias matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            if ("LayerNorm" in name or "layernorm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith("bias") or "LayerNorm" in name or "layernorm" in name:
                p.copy_(0.1 * noise)
            elif p.dim() >= 2 and "embeddings" not in name:
                p.copy_(noise / p[0].numel() ** 0.5)
            else:
                p.copy_(noise)
    return model


def _model_and_batch(kind):
    if kind == "vit":
        return _lively(tiny_vit()), _images()
    return _lively(tiny_bert() if kind == "bert" else tiny_roberta()), text_batch()


# ---- the rules against slow references -----------------------------------------------------------------------


def test_softmax_rule_is_the_taylor_rule_and_its_bias_accounts_for_the_rest():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, generator=gen, dtype=torch.float64) * 3
    relevance = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    s = torch.softmax(x, -1)
    ours = rules.softmax_relevance(x, s, relevance)
    for b in range(2):  # Prop. 3.1: R_i = sum_j x_i (ds_j/dx_i) R_j / s_j, the first-order Taylor term
        jac = torch.autograd.functional.jacobian(lambda t: torch.softmax(t, -1), x[b])  # [j, i]
        reference = x[b] * (jac.T @ (relevance[b] / s[b]))
        torch.testing.assert_close(ours[b], reference, atol=1e-12, rtol=1e-10)
    absorbed = rules.softmax_absorbed(x, s, relevance)
    torch.testing.assert_close(ours.sum(-1) + absorbed, relevance.sum(-1), atol=1e-12, rtol=1e-10)
    assert (ours.sum(-1) - relevance.sum(-1)).abs().min() > 1e-3  # the rule alone does not conserve


class TinyRMSNorm(torch.nn.Module):
    """The Hugging Face (Llama) RMSNorm: y = w * x / sqrt(mean x^2 + eps)."""

    def __init__(self, n):
        super().__init__()
        self.weight = torch.nn.Parameter(1.0 + 0.1 * torch.randn(n, dtype=torch.float64))
        self.variance_epsilon = 1e-6

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)


def _constant_scale_forward(norm, x):
    """LXT's patched forward: the normaliser is detached, the rest differentiates as usual."""
    if isinstance(norm, torch.nn.LayerNorm):
        xc = x - x.mean(-1, keepdim=True)
        sigma = (xc.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()
        return xc / sigma.detach() * norm.weight + norm.bias
    return norm.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon).detach()


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
def test_norm_rule_is_gradient_times_input_with_a_constant_normaliser(kind):
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(6, dtype=torch.float64) if kind == "layernorm" else TinyRMSNorm(6)
    if kind == "layernorm":
        with torch.no_grad():
            norm.weight.normal_(1.0, 0.1), norm.bias.normal_(0.0, 0.1)
    x = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    relevance = torch.randn(3, 4, 6, dtype=torch.float64)
    y = _constant_scale_forward(norm, x)
    torch.testing.assert_close(y, norm(x))
    (grad,) = torch.autograd.grad(y, x, relevance / y)
    absorbed = []
    ours = rules.norm_relevance(x.detach(), norm, relevance, epsilon=0.0, absorb=absorbed.append)
    torch.testing.assert_close(ours, x.detach() * grad, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(ours.sum((1, 2)) + absorbed[0], relevance.sum((1, 2)), atol=1e-9, rtol=1e-9)


def test_first_constant_matmul_gives_everything_to_the_second_operand():
    gen = torch.Generator().manual_seed(0)
    a = torch.softmax(torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64), -1)
    b = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    relevance = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    r_a, r_b = rules.matmul_relevance(a, b.detach(), relevance, "first_constant")
    z = a @ b
    (grad,) = torch.autograd.grad(z, b, relevance / z)
    assert r_a.abs().max() == 0
    torch.testing.assert_close(r_b, b.detach() * grad)
    torch.testing.assert_close(r_b.sum((1, 2, 3)), relevance.sum((1, 2, 3)))


# ---- the methods on models -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["bert", "roberta", "vit"])
def test_conserved_once_absorbed_relevance_is_counted(kind, method):
    """Both methods let biases absorb relevance (epsilon rule; AttnLRP's softmax rule too, through its Taylor bias).
    Counting what each bias takes by its own formula, the input relevance plus the absorbed total is the output's."""
    model, batch = _model_and_batch(kind)
    adapter = get_adapter(model)
    ops = RelevanceOps(COMPOSITES[method], record_absorbed=True)
    with torch.enable_grad():
        leaf, logits = adapter.relevance_forward(adapter.prepare(batch), ops)
        seed = torch.nn.functional.one_hot(torch.tensor([0, 1, 2]), logits.shape[-1]).to(logits.dtype)
        (relevance,) = torch.autograd.grad(logits, leaf, seed)
    total = relevance.sum((1, 2))
    assert (total - 1).abs().min() > 1e-3  # biases do absorb a visible share here
    torch.testing.assert_close(total + ops.absorbed, torch.ones_like(total), atol=1e-5, rtol=0)


def _zero_biases(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    return model


@pytest.mark.parametrize("kind", ["bert", "vit"])
def test_cp_lrp_conserves_without_biases_and_attnlrp_loses_to_the_softmax(kind):
    model, batch = _model_and_batch(kind)
    model = _zero_biases(model)
    cp = lab.explain(model, batch, "cp_lrp", epsilon=1e-12)
    attn = lab.explain(model, batch, "attnlrp", epsilon=1e-12)
    assert cp.delta.abs().max() < 1e-5 * cp.logits.abs().max()
    assert attn.delta.abs().max() > 1e-3


def _scale_gradient(x, factor):
    """Identity whose gradient is multiplied by factor (LXT's divide_gradient, the uniform rule)."""
    return x * factor + (x * (1 - factor)).detach()


def _identity_rule(fn, x):
    """f(x) whose gradient is f(x)/x: relevance passes unchanged through an element-wise function (Eq. 9)."""
    y = fn(x)
    return x * (y / x).detach()


def _gradient_x_input(model, batch, target, method):
    """Gradient x input at the embedding output of a BERT classifier through a forward written here with the
    model's modules: uniform rule as halved gradients (AttnLRP), detached attention (CP-LRP), constant
    LayerNorm scale and identity rule on GELU/tanh (both). Independent of lab's rules."""
    bert, cfg = model.bert, model.config
    heads, dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    h0 = bert.embeddings(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"]).detach()
    h = h0.requires_grad_(True)
    additive = (1.0 - batch["attention_mask"][:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
    for layer in bert.encoder.layer:
        att = layer.attention.self
        split = lambda t: t.view(t.shape[0], t.shape[1], heads, dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(att.query(h)), split(att.key(h)), split(att.value(h))
        scores = q @ k.transpose(2, 3)
        scores = _scale_gradient(scores, 0.5) if method == "attnlrp" else scores
        probs = torch.softmax(scores * dim ** -0.5 + additive, -1)
        probs = probs.detach() if method == "cp_lrp" else probs
        context = probs @ v
        context = _scale_gradient(context, 0.5) if method == "attnlrp" else context
        context = context.transpose(1, 2).reshape(h.shape)
        a = _constant_scale_forward(layer.attention.output.LayerNorm, layer.attention.output.dense(context) + h)
        m = _identity_rule(layer.intermediate.intermediate_act_fn, layer.intermediate.dense(a))
        h = _constant_scale_forward(layer.output.LayerNorm, layer.output.dense(m) + a)
    logits = model.classifier(_identity_rule(torch.tanh, bert.pooler.dense(h[:, 0])))
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), h0)
    return (h0 * grad).sum(-1), logits.detach()


@pytest.mark.parametrize("method", METHODS)
def test_equals_gradient_times_input_through_the_modified_forward(method):
    model, batch = _model_and_batch("bert")
    target = torch.tensor([0, 1, 2])
    ours = lab.explain(model, batch, method, target=target, epsilon=1e-12)
    reference, logits = _gradient_x_input(model, batch, target, method)
    torch.testing.assert_close(logits, ours.logits, atol=1e-10, rtol=0)
    torch.testing.assert_close(ours.scores, reference.masked_fill(~ours.valid, 0.0), atol=1e-8, rtol=1e-7)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["bert", "vit"])
def test_batched_equals_one_by_one(method, kind):
    model, batch = _model_and_batch(kind)
    target = torch.tensor([2, 0, 1])
    full = lab.explain(model, batch, method, target=target)
    for i in range(3):
        single_batch = {"pixel_values": batch["pixel_values"][i:i + 1]} if kind == "vit" else unbatch(batch, i)
        single = lab.explain(model, single_batch, method, target=target[i:i + 1])
        n = single.scores.shape[1]
        torch.testing.assert_close(full.scores[i, :n], single.scores[0], atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(full.delta[i], single.delta[0], atol=1e-10, rtol=1e-8)
        assert kind == "vit" or torch.all(full.scores[i, n:] == 0)


@pytest.mark.parametrize("method", METHODS)
def test_model_unchanged_and_no_hooks_left(method):
    model = tiny_bert(attn_implementation="sdpa").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = text_batch()
    out_before = model(**batch).logits
    lab.explain(model, batch, method)
    assert model.training and model.config._attn_implementation == "sdpa"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(model(**batch).logits, out_before)
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


def test_methods_differ_and_bad_score_is_one_clear_error():
    model, batch = _model_and_batch("bert")
    attn, cp = (lab.explain(model, batch, m, target=[0, 1, 2]) for m in METHODS)
    assert not torch.allclose(attn.scores, cp.scores, atol=1e-3)
    with pytest.raises(ExplainInputError, match="score must be 'sum' or 'abs_sum'"):
        lab.explain(model, batch, "attnlrp", score="max")


# ---- against LXT 2.1 -----------------------------------------------------------------------------------------


def _lxt_model_and_examples():
    fixture = json.loads(FIXTURE.read_text())
    model = bert_from_fixture(fixture)
    return model, fixture["examples"]


@pytest.mark.parametrize("epsilon, tolerance", [(1e-6, 1e-3), (1e-12, 1e-6)])
def test_attnlrp_matches_lxt(epsilon, tolerance):
    """Spearman >= 0.99 and max-normalised difference <= 1e-3 per example at the default epsilon; LXT's efficient
    mode is gradient x input (epsilon -> 0), and with a negligible epsilon the two agree to 1e-6."""
    assert FIXTURE.stat().st_size < 200_000
    model, examples = _lxt_model_and_examples()
    target = torch.tensor([e["target"] for e in examples])
    ours = lab.explain(model, padded_batch(examples), "attnlrp", target=target, epsilon=epsilon)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        torch.testing.assert_close(ours.logits[i], torch.tensor(e["logits"], dtype=torch.float64), atol=1e-9, rtol=0)
        mine, lxt = ours.scores[i, :n], torch.tensor(e["relevance_hidden"], dtype=torch.float64)
        assert spearmanr(mine.numpy(), lxt.numpy()).statistic >= 0.99
        assert (mine / mine.abs().max() - lxt / lxt.abs().max()).abs().max() <= tolerance


@pytest.mark.parametrize("kind", ["bert", "vit"])
def test_gradient_pass_over_the_new_rules_is_the_true_gradient(kind):
    """The two-pass mode (a gradient backward over the relevance graph) takes true derivatives through the softmax
    and norm rules: the attention gradients equal those of the plain-gradient graph."""
    from lab.explainers.common import relevance_trace
    from lab.relevance import CHEFER

    model, batch = _model_and_batch(kind)
    adapter = get_adapter(model)
    inputs, target = adapter.prepare(batch), torch.tensor([0, 1, 2])
    ours = relevance_trace(adapter, inputs, target, ATTNLRP, gradients=True).attention_gradients
    plain = relevance_trace(adapter, inputs, target, CHEFER, gradients=True).attention_gradients
    for b in range(adapter.num_layers):
        torch.testing.assert_close(ours[b], plain[b], atol=1e-10, rtol=1e-8)
