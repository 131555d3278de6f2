"""Write tests/fixtures/attention_explanation/reference.json: Jain & Wallace's own code (successar/
AttentionExplanation, `model/Binary_Classification.py` and its modules) run on two tiny binary classifiers — a
BiLSTM and the Average encoder in the authors' configuration (tanh) — with fixed weights and three fixed inputs.
Not run in CI; `tests/test_jain_wallace_reference.py` checks `lab` against the fixture.

    python3 -m venv /tmp/jw-ref-venv
    /tmp/jw-ref-venv/bin/pip install torch==2.13.0 numpy scipy        # CPU build
    # the mirror of github:successar/AttentionExplanation (a git directory), at REPO_COMMIT:
    nice -n 15 /tmp/jw-ref-venv/bin/python tools/reference/attention_explanation/generate.py \
        /work/.mirror/successar+AttentionExplanation/repo

The authors' files are exported unmodified into /tmp/jw-ref/Transparency (the package name their imports use).
Import and version fixes only, all here, none in their files:
- allennlp 0.8.3 (Python ≤ 3.7) is replaced by a 40-line shim of the four names the model code uses (Registrable,
  Params, FromParams, Activation), building modules from the same config dicts;
- `common_code.common` (spaCy, torchtext, IPython at import) is replaced by a module holding only its `kld`, `jsd`
  and `calc_max_attn`, copied from the file's source text at run time; sklearn/tqdm are stubbed (training only);
- `BatchHolder.masks` is cast to bool after construction: torch ≥ 2 refuses uint8 masks in `masked_fill_`.
The permutations their `permute_attn` draws (np.random) are recorded by wrapping `generate_permutation`, so the test
can decode the very same permutations.

Weights are drawn from a seeded generator, rounded to DECIMALS and stored in the fixture. Inputs are
<SOS> w_1 … w_n <EOS> as in the authors' vectoriser; their attention masks <SOS>/<EOS> but the BiLSTM reads them.
So that `lab`'s model (which has no boundary tokens) sees the same interior states, the <SOS>/<EOS> embedding rows
and the LSTM biases are 0: an LSTM step from a zero state on a zero input with zero bias stays at zero.
"""
from __future__ import annotations

import ast
import importlib.machinery
import json
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from scipy.stats import kendalltau

REPO_COMMIT = "425a89a49a8b3bffc3f5e8338287e2ecd0cf1fa2"
WORK = Path("/tmp/jw-ref")
OUT = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "attention_explanation" / "reference.json"
SEED, DECIMALS = 0, 4
VOCAB, EMBED, HIDDEN = 24, 8, 6  # HIDDEN: the authors' hidden_size (LSTM per direction; Average m)
SOS, EOS = 2, 3
INPUTS = [[SOS, 7, 19, 11, 5, 8, 20, EOS], [SOS, 14, 5, 22, 9, EOS], [SOS, 9, 9, 21, 17, 6, 12, 4, 10, EOS]]
N_PERM = 100
CODE = ("__init__.py", "configurations.py", "model", "common_code", "Trainers")  # the data files are not needed


def export(mirror: Path) -> Path:
    """The authors' files at REPO_COMMIT, unmodified, as the package `Transparency` under WORK."""
    target = WORK / "Transparency"
    if not target.exists():
        tmp = WORK / "Transparency.partial"
        tmp.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "--git-dir", str(mirror), "archive", REPO_COMMIT, "--", *CODE],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        tmp.rename(target)
    return target


def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)  # torch._dynamo's import scan asks for it
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


