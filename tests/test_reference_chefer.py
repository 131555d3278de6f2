"""lab's explainers against Chefer et al.'s own code (hila-chefer/Transformer-Explainability): the relevance maps
in tests/fixtures/chefer/{bert,vit}.json were computed by their BERT and ViT modules and generators
(tools/reference/chefer/generate.py, not run in CI) on tiny models whose weights the fixtures hold.

Each case names the authors' call and the lab explainer with the parameters that read their code; it must reach
Spearman >= 0.99 and a max-normalised difference <= 1e-3 on every example. Where lab has no parameter that
reproduces their code the case is a strict xfail saying exactly what differs."""
import json
from pathlib import Path

import pytest
import torch
from scipy.stats import spearmanr

import lab

FIXTURES = Path(__file__).parent / "fixtures" / "chefer"
CODE = dict(absolute="abs_sum", matmul="halve")  # their Add: |sum R| shares; their A·V and Q·K^T: each operand R/2
LAST = 1  # the tiny models have 2 blocks; bert_pipeline.py uses generate_LRP's start_layer=11 of 12: the last
MIN_MAX = "min_max"  # their attention GradCAM min-max normalises its map; ours is compared after the same rescaling

# The authors' baselines (partial LRP, full LRP) run on their "orig LRP" models (BERT_cls_lrp, ViT_orig_LRP, i.e.
# layers_lrp.py): Eq. 4 on every linear layer (positive and negative parts normalised separately), the z-rule on
# residual adds, A·V and Q·K^T halved; the ViT's patch projection takes the z^B rule (bounds: the image's min / max).
BASELINE_RULES = dict(linear="eq4", add="z", matmul="halve")
PARTIAL = ("partial_lrp runs Chefer's composite (Eq. 6 alpha-beta linear rule, normalised adds) and has no parameter "
           "for the authors' baseline rules (Eq. 4 linear rule, z-rule adds, halved matmuls): Spearman 0.25-0.87, "
           "max-normalised difference 0.39-0.93 here; test_engine_reproduces_the_baselines shows that composite "
           "matching to < 1e-6")
FULL_BERT = ("lrp propagates A·V and Q·K^T with the naive rule (each operand gets all of R, Lemma 1); the authors' "
             "code halves both (cam /= 2) and lrp has no matmul parameter: Spearman 0.63-0.93, max-normalised "
             "difference 0.34-0.85 here; with matmul='halve' it matches to < 3e-6")
FULL_VIT = ("lrp(pixels=True) applies Eq. 4 to the patch projection and the naive matmul rule; the authors' code "
            "takes the z^B rule at the pixels (image min / max bounds) and halves A·V and Q·K^T, and lrp has no "
            "parameter for either: Spearman 0.73-0.88, max-normalised difference 0.13-0.56 here; with both it "
            "matches to < 5e-4")

# (fixture, key): (lab method, parameters, xfail reason or None, rescaling)
CASES = {
    ("bert", "transformer_attribution"): ("chefer", dict(CODE, rollout_normalize=True, start_layer=LAST), None, None),
    ("bert", "transformer_attribution_start0"): ("chefer", dict(CODE, rollout_normalize=True), None, None),
    ("bert", "partial_lrp"): ("partial_lrp", dict(CODE), PARTIAL, None),
    ("bert", "last_attn"): ("raw_attention", {}, None, None),
    ("bert", "attn_gradcam"): ("attn_gradcam", dict(weight_from="matrix"), None, MIN_MAX),
    ("bert", "lrp"): ("lrp", {}, FULL_BERT, None),
    ("bert", "rollout"): ("rollout", dict(rollout_normalize=True), None, None),
    ("vit", "transformer_attribution"): ("chefer", dict(CODE), None, None),
    ("vit", "transformer_attribution_start1"): ("chefer", dict(CODE, start_layer=1), None, None),
    ("vit", "full_lrp"): ("lrp", dict(pixels=True), FULL_VIT, None),
    ("vit", "lrp_last_layer"): ("partial_lrp", dict(CODE), PARTIAL, None),
    ("vit", "attn_last_layer"): ("raw_attention", {}, None, None),
    ("vit", "attn_gradcam"): ("attn_gradcam", dict(weight_from="cls_row"), None, MIN_MAX),
    ("vit", "rollout"): ("rollout", dict(rollout_normalize=True), None, None),
}


# transformers 4.52 (the fixtures' names) -> 5.x ViT names
VIT_RENAMES = (("vit.encoder.layer.", "vit.layers."), ("attention.attention.query", "attention.q_proj"),
               ("attention.attention.key", "attention.k_proj"), ("attention.attention.value", "attention.v_proj"),
               ("attention.output.dense", "attention.o_proj"), ("intermediate.dense", "mlp.fc1"),
               ("output.dense", "mlp.fc2"))


def _renamed(name: str, shapes) -> str:
    for old, new in VIT_RENAMES if name not in shapes else ():
        name = name.replace(old, new)
    return name


