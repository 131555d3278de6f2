"""lab's explainers against Chefer et al.'s own code (hila-chefer/Transformer-Explainability): the relevance maps
in tests/fixtures/chefer/{bert,vit}.json were computed by their BERT and ViT modules and generators
(tools/reference/chefer/generate.py, not run in CI) on tiny models whose weights the fixtures hold.

Each case names the authors' call and the lab explainer with the parameters that read their code; it must reach
Spearman >= 0.99 and a max-normalised difference <= 1e-3 on every example. The paper's reading (reading="text",
the default) must stay measurably away from their code where the two readings differ."""
import json
from pathlib import Path

import pytest
import torch
from scipy.stats import spearmanr

import lab

from tests.reference import padded_batch

FIXTURES = Path(__file__).parent / "fixtures" / "chefer"
CODE = dict(reading="code")  # lab's explainers reading the authors' code (lab.explainers.relevance.READINGS)
LAST = 1  # the tiny models have 2 blocks; bert_pipeline.py uses generate_LRP's start_layer=11 of 12: the last
MIN_MAX = "min_max"  # their attention GradCAM min-max normalises its map; ours is compared after the same rescaling

# (fixture, key): (lab method, parameters, rescaling). The authors' baselines (partial LRP, full LRP) run on their
# "orig LRP" models (layers_lrp.py): reading="code" selects those rules (Eq. 4, z-rule adds, halved A·V and Q·K^T,
# z^B at the ViT's pixels).
CASES = {
    ("bert", "transformer_attribution"): ("chefer", dict(CODE, start_layer=LAST), None),
    ("bert", "transformer_attribution_start0"): ("chefer", CODE, None),
    ("bert", "partial_lrp"): ("partial_lrp", CODE, None),
    ("bert", "last_attn"): ("raw_attention", {}, None),
    ("bert", "attn_gradcam"): ("attn_gradcam", dict(weight_from="matrix"), MIN_MAX),
    ("bert", "lrp"): ("lrp", CODE, None),
    ("bert", "rollout"): ("rollout", dict(rollout_normalize=True), None),
    ("vit", "transformer_attribution"): ("chefer", CODE, None),
    ("vit", "transformer_attribution_start1"): ("chefer", dict(CODE, start_layer=1), None),
    ("vit", "full_lrp"): ("lrp", dict(CODE, pixels=True), None),
    ("vit", "lrp_last_layer"): ("partial_lrp", CODE, None),
    ("vit", "attn_last_layer"): ("raw_attention", {}, None),
    ("vit", "attn_gradcam"): ("attn_gradcam", dict(weight_from="cls_row"), MIN_MAX),
    ("vit", "rollout"): ("rollout", dict(rollout_normalize=True), None),
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
    return padded_batch(examples)


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


def _worst(name, key, scores, fixture, rescale=None):
    """(lowest Spearman, largest max-normalised difference) of `scores` against the authors' over the examples."""
    gaps = [_gaps(*_compared(name, key, scores[i].to(torch.float64), torch.tensor(e["scores"][key],
                                                                               dtype=torch.float64)), rescale)
            for i, e in enumerate(fixture["examples"])]
    return min(g[0] for g in gaps), max(g[1] for g in gaps)


@pytest.fixture(scope="module")
def references():
    out = {}
    for name in ("bert", "vit"):
        assert (FIXTURES / f"{name}.json").stat().st_size < 200_000
        model, fixture = _load(name)
        out[name] = (model, fixture, _batch(name, fixture))
    return out


@pytest.mark.parametrize("name, key, method, kwargs, rescale",
                         [pytest.param(*k, *v, id="-".join(k)) for k, v in CASES.items()])
def test_matches_the_authors_code(references, name, key, method, kwargs, rescale):
    model, fixture, batch = references[name]
    examples = fixture["examples"]
    target = torch.tensor([e["target"] for e in examples])
    ours = lab.explain(model, batch, method, target=target, **kwargs)
    for i, e in enumerate(examples):
        torch.testing.assert_close(ours.logits[i], torch.tensor(e["logits"], dtype=torch.float64), atol=1e-6, rtol=0)
    rho, gap = _worst(name, key, ours.scores, fixture, rescale)
    assert rho >= 0.99 and gap <= 1e-3, f"Spearman down to {rho:.4f}, max-normalised difference up to {gap:.2e}"


# the paper's reading against the authors' code, as measured: (lowest Spearman, largest max-normalised difference)
TEXT_GAPS = {("bert", "transformer_attribution_start0"): (-0.2000, 0.8807), ("bert", "partial_lrp"): (0.3214, 0.6180),
             ("bert", "lrp"): (0.6333, 0.8493), ("vit", "transformer_attribution"): (0.4764, 0.9725),
             ("vit", "lrp_last_layer"): (0.2594, 0.9331), ("vit", "full_lrp"): (0.7325, 0.5591)}


@pytest.mark.parametrize("name, key", list(TEXT_GAPS))
def test_the_text_reading_differs_from_the_code(references, name, key):
    """reading="text" (each method's default) applies the rules as printed; on these fixtures that is this far
    from the authors' code (see READINGS in lab.explainers.relevance for what differs)."""
    model, fixture, batch = references[name]
    method, kwargs, _ = CASES[(name, key)]
    target = torch.tensor([e["target"] for e in fixture["examples"]])
    text = lab.explain(model, batch, method, target=target, **dict(kwargs, reading="text"))
    assert text.params["reading"] == "text"
    rho, gap = _worst(name, key, text.scores, fixture)
    assert (rho, gap) == pytest.approx(TEXT_GAPS[(name, key)], abs=1e-3)