def install_shims(src: Path) -> None:
    """allennlp's Registrable/Params/FromParams/Activation; common_code.common's numeric helpers; sklearn, tqdm."""
    class Params(dict):
        pass

    activations = {"linear": lambda: (lambda x: x), "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}

    class Activation:
        @staticmethod
        def by_name(name):
            return activations[name]

    def build(cls, params):
        params = {k: v for k, v in dict(params).items()}
        if isinstance(params.get("activation"), str):
            params["activation"] = Activation.by_name(params["activation"])()
        return cls(**params)

    class Registrable:
        _registry: dict = {}

        @classmethod
        def register(cls, name):
            def deco(sub):
                Registrable._registry.setdefault(cls, {})[name] = sub
                return sub
            return deco

        @classmethod
        def from_params(cls, params):
            params = dict(params)
            return build(Registrable._registry[cls][params.pop("type")], params)

    class FromParams:
        @classmethod
        def from_params(cls, params):
            return build(cls, params)

    _module("allennlp")
    _module("allennlp.common", Registrable=Registrable, Params=Params)
    _module("allennlp.common.from_params", FromParams=FromParams)
    _module("allennlp.nn")
    _module("allennlp.nn.activations", Activation=Activation)
    _module("sklearn")
    _module("sklearn.utils", shuffle=lambda x: x)
    _module("tqdm", tqdm=lambda x, *a, **k: x)
    tree = ast.parse((src / "common_code" / "common.py").read_text())
    keep = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("kld", "jsd", "calc_max_attn")]
    common = _module("Transparency.common_code.common", np=np, os=__import__("os"))
    exec(compile(ast.Module(keep, type_ignores=[]), str(src / "common_code" / "common.py"), "exec"), common.__dict__)


def draw_weights(module: torch.nn.Module, gen: torch.Generator, zero_bias: bool) -> dict[str, list]:
    """N(0, 1/fan_in) matrices, N(0, 0.1²) biases (0 with `zero_bias`), N(0, 1) embeddings with rows pad/<SOS>/<EOS>
    = 0; rounded to DECIMALS and loaded into `module`."""
    state = {}
    for name, p in module.state_dict().items():
        if name.endswith("embedding.weight"):
            w = torch.randn(p.shape, generator=gen)
            w[[0, SOS, EOS]] = 0.0
        elif p.dim() == 1:
            w = torch.zeros(p.shape) if zero_bias else 0.1 * torch.randn(p.shape, generator=gen)
        else:
            w = torch.randn(p.shape, generator=gen) * (2.0 / p.shape[-1] ** 0.5)
        state[name] = torch.round(w, decimals=DECIMALS)
    module.load_state_dict(state)
    return {k: v.tolist() for k, v in state.items()}


def run_model(name: str, configure, model_cls, modelutils, common, gen: torch.Generator) -> dict:
    dataset = SimpleNamespace(vec=SimpleNamespace(vocab_size=VOCAB, word_dim=EMBED), output_size=1,
                              hidden_size=HIDDEN, pos_weight=[1.0], name="fixture")
    config = configure(dataset)
    config["training"]["basepath"] = str(WORK / "outputs")
    model = model_cls(config, pre_embed=np.zeros((VOCAB, EMBED), dtype=np.float32))
    weights = {"encoder": draw_weights(model.encoder, gen, zero_bias=name == "lstm"),
               "decoder": draw_weights(model.decoder, gen, zero_bias=False)}
    data = [list(x) for x in INPUTS]
    yhat, attn = model.evaluate(data)
    yhat = np.array(yhat)
    grads = model.gradient_mem(data)
    raw = [np.asarray(g)[0].tolist() for g in grads["XxE[X]"]]  # output 0 (binary), every position
    loo = [model.remove_and_run([x])[0] for x in data]  # one instance per call (their loop assumes equal lengths)
    perms: list = []
    record = modelutils.BatchHolder.generate_permutation

    def recording(self):
        p = record(self)
        perms.append(p.copy())
        return p

    modelutils.BatchHolder.generate_permutation = recording
    np.random.seed(SEED)
    permuted = np.array(model.permute_attn(data, num_perm=N_PERM))  # [N, P, 1]
    modelutils.BatchHolder.generate_permutation = record
    torch.manual_seed(SEED)
    adv_y, adv_attn = model.adversarial_multi(data)
    return {"config": config, "weights": weights,
            "instances": [_instance(i, x, yhat, attn, raw, loo, perms, permuted, adv_y, adv_attn, common)
                          for i, x in enumerate(data)]}


