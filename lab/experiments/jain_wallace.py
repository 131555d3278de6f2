"""Jain & Wallace 2019, "Attention is not Explanation": the paper's constants, settings, tasks, models and analyses
for notebook `05_jain_wallace` (Tables 1–2, Figs. 1–8, and the same questions asked of a fine-tuned Transformer):

    cfg = settings("default")
    tasks = load_tasks(cfg)                              # offline data, word-piece vocabulary (lab.models.rnn)
    models = train_models(tasks, cfg)                    # cached BiLSTM / Average models
    analyses = analyse_models(tasks, models, cfg)        # τ, permutations, adversaries (lab.analysis.attention_tests)
    tr = analyse_transformer(tasks["sst_jw"], cfg)       # beyond the paper

Tables, claims and the results file are in `jain_wallace_results`; figures, the instance widget and the discussion
in `lab.viz.jain_wallace`. Choices forced or left open (REPRODUCTION_SPEC 003; the notebook lists them): MiniLM word
pieces and MiniLM-L6's 384-d word-piece table rescaled to an entry std of `embedding_std` (bAbI: 50-d random, hidden
30); the offline splits in `TASKS` (AG News = Sports vs rest, SNLI trained on validation, dev = 10 % of train where
there is none); additive attention; Table 2 by predicted class with Sig. Frac. at p < 0.05. Two readings where the paper's text and the authors' code differ (the code is the
default): `average_reading` (tanh/128 vs the appendix's ReLU/256; `compare_average_reading` analyses both) and
`adversary_penalty` (λ per adversary vs Eq. 1's λ/k). The ε-max JSD is also stated relative to the largest JSD
reachable on the instance; pair tasks (SNLI, bAbI) get a premise-reliance check (`jain_wallace_results.premise_rows`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

import lab
from lab import cache
from lab.analysis import attention_tests as at
from lab.analysis.attention_tests import Analysis
from lab.config import torch_threads
from lab.data import load
from lab.experiments import ExperimentError, ExperimentSettings
from lab.models import rnn
from lab.viz.jain_wallace import title

NOTEBOOK = "05_jain_wallace"
ENCODERS = ("lstm", "average")
ADVERSARY_PENALTIES = ("authors", "paper")  # hinge weight per adversary: λ (authors' code) | λ/k (Eq. 1)
ADVERSARY_CROSSES = ("authors", "paper")  # weight of the adversaries' pairwise JSD: 2/k² (authors' code) | 1/(k(k−1))


@dataclass(frozen=True)
class TaskSpec:
    data: str  # lab.data name
    train: str
    dev: str | None  # None: 10 % of the training split
    test: str
    kind: str  # classification | nli | qa
    embeddings: str = "minilm"  # minilm | random
    embed_dim: int = 384
    hidden: int = 128


TASKS: dict[str, TaskSpec] = {
    "sst_jw": TaskSpec("sst_jw", "train", "dev", "test", "classification"),
    "imdb": TaskSpec("imdb", "dev", None, "test", "classification"),
    "agnews_binary": TaskSpec("agnews_binary", "validation", None, "test", "classification"),
    "snli": TaskSpec("snli", "validation", None, "test", "nli"),
    "babi1": TaskSpec("babi1", "train", None, "test", "qa", embeddings="random", embed_dim=50, hidden=30),
}

# Paper numbers (003 text: Table 1 last column, Table 2). Classes are 0/1 (binary), 0/1/2 (SNLI), "overall" (bAbI).
PAPER_TABLE1 = {"sst_jw": 0.81, "imdb": 0.88, "agnews_binary": 0.96, "snli": 0.78, "babi1": 1.0}
# The paper's class indices, where they are not ours: Fig. 2's caption codes SNLI's colours as "neutral,
# contradiction and entailment, respectively" (our labels are entailment, neutral, contradiction).
PAPER_CLASS_ORDER = {"snli": ("neutral", "contradiction", "entailment")}
PAPER_TABLE2 = {  # (class) -> (τ_g BiLSTM mean, std, sig), (τ_g Average mean, std, sig), (τ_loo BiLSTM mean, std, sig)
    "sst_jw": {0: ((0.40, 0.21, 0.59), (0.69, 0.15, 0.93), (0.34, 0.20, 0.47)),
               1: ((0.38, 0.19, 0.58), (0.69, 0.14, 0.94), (0.33, 0.19, 0.47))},
    "imdb": {0: ((0.37, 0.07, 1.00), (0.65, 0.05, 1.00), (0.30, 0.07, 0.99)),
             1: ((0.37, 0.08, 0.99), (0.66, 0.05, 1.00), (0.31, 0.07, 0.98))},
    "agnews_binary": {0: ((0.42, 0.11, 0.93), (0.77, 0.08, 1.00), (0.35, 0.13, 0.80)),
                      1: ((0.35, 0.13, 0.81), (0.75, 0.07, 1.00), (0.32, 0.13, 0.73))},
    "babi1": {"overall": ((0.23, 0.19, 0.46), (0.66, 0.17, 0.97), (0.23, 0.18, 0.45))},
    "snli": {0: ((0.36, 0.22, 0.46), (0.54, 0.20, 0.76), (0.44, 0.18, 0.60)),
             1: ((0.42, 0.19, 0.57), (0.59, 0.18, 0.84), (0.43, 0.17, 0.59)),
             2: ((0.40, 0.20, 0.52), (0.53, 0.19, 0.75), (0.44, 0.17, 0.61))},
}

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(datasets=("sst_jw", "snli", "babi1"), train_size=96, dev_size=32, test_size=48, epochs={},
                  default_epochs=1, hidden_scale=0.125, max_length=48, n_analysis=8, n_adversarial=6, adv_steps=20,
                  n_transformer=4, transformer_profile="smoke", batch_size=32, use_cache=False),
    "default": dict(train_size=None, dev_size=None, test_size=None,
                    epochs={"sst_jw": 3, "imdb": 2, "agnews_binary": 4, "snli": 3, "babi1": 8}, default_epochs=4,
                    hidden_scale=1.0, max_length={"imdb": 200, None: 128},
                    n_analysis={"imdb": 40, "agnews_binary": 200, None: 400},
                    n_adversarial={"imdb": 40, None: 150}, adv_steps=500, n_transformer=100,
                    transformer_profile="default", batch_size=32),
    "paper": dict(train_size=None, dev_size=None, test_size=None, epochs={}, default_epochs=8, hidden_scale=1.0,
                  max_length={"imdb": 512, None: 256}, n_analysis=None, n_adversarial=None, adv_steps=500,
                  n_transformer=872, transformer_profile="default", batch_size=32),
}
COMMON = dict(datasets=tuple(TASKS), encoders=ENCODERS, attention="tanh", embedding_std=0.33, n_permutations=100,
              k=5, lam=500.0, adv_lr=0.01, level=0.05, lr=1e-3, weight_decay=1e-5, seed=0, chunk=64,
              adv_chunk=256, use_cache=True, progress=True, average_reading="authors", compare_average_reading=True,
              adversary_penalty="authors", adversary_cross="authors")


def _check(cfg: dict) -> None:
    """Datasets among `TASKS`, encoders among `rnn.ENCODERS`; both kept as tuples."""
    for key, known in (("datasets", tuple(TASKS)), ("encoders", rnn.ENCODERS)):
        cfg[key] = tuple(cfg[key])
        bad = [x for x in cfg[key] if x not in known]
        if bad:
            raise ExperimentError(f"unknown {key[:-1]}(s) {bad}; choose from {', '.join(known)}")


# per-dataset values are {dataset: v, None: default} dicts (`per_dataset`)
settings = ExperimentSettings(PROFILES, COMMON, choices={"attention": rnn.ATTENTIONS,
                                                         "average_reading": tuple(rnn.AVERAGE_READINGS),
                                                         "adversary_penalty": ADVERSARY_PENALTIES,
                                                         "adversary_cross": ADVERSARY_CROSSES}, check=_check)


def other_average(cfg: Mapping) -> str | None:
    """The encoder key of the Average model in the other reading ("average:appendix" by default), when the run
    compares readings (`compare_average_reading` and "average" among the encoders); else None."""
    if not cfg["compare_average_reading"] or "average" not in cfg["encoders"]:
        return None
    return "average:" + next(r for r in rnn.AVERAGE_READINGS if r != cfg["average_reading"])


def adversary_lambda(cfg: Mapping) -> float:
    """The λ handed to `attention_tests.adversarial_attention`, whose penalty is (λ/k) Σ_i hinge_i: the authors'
    code weighs each adversary's hinge by 500 itself (Binary_Classification.AdversaryMulti), so λ·k there."""
    return cfg["lam"] * cfg["k"] if cfg["adversary_penalty"] == "authors" else cfg["lam"]


