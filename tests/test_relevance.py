"""The relevance engine on tiny random BERT / RoBERTa / ViT models (fp64): the adapter's relevance forward
reproduces the HF model, relevance is conserved per block, and the LRP-family explainers behave as the papers say."""
import contextlib
import copy

import pytest
import torch

import lab
from lab.explainers.common import attention_gradients, relevance_trace
from lab.models.adapters import ExplainInputError, get_adapter
from lab.relevance import CHEFER, GRADIENT, LRP_EQ4, RelevanceOps
from tests.models import text_batch, tiny_bert, tiny_roberta, tiny_vit

RELEVANCE_METHODS = ["lrp", "lrp_alpha_beta", "partial_lrp", "chefer"]
# the generic checks also run each method with reading="code" (the authors' code's rules) where it has one
GENERIC = RELEVANCE_METHODS + ["mask_lrp", "lrp/code", "partial_lrp/code", "chefer/code"]


def _method(case):
    """'chefer/code' -> ('chefer', {'reading': 'code'}); mask_lrp gets a mixed head mask."""
    method, _, reading = case.partition("/")
    if method == "mask_lrp":
        return method, {"head_mask": torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0]])}
    return method, {"reading": reading} if reading else {}


def _images(n=3, seed=0):
    return {"pixel_values": torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)}


def _model_and_batch(kind):
    if kind == "vit":
        return tiny_vit(), _images()
    return (tiny_bert() if kind == "bert" else tiny_roberta()), text_batch()


