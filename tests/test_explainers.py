"""Attention, gradient and perturbation explainers on tiny fp64 models: batched == single, model left unchanged
(also after an exception), agreement with captum and with formulas written here from the HF outputs, class
specificity, bad input, and ViT support."""
from __future__ import annotations

import warnings

import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, Saliency

import lab.explainers.attention  # noqa: F401  (registers the explainers)
import lab.explainers.gradient  # noqa: F401
import lab.explainers.perturbation  # noqa: F401
from lab.explainers.base import EXPLAINERS, explain
from lab.explainers.perturbation import log_odds
from lab.models.adapters import ExplainInputError, get_adapter
from tests.models import (MASK_ID, PAD_ID, UNK_ID, image_batch, text_batch, tiny_bert, tiny_roberta, tiny_vit,
                          unbatch, with_output_hooks)

MODULES = {"lab.explainers.attention", "lab.explainers.gradient", "lab.explainers.perturbation"}
METHODS = sorted(name for name, spec in EXPLAINERS.items() if spec.fn.__module__ in MODULES)
GRADIENT_METHODS = sorted(n for n in METHODS if EXPLAINERS[n].fn.__module__ == "lab.explainers.gradient")
TARGETS = [0, 1, 2]


@pytest.fixture(scope="module")
def bert():
    return tiny_bert()


@pytest.fixture(scope="module")
def roberta():
    return tiny_roberta()


@pytest.fixture(scope="module")
def vit():
    return tiny_vit()


@pytest.fixture(scope="module")
def batch():
    return text_batch(lengths=(7, 4, 5))


def hf_forward(model, batch):
    """A forward over input embeddings written against HF directly (not through the adapter)."""
    extra = {k: v for k, v in batch.items() if k != "input_ids"}

    def forward(embeds):  # captum stacks the IG steps as [step0 batch; step1 batch; ...]
        repeat = embeds.shape[0] // batch["input_ids"].shape[0]
        return model(inputs_embeds=embeds, **{k: v.repeat(repeat, 1) for k, v in extra.items()}).logits

    return forward


def word_embeddings(model, ids):
    return model.get_input_embeddings()(ids).detach()


# ---- registry ---------------------------------------------------------------------------------------------


def test_all_methods_registered_with_description_and_reference():
    expected = {"raw_attention", "rollout", "lat", "saliency", "grad_x_input", "integrated_gradients", "attn_gradcam",
                "cam", "attcat", "gae", "leave_one_out", "erasure", "random"}
    assert expected == set(METHODS)
    for name in METHODS:
        spec = EXPLAINERS[name]
        assert spec.description and spec.reference, name
    assert not EXPLAINERS["rollout"].class_specific and EXPLAINERS["attn_gradcam"].class_specific


@pytest.mark.parametrize("method", sorted(n for n, spec in EXPLAINERS.items() if spec.own_forward))
def test_own_forward_explainers_report_the_models_logits_and_prediction(method, bert, batch):
    """Explainers that run the model themselves save explain() its extra forward; the logits they hand back must be
    the model's, and target=None must mean the model's predicted class."""
    import lab.explainers.relevance  # noqa: F401  (the LRP family is own_forward too)

    params = {"head_mask": torch.ones(2, 4)} if method == "mask_lrp" else {}
    with torch.no_grad():
        expected = bert(**batch).logits
    exp = explain(bert, batch, method, **params)
    torch.testing.assert_close(exp.logits, expected, atol=1e-10, rtol=1e-8)
    assert exp.target.tolist() == expected.argmax(-1).tolist()
    given = explain(bert, batch, method, target=TARGETS, **params)
    assert given.target.tolist() == TARGETS


# ---- batched == one by one -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_single(method, family, request, batch):
    model = request.getfixturevalue(family)
    batched = explain(model, batch, method, target=TARGETS)
    assert batched.scores.shape == batch["input_ids"].shape
    assert (batched.scores[~batched.valid] == 0).all()
    for i, t in enumerate(TARGETS):
        single = explain(model, unbatch(batch, i), method, target=[t])
        n = single.scores.shape[1]
        torch.testing.assert_close(batched.scores[i, :n], single.scores[0], atol=1e-5, rtol=1e-5)
        if batched.delta is not None:
            torch.testing.assert_close(batched.delta[i], single.delta[0], atol=1e-5, rtol=1e-5)
        assert batched.params == single.params