def adversary_cross_weight(cfg: Mapping) -> float | None:
    """The weight of Σ_{i<j} JSD(α^(i), α^(j)) between adversaries: the authors' code averages over all k² ordered
    pairs (`cross_jsd.sum(0).mean()`), i.e. 2/k²; None is Eq. 1's 1/(k(k−1))."""
    return 2.0 / cfg["k"] ** 2 if cfg["adversary_cross"] == "authors" else None


def protocol(cfg: Mapping, seed: int | None = None) -> at.Protocol:
    return at.Protocol(cfg["n_permutations"], cfg["k"], adversary_lambda(cfg), cfg["adv_steps"], cfg["adv_lr"],
                       cfg["chunk"], cfg["adv_chunk"], cfg["seed"] if seed is None else seed,
                       adversary_cross_weight(cfg))


def per_dataset(value, name: str):
    """A setting that may be given per dataset ({name: v, None: default}) or once."""
    if isinstance(value, Mapping):
        return value.get(name, value.get(None))
    return value


# ---------------------------------------------------------------- tasks and models
@dataclass
class Task:
    name: str
    spec: TaskSpec
    vocab: rnn.Vocab
    train: rnn.EncodedSet
    dev: rnn.EncodedSet
    test: rnn.EncodedSet
    label_names: tuple[str, ...]
    analysis_rows: list[int]  # rows of `test` analysed (τ, permutations); adversaries use the first n_adversarial
    n_adversarial: int

    @property
    def epsilon(self) -> float:
        return at.EPSILON["qa" if self.spec.kind == "qa" else "classification"]


