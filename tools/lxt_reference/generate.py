"""Write tests/fixtures/lxt/attnlrp_bert.json: AttnLRP relevances computed by LXT 2.1 (the reference implementation
of Achtibat et al. 2024) on a tiny BERT classifier with fixed weights and inputs. Not run in CI.

Run it in a side virtual environment with the transformers version LXT 2.1 was tested with (its README):

    python3 -m venv /tmp/lxt-venv
    /tmp/lxt-venv/bin/pip install torch==2.13.0 transformers==4.52.4
    /tmp/lxt-venv/bin/pip install --no-deps lxt==2.1   # its other requirements (zennit, bitsandbytes, ...) are
                                                       # not used by lxt.efficient's BERT patch
    /tmp/lxt-venv/bin/python tools/lxt_reference/generate.py

The weights are drawn here from a seeded generator, rounded to 4 decimals and stored in the fixture, so the test
rebuilds exactly the same model under any torch / transformers version (no dependence on an RNG or an init).
LXT's efficient mode computes relevance as input x modified gradient; the fixture holds it at two places:
the embedding-layer output (`relevance_hidden`, what lab's `attnlrp` reports) and the word embeddings
(`relevance_word`, what LXT's examples report), summed over the hidden dimension, per token.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

CONFIG = dict(vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
              max_position_embeddings=16, type_vocab_size=2, num_labels=3, hidden_act="gelu", layer_norm_eps=1e-12,
              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0)
SEED = 0
DECIMALS = 4
# [CLS]=2 ... [SEP]=3; targets: the predicted class is filled in for None
INPUTS = [([2, 7, 19, 11, 25, 8, 30, 3], None), ([2, 14, 5, 22, 3], 0), ([2, 9, 9, 31, 17, 6, 12, 27, 20, 3], 2)]
OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "lxt" / "attnlrp_bert.json"


def draw_weights(model, seed: int) -> dict[str, list[float]]:
    """Unit-scale weights (std 1/sqrt(fan_in)), biases and LayerNorm offsets with std 0.1, LayerNorm gains
    1 + 0.1 N(0, 1): peaked attention and non-zero biases, so every rule matters. Rounded to DECIMALS."""
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for name, p in model.state_dict().items():
        if "position_ids" in name or "token_type_ids" in name:
            continue
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        if "LayerNorm.weight" in name:
            value = 1.0 + 0.1 * noise
        elif name.endswith("bias") or "LayerNorm" in name:
            value = 0.1 * noise
        elif "embeddings" in name:
            value = noise
        else:
            value = noise / math.sqrt(p.shape[-1])
        weights[name] = [round(v, DECIMALS) for v in value.flatten().tolist()]
    return weights


def lxt_relevance(model, ids: list[int], target):
    input_ids = torch.tensor([ids])
    word = model.bert.embeddings.word_embeddings(input_ids).detach().requires_grad_(True)
    captured = {}

    def keep(module, args, output):
        output.retain_grad()
        captured["hidden"] = output

    handle = model.bert.embeddings.register_forward_hook(keep)
    try:
        logits = model(inputs_embeds=word, attention_mask=torch.ones_like(input_ids)).logits
    finally:
        handle.remove()
    target = int(logits.argmax(-1)) if target is None else target
    logits[0, target].backward()  # R at the output = the target logit (gradient 1 times the logit)
    hidden = captured["hidden"]
    return {"input_ids": ids, "target": target, "logits": logits[0].tolist(),
            "relevance_hidden": (hidden * hidden.grad)[0].sum(-1).tolist(),
            "relevance_word": (word * word.grad)[0].sum(-1).tolist()}


def stub_torchvision() -> None:
    """lxt.efficient.models imports torchvision only to build its ViT patch map (unused here); a stand-in module
    avoids installing a torchvision build that matches this torch."""
    import types

    vision_transformer = types.ModuleType("torchvision.models.vision_transformer")
    vision_transformer.nn = torch.nn
    models = types.ModuleType("torchvision.models")
    models.vision_transformer = vision_transformer
    package = types.ModuleType("torchvision")
    package.models = models
    sys.modules.update({"torchvision": package, "torchvision.models": models,
                        "torchvision.models.vision_transformer": vision_transformer})


def main() -> int:
    import transformers
    import transformers.models.bert.modeling_bert as modeling_bert

    stub_torchvision()  # after transformers, which probes for torchvision once at import
    import lxt
    from lxt.efficient import monkey_patch

    monkey_patch(modeling_bert, verbose=True)
    model_class = modeling_bert.BertForSequenceClassification
    assert model_class.__module__.startswith("lxt."), f"not LXT's patched class: {model_class.__module__}"
    config = transformers.BertConfig(**CONFIG, attn_implementation="eager")
    model = model_class(config).to(torch.float64).eval()
    weights = draw_weights(model, SEED)
    state = {k: torch.tensor(v, dtype=torch.float64).reshape(model.state_dict()[k].shape) for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("position_ids" in k or "token_type_ids" in k for k in missing), (missing, unexpected)
    examples = [lxt_relevance(model, ids, target) for ids, target in INPUTS]
    fixture = {"generator": "tools/lxt_reference/generate.py", "method": "lxt.efficient AttnLRP (monkey_patch)",
               "versions": {"lxt": getattr(lxt, "__version__", "2.1"), "transformers": transformers.__version__,
                            "torch": torch.__version__.split("+")[0]},
               "dtype": "float64", "seed": SEED, "config": CONFIG, "weights": weights, "examples": examples}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
