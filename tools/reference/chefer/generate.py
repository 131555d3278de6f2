"""Write tests/fixtures/chefer/{bert,vit}.json: relevance maps computed by Chefer et al.'s own code
(github.com/hila-chefer/Transformer-Explainability) on a tiny BERT classifier and a tiny ViT with fixed weights and
inputs. Not run in CI; tests/test_reference_chefer.py checks lab's explainers against the fixtures.

Run it in a side virtual environment (their code needs einops and transformers' BertPreTrainedModel):

    git clone https://github.com/hila-chefer/Transformer-Explainability /tmp/chefer-src   # commit c3e578f
    python3 -m venv /tmp/venv-chefer
    /tmp/venv-chefer/bin/pip install torch==2.13.0 transformers==4.52.4 einops numpy
    nice -n 15 /tmp/venv-chefer/bin/python tools/reference/chefer/generate.py /tmp/chefer-src

Their code runs unmodified. Fixes made from outside: `Tensor.cuda` is the identity (CPU); a stand-in `gensim`
module (imported, unused, by their BERT classifier's module); their BERT configs set return_dict=False, the
default of the transformers 3.5 they used (their classifier does not import the output class); their ViT's final
LayerNorm gets eps 1e-6 like its blocks (Hugging Face uses one eps for all); models run in float64.
The weights are drawn in Hugging Face's naming from a seeded generator, rounded to DECIMALS and stored in the
fixture, so the test loads them into transformers' BertForSequenceClassification / ViTForImageClassification;
here they are renamed into the authors' modules (identical names for BERT; `to_their_vit` for ViT).
Each example stores, per key of `calls`, the authors' output flattened (BERT: a row over the tokens, [CLS]
overwritten by them; ViT: the patches without [CLS], or the pixels for full LRP); which lab explainer and
parameters should reproduce each key is the test's business. Sizes follow the authors' pipelines: BERT's evaluation uses generate_LRP with start_layer = last block (11 of 12);
the ViT code hard-codes a 14x14 patch grid (generate_cam_attn), hence 14x14 images with 1x1 patches.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from functools import partial
from pathlib import Path

import torch

SEED = 0
DECIMALS = 4
FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "chefer"
BERT_CONFIG = dict(vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
                   max_position_embeddings=16, type_vocab_size=2, num_labels=3, hidden_act="gelu",
                   layer_norm_eps=1e-12, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0)
VIT_CONFIG = dict(image_size=14, patch_size=1, num_channels=3, hidden_size=16, num_hidden_layers=2,
                  num_attention_heads=4, intermediate_size=32, num_labels=3, hidden_act="gelu", layer_norm_eps=1e-6,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, qkv_bias=True)
# [CLS]=2 ... [SEP]=3; targets: None = the predicted class
BERT_INPUTS = [([2, 7, 19, 11, 25, 8, 30, 3], None), ([2, 14, 5, 22, 3], 0), ([2, 9, 9, 31, 17, 6, 12, 27, 20, 3], 2)]
VIT_TARGETS = [None, 0, 2]


def draw_weights(state: dict, seed: int) -> dict[str, list[float]]:
    """Unit-scale weights (std 1/sqrt(fan_in)); biases and norm offsets std 0.1; norm gains 1 + 0.1 N(0, 1);
    embeddings, [CLS] and positions N(0, 1): peaked attention and non-zero biases, so every rule matters."""
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for name, p in state.items():
        if "position_ids" in name or "token_type_ids" in name:
            continue
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        norm = "layernorm" in name.lower()
        if norm and name.endswith("weight"):
            value = 1.0 + 0.1 * noise
        elif name.endswith("bias") or norm:
            value = 0.1 * noise
        elif "embeddings" in name and p.dim() < 4:  # not the patch projection (a convolution)
            value = noise
        else:
            value = noise / math.sqrt(p[0].numel())
        weights[name] = [round(v, DECIMALS) for v in value.flatten().tolist()]
    return weights


def as_state(weights: dict, shapes: dict) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(v, dtype=torch.float64).reshape(shapes[k].shape) for k, v in weights.items()}


def load(model, state: dict) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("position_ids" in k or "token_type_ids" in k for k in missing), (missing, unexpected)


def rounded(t: torch.Tensor) -> list[float]:
    return [float(f"{v:.10g}") for v in t.detach().reshape(-1).tolist()]


# ---- BERT --------------------------------------------------------------------------------------------------


def bert_fixture() -> dict:
    import transformers
    from BERT_explainability.modules.BERT.BERT_cls_lrp import BertForSequenceClassification as OrigLrpBert
    from BERT_explainability.modules.BERT.BertForSequenceClassification import BertForSequenceClassification
    from BERT_explainability.modules.BERT.ExplanationGenerator import Generator

    config = transformers.BertConfig(**BERT_CONFIG)
    hf = transformers.BertForSequenceClassification(config).double().eval()
    weights = draw_weights(hf.state_dict(), SEED)
    state = as_state(weights, hf.state_dict())
    load(hf, state)
    their_config = transformers.BertConfig(**BERT_CONFIG, return_dict=False)  # transformers 3.5's default
    ours_model, orig_model = BertForSequenceClassification(their_config), OrigLrpBert(their_config)
    for model in (ours_model, orig_model):
        load(model.double().eval(), state)
    ours, orig = Generator(ours_model), Generator(orig_model)  # as bert_pipeline.py: `ours` for theirs only
    last = BERT_CONFIG["num_hidden_layers"] - 1
    calls = {  # key: (generator, method, kwargs); bert_pipeline.py's method_expl
        "transformer_attribution": (ours, "generate_LRP", dict(start_layer=last)),
        "transformer_attribution_start0": (ours, "generate_LRP", dict(start_layer=0)),
        "partial_lrp": (orig, "generate_LRP_last_layer", {}),
        "last_attn": (orig, "generate_attn_last_layer", {}),
        "attn_gradcam": (orig, "generate_attn_gradcam", {}),
        "lrp": (orig, "generate_full_lrp", {}),
        "rollout": (orig, "generate_rollout", {}),
    }
    examples = []
    for ids, target in BERT_INPUTS:
        input_ids = torch.tensor([ids])
        mask = torch.ones_like(input_ids)
        logits = hf(input_ids=input_ids, attention_mask=mask).logits[0]
        target = int(logits.argmax()) if target is None else target
        theirs = ours_model(input_ids=input_ids, attention_mask=mask)[0][0]
        assert torch.allclose(theirs, logits, atol=1e-10), (theirs, logits)
        scores = {}
        for key, (gen, method, kwargs) in calls.items():
            scores[key] = rounded(getattr(gen, method)(input_ids=input_ids, attention_mask=mask, index=target,
                                                       **kwargs)[0])
        examples.append({"input_ids": ids, "target": target, "logits": rounded(logits), "scores": scores})
    calls_text = {k: f"{'Generator(orig_lrp)' if g is orig else 'Generator(ours)'}.{m}({kw or ''})"
                  for k, (g, m, kw) in calls.items()}
    return {"config": BERT_CONFIG, "calls": calls_text, "weights": weights, "examples": examples}


# ---- ViT ---------------------------------------------------------------------------------------------------


def to_their_vit(hf_state: dict, layers: int) -> dict[str, torch.Tensor]:
    """Hugging Face ViTForImageClassification names -> the authors' timm-style VisionTransformer names."""
    out = {"cls_token": hf_state["vit.embeddings.cls_token"],
           "pos_embed": hf_state["vit.embeddings.position_embeddings"],
           "patch_embed.proj.weight": hf_state["vit.embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": hf_state["vit.embeddings.patch_embeddings.projection.bias"],
           "norm.weight": hf_state["vit.layernorm.weight"], "norm.bias": hf_state["vit.layernorm.bias"],
           "head.weight": hf_state["classifier.weight"], "head.bias": hf_state["classifier.bias"]}
    pairs = {"norm1": "layernorm_before", "attn.proj": "attention.output.dense", "norm2": "layernorm_after",
             "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    for i in range(layers):
        hf = f"vit.encoder.layer.{i}."
        for kind in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [hf_state[f"{hf}attention.attention.{p}.{kind}"] for p in ("query", "key", "value")])
            for theirs, ours in pairs.items():
                out[f"blocks.{i}.{theirs}.{kind}"] = hf_state[f"{hf}{ours}.{kind}"]
    return out


def their_vits():
    from baselines.ViT.ViT_LRP import VisionTransformer as LrpViT
    from baselines.ViT.ViT_new import VisionTransformer as PlainViT
    from baselines.ViT.ViT_orig_LRP import VisionTransformer as OrigLrpViT

    c = VIT_CONFIG
    kwargs = dict(img_size=c["image_size"], patch_size=c["patch_size"], in_chans=c["num_channels"],
                  num_classes=c["num_labels"], embed_dim=c["hidden_size"], depth=c["num_hidden_layers"],
                  num_heads=c["num_attention_heads"], mlp_ratio=c["intermediate_size"] / c["hidden_size"],
                  qkv_bias=True)
    plain = PlainViT(**kwargs, norm_layer=partial(torch.nn.LayerNorm, eps=c["layer_norm_eps"]))
    lrp, orig = LrpViT(**kwargs), OrigLrpViT(**kwargs)
    for model in (lrp, orig):
        model.norm.eps = c["layer_norm_eps"]  # their blocks use 1e-6, their final norm the default 1e-5
    return plain, lrp, orig


def vit_fixture() -> dict:
    import transformers
    from baselines.ViT.ViT_explanation_generator import LRP, Baselines

    config = transformers.ViTConfig(**VIT_CONFIG)
    hf = transformers.ViTForImageClassification(config).double().eval()
    weights = draw_weights(hf.state_dict(), SEED)
    state = as_state(weights, hf.state_dict())
    load(hf, state)
    theirs = to_their_vit(state, VIT_CONFIG["num_hidden_layers"])
    plain, lrp_model, orig_model = their_vits()
    for model in (plain, lrp_model, orig_model):
        model.load_state_dict(theirs)
        model.double().eval()
    lrp, orig, baselines = LRP(lrp_model), LRP(orig_model), Baselines(plain)
    calls = {  # key: (generator, method, kwargs); baselines/ViT/generate_visualizations.py (which uses start_layer=1)
        "transformer_attribution": (lrp, "generate_LRP", dict(method="transformer_attribution", start_layer=0)),
        "transformer_attribution_start1": (lrp, "generate_LRP", dict(method="transformer_attribution",
                                                                      start_layer=1)),
        "full_lrp": (orig, "generate_LRP", dict(method="full")),
        "lrp_last_layer": (orig, "generate_LRP", dict(method="last_layer")),
        "attn_last_layer": (lrp, "generate_LRP", dict(method="last_layer_attn")),
        "attn_gradcam": (baselines, "generate_cam_attn", {}),
        "rollout": (baselines, "generate_rollout", dict(start_layer=0)),
    }
    gen = torch.Generator().manual_seed(SEED + 1)
    s = VIT_CONFIG["image_size"]
    images = [[round(v, 3) for v in torch.randn(3 * s * s, generator=gen, dtype=torch.float64).tolist()]
              for _ in VIT_TARGETS]
    examples = []
    for pixels, target in zip(images, VIT_TARGETS):
        x = torch.tensor(pixels, dtype=torch.float64).reshape(1, 3, s, s)
        logits = hf(pixel_values=x).logits[0]
        target = int(logits.argmax()) if target is None else target
        assert torch.allclose(plain(x)[0], logits, atol=1e-10) and torch.allclose(lrp_model(x)[0], logits, atol=1e-10)
        scores = {key: rounded(getattr(g, m)(x, index=target, **kw) if m != "generate_rollout" else
                               getattr(g, m)(x, **kw))
                  for key, (g, m, kw) in calls.items()}
        examples.append({"pixel_values": pixels, "target": target, "logits": rounded(logits), "scores": scores})
    names = {id(lrp): "LRP(ViT_LRP)", id(orig): "LRP(ViT_orig_LRP)", id(baselines): "Baselines(ViT_new)"}
    calls_text = {k: f"{names[id(g)]}.{m}({kw or ''})" for k, (g, m, kw) in calls.items()}
    return {"config": VIT_CONFIG, "calls": calls_text, "weights": weights, "examples": examples}


def stub_gensim() -> None:
    """Their BERT classifier module imports BERT_rationale_benchmark.models.model_utils, which imports gensim's
    KeyedVectors for word-vector baselines never used here; a stand-in avoids installing gensim."""
    import types

    models = types.ModuleType("gensim.models")
    models.KeyedVectors = None
    package = types.ModuleType("gensim")
    package.models = models
    sys.modules.update({"gensim": package, "gensim.models": models})


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not (Path(argv[0]) / "baselines" / "ViT" / "ViT_LRP.py").is_file():
        print("usage: generate.py PATH_TO_Transformer-Explainability_CHECKOUT", file=sys.stderr)
        return 2
    src = Path(argv[0]).resolve()
    sys.path.insert(0, str(src))
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # device fix: their generators call .cuda()
    stub_gensim()
    import transformers

    commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = {"generator": "tools/reference/chefer/generate.py", "source": "hila-chefer/Transformer-Explainability",
            "commit": commit or "unknown (not a git checkout)", "dtype": "float64", "seed": SEED,
            "versions": {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__}}
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, build in (("bert", bert_fixture), ("vit", vit_fixture)):
        out = FIXTURES / f"{name}.json"
        out.write_text(json.dumps({**meta, **build()}, separators=(",", ":")) + "\n")
        print(f"wrote {out} ({out.stat().st_size // 1024} KB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