def load_task(name: str, cfg: Mapping, tokenizer=None) -> Task:
    """Load, subsample and encode one dataset; a random `n_analysis` of its test rows are analysed."""
    spec, seed = TASKS[name], cfg["seed"]
    vocab, enc, label_names = rnn.load_splits(
        spec.data, (spec.train, spec.dev, spec.test), (cfg["train_size"], cfg["dev_size"], cfg["test_size"]),
        tokenizer if tokenizer is not None else lab.models.load_tokenizer("minilm"),
        per_dataset(cfg["max_length"], name), seed)
    n_test, n = len(enc["test"]), per_dataset(cfg["n_analysis"], name)
    rows = list(range(n_test)) if n is None or n >= n_test else \
        sorted(np.random.default_rng(seed).choice(n_test, size=n, replace=False).tolist())
    n_adv = per_dataset(cfg["n_adversarial"], name)
    return Task(name, spec, vocab, enc["train"], enc["dev"], enc["test"], label_names, rows,
                len(rows) if n_adv is None else min(n_adv, len(rows)))


def load_tasks(cfg: Mapping) -> dict[str, Task]:
    tokenizer = lab.models.load_tokenizer("minilm")
    return {name: load_task(name, cfg, tokenizer) for name in cfg["datasets"]}


def model_config(task: Task, encoder: str, cfg: Mapping) -> rnn.RNNConfig:
    """The model of one task; `encoder` may name an Average reading ("average:appendix"), else cfg's is used."""
    encoder, _, reading = encoder.partition(":")
    hidden = max(2, int(round(task.spec.hidden * cfg["hidden_scale"])))
    return rnn.RNNConfig(vocab_size=len(task.vocab), num_classes=len(task.label_names), encoder=encoder,
                         attention=cfg["attention"], embed_dim=task.spec.embed_dim, hidden=hidden,
                         pair=task.train.pair, average_reading=reading or cfg["average_reading"])


def train_model(task: Task, encoder: str, cfg: Mapping, force: bool = False) -> rnn.TrainedRNN:
    """Train (or load from the cache) the `encoder` model of one task."""
    mcfg = model_config(task, encoder, cfg)
    tc = rnn.TrainConfig(epochs=per_dataset(cfg["epochs"], task.name) or cfg["default_epochs"],
                         batch_size=cfg["batch_size"], lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                         seed=cfg["seed"])
    emb, emb_id = (None, "random") if task.spec.embeddings != "minilm" else \
        rnn.pretrained_embeddings(task.vocab, mcfg.embed_dim, cfg["embedding_std"])
    with torch_threads(fallback=1):  # one thread unless $LAB_NUM_THREADS: small RNN matmuls
        return rnn.train_cached(task.name, task.train, task.dev, task.vocab, mcfg, tc, emb, emb_id, force=force,
                                progress=cfg["progress"])