@pytest.mark.parametrize("method", METHODS)
def test_vision_batched_equals_single_and_shapes(method, vit):
    pixels = image_batch(2)
    batched = explain(vit, pixels, method, target=[1, 1])
    adapter = get_adapter(vit)
    if batched.unit == "pixel":
        assert batched.scores.shape == (2, 16, 16)
    else:
        assert batched.scores.shape == (2, 1 + adapter.grid[0] * adapter.grid[1])
        assert batched.patch_map().shape == (2, *adapter.grid)
    assert torch.isfinite(batched.scores).all()
    assert batched.scores.abs().sum() > 0
    for i, t in enumerate([1, 1]):
        single = explain(vit, pixels[i:i + 1], method, target=[t])
        torch.testing.assert_close(batched.scores[i], single.scores[0], atol=1e-5, rtol=1e-5)


# ---- the model is left exactly as it was -----------------------------------------------------------------


def snapshot(model, batch):
    with torch.no_grad():
        logits = model(**batch).logits.clone()
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks), "forward" in m.__dict__)
             for m in model.modules()]
    return dict(state={k: v.clone() for k, v in model.state_dict().items()}, logits=logits, hooks=hooks,
                training=[m.training for m in model.modules()], attn=model.config._attn_implementation,
                requires_grad=[p.requires_grad for p in model.parameters()],
                grads=[p.grad is None for p in model.parameters()])