def _lively(model, seed=0):
    """Re-initialise with unit-scale weights: HF's 0.02 init makes tiny random models' maps nearly identity."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.normal_(m.weight, std=m.in_features ** -0.5)
            elif isinstance(m, torch.nn.Embedding):
                torch.nn.init.normal_(m.weight)
    return model


def _zero_biases(model):
    model = copy.deepcopy(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and m.bias is not None:
                m.bias.zero_()
    return model


@pytest.mark.parametrize("kind", ["bert", "roberta", "vit"])
def test_relevance_forward_reproduces_hf_outputs_and_gradients(kind):
    model, batch = _model_and_batch(kind)
    adapter = get_adapter(model)
    inputs = adapter.prepare(batch)
    ops = RelevanceOps(GRADIENT)
    with torch.enable_grad():
        leaf, logits = adapter.relevance_forward(inputs, ops)
        target = logits.argmax(-1)
        (ours,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), leaf)
    out = adapter.forward(inputs, hidden_states=True)
    assert torch.allclose(logits, out.logits, atol=1e-6, rtol=0)
    # gradient w.r.t. the embedding output through the HF model itself
    hf = model(**{k: v for k, v in inputs.items()}, output_hidden_states=True)
    (theirs,) = torch.autograd.grad(hf.logits.gather(1, target[:, None]).sum(), hf.hidden_states[0])
    valid = adapter.valid_mask(inputs)
    assert torch.allclose(ours[valid], theirs[valid], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["bert", "vit"])
def test_attention_gradients_from_hf_match_the_relevance_graph(kind):
    model, batch = _model_and_batch(kind)
    adapter = get_adapter(model)
    inputs = adapter.prepare(batch)
    target = torch.tensor([0, 1, 2])
    hf = attention_gradients(adapter, inputs, target)
    trace = relevance_trace(adapter, inputs, target, GRADIENT)
    for b in range(adapter.num_layers):
        assert torch.allclose(hf.gradients[b], trace.attention_relevance[b], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["bert", "vit"])
@pytest.mark.parametrize("method", RELEVANCE_METHODS + ["mask_lrp"])
def test_cls_only_last_block_changes_no_result(kind, method):
    """The relevance forward computes only the [CLS] row of the last block; the full computation must give the
    same scores, deltas, and attention relevances/gradients (the other rows are exactly zero)."""
    model, batch = _model_and_batch(kind)
    model = _lively(model)
    adapter = get_adapter(model)
    params = {"head_mask": torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]])[:, :adapter.num_heads]} \
        if method == "mask_lrp" else {}
    target = torch.tensor([0, 1, 2])
    fast = lab.explain(model, batch, method, target=target, **params)
    full_adapter = get_adapter(model)
    full_adapter.cls_only_last_block = False
    inputs = full_adapter.prepare(batch)
    slow = lab.EXPLAINERS[method].fn(full_adapter, inputs, target, **params)
    torch.testing.assert_close(fast.scores, slow["scores"].masked_fill(~fast.valid, 0.0) if slow["scores"].shape ==
                               fast.valid.shape else slow["scores"], atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(fast.delta, slow["delta"], atol=1e-10, rtol=1e-9)
    ops_fast = relevance_trace(adapter, adapter.prepare(batch), target, CHEFER, gradients=True)
    ops_slow = relevance_trace(full_adapter, inputs, target, CHEFER, gradients=True)
    for b in range(adapter.num_layers):
        torch.testing.assert_close(ops_fast.attention_relevance[b], ops_slow.attention_relevance[b], atol=1e-10, rtol=1e-9)
        torch.testing.assert_close(ops_fast.attention_gradients[b], ops_slow.attention_gradients[b], atol=1e-10, rtol=1e-9)
    assert ops_slow.attention_relevance[-1][:, :, 1:].abs().max() == 0


@pytest.mark.parametrize("kind", ["bert", "roberta", "vit"])
@pytest.mark.parametrize("matmul", ["normalized", "halve"])
def test_chefer_rules_conserve_relevance_in_every_block(kind, matmul):
    model, batch = _model_and_batch(kind)
    model = _zero_biases(model)
    adapter = get_adapter(model)
    inputs = adapter.prepare(batch)
    target = torch.tensor([0, 1, 2])
    trace = relevance_trace(adapter, inputs, target, CHEFER.with_(matmul=matmul))
    ones = torch.ones(3, dtype=torch.float64)
    for name, total in trace.block_totals.items():
        assert torch.allclose(total, ones, rtol=1e-5, atol=0), name
    assert torch.allclose(trace.input_relevance.sum((1, 2)), ones, rtol=1e-5, atol=0)
    # each block's attention-map relevance is within [0, total] (Lemma 2 bound on the normalised operands)
    for rel in trace.attention_relevance:
        assert (rel.sum((1, 2, 3)) <= 1 + 1e-9).all()


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (2.0, 1.0)])
def test_lrp_alpha_beta_conserves_with_normalised_add_and_matmul(alpha, beta):
    """With Sec. 3.2's add/matmul normalisation, alpha-beta LRP conserves relevance (biases zeroed) on a model whose
    weights make the default Eq. 8 add / naive matmul drift far from 1."""
    model = _zero_biases(_lively(tiny_bert()))
    batch = text_batch()
    target = torch.tensor([0, 1, 2])
    drifting = lab.explain(model, batch, "lrp_alpha_beta", target=target, alpha=alpha, beta=beta)
    conserving = lab.explain(model, batch, "lrp_alpha_beta", target=target, alpha=alpha, beta=beta,
                             add="normalized", matmul="normalized")
    assert drifting.delta.abs().max() > 1e-2
    assert conserving.delta.abs().max() < 1e-5
    assert conserving.params["add"] == "normalized" and conserving.params["matmul"] == "normalized"
    with pytest.raises(ExplainInputError, match="matmul must be"):
        lab.explain(model, batch, "lrp_alpha_beta", matmul="double")


def test_eq4_lrp_does_not_conserve_on_the_model():
    model = _zero_biases(tiny_bert())
    adapter = get_adapter(model)
    inputs = adapter.prepare(text_batch())
    trace = relevance_trace(adapter, inputs, torch.tensor([0, 1, 2]), LRP_EQ4)
    totals = trace.input_relevance.sum((1, 2))
    assert not torch.allclose(totals, torch.ones(3, dtype=totals.dtype), rtol=1e-2)  # Eq. 5: each mixed-sign layer doubles


def test_lrp0_equals_gradient_times_input_on_bias_free_relu_network():
    torch.manual_seed(0)
    w1, w2 = torch.randn(12, 6, dtype=torch.float64), torch.randn(3, 12, dtype=torch.float64)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    ops = RelevanceOps(LRP_EQ4.with_(linear="epsilon", epsilon=0.0))
    out = ops.linear(ops.nonlinear(torch.relu, ops.linear(x, w1)), w2)
    seed = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0]), 3).double()
    (relevance,) = torch.autograd.grad(out, x, seed * out.detach())  # LRP starts from the output value
    plain = torch.relu(x @ w1.t()) @ w2.t()
    (grad,) = torch.autograd.grad((plain * seed).sum(), x)
    assert torch.allclose(relevance, grad * x.detach(), atol=1e-10)


def test_mask_lrp_with_all_ones_mask_equals_chefer_exactly():
    model = tiny_bert()
    batch = text_batch()
    chefer = lab.explain(model, batch, "chefer")
    masked = lab.explain(model, batch, "mask_lrp", head_mask=torch.ones(2, 4))
    assert torch.equal(chefer.scores, masked.scores)


def test_mask_lrp_mask_changes_scores_and_still_conserves():
    model = _zero_biases(_lively(tiny_bert()))
    mask = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0]])
    full = lab.explain(model, text_batch(), "chefer")
    masked = lab.explain(model, text_batch(), "mask_lrp", head_mask=mask)
    assert not torch.allclose(full.scores, masked.scores, rtol=1e-4, atol=0)
    assert masked.delta.abs().max() < 1e-5


@pytest.mark.parametrize("case", GENERIC)
@pytest.mark.parametrize("kind", ["bert", "vit"])
def test_batched_equals_one_by_one(case, kind):
    model, batch = _model_and_batch(kind)
    method, params = _method(case)
    target = torch.tensor([2, 0, 1])
    full = lab.explain(model, batch, method, target=target, **params)
    for i in range(3):
        if kind == "vit":
            single_batch = {"pixel_values": batch["pixel_values"][i: i + 1]}
        else:
            n = int(batch["attention_mask"][i].sum())
            single_batch = {k: v[i: i + 1, :n] for k, v in batch.items()}
        single = lab.explain(model, single_batch, method, target=target[i: i + 1], **params)
        n = single.scores.shape[1]
        assert torch.allclose(full.scores[i, :n], single.scores[0], atol=1e-5, rtol=0)
        if full.scores.dim() == 2 and kind != "vit":
            assert torch.all(full.scores[i, n:] == 0)


@pytest.mark.parametrize("case", GENERIC)
def test_model_unchanged_and_no_hooks_left(case):
    model = tiny_bert(attn_implementation="sdpa")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = text_batch()
    out_before = model(**batch).logits
    method, params = _method(case)
    lab.explain(model, batch, method, **params)
    assert model.config._attn_implementation == "sdpa"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(model(**batch).logits, out_before)
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


def test_model_restored_after_an_exception(monkeypatch):
    model = tiny_bert(attn_implementation="sdpa")
    model.train()

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("lab.explainers.common.relevance_trace", boom)
    monkeypatch.setattr("lab.explainers.relevance.relevance_trace", boom)
    with pytest.raises(RuntimeError, match="boom"):
        lab.explain(model, text_batch(), "chefer")
    assert model.training and model.config._attn_implementation == "sdpa"
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_chefer_is_class_specific():
    model = _lively(tiny_bert())
    a = lab.explain(model, text_batch(), "chefer", target=0)
    b = lab.explain(model, text_batch(), "chefer", target=1)
    assert not torch.allclose(a.scores, b.scores, rtol=1e-4, atol=0)


def test_chefer_options_and_ablations_are_distinct_and_recorded():
    model = _lively(tiny_bert(layers=3))
    batch = text_batch()
    base = lab.explain(model, batch, "chefer")
    assert base.params["clamp"] == "before_mean" and base.params["absolute"] == "sum_abs"
    variants = [dict(clamp="after_mean"), dict(rollout_normalize=True), dict(absolute="abs_sum"),
                dict(matmul="halve"), dict(ablation="no_gradient"), dict(ablation="last_block"),
                dict(ablation="second_block"), dict(start_layer=1), dict(gradient_of="probability"),
                dict(reading="code")]
    for params in variants:
        other = lab.explain(model, batch, "chefer", **params)
        assert other.params | params == other.params
        assert not torch.allclose(base.scores, other.scores, rtol=1e-4, atol=0), params


def test_chefer_bad_parameters_give_one_clear_error():
    model = tiny_bert()
    with pytest.raises(ValueError, match="start_layer"):
        lab.explain(model, text_batch(), "chefer", start_layer=5)
    with pytest.raises(ValueError, match="clamp"):
        lab.explain(model, text_batch(), "chefer", clamp="sometimes")
    with pytest.raises(ValueError, match="reading must be one of"):
        lab.explain(model, text_batch(), "partial_lrp", reading="paper")
    with pytest.raises(ValueError, match="head_mask"):
        lab.explain(model, text_batch(), "mask_lrp", head_mask=torch.ones(3, 3))


def test_vit_grid_comes_from_the_config_vit_b16():
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(num_labels=5, attn_implementation="eager")).eval()
    adapter = get_adapter(model)
    assert adapter.grid == (14, 14)
    pixels = torch.randn(1, 3, 224, 224)
    exp = lab.explain(model, {"pixel_values": pixels}, "chefer", start_layer=10)
    assert exp.scores.shape == (1, 197) and exp.patch_map().shape == (1, 14, 14)
    lrp = lab.explain(model, {"pixel_values": pixels}, "lrp")
    assert lrp.unit == "pixel" and lrp.scores.shape == (1, 224, 224)


@pytest.mark.parametrize("kind", ["bert", "vit"])
def test_two_pass_graph_gradients_equal_hf_attention_gradients(kind):
    """chefer takes grad-A from a gradient backward over its relevance graph; it must equal the HF model's."""
    model, batch = _model_and_batch(kind)
    adapter = get_adapter(model)
    inputs = adapter.prepare(batch)
    target = torch.tensor([1, 0, 2])
    for of in ("logit", "probability"):
        hf = attention_gradients(adapter, inputs, target, gradient_of=of)
        trace = relevance_trace(adapter, inputs, target, CHEFER, gradients=True, gradient_of=of)
        plain = relevance_trace(adapter, inputs, target, CHEFER)
        for b in range(adapter.num_layers):
            assert torch.allclose(hf.gradients[b], trace.attention_gradients[b], atol=1e-6, rtol=0)
            assert torch.equal(plain.attention_relevance[b], trace.attention_relevance[b])