def train_models(tasks: Mapping[str, Task], cfg: Mapping) -> dict[tuple[str, str], rnn.TrainedRNN]:
    """Every (dataset, encoder) model, plus the other Average reading's (`other_average`) when compared."""
    encoders = [*cfg["encoders"], *filter(None, [other_average(cfg)])]
    return {(name, enc): train_model(task, enc, cfg) for name, task in tasks.items() for enc in encoders}


# ---------------------------------------------------------------- analyses (memoised)
_PROTOCOL = ("chunk", "adv_chunk", "n_permutations", "k", "lam", "adv_steps", "adv_lr", "adversary_penalty",
             "adversary_cross")


def _instances(task: Task) -> str:
    """Digest of the analysed test instances (token ids, queries, labels), the vocabulary and the adversary count."""
    data, rows = task.test, task.analysis_rows
    queries = [data.query_ids[r] for r in rows] if data.pair else None
    return cache.digest([task.vocab.digest(), [data.ids[r] for r in rows], queries,
                         [int(data.labels[r]) for r in rows], task.n_adversarial, task.epsilon])


def analyse_rnn(task: Task, trained: rnn.TrainedRNN, cfg: Mapping, seed: int | None = None,
                encoder: str | None = None) -> Analysis:
    """`attention_tests.analyse_rnn` on the task's analysed test instances, memoised (`use_cache`) per weights,
    instances, protocol and code; `encoder` names the analysis (default: the model's; "average:appendix")."""
    encoder = encoder or trained.config.encoder
    proto = protocol(cfg, seed)

    def compute():
        with torch_threads(fallback=1):
            return at.analyse_rnn(trained.model, task.test, task.analysis_rows, task.n_adversarial, task.epsilon,
                                  proto, vocab=task.vocab, dataset=task.name, encoder=encoder,
                                  label_names=task.label_names, progress=cfg["progress"],
                                  desc=title(task.name, encoder))

    return cache.memoize("jain_wallace", f"rnn-{task.name}-{encoder}", compute, enabled=bool(cfg.get("use_cache")),
                         protocol={k: cfg[k] for k in _PROTOCOL}, model=cache.digest(trained.model),
                         instances=_instances(task), seed=proto.seed)


def analyse_models(tasks: Mapping[str, Task], models: Mapping, cfg: Mapping) -> dict[tuple[str, str], Analysis]:
    return {key: analyse_rnn(tasks[key[0]], trained, cfg, encoder=key[1]) for key, trained in models.items()}


def analyse_transformer(task: Task, cfg: Mapping, fine_tuned=None) -> Analysis:
    """`attention_tests.analyse_transformer` on the fine-tuned MiniLM SST-2 classifier and the first `n_transformer`
    analysed SST test sentences, memoised like `analyse_rnn`."""
    if fine_tuned is None:
        from lab.models.training import fine_tune_preset

        fine_tuned = fine_tune_preset("sst2", cfg["transformer_profile"], seed=cfg["seed"])

    def compute():
        dataset = load(task.spec.data, task.spec.test).subset(cfg["test_size"], seed=cfg["seed"])
        examples = [dataset[task.test.index[r]] for r in task.analysis_rows[:cfg["n_transformer"]]]
        with torch_threads(fallback=1):
            return at.analyse_transformer(fine_tuned.model, fine_tuned.tokenizer, [e.text for e in examples],
                                          [e.label for e in examples], protocol(cfg), dataset=task.name,
                                          label_names=fine_tuned.label_names or ("negative", "positive"),
                                          progress=cfg["progress"])

    return cache.memoize("jain_wallace", f"transformer-{task.name}", compute, enabled=bool(cfg.get("use_cache")),
                         protocol={k: cfg[k] for k in _PROTOCOL}, model=cache.digest(fine_tuned.model),
                         instances=_instances(task), n=cfg["n_transformer"], test_size=cfg["test_size"],
                         seed=cfg["seed"])