def _instance(i, x, yhat, attn, raw, loo, perms, permuted, adv_y, adv_attn, common) -> dict:
    """What PlottingBC.py derives per instance (process_grads, kendalltau over [1:L-1], med_diff, emax_JSD)."""
    L = len(x)
    a = np.asarray(attn[i])
    grad = np.abs(np.asarray(raw[i]))
    grad = grad / grad.sum()  # process_grads
    ydiff = np.abs(loo[i] - yhat[i]).mean(-1)
    inner = slice(1, L - 1)
    perm_idx = [p[i, 1:L - 1] - 1 for p in perms]  # interior positions, 0-based
    delta_y = np.abs(np.asarray(adv_y[i]) - yhat[i][None]).mean(-1)
    ad = np.asarray(adv_attn[i])
    delta_attn = np.array([common.jsd(a[inner], ad[k][inner]) for k in range(ad.shape[0])])
    feasible = np.where(delta_y > 5e-2, -100, delta_attn)
    return {"ids": x, "prediction": float(yhat[i][0]), "attention": a[:L].tolist(),
            "gradient_xxex": raw[i][:L], "gradient_processed": grad[:L].tolist(),
            "loo_predictions": np.asarray(loo[i])[:L, 0].tolist(), "loo_ydiff": ydiff[:L].tolist(),
            "tau_attn_grad": float(kendalltau(list(a[inner]), list(grad[inner]))[0]),
            "tau_attn_loo": float(kendalltau(list(ydiff[inner]), list(a[inner]))[0]),
            "tau_grad_loo": float(kendalltau(list(ydiff[inner]), list(grad[inner]))[0]),
            "permutations": [p.tolist() for p in perm_idx],
            "permutation_predictions": permuted[i, :, 0].tolist(),
            "median_output_difference": float(np.median(np.abs(permuted[i] - yhat[i][None]).mean(-1))),
            "max_attention": float(common.calc_max_attn([x], [a])[0]),
            "adversarial_attention": ad[:, :L].tolist(), "adversarial_predictions": np.asarray(adv_y[i])[:, 0].tolist(),
            "adversarial_jsd": delta_attn.tolist(), "emax_jsd_authors": float(max(0.0, feasible.max()))}


def main(mirror: str) -> None:
    src = export(Path(mirror))
    sys.path.insert(0, str(src.parent))
    install_shims(src)
    from Transparency import configurations  # noqa: E402  (after the shims)
    from Transparency.model import Binary_Classification, modelUtils  # noqa: E402

    orig_init = modelUtils.BatchHolder.__init__

    def init_bool_masks(self, data):
        orig_init(self, data)
        self.masks = self.masks.bool()

    modelUtils.BatchHolder.__init__ = init_bool_masks
    common = sys.modules["Transparency.common_code.common"]
    gen = torch.Generator().manual_seed(SEED)
    out = {"source": {"repository": "successar/AttentionExplanation", "commit": REPO_COMMIT,
                      "code": ["model/Binary_Classification.py", "model/modules/{Encoder,Attention,Decoder}.py",
                               "model/modelUtils.py", "configurations.py", "Trainers/PlottingBC.py (per-instance "
                               "statistics)", "common_code/common.py (jsd, calc_max_attn)"],
                      "torch": torch.__version__, "generator": "tools/reference/attention_explanation/generate.py"},
           "vocab_size": VOCAB, "embed_dim": EMBED, "hidden": HIDDEN, "n_permutations": N_PERM, "sos": SOS,
           "eos": EOS, "models": {}}
    for name, configure in (("lstm", configurations.generate_lstm_config),
                            ("average", configurations.generate_average_config)):
        torch.manual_seed(SEED)
        out["models"][name] = run_model(name, configure, Binary_Classification.Model, modelUtils, common, gen)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, separators=(",", ":"), default=float)
    OUT.write_text(text + "\n")
    print(f"wrote {OUT} ({len(text) / 1024:.0f} KB)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/.mirror/successar+AttentionExplanation/repo")