def test_non_finite_relevance_names_the_method_and_block():
    model = tiny_bert()
    with torch.no_grad():
        model.bert.encoder.layer[1].attention.self.value.weight[0, 0] = float("inf")
    with pytest.raises(lab.explainers.ExplainerError, match=r"'chefer'.*block 1"):
        lab.explain(model, text_batch(), "chefer", target=0)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_cls_only_last_layer_gives_the_same_logits_loss_and_gradients(kind, attn):
    from lab.models.adapters import cls_only_last_layer

    model = _lively(tiny_bert() if kind == "bert" else tiny_roberta())
    model.set_attn_implementation(attn)
    batch, labels = text_batch(lengths=(7, 4, 5)), torch.tensor([0, 1, 2])

    def loss_and_grads(context):
        model.zero_grad()
        with context:
            out = model(**batch, labels=labels)
        out.loss.backward()
        return out.logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    logits, grads = loss_and_grads(contextlib.nullcontext())
    fast_logits, fast_grads = loss_and_grads(cls_only_last_layer(model))
    torch.testing.assert_close(fast_logits, logits, atol=1e-12, rtol=1e-10)
    assert len(fast_grads) == len(grads)
    for a, b in zip(fast_grads, grads):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    last = model.base_model.encoder.layer[-1]
    assert "forward" not in last.__dict__
    with pytest.raises(RuntimeError, match="boom"):
        with cls_only_last_layer(model):
            assert "forward" in last.__dict__
            raise RuntimeError("boom")
    assert "forward" not in last.__dict__  # restored after an error too
    vit = tiny_vit()
    with cls_only_last_layer(vit):  # not a BERT-family classifier: left alone
        assert not any("forward" in m.__dict__ for m in vit.modules())
