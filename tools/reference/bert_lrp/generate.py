"""Write tests/fixtures/bert_lrp/bert_lrp.json: LRP and GS scores computed by Wu & Ong's own code
(github.com/frankaging/BERT-LRP, `code/model/BERT.py` + `code/util/lrp.py`, unmodified) on a tiny BERT classifier
with fixed weights and inputs. Not run in CI.

Their code needs only torch, numpy and six; it runs under today's torch unchanged. In a side virtual environment:

    python3 -m venv /tmp/venv-bertlrp
    /tmp/venv-bertlrp/bin/pip install torch==2.13.0 numpy six
    nice -n 15 /tmp/venv-bertlrp/bin/python tools/reference/bert_lrp/generate.py [--git-dir DIR]

DIR is a git directory of frankaging/BERT-LRP (default: the mirror the `fetch` tool writes); the two files are read
with `git show HEAD:...` into a temporary folder and imported from there, as their notebooks do (`sys.path` = code/).
The only change of setting: the model runs in float64 (`model.double()`), so the test can use tight tolerances.

Weights are drawn from a seeded generator in Hugging Face naming, rounded to 4 decimals and stored in the fixture, so
the test rebuilds exactly the same model (LayerNorm `weight`/`bias` are the authors' `gamma`/`beta`).
The relevance starts at the logit of the last class (their notebook: `Rout_mask[:, sensitivity_class] = 1.0;
relevance_score = logits_raw * Rout_mask`, sensitivity_class = number of labels - 1), LRP token score =
sum_d |R| at the embedding output (`torch.abs(lrp_score).sum(dim=-1)`), GS = ||logit_c * d logit_c / d emb||^2
(`backward_gradient`, then `torch.norm(.)*torch.norm(.)`), also at the embedding output.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

CONFIG = dict(vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32,
              max_position_embeddings=16, type_vocab_size=2, num_labels=3, hidden_act="gelu", layer_norm_eps=1e-12,
              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0)
SEED = 0
DECIMALS = 4
INPUTS = [[2, 7, 19, 11, 25, 8, 30, 3], [2, 14, 5, 22, 3], [2, 9, 9, 31, 17, 6, 12, 27, 20, 3]]  # [CLS]=2, [SEP]=3
GIT_DIR = "/work/.mirror/frankaging+BERT-LRP/repo"
FILES = ("code/util/lrp.py", "code/model/BERT.py")
OUT = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "bert_lrp" / "bert_lrp.json"


def draw_weights(shapes: dict[str, tuple], seed: int) -> dict[str, list[float]]:
    """Weights in HF naming: std 1/sqrt(fan_in), embeddings N(0, 1), biases and LayerNorm offsets 0.1 N(0, 1),
    LayerNorm gains 1 + 0.1 N(0, 1); rounded to DECIMALS."""
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for name, shape in shapes.items():
        noise = torch.randn(shape, generator=gen, dtype=torch.float64)
        if "LayerNorm.weight" in name:
            value = 1.0 + 0.1 * noise
        elif name.endswith("bias") or "LayerNorm" in name:
            value = 0.1 * noise
        elif "embeddings" in name:
            value = noise
        else:
            value = noise / math.sqrt(shape[-1])
        weights[name] = [round(v, DECIMALS) for v in value.flatten().tolist()]
    return weights


def authors_name(hf_name: str) -> str:
    return hf_name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")


def import_authors_code(git_dir: str, into: Path):
    for path in FILES:
        text = subprocess.run(["git", "--git-dir", git_dir, "show", f"HEAD:{path}"], check=True,
                              capture_output=True, text=True).stdout
        target = into / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    sys.path.insert(0, str(into / "code"))
    import model.BERT as bert  # noqa: E402  (their module, imported as their notebooks do)
    return bert


def authors_config(bert):
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "type_vocab_size", "hidden_dropout_prob", "attention_probs_dropout_prob")
    return bert.BertConfig(**{k: CONFIG[k] for k in keys})


def run_authors(bert, weights: dict, dtype) -> list[dict]:
    """Their LRP and GS on every input (one at a time, as their notebook's batches hold no padding here)."""
    model = bert.BertForSequenceClassification(authors_config(bert), CONFIG["num_labels"], init_weight=False,
                                               init_lrp=True)
    own = model.state_dict()
    state = {authors_name(k): torch.tensor(v, dtype=torch.float64).reshape(own[authors_name(k)].shape)
             for k, v in weights.items()}
    model.load_state_dict(state, strict=True)
    model = model.to(dtype).eval()
    target = CONFIG["num_labels"] - 1
    out = []
    for ids in INPUTS:
        input_ids = torch.tensor([ids])
        mask, types = torch.ones_like(input_ids), torch.zeros_like(input_ids)
        logits = model(input_ids, types, mask, torch.tensor([[len(ids)]]))
        seed = torch.zeros_like(logits)
        seed[:, target] = 1.0
        lrp = model.backward_lrp(logits * seed)
        gs = model.backward_gradient(logits * seed)
        gs = torch.norm(gs, dim=-1) * torch.norm(gs, dim=-1)
        out.append({"input_ids": ids, "target": target, "logits": logits[0].tolist(),
                    "lrp": torch.abs(lrp).sum(dim=-1)[0].tolist(), "lrp_sum": float(lrp.sum().detach()),
                    "gs": gs[0].tolist()})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--git-dir", default=GIT_DIR)
    args = parser.parse_args()
    commit = subprocess.run(["git", "--git-dir", args.git_dir, "rev-parse", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        bert = import_authors_code(args.git_dir, Path(tmp))
        probe = bert.BertForSequenceClassification(authors_config(bert), CONFIG["num_labels"], init_weight=False)
        shapes = {k.replace("gamma", "weight").replace("beta", "bias"): tuple(v.shape)
                  for k, v in probe.state_dict().items()}
        weights = draw_weights(shapes, SEED)
        examples = run_authors(bert, weights, torch.float64)
    fixture = {"generator": "tools/reference/bert_lrp/generate.py",
               "source": {"repository": "frankaging/BERT-LRP", "commit": commit, "files": list(FILES)},
               "versions": {"torch": torch.__version__.split("+")[0]}, "dtype": "float64", "seed": SEED,
               "config": CONFIG, "weights": weights, "examples": examples}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