def _load(name):
    fixture = json.loads((FIXTURES / f"{name}.json").read_text())
    if name == "bert":
        from transformers import BertConfig as Config, BertForSequenceClassification as Model
    else:
        from transformers import ViTConfig as Config, ViTForImageClassification as Model
    model = Model(Config(**fixture["config"], attn_implementation="eager")).to(torch.float64).eval()
    shapes = model.state_dict()
    weights = {_renamed(k, shapes): v for k, v in fixture["weights"].items()}
    state = {k: torch.tensor(v, dtype=torch.float64).reshape(shapes[k].shape) for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("position_ids" in k or "token_type_ids" in k for k in missing)
    return model, fixture


def _batch(name, fixture):
    examples = fixture["examples"]
    if name == "vit":
        size = fixture["config"]["image_size"]
        pixels = [torch.tensor(e["pixel_values"], dtype=torch.float64).reshape(3, size, size) for e in examples]
        return {"pixel_values": torch.stack(pixels)}
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.zeros(len(examples), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(examples):
        ids[i, :len(e["input_ids"])] = torch.tensor(e["input_ids"])
        mask[i, :len(e["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _compared(name, key, ours, theirs):
    """(ours, theirs) on the entries the authors' output keeps comparable: their ViT maps drop [CLS] (patches only;
    pixels for full LRP); their BERT maps overwrite [CLS] (0, or the row minimum), so position 0 is left out."""
    if name == "vit":
        return (ours.reshape(-1) if key == "full_lrp" else ours[1:]), theirs
    return ours[1:len(theirs)], theirs[1:]


def _gaps(ours, theirs, rescale):
    if rescale == MIN_MAX:
        ours, theirs = [(t - t.min()) / (t.max() - t.min()) for t in (ours, theirs)]
    rho = spearmanr(ours.numpy(), theirs.numpy()).statistic
    return rho, float((ours / ours.abs().max() - theirs / theirs.abs().max()).abs().max())


def _params():
    for (name, key), (method, kwargs, reason, rescale) in CASES.items():
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(name, key, method, kwargs, rescale, marks=marks, id=f"{name}-{key}")


@pytest.fixture(scope="module")
def references():
    out = {}
    for name in ("bert", "vit"):
        assert (FIXTURES / f"{name}.json").stat().st_size < 200_000
        model, fixture = _load(name)
        out[name] = (model, fixture, _batch(name, fixture))
    return out


@pytest.mark.parametrize("name, key, method, kwargs, rescale", _params())
def test_matches_the_authors_code(references, name, key, method, kwargs, rescale):
    model, fixture, batch = references[name]
    examples = fixture["examples"]
    target = torch.tensor([e["target"] for e in examples])
    ours = lab.explain(model, batch, method, target=target, **kwargs)
    for i, e in enumerate(examples):
        torch.testing.assert_close(ours.logits[i], torch.tensor(e["logits"], dtype=torch.float64), atol=1e-6, rtol=0)
        theirs = torch.tensor(e["scores"][key], dtype=torch.float64)
        rho, gap = _gaps(*_compared(name, key, ours.scores[i].to(torch.float64), theirs), rescale)
        assert rho >= 0.99 and gap <= 1e-3, f"example {i}: Spearman {rho:.4f}, max-normalised difference {gap:.2e}"


DEFAULTS = ("chefer's defaults read the paper text: normalisation by sum|R| (the code: |sum R|), A·V and Q·K^T "
            "normalised (the code: halved), no row normalisation in the rollout (their BERT code normalises rows): "
            "Spearman down to -0.20 (BERT) / 0.48 (ViT) here; notebook 02 runs these defaults")


@pytest.mark.xfail(strict=True, reason=DEFAULTS)
@pytest.mark.parametrize("name, key", [("bert", "transformer_attribution_start0"), ("vit", "transformer_attribution")])
def test_chefer_defaults_match_the_authors_code(references, name, key):
    model, fixture, batch = references[name]
    target = torch.tensor([e["target"] for e in fixture["examples"]])
    scores = lab.explain(model, batch, "chefer", target=target).scores
    for i, e in enumerate(fixture["examples"]):
        theirs = torch.tensor(e["scores"][key], dtype=torch.float64)
        rho, gap = _gaps(*_compared(name, key, scores[i], theirs), None)
        assert rho >= 0.99 and gap <= 1e-3, f"example {i}: Spearman {rho:.4f}, max-normalised difference {gap:.2e}"


def _engine_scores(key, adapter, inputs, target):
    """The authors' baselines through lab's relevance engine with BASELINE_RULES (no registry parameter reaches
    these rules yet)."""
    from lab.explainers.common import cls_row, head_mean, relevance_trace
    from lab.relevance.composites import LRP_EQ4

    composite = LRP_EQ4.with_(**BASELINE_RULES)
    if key in ("partial_lrp", "lrp_last_layer"):
        trace = relevance_trace(adapter, inputs, target, composite)
        return cls_row(head_mean(trace.attention_relevance[-1].clamp(min=0)))
    if key == "lrp":
        return relevance_trace(adapter, inputs, target, composite).input_relevance.sum(-1)
    trace = relevance_trace(adapter, inputs, target, composite.with_(first_linear="zb"), pixels=True)
    return trace.pixel_relevance.sum(1)


@pytest.mark.parametrize("name, key", [("bert", "partial_lrp"), ("bert", "lrp"), ("vit", "lrp_last_layer"),
                                       ("vit", "full_lrp")])
def test_engine_reproduces_the_baselines(references, name, key):
    """What the strict xfails above lack is a parameter, not a rule: the engine's Eq. 4 / z / halve (/ z^B)
    composite reproduces the authors' partial and full LRP."""
    from lab.models.adapters import get_adapter

    model, fixture, batch = references[name]
    adapter = get_adapter(model)
    target = torch.tensor([e["target"] for e in fixture["examples"]])
    scores = _engine_scores(key, adapter, adapter.prepare(batch), target)
    for i, e in enumerate(fixture["examples"]):
        theirs = torch.tensor(e["scores"][key], dtype=torch.float64)
        rho, gap = _gaps(*_compared(name, key, scores[i], theirs), None)
        assert rho >= 0.99 and gap <= 1e-3, f"example {i}: Spearman {rho:.4f}, max-normalised difference {gap:.2e}"
