"""Write tests/fixtures/mask_lrp/mask_lrp_bert.json: the Mask-LRP authors' explanations (LinxinS97/Mask-LRP,
`Transformer_Explanation/ExplanationGenerator.py`: MGAE = Mask-LRP, GAE, AttCAT) on a tiny BERT classifier with
fixed weights, inputs and head masks. Not run in CI.

The authors' code is used unmodified: it is imported from a checkout given as the first argument (a clone of
github.com/LinxinS97/Mask-LRP at b0839bd); only the device is fixed (CPU, their `Generator` takes the model's).
Run it in a side virtual environment with a transformers 4.x (their BERT subclasses `BertPreTrainedModel` and
calls `get_head_mask` / `get_extended_attention_mask`, gone in transformers 5):

    python3 -m venv /tmp/masklrp-venv
    /tmp/masklrp-venv/bin/pip install torch==2.13.0 transformers==4.52.4 numpy
    nice -n 15 /tmp/masklrp-venv/bin/python tools/reference/mask_lrp/generate.py /path/to/Mask-LRP

The weights are drawn from a seeded generator, rounded to 4 decimals and stored in the fixture, so the test
rebuilds exactly the same model as a plain Hugging Face BertForSequenceClassification (the generator checks that
the authors' model and the Hugging Face one give the same logits). Inputs have no padding and are explained one at
a time, as in the authors' evaluation (batch 1). Head masks: `masks` (one row per block); "ones" is all ones.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import torch

CONFIG = dict(vocab_size=32, hidden_size=16, num_hidden_layers=3, num_attention_heads=4, intermediate_size=32,
              max_position_embeddings=16, type_vocab_size=2, num_labels=3, hidden_act="gelu", layer_norm_eps=1e-12,
              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0)
SEED = 0
DECIMALS = 4
# [CLS]=2 ... [SEP]=3; target None: the predicted class
INPUTS = [([2, 7, 19, 11, 25, 8, 30, 3], None), ([2, 14, 5, 22, 3], 0), ([2, 9, 9, 31, 17, 6, 12, 27, 20, 3], 2)]
MASKS = {"sparse": [[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 1]],
         "one_block": [[0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]],
         "ones": [[1, 1, 1, 1]] * 3}
OUT = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "mask_lrp" / "mask_lrp_bert.json"


def draw_weights(model, seed: int) -> dict[str, list[float]]:
    """Unit-scale weights (std 1/sqrt(fan_in)), biases and LayerNorm offsets with std 0.1, LayerNorm gains
    1 + 0.1 N(0, 1): peaked attention and non-zero biases. Rounded to DECIMALS."""
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


def load(model, weights) -> None:
    shapes = model.state_dict()
    state = {k: torch.tensor(v, dtype=torch.float64).reshape(shapes[k].shape) for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("position_ids" in k or "token_type_ids" in k for k in missing), (missing, unexpected)


def explain(generator, ids: list[int], target) -> dict:
    """The authors' three explanations of one input (their methods' return values, unchanged)."""
    input_ids = torch.tensor([ids])
    attention_mask = torch.ones_like(input_ids)
    token_type_ids = torch.zeros_like(input_ids)
    logits = generator.model(input_ids=input_ids, attention_mask=attention_mask).logits[0].detach()  # (their
    # forward hooks the attention gradients, so it cannot run under no_grad)
    target = int(logits.argmax()) if target is None else target
    kw = dict(input_ids=input_ids, attention_mask=attention_mask, index=target, token_type_ids=token_type_ids)
    out = {"input_ids": ids, "target": target, "logits": logits.tolist()}
    out["gae"] = generator.GAE(**kw)[0][0].tolist()
    out["mgae"] = {}
    for name, mask in MASKS.items():
        scores, head_contrs = generator.MGAE(**kw, head_mask=torch.tensor(mask, dtype=torch.float64))
        out["mgae"][name] = scores[0].tolist()
    out["attcat"] = generator.AttCAT(**kw).tolist()
    return out


def main(checkout: str) -> int:
    import transformers

    sys.path.insert(0, checkout)
    from Transformer_Explanation.ExplanationGenerator import Generator
    from Transformer_Explanation.modules.BERT.BertForTask import BertForSequenceClassification

    commit = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    torch.manual_seed(SEED)
    config = transformers.BertConfig(**CONFIG, attn_implementation="eager")
    model = BertForSequenceClassification(config).to(torch.float64).eval()
    weights = draw_weights(model, SEED)
    load(model, weights)
    reference = transformers.BertForSequenceClassification(config).to(torch.float64).eval()
    load(reference, weights)
    for ids, _ in INPUTS:  # the authors' BERT is the Hugging Face one
        x = torch.tensor([ids])
        diff = (model(input_ids=x).logits - reference(input_ids=x).logits).detach().abs().max()
        assert diff < 1e-10, f"the authors' BERT and Hugging Face's differ by {diff}"
    generator = Generator(model, model_name="bert")
    examples = [explain(generator, ids, target) for ids, target in INPUTS]
    fixture = {"generator": "tools/reference/mask_lrp/generate.py",
               "source": {"repository": "LinxinS97/Mask-LRP", "commit": commit or None,
                          "methods": "Transformer_Explanation/ExplanationGenerator.py Generator.MGAE/GAE/AttCAT"},
               "versions": {"transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]},
               "dtype": "float64", "seed": SEED, "config": CONFIG, "masks": MASKS, "weights": weights,
               "examples": examples}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: generate.py PATH_TO_MASK_LRP_CHECKOUT")
    raise SystemExit(main(sys.argv[1]))