def assert_same(before, after):
    assert before["state"].keys() == after["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), k
    assert torch.equal(before["logits"], after["logits"])
    for key in ("hooks", "training", "attn", "requires_grad", "grads"):
        assert before[key] == after[key], key


def sdpa_bert_in_train_mode(hooked: bool = False):
    """A fresh model, or one whose transformers output-capturing hooks were installed by an earlier forward."""
    model = tiny_bert(attn_implementation="sdpa")
    if hooked:
        with_output_hooks(model)
    assert model.config._attn_implementation == "sdpa"
    return model.train()  # dropout is 0, so outputs stay deterministic; explain() must restore train mode


@pytest.mark.parametrize("hooked", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_model_unchanged(method, hooked, batch):
    model = sdpa_bert_in_train_mode(hooked)
    before = snapshot(model, batch)
    explain(model, batch, method, target=TARGETS)
    assert_same(before, snapshot(model, batch))


class Boom(RuntimeError):
    pass


def sabotage(monkeypatch, model, method):
    """Make the explainer fail midway: inside the explainer's own forward of the classifier head (the first forward
    for explainers that run the model themselves, else the second; inside the eager-attention switch for attention
    methods), or in torch.autograd.grad for gradient methods."""
    if method in GRADIENT_METHODS:
        def grad(*args, **kwargs):
            raise Boom("autograd.grad failed")

        monkeypatch.setattr(torch.autograd, "grad", grad)
        return
    if method == "random":
        def seed(*args, **kwargs):
            raise Boom("seed failed")

        monkeypatch.setattr(lab.explainers.perturbation, "example_seed", seed)
        return
    head = model.classifier
    original = type(head).forward
    calls = []
    failing_call = 1 if EXPLAINERS[method].own_forward else 2

    def forward(self, *args, **kwargs):
        if self is head:
            calls.append(1)
            if len(calls) == failing_call:
                assert method not in ("raw_attention", "rollout", "lat") or model.config._attn_implementation == "eager"
                raise Boom("classifier failed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(head), "forward", forward)


@pytest.mark.parametrize("method", METHODS)
def test_model_unchanged_after_exception(method, batch, monkeypatch):
    model = sdpa_bert_in_train_mode()
    before = snapshot(model, batch)
    with monkeypatch.context() as patch:
        sabotage(patch, model, method)
        with pytest.raises(Boom):
            explain(model, batch, method, target=TARGETS)
    assert_same(before, snapshot(model, batch))


def test_model_still_returns_attentions_afterwards(batch):
    """explain() removes the output-capturing hooks transformers installs on first use; HF's own
    output_attentions/output_hidden_states must still work afterwards."""
    model = tiny_bert()
    explain(model, batch, "attcat", target=TARGETS)
    out = model(**batch, output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == 2 and len(out.hidden_states) == 3
    assert all(a.shape == (3, 4, 7, 7) for a in out.attentions)


# ---- agreement with captum and with formulas written from the HF outputs ----------------------------------


@pytest.mark.parametrize("gradient_of", ["logit", "probability"])
def test_saliency_and_grad_x_input_match_captum(bert, batch, gradient_of):
    forward = hf_forward(bert, batch)
    f = forward if gradient_of == "logit" else (lambda e: forward(e).softmax(-1))
    e = word_embeddings(bert, batch["input_ids"]).requires_grad_(True)
    target = torch.tensor(TARGETS)
    grad = Saliency(f).attribute(e, target=target, abs=False)
    gxi = InputXGradient(f).attribute(e, target=target)
    valid = batch["attention_mask"].bool()
    expected = {("saliency", None): grad.norm(dim=-1), ("grad_x_input", "l2"): gxi.norm(dim=-1),
                ("grad_x_input", "signed_sum"): gxi.sum(-1), ("grad_x_input", "abs_sum"): gxi.sum(-1).abs()}
    for (method, variant), ref in expected.items():
        params = {} if variant is None else {"variant": variant}
        got = explain(bert, batch, method, target=TARGETS, gradient_of=gradient_of, **params).scores
        torch.testing.assert_close(got[valid], ref.detach()[valid], atol=1e-6, rtol=1e-6)


def test_vision_saliency_matches_captum(vit):
    pixels = image_batch(2)
    ref = Saliency(lambda x: vit(pixel_values=x).logits).attribute(pixels.clone().requires_grad_(True),
                                                                  target=torch.tensor([1, 0]), abs=False)
    got = explain(vit, pixels, "saliency", target=[1, 0])
    assert got.unit == "pixel"
    torch.testing.assert_close(got.scores, ref.norm(dim=1), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("baseline", ["pad", "zero"])
def test_integrated_gradients_matches_captum(bert, batch, baseline):
    e = word_embeddings(bert, batch["input_ids"])
    base = (word_embeddings(bert, torch.full_like(batch["input_ids"], PAD_ID)) if baseline == "pad"
            else torch.zeros_like(e))
    ref, ref_delta = IntegratedGradients(hf_forward(bert, batch)).attribute(
        e, baselines=base, target=torch.tensor(TARGETS), n_steps=20, return_convergence_delta=True)
    got = explain(bert, batch, "integrated_gradients", target=TARGETS, steps=20, baseline=baseline,
                  internal_batch_size=7)
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(got.scores[valid], ref.sum(-1)[valid], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got.delta, ref_delta, atol=1e-6, rtol=1e-6)
    assert got.params["steps"] == 20 and got.params["baseline"] == baseline and got.params["internal_batch_size"] == 7


def test_integrated_gradients_completeness(bert, batch):
    """Σ_t IG_t = y(x) − y(baseline) (Sundararajan et al. Prop. 1), checked without captum."""
    got = explain(bert, batch, "integrated_gradients", target=TARGETS, steps=64)
    with torch.no_grad():
        y = bert(**batch).logits[range(3), TARGETS]
        pad = {**batch, "input_ids": torch.full_like(batch["input_ids"], PAD_ID)}
        y0 = bert(**pad).logits[range(3), TARGETS]
    torch.testing.assert_close(got.scores.sum(-1), y - y0, atol=1e-6, rtol=1e-6)
    assert got.delta.abs().max() < 1e-6


def hf_attention_and_gradients(model, batch, hidden=False):
    out = model(**batch, output_attentions=True, output_hidden_states=hidden)
    y = out.logits[range(len(TARGETS)), TARGETS].sum()
    states = list(out.hidden_states[:-1]) if hidden else []  # block inputs (AttCAT, Mask-LRP authors' code)
    grads = torch.autograd.grad(y, list(out.attentions) + states)
    n = len(out.attentions)
    return list(out.attentions), list(grads[:n]), states, list(grads[n:])


def test_attention_methods_match_formulas(bert, batch):
    atts, _, _, _ = hf_attention_and_gradients(bert, batch)
    valid = batch["attention_mask"].bool()
    eye = torch.eye(atts[0].shape[-1], dtype=atts[0].dtype)
    raw = atts[-1].mean(1)[:, 0]
    rollout = ((eye + atts[1].mean(1)) @ (eye + atts[0].mean(1)))[:, 0]  # Chefer Eq. 18, two blocks
    lat = (atts[1].mean(1)[:, 0:1] @ atts[0].mean(1))[:, 0]  # Wu & Ong Eq. 10, unit relevance at [CLS]
    for method, ref in (("raw_attention", raw), ("rollout", rollout), ("lat", lat)):
        got = explain(bert, batch, method).scores
        torch.testing.assert_close(got[valid], ref.detach()[valid], atol=1e-10, rtol=1e-10)


def test_attention_gradient_methods_match_formulas(bert, batch):
    atts, grads, states, hgrads = hf_attention_and_gradients(bert, batch, hidden=True)
    valid = batch["attention_mask"].bool()
    eye = torch.eye(atts[0].shape[-1], dtype=atts[0].dtype)
    # GAE: (I + E_h(∇A ⊙ A)+) product over blocks, [CLS] row
    gae_maps = [eye + (g * a).clamp(min=0).mean(1) for a, g in zip(atts, grads)]
    gae = (gae_maps[1] @ gae_maps[0])[:, 0]
    # CAM: ∂y/∂A of the last block, [CLS] row, head mean, positive part
    cam = grads[-1][:, :, 0].mean(1).clamp(min=0)
    # attention GradCAM, per example (no padding to worry about in the mean)
    gradcam = torch.zeros_like(cam)
    attcat = torch.zeros_like(cam)
    for i in range(len(TARGETS)):
        n = int(valid[i].sum())
        a, g = atts[-1][i, :, 0, :n], grads[-1][i, :, 0, :n]
        weights = g[:, 1:].mean(-1, keepdim=True)
        gradcam[i, :n] = (weights * a).mean(0).clamp(min=0)
        for att, h, hg in zip(atts, states, hgrads):
            attcat[i, :n] += (hg[i, :n] * h[i, :n]).sum(-1) * att[i, :, :n, :n].mean(0).mean(0)
    for method, ref in (("gae", gae), ("cam", cam), ("attn_gradcam", gradcam), ("attcat", attcat)):
        got = explain(bert, batch, method, target=TARGETS).scores
        torch.testing.assert_close(got[valid], ref.detach()[valid], atol=1e-10, rtol=1e-8, msg=method)


def test_lat_conserves_and_rollout_normalisation(bert, batch):
    lat = explain(bert, batch, "lat")
    torch.testing.assert_close(lat.scores.sum(-1), torch.ones(3, dtype=lat.scores.dtype))
    summed = explain(bert, batch, "lat", heads="sum")
    torch.testing.assert_close(summed.scores, lat.scores * 4 ** 2)  # H^blocks
    uniform = explain(bert, batch, "lat", start="uniform")
    torch.testing.assert_close(uniform.scores.sum(-1), torch.ones(3, dtype=lat.scores.dtype))
    assert not torch.allclose(uniform.scores, lat.scores)
    plain = explain(bert, batch, "rollout").scores
    normalised = explain(bert, batch, "rollout", rollout_normalize=True).scores
    torch.testing.assert_close(plain.sum(-1), torch.full((3,), 4.0, dtype=plain.dtype))  # rows of I + A sum to 2
    torch.testing.assert_close(normalised, plain / 4)
    last = explain(bert, batch, "rollout", start_layer=1).scores
    atts, _, _, _ = hf_attention_and_gradients(bert, batch)
    eye = torch.eye(atts[0].shape[-1], dtype=atts[0].dtype)
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(last[valid], (eye + atts[1].mean(1))[:, 0].detach()[valid])


@pytest.mark.parametrize("method", ["rollout", "chefer", "gae"])
def test_start_layer_has_one_rule_for_every_rollout(method):
    """One `check_start_layer`: -1 is the last block (as Python counts) for rollout, Chefer's LRP and GAE alike;
    outside -B..B-1 is one error naming that range (rollout and GAE used to reject -1, chefer to name 0..B-1)."""
    import lab.explainers.relevance  # noqa: F401  (chefer)

    model, batch = tiny_bert(layers=3), text_batch(lengths=(6, 4))
    last = explain(model, batch, method, target=[0, 1], start_layer=-1)
    torch.testing.assert_close(last.scores, explain(model, batch, method, target=[0, 1], start_layer=2).scores)
    for bad in (3, -4):
        with pytest.raises(ExplainInputError, match=rf"start_layer must be in -3\.\.2 .*got {bad}"):
            explain(model, batch, method, target=[0, 1], start_layer=bad)


def test_leave_one_out_deletes_tokens(bert, batch):
    got = explain(bert, batch, "leave_one_out")
    i, t = 0, 3
    n = int(batch["attention_mask"][0].sum())
    ids = batch["input_ids"][0, :n]
    kept = torch.cat([ids[:t], ids[t + 1:]])[None]
    with torch.no_grad():
        p = bert(input_ids=ids[None]).logits.softmax(-1)
        q = bert(input_ids=kept).logits.softmax(-1)
    assert got.scores[i, t].item() == pytest.approx(0.5 * (p - q).abs().sum().item(), abs=1e-10)
    special = got.special & got.valid
    assert (got.scores[special] == 0).all() and (got.scores[got.valid & ~got.special] > 0).all()
    assert (got.scores <= 1).all()


def test_erasure_log_odds_and_tokens(bert, batch):
    i, t, target = 1, 1, 2
    n = int(batch["attention_mask"][i].sum())
    ids = batch["input_ids"][i, :n]
    for token, tid in (("pad", PAD_ID), ("unk", UNK_ID), ("mask", MASK_ID)):
        got = explain(bert, unbatch(batch, i), "erasure", target=[target], token=token)
        assert got.params["token_id"] == tid
        replaced = ids.clone()
        replaced[t] = tid
        with torch.no_grad():
            p = bert(input_ids=ids[None]).logits.softmax(-1)[0, target]
            q = bert(input_ids=replaced[None]).logits.softmax(-1)[0, target]
        ref = torch.log(p / (1 - p)) - torch.log(q / (1 - q))
        assert got.scores[0, t].item() == pytest.approx(ref.item(), abs=1e-9)
    zero = explain(bert, batch, "erasure", target=[0, target, 0], token="zero")
    single = explain(bert, unbatch(batch, i), "erasure", target=[target], token="zero")
    torch.testing.assert_close(zero.scores[i, :n], single.scores[0], atol=1e-9, rtol=1e-9)
    embeds = word_embeddings(bert, ids[None])
    erased = embeds.clone()
    erased[0, t] = 0.0
    with torch.no_grad():
        p = bert(inputs_embeds=embeds).logits.softmax(-1)[0, target]
        q = bert(inputs_embeds=erased).logits.softmax(-1)[0, target]
    ref = torch.log(p / (1 - p)) - torch.log(q / (1 - q))
    assert zero.scores[i, t].item() == pytest.approx(ref.item(), abs=1e-9) and zero.params["token_id"] is None
    by_id = explain(bert, batch, "erasure", target=TARGETS, token_id=UNK_ID)
    by_name = explain(bert, batch, "erasure", target=TARGETS, token="unk")
    torch.testing.assert_close(by_id.scores, by_name.scores)
    probs = torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64)
    assert log_odds(probs, 1).item() == pytest.approx(0.0, abs=1e-12)


def test_vision_occlusion_matches_manual(vit):
    pixels = image_batch(1)
    got = explain(vit, pixels, "leave_one_out")
    occluded = pixels.clone()
    occluded[0, :, 4:8, 8:12] = 0.0  # patch (row 1, col 2) = token 1 + 1 * 4 + 2
    with torch.no_grad():
        p, q = vit(pixel_values=pixels).logits.softmax(-1), vit(pixel_values=occluded).logits.softmax(-1)
    assert got.scores[0, 7].item() == pytest.approx(0.5 * (p - q).abs().sum().item(), abs=1e-10)
    assert got.scores[0, 0] == 0


def test_random_is_seeded_per_example(bert, batch):
    a = explain(bert, batch, "random", seed=1)
    b = explain(bert, batch, "random", seed=1)
    c = explain(bert, batch, "random", seed=2)
    torch.testing.assert_close(a.scores, b.scores)
    assert not torch.allclose(a.scores, c.scores)
    assert ((a.scores >= 0) & (a.scores < 1)).all() and (a.scores[a.valid] > 0).all()
    reordered = explain(bert, {k: v[[2, 0, 1]] for k, v in batch.items()}, "random", seed=1)
    torch.testing.assert_close(reordered.scores, a.scores[[2, 0, 1]])


# ---- class specificity --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_class_specificity(method, bert, batch):
    one = explain(bert, batch, method, target=0).scores
    two = explain(bert, batch, method, target=1).scores
    if EXPLAINERS[method].class_specific:
        assert not torch.allclose(one, two), f"{method} gives the same map for two targets"
    else:
        torch.testing.assert_close(one, two)


# ---- bad input --------------------------------------------------------------------------------------------


def test_bad_input_messages(bert, batch):
    empty = {"input_ids": torch.zeros(0, 0, dtype=torch.long)}
    with pytest.raises(ExplainInputError, match="empty"):
        explain(bert, empty, "saliency")
    with pytest.raises(ExplainInputError, match="out of range"):
        explain(bert, batch, "saliency", target=[0, 1, 7])
    with pytest.raises(ExplainInputError, match="rollout.*saliency|saliency.*rollout"):
        explain(bert, batch, "no_such_method")
    for method, params, what in (("grad_x_input", {"variant": "l3"}, "variant"), ("gae", {"clamp": "x"}, "clamp"),
                                 ("saliency", {"gradient_of": "loss"}, "gradient_of"),
                                 ("erasure", {"token": "cls"}, "token"), ("rollout", {"start_layer": 5}, "start_layer"),
                                 ("lat", {"heads": "max"}, "heads")):
        with pytest.raises(ExplainInputError, match=what):
            explain(bert, batch, method, **params)


def test_too_long_sequence_truncates_with_warning(bert):
    limit = bert.config.max_position_embeddings
    long = text_batch(lengths=(limit + 5,), seed=1)
    with pytest.warns(UserWarning, match="truncating"):
        got = explain(bert, long, "saliency")
    assert got.scores.shape == (1, limit)
    with pytest.raises(ExplainInputError, match="exceeds"):
        explain(bert, long, "saliency", truncate=False)


def test_erasure_needs_a_known_token_id():
    model = with_output_hooks(tiny_bert())
    model.config.mask_token_id = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ExplainInputError, match="token_id"):
            explain(model, text_batch(), "erasure", token="mask")


@pytest.mark.parametrize("method", METHODS)
def test_frozen_model(method, batch):
    """Notebooks often freeze a model (requires_grad_(False)); explainers must still work and keep it frozen."""
    model = tiny_bert().requires_grad_(False)
    reference = explain(tiny_bert(), batch, method, target=TARGETS).scores
    torch.testing.assert_close(explain(model, batch, method, target=TARGETS).scores, reference)
    assert not any(p.requires_grad for p in model.parameters())


# ---- checked parameters, targets and tokens (issue 16): one ExplainInputError naming what was wrong ------------


def test_unknown_parameter_lists_what_the_explainer_accepts(bert, batch):
    with pytest.raises(ExplainInputError, match=r"no parameter 'step'.*steps=50"):
        explain(bert, batch, "integrated_gradients", step=10)
    with pytest.raises(ExplainInputError, match="'raw_attention' has no parameter 'start_layer'.*no parameters"):
        explain(bert, batch, "raw_attention", start_layer=1)


@pytest.mark.parametrize("method, params, name", [
    ("integrated_gradients", {"steps": "many"}, "steps"),
    ("integrated_gradients", {"steps": 2.5}, "steps"),
    ("integrated_gradients", {"steps": True}, "steps"),  # a bool is not a number here
    ("leave_one_out", {"fill": False}, "fill"),
    ("lrp_alpha_beta", {"alpha": "x"}, "alpha"),
    ("rollout", {"rollout_normalize": 1}, "rollout_normalize"),
    ("saliency", {"gradient_of": 3}, "gradient_of"),
])
def test_wrong_parameter_type_names_the_parameter(bert, batch, method, params, name, monkeypatch):
    import lab.explainers.relevance  # noqa: F401  (lrp_alpha_beta)

    def no_model_work(*args, **kwargs):
        raise AssertionError("the model ran before the parameters were checked")

    monkeypatch.setattr(bert, "forward", no_model_work)
    with pytest.raises(ExplainInputError, match=rf"parameter '{name}' must be"):
        explain(bert, batch, method, target=0, **params)


def test_integral_float_parameters_and_none_are_accepted(bert, batch):
    reference = explain(bert, batch, "integrated_gradients", target=TARGETS, steps=8).scores
    got = explain(bert, batch, "integrated_gradients", target=TARGETS, steps=8.0, internal_batch_size=None)
    torch.testing.assert_close(got.scores, reference)
    assert got.params["steps"] == 8 and isinstance(got.params["steps"], int)


def test_float_and_bool_targets(bert, batch):
    with pytest.raises(ExplainInputError, match=r"target 1\.7 .*not a class index"):
        explain(bert, batch, "saliency", target=1.7)
    with pytest.raises(ExplainInputError, match="target True"):
        explain(bert, batch, "saliency", target=True)
    with pytest.raises(ExplainInputError, match="target 0.5"):
        explain(bert, batch, "saliency", target=torch.tensor([0.0, 1.0, 0.5]))
    reference = explain(bert, batch, "saliency", target=[0, 1, 2]).scores
    torch.testing.assert_close(explain(bert, batch, "saliency", target=[0.0, 1.0, 2.0]).scores, reference)
    torch.testing.assert_close(explain(bert, batch, "saliency", target=torch.tensor([0.0, 1.0, 2.0])).scores,
                               reference)


def test_target_as_label_name(batch):
    model = tiny_bert()  # its config has only HF's generic LABEL_0.. names
    with pytest.raises(ExplainInputError, match="target 'positive': the model has no label names"):
        explain(model, batch, "saliency", target="positive")
    model.config.id2label = {0: "negative", 1: "positive", 2: "neutral"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    got = explain(model, batch, "saliency", target="Positive")
    assert got.target.tolist() == [1, 1, 1]
    torch.testing.assert_close(got.scores, explain(model, batch, "saliency", target=1).scores)
    assert explain(model, batch, "saliency", target=["neutral", 0, "NEGATIVE"]).target.tolist() == [2, 0, 0]
    with pytest.raises(ExplainInputError, match="target 'great' is not a label.*1='positive'"):
        explain(model, batch, "saliency", target="great")


def test_rows_of_only_special_tokens_or_padding(bert, batch):
    only_special = {k: v.clone() for k, v in batch.items()}
    only_special["input_ids"][1, :2] = torch.tensor([2, 3])  # [CLS] [SEP]
    only_special["input_ids"][1, 2:] = PAD_ID
    only_special["attention_mask"][1, 2:] = 0
    with pytest.raises(ExplainInputError, match=r"input_ids row\(s\) \[1\] hold only special tokens"):
        explain(bert, only_special, "saliency")
    all_padding = {k: v.clone() for k, v in batch.items()}
    all_padding["attention_mask"][2] = 0
    with pytest.raises(ExplainInputError, match=r"input_ids row\(s\) \[2\]"):
        explain(bert, all_padding, "rollout")


@pytest.mark.parametrize("bad_id", [-1, 64, 1000])
def test_token_ids_outside_the_vocabulary(bert, batch, bad_id):
    ids = batch["input_ids"].clone()
    ids[0, 1] = bad_id
    with pytest.raises(ExplainInputError, match=rf"input_ids \[{bad_id}\] outside the vocabulary \(0\.\.63\)"):
        explain(bert, {**batch, "input_ids": ids}, "saliency")


@pytest.fixture(scope="module")
def text_model():
    """A tiny BERT over the real MiniLM vocabulary, with its tokenizer (offline)."""
    from lab.models.loading import load_tokenizer

    tokenizer = load_tokenizer("minilm")
    model = tiny_bert(max_positions=64)
    model.resize_token_embeddings(len(tokenizer))
    return model, tokenizer


def test_explain_text_rejects_special_only_text_and_non_strings(text_model):
    from lab.explainers.base import explain_text

    model, tokenizer = text_model
    with pytest.raises(ExplainInputError, match="only special tokens"):
        explain_text(model, tokenizer, ["a fine film", "[SEP]"], "saliency")
    with pytest.raises(ExplainInputError, match="texts must be a str or a list of str"):
        explain_text(model, tokenizer, ["a fine film", 3], "saliency")
    with pytest.raises(ExplainInputError, match="empty"):
        explain_text(model, tokenizer, "   ", "saliency")


def test_explain_text_warns_when_it_truncates(text_model):
    from lab.explainers.base import explain_text

    model, tokenizer = text_model
    text = "a long and winding review of a film " * 4
    n = len(tokenizer(text)["input_ids"])
    assert 16 < n <= 64
    with pytest.warns(UserWarning, match=rf"sequence length {n} \(text 1\) exceeds max_length=16; truncating"):
        got = explain_text(model, tokenizer, ["short one", text], "saliency", max_length=16)
    assert got.scores.shape == (2, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explain_text(model, tokenizer, text, "saliency", max_length=64)
