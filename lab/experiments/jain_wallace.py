"""Jain & Wallace 2019, "Attention is not Explanation": Tables 1–2 and Figures 1–8, plus the same questions asked of
a fine-tuned Transformer. Everything notebook `05_jain_wallace` computes lives here:

    cfg = settings("default")
    tasks = {name: load_task(name, cfg) for name in cfg["datasets"]}          # offline data, word-piece vocabulary
    models = {(name, enc): train_model(tasks[name], enc, cfg) ...}            # cached BiLSTM / Average models
    perf = performance_rows(tasks, models)                                    # Table 1 (test performance)
    analyses = {(name, enc): analyse_rnn(tasks[name], models[name, enc], cfg) ...}   # τ, permutations, adversaries
    tr = analyse_transformer(tasks["sst_jw"], cfg)                            # beyond the paper
    res = build_results(cfg, tasks, models, analyses, tr)                     # paper vs ours + claims

Protocol (REPRODUCTION_SPEC 003) and the choices forced or left open:
- Tokens are MiniLM word pieces (bert-base-uncased vocabulary, no special tokens) instead of spaCy words; the
  vocabulary is every piece seen in the training texts (others -> <unk>). Embeddings start from MiniLM-L6's
  384-d word-piece table (the only pretrained static embeddings offline; the paper: 300-d fastText / GloVe),
  rescaled to an entry std of `embedding_std` = 0.33, about the scale of 300-d fastText/GloVe vectors (MiniLM's
  table has std 0.056; at that scale the BiLSTM's attention comes out flatter and τ_g on SST drops to ≈ 0.23 in
  a trial run, vs ≈ 0.43 rescaled). bAbI uses 50-d random embeddings and hidden 30, as in the paper.
- Datasets: SST = J&W's binary split; IMDB = the offline 8.7k subset (train on dev.csv, test on test.csv);
  AG News binary = the offline AGN-2 subset, whose labels are Sports (1) vs the other three classes (0) — not the
  paper's World vs Business; SNLI trains on the validation split and tests on test (no train split offline);
  bAbI task 1 (en-10k). A development set is SST's dev split, else 10 % of the training split.
- Attention is additive (tanh); classes in Table 2 are *predicted* classes (as the paper's figures); Sig. Frac. is
  p < 0.05 (the level is not in the paper). Gradients differentiate the predicted class's probability with the
  attention detached. Long inputs are truncated to `max_length` word pieces.
- Permutations: 100 per instance in one decoder call; adversaries: k = 5, λ = 500 (subtracted), ε = 0.01
  (classification, SNLI) / 0.05 (bAbI), Adam(amsgrad) lr 0.01, 500 steps, on a subsample of test instances.
- Two readings where the paper's text and the authors' code differ (the authors' code, which produced the published
  numbers, is the default): `average_reading` — the Average encoder is tanh with m = 128 in the authors'
  configuration, ReLU with m = 256 in the appendix (`compare_average_reading` also trains and analyses the other
  one, shown beside the default wherever a claim's verdict changes); `adversary_penalty` — the authors' code
  penalises each adversary's hinge with λ = 500 ("authors"), the paper's Eq. 1 with λ/k ("paper").
- The ε-max JSD is also stated relative to the largest JSD reachable on the instance (`reachable_max_jsd`: all
  attention on the least-attended token), which is below ln 2 for short inputs. For pair tasks (SNLI, bAbI)
  `context_zeroed_probs` is ŷ with the attended premise/story context set to 0 (the query kept): how much the
  prediction relies on the premise at all.
- Transformer (beyond the paper): the fine-tuned MiniLM SST-2 classifier (`fine_tune_preset("sst2", ...)`), its last
  block's [CLS] attention row averaged over heads; permutations/adversaries replace that row (per head) and recompute
  the last block from fixed value vectors; compared with |grad × input| (gradient of the predicted probability, no
  detaching), leave-one-out TVD and Chefer et al.'s relevance, on content tokens.
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

import lab
from lab.analysis import attention_tests as at
from lab import cache, stats
from lab.experiments import ExperimentError, merge_settings
from lab.data import load
from lab.models import rnn
from lab.results import Results
from lab.viz import token_heatmap_panels
from lab.viz.style import COLORBLIND

NOTEBOOK = "05_jain_wallace"
ENCODERS = ("lstm", "average")
ENCODER_LABELS = {"lstm": "BiLSTM", "average": "Average", "cnn": "CNN", "transformer": "Transformer",
                  "average:authors": "Average (tanh/128, authors)", "average:appendix": "Average (ReLU/256, appendix)"}
ADVERSARY_PENALTIES = ("authors", "paper")  # hinge weight per adversary: λ (authors' code) | λ/k (Eq. 1)


@dataclass(frozen=True)
class TaskSpec:
    data: str  # lab.data name
    label: str  # as in the paper
    train: str
    dev: str | None  # None: 10 % of the training split
    test: str
    kind: str  # classification | nli | qa
    embeddings: str = "minilm"  # minilm | random
    embed_dim: int = 384
    hidden: int = 128


TASKS: dict[str, TaskSpec] = {
    "sst_jw": TaskSpec("sst_jw", "SST", "train", "dev", "test", "classification"),
    "imdb": TaskSpec("imdb", "IMDB", "dev", None, "test", "classification"),
    "agnews_binary": TaskSpec("agnews_binary", "AG News", "validation", None, "test", "classification"),
    "snli": TaskSpec("snli", "SNLI", "validation", None, "test", "nli"),
    "babi1": TaskSpec("babi1", "bAbI 1", "train", None, "test", "qa", embeddings="random", embed_dim=50, hidden=30),
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
                  n_transformer=4,
                  transformer_profile="smoke", batch_size=32, use_cache=False),
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
              adversary_penalty="authors")


def settings(profile: str = "default", **overrides) -> dict:
    """The profile's sizes plus the shared protocol; per-dataset values are {dataset: v, None: default} dicts."""
    cfg = merge_settings(PROFILES, COMMON, profile, overrides)
    cfg["datasets"], cfg["encoders"] = tuple(cfg["datasets"]), tuple(cfg["encoders"])
    bad = [d for d in cfg["datasets"] if d not in TASKS]
    if bad:
        raise ExperimentError(f"unknown dataset(s) {bad}; choose from {', '.join(TASKS)}")
    bad = [e for e in cfg["encoders"] if e not in rnn.ENCODERS]
    if bad:
        raise ExperimentError(f"unknown encoder(s) {bad}; choose from {', '.join(rnn.ENCODERS)}")
    if cfg["attention"] not in rnn.ATTENTIONS:
        raise ExperimentError(f"attention must be one of {rnn.ATTENTIONS}, got {cfg['attention']!r}")
    if cfg["average_reading"] not in rnn.AVERAGE_READINGS:
        raise ExperimentError(f"average_reading must be one of {tuple(rnn.AVERAGE_READINGS)}, got "
                              f"{cfg['average_reading']!r}")
    if cfg["adversary_penalty"] not in ADVERSARY_PENALTIES:
        raise ExperimentError(f"adversary_penalty must be one of {ADVERSARY_PENALTIES}, got "
                              f"{cfg['adversary_penalty']!r}")
    return cfg


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


def threads():
    """Torch threads for this notebook's work: $LAB_NUM_THREADS, else 1 — the small recurrent matmuls gain little
    from a second thread and slow down badly when the cores are shared (oversubscription)."""
    from lab.models.training import torch_threads

    return torch_threads(int(os.environ.get("LAB_NUM_THREADS") or 1))


def per_dataset(value, name: str):
    """A setting that may be given per dataset ({name: v, None: default}) or once."""
    if isinstance(value, Mapping):
        return value.get(name, value.get(None))
    return value


# ---------------------------------------------------------------- data
@dataclass
class Task:
    spec: TaskSpec
    vocab: rnn.Vocab
    train: rnn.EncodedSet
    dev: rnn.EncodedSet
    test: rnn.EncodedSet
    label_names: tuple[str, ...]
    analysis_rows: list[int]  # rows of `test` analysed (τ, permutations); adversaries use the first n_adversarial
    n_adversarial: int

    @property
    def name(self) -> str:
        return self.spec.data

    @property
    def epsilon(self) -> float:
        return at.EPSILON["qa" if self.spec.kind == "qa" else "classification"]


def _sample(n_total: int, n: int | None, seed: int) -> list[int]:
    if n is None or n >= n_total:
        return list(range(n_total))
    return sorted(np.random.default_rng(seed).choice(n_total, size=n, replace=False).tolist())


def load_task(name: str, cfg: Mapping, tokenizer=None) -> Task:
    """Load, subsample and encode one dataset with a word-piece vocabulary built on its training texts."""
    spec = TASKS[name]
    tokenizer = tokenizer if tokenizer is not None else lab.models.load_tokenizer("minilm")
    seed = cfg["seed"]
    train_data = load(spec.data, spec.train)
    dev_data = load(spec.data, spec.dev) if spec.dev else None
    if dev_data is None:  # hold out 10 % of the training split
        rows = np.random.default_rng(seed).permutation(len(train_data))
        n_dev = max(1, len(train_data) // 10)
        dev_data = train_data.__class__(train_data.name, f"{spec.train}[dev]", train_data.label_names,
                                        [train_data[i] for i in sorted(rows[:n_dev])], train_data.source)
        train_data = train_data.__class__(train_data.name, spec.train, train_data.label_names,
                                          [train_data[i] for i in sorted(rows[n_dev:])], train_data.source)
    train_data = train_data.subset(cfg["train_size"], seed=seed)
    dev_data = dev_data.subset(cfg["dev_size"], seed=seed)
    test_data = load(spec.data, spec.test).subset(cfg["test_size"], seed=seed)
    texts = [e.text for e in train_data] + [e.text_pair for e in train_data if e.text_pair]
    vocab = rnn.Vocab.build(tokenizer, texts)
    max_len = per_dataset(cfg["max_length"], name)
    enc = {k: rnn.encode_examples(vocab, d, max_len) for k, d in
           (("train", train_data), ("dev", dev_data), ("test", test_data))}
    rows = _sample(len(enc["test"]), per_dataset(cfg["n_analysis"], name), seed)
    n_adv = per_dataset(cfg["n_adversarial"], name)
    return Task(spec, vocab, enc["train"], enc["dev"], enc["test"], tuple(train_data.label_names), rows,
                len(rows) if n_adv is None else min(n_adv, len(rows)))


def load_tasks(cfg: Mapping) -> dict[str, Task]:
    tokenizer = lab.models.load_tokenizer("minilm")
    return {name: load_task(name, cfg, tokenizer) for name in cfg["datasets"]}


# ---------------------------------------------------------------- models
def model_config(task: Task, encoder: str, cfg: Mapping) -> rnn.RNNConfig:
    """The model of one task; `encoder` may name an Average reading ("average:appendix"), else cfg's is used."""
    encoder, _, reading = encoder.partition(":")
    hidden = max(2, int(round(task.spec.hidden * cfg["hidden_scale"])))
    return rnn.RNNConfig(vocab_size=len(task.vocab), num_classes=len(task.label_names), encoder=encoder,
                         attention=cfg["attention"], embed_dim=task.spec.embed_dim, hidden=hidden,
                         pair=task.train.pair, average_reading=reading or cfg["average_reading"])


_TABLE: dict[str, torch.Tensor] = {}


def _embeddings(task: Task, cfg: rnn.RNNConfig, std: float | None) -> tuple[torch.Tensor | None, str]:
    """MiniLM's word-piece rows for the task's vocabulary, rescaled to an entry std of `std` (None: as stored)."""
    if task.spec.embeddings != "minilm":
        return None, "random"
    if "minilm" not in _TABLE:
        _TABLE["minilm"] = rnn.pretrained_table("minilm")
    table = _TABLE["minilm"]
    if table.shape[1] != cfg.embed_dim:
        raise ExperimentError(f"MiniLM embeddings are {table.shape[1]}-d but the model wants {cfg.embed_dim}")
    if std is not None:
        table = table * (std / float(table.std()))
    return task.vocab.embedding_matrix(table), f"minilm-word-embeddings-std{std}"


def train_model(task: Task, encoder: str, cfg: Mapping, force: bool = False) -> rnn.TrainedRNN:
    """Train (or load from the cache) the `encoder` model of one task."""
    mcfg = model_config(task, encoder, cfg)
    tc = rnn.TrainConfig(epochs=per_dataset(cfg["epochs"], task.name) or cfg["default_epochs"],
                         batch_size=cfg["batch_size"], lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                         seed=cfg["seed"])
    emb, emb_id = _embeddings(task, mcfg, cfg["embedding_std"])
    with threads():
        return rnn.train_cached(task.name, task.train, task.dev, task.vocab, mcfg, tc, emb, emb_id, force=force,
                                progress=cfg["progress"])


def train_models(tasks: Mapping[str, Task], cfg: Mapping) -> dict[tuple[str, str], rnn.TrainedRNN]:
    """Every (dataset, encoder) model, plus the other Average reading's (`other_average`) when compared."""
    encoders = [*cfg["encoders"], *filter(None, [other_average(cfg)])]
    return {(name, enc): train_model(task, enc, cfg) for name, task in tasks.items() for enc in encoders}


def test_performance(task: Task, trained: rnn.TrainedRNN) -> dict:
    """Test accuracy and macro-F1; `paper_metric` is the one Table 1 reports (F1 / micro-F1 = accuracy / accuracy)."""
    with threads():
        probs = rnn.predict_proba(trained.model, task.test)
    m = {**rnn.classification_metrics(probs, task.test.labels), "predicted": probs.argmax(-1)}
    m["paper_metric"] = m["macro_f1"] if task.spec.kind == "classification" else m["accuracy"]
    pred_gold = np.stack([m.pop("predicted"), np.asarray(task.test.labels)], 1)
    metric = _macro_f1 if task.spec.kind == "classification" else _accuracy
    m["paper_metric_interval"] = stats.bootstrap(pred_gold, metric)
    return m


def _accuracy(pred_gold: np.ndarray) -> float:
    return float(np.mean(pred_gold[:, 0] == pred_gold[:, 1]))


def _macro_f1(pred_gold: np.ndarray) -> float:
    """Macro-F1 of rows (predicted, gold), as `rnn.classification_metrics` computes it."""
    pred, gold = pred_gold[:, 0], pred_gold[:, 1]
    f1s = [2 * np.sum((pred == c) & (gold == c)) / (np.sum(pred == c) + np.sum(gold == c))
           for c in np.union1d(pred, gold)]
    return float(np.mean(f1s))


# ---------------------------------------------------------------- analyses
@dataclass
class Analysis:
    """Per-instance results of one (dataset, encoder): the lists are aligned with `tokens`."""

    dataset: str
    encoder: str
    label_names: tuple[str, ...]
    tokens: list[list[str]]
    attention: list[np.ndarray]  # shown attention over all positions of the instance
    importance: dict[str, list[np.ndarray]]  # "gradient", "loo" (+ "chefer") over the correlated positions
    correlated: list[np.ndarray]  # bool mask of positions used for τ (all tokens for RNNs; content for BERT)
    probs: np.ndarray  # [N, C]
    labels: np.ndarray
    tau: dict[str, at.Correlation]  # "attn_grad", "attn_loo", "grad_loo" (+ "chefer_grad", "chefer_loo")
    perm_median_tvd: np.ndarray
    max_attention: np.ndarray
    perm_alpha: list[np.ndarray]
    perm_probs: np.ndarray
    adv_eps_max_jsd: np.ndarray  # first n_adversarial instances
    adv_any_iterate: np.ndarray
    adv_alpha: list[np.ndarray]
    adv_probs: np.ndarray
    adv_feasible: np.ndarray  # [Na] whether any adversary met the ε constraint
    epsilon: float
    queries: list[str] | None = None
    timings: dict = field(default_factory=dict)
    context_zeroed_probs: np.ndarray | None = None  # [N, C] pair tasks: ŷ with the attended context set to 0

    @property
    def adv_reachable_max(self) -> np.ndarray:
        """Per adversarial instance, the largest JSD any attention could reach from α̂ (`reachable_max_jsd`)."""
        return np.asarray([reachable_max_jsd(a) for a in self.attention[:self.adv_eps_max_jsd.size]])

    @property
    def adv_relative_jsd(self) -> np.ndarray:
        """ε-max JSD / its reachable maximum per adversarial instance (empty when the attention is not kept)."""
        top = self.adv_reachable_max
        if top.size != self.adv_eps_max_jsd.size:
            return np.zeros(0)
        return self.adv_eps_max_jsd / np.maximum(top, 1e-12)

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(-1)

    @property
    def groups(self) -> list:
        """Table 2's row per instance: the predicted class, or "overall" for QA (bAbI)."""
        if self.dataset == "babi1":
            return ["overall"] * len(self.tokens)
        return self.predicted.tolist()

    def __len__(self) -> int:
        return len(self.tokens)


def reachable_max_jsd(alpha) -> float:
    """max over distributions q on α̂'s positions of JSD(q, α̂): JSD is convex in q, so a vertex attains it, and
    JSD(δ_j, α̂) = ln 2 − ½[(1 + a) ln(1 + a) − a ln a] with a = α̂_j decreases in a: all mass on the least-attended
    position. Equals ln 2 only when some α̂_j = 0."""
    a = float(np.min(np.asarray(alpha, float)))
    return float(at.LN2 - 0.5 * ((1 + a) * np.log1p(a) - (a * np.log(a) if a > 0 else 0.0)))


def _chunks(rows: Sequence[int], lengths: Sequence[int], size: int) -> list[list[int]]:
    """Length-sorted chunks of `rows` (less padding)."""
    order = sorted(rows, key=lambda r: lengths[r])
    return [order[i:i + size] for i in range(0, len(order), size)]


_PROTOCOL = ("chunk", "adv_chunk", "n_permutations", "k", "lam", "adv_steps", "adv_lr", "adversary_penalty")


def _memo(cfg: Mapping, prefix: str, compute, **key):
    """compute(), memoised in LAB_CACHE_DIR under `key`, the analysis protocol and the code (`use_cache`)."""
    return cache.memoize("jain_wallace", prefix, compute, enabled=bool(cfg.get("use_cache")),
                         protocol={k: cfg[k] for k in _PROTOCOL}, **key)


def _instances(task: Task) -> str:
    """Digest of the analysed test instances (token ids, queries, labels), the vocabulary and the adversary count."""
    data, rows = task.test, task.analysis_rows
    queries = [data.query_ids[r] for r in rows] if data.pair else None
    return cache.digest([task.vocab.digest(), [data.ids[r] for r in rows], queries,
                         [int(data.labels[r]) for r in rows], task.n_adversarial, task.epsilon])


def analyse_rnn(task: Task, trained: rnn.TrainedRNN, cfg: Mapping, seed: int | None = None,
                encoder: str | None = None) -> Analysis:
    """Algorithms 1–3 on the task's analysed test instances for one trained model: importance, τ and permutations
    in length-sorted chunks of `chunk` instances; adversaries for the first `n_adversarial` in chunks of
    `adv_chunk` (one optimisation per chunk: every instance and all k adversaries together). With `use_cache` the
    analysis is memoised per model weights, instances, protocol and code (timings: those of the computing run).
    `encoder` names the analysis (default: the model's encoder; "average:appendix" for the other reading)."""
    seed = cfg["seed"] if seed is None else seed
    encoder = encoder or trained.config.encoder
    return _memo(cfg, f"rnn-{task.name}-{encoder}", functools.partial(_analyse_rnn, task, trained, cfg, seed,
                                                                      encoder),
                 model=cache.digest(trained.model), instances=_instances(task), seed=seed)


def _analyse_rnn(task: Task, trained: rnn.TrainedRNN, cfg: Mapping, seed: int, encoder: str) -> Analysis:
    model, data = trained.model, task.test
    rows = task.analysis_rows
    lengths = [len(s) for s in data.ids]
    out: dict[int, dict] = {}
    t = {"gradient": 0.0, "loo": 0.0, "permutation": 0.0, "adversarial": 0.0}
    label = f"{task.spec.label}/{ENCODER_LABELS[encoder]}"
    with threads():
        for chunk in _progress(_chunks(rows, lengths, cfg["chunk"]), cfg["progress"], label):
            batch = rnn.make_batch(data, chunk)
            start = time.perf_counter()
            grad = at.gradient_importance(model, batch)
            t["gradient"] += time.perf_counter() - start
            start = time.perf_counter()
            loo = at.leave_one_out_tvd(model, batch)
            t["loo"] += time.perf_counter() - start
            view = at.rnn_view(model, batch)
            perm = at.permutation_test(view, cfg["n_permutations"], seed=seed)
            t["permutation"] += perm.seconds
            zeroed = context_zeroed(view) if data.pair else None
            for i, r in enumerate(chunk):
                n = int(batch.lengths[i])
                out[r] = {"alpha": view.shown[i, :n].numpy(), "gradient": grad[i, :n].numpy(),
                          **({} if zeroed is None else {"zeroed_probs": zeroed[i].numpy()}),
                          "loo": loo[i, :n].numpy(), "probs": view.probs[i].numpy(),
                          "perm_median": float(perm.median_tvd[i]), "max_attention": float(perm.max_attention[i]),
                          "perm_alpha": perm.median_alpha[i, :n].numpy(), "perm_probs": perm.median_probs[i].numpy()}
        adv_rows = rows[:task.n_adversarial]
        for chunk in _progress(_chunks(adv_rows, lengths, cfg["adv_chunk"]), cfg["progress"], f"{label} adversary"):
            batch = rnn.make_batch(data, chunk)
            adv = at.adversarial_attention(at.rnn_view(model, batch), k=cfg["k"], epsilon=task.epsilon,
                                           lam=adversary_lambda(cfg), steps=cfg["adv_steps"], lr=cfg["adv_lr"],
                                           seed=seed)
            t["adversarial"] += adv.seconds
            for j, r in enumerate(chunk):
                out[r].update(_adversarial_record(adv, j, int(batch.lengths[j])))
    tokens = [task.vocab.tokens(data.ids[r]) for r in rows]
    queries = None
    if data.pair:
        queries = [" ".join(task.vocab.tokens(data.query_ids[r])).replace(" ##", "") for r in rows]
    return _assemble(task.name, encoder, task.label_names, tokens, [out[r] for r in rows],
                     [np.ones(len(x), bool) for x in tokens], np.asarray([data.labels[r] for r in rows]),
                     task.epsilon, t, queries)


def context_zeroed(view: at.AttentionView) -> torch.Tensor:
    """ŷ [B, C] with the attended premise/story context Σ_t α_t h_t set to 0 and the query kept (pair models): the
    premise-reliance check — if ŷ hardly moves, the attention over the premise cannot matter either."""
    with torch.no_grad():
        return view.decode(torch.zeros_like(view.alpha)[:, None])[:, 0]


def _adversarial_record(adv: at.AdversarialResult, j: int, n: int) -> dict:
    return {"adv_jsd": float(adv.eps_max_jsd[j]), "adv_any": float(adv.any_iterate_eps_max_jsd[j]),
            "adv_alpha": adv.best_alpha[j, :n].float().numpy(), "adv_probs": adv.best_probs[j].float().numpy(),
            "adv_feasible": bool((adv.tvd[j] <= adv.epsilon).any())}


def _assemble(dataset, encoder, label_names, tokens, recs, correlated, labels, epsilon, timings, queries=None,
              extra: Mapping[str, list] | None = None) -> Analysis:
    """Analysis from per-instance records (in instance order); computes the τ's on the correlated positions."""
    attention = [r["alpha"] for r in recs]
    importance = {"gradient": [r["gradient"] for r in recs], "loo": [r["loo"] for r in recs], **(extra or {})}
    pick = lambda xs: [np.asarray(x)[m] for x, m in zip(xs, correlated)]  # noqa: E731
    attn = pick(attention)
    tau = {"attn_grad": at.kendall_per_instance(attn, pick(importance["gradient"])),
           "attn_loo": at.kendall_per_instance(attn, pick(importance["loo"])),
           "grad_loo": at.kendall_per_instance(pick(importance["gradient"]), pick(importance["loo"]))}
    for name in (extra or {}):
        tau[f"{name}_grad"] = at.kendall_per_instance(pick(importance[name]), pick(importance["gradient"]))
        tau[f"{name}_loo"] = at.kendall_per_instance(pick(importance[name]), pick(importance["loo"]))
    adv = [r for r in recs if "adv_jsd" in r]
    n = max(len(recs), 1)
    timings = {**{f"{k}_s_per_instance": v / n for k, v in timings.items() if k != "adversarial"},
               "adversarial_s_per_instance": timings.get("adversarial", 0.0) / max(len(adv), 1),
               "n": len(recs), "n_adversarial": len(adv)}
    return Analysis(
        dataset=dataset, encoder=encoder, label_names=tuple(label_names), tokens=tokens, attention=attention,
        importance=importance, correlated=correlated, probs=np.stack([r["probs"] for r in recs]),
        labels=np.asarray(labels), tau=tau, perm_median_tvd=np.asarray([r["perm_median"] for r in recs]),
        max_attention=np.asarray([r["max_attention"] for r in recs]), perm_alpha=[r["perm_alpha"] for r in recs],
        perm_probs=np.stack([r["perm_probs"] for r in recs]),
        adv_eps_max_jsd=np.asarray([r["adv_jsd"] for r in adv]),
        adv_any_iterate=np.asarray([r["adv_any"] for r in adv]),
        adv_alpha=[r["adv_alpha"] for r in adv],
        adv_probs=np.stack([r["adv_probs"] for r in adv]) if adv else np.zeros((0, len(label_names))),
        adv_feasible=np.asarray([r["adv_feasible"] for r in adv], bool), epsilon=epsilon, queries=queries,
        timings=timings, context_zeroed_probs=np.stack([r["zeroed_probs"] for r in recs])
        if recs and "zeroed_probs" in recs[0] else None)


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False)


def analyse_models(tasks: Mapping[str, Task], models: Mapping, cfg: Mapping) -> dict[tuple[str, str], Analysis]:
    return {key: analyse_rnn(tasks[key[0]], trained, cfg, encoder=key[1]) for key, trained in models.items()}


# ---------------------------------------------------------------- the Transformer (beyond the paper)
def analyse_transformer(task: Task, cfg: Mapping, fine_tuned=None) -> Analysis:
    """The three analyses on the fine-tuned MiniLM SST-2 classifier, on the first `n_transformer` analysed SST
    test sentences: last-layer [CLS] attention (head mean) vs |grad × input|, leave-one-out and Chefer relevance;
    permutations and adversaries of the [CLS] row with the last block's value vectors fixed."""
    if fine_tuned is None:
        from lab.models.training import fine_tune_preset

        fine_tuned = fine_tune_preset("sst2", cfg["transformer_profile"], seed=cfg["seed"])
    return _memo(cfg, f"transformer-{task.name}", functools.partial(_analyse_transformer, task, cfg, fine_tuned),
                 model=cache.digest(fine_tuned.model), instances=_instances(task), n=cfg["n_transformer"],
                 test_size=cfg["test_size"], seed=cfg["seed"])


def _analyse_transformer(task: Task, cfg: Mapping, fine_tuned) -> Analysis:
    model, tok = fine_tuned.model, fine_tuned.tokenizer
    dataset = load(task.spec.data, task.spec.test).subset(cfg["test_size"], seed=cfg["seed"])
    rows = [task.test.index[r] for r in task.analysis_rows[:cfg["n_transformer"]]]
    texts = [dataset[r].text for r in rows]
    labels = [dataset[r].label for r in rows]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    recs: dict[int, dict] = {}
    t = {"gradient": 0.0, "loo": 0.0, "chefer": 0.0, "permutation": 0.0, "adversarial": 0.0}
    size = min(cfg["chunk"], 32)
    with threads():
        for start in _progress(range(0, len(order), size), cfg["progress"], "SST/Transformer"):
            idx = order[start:start + size]
            inputs = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=128, return_tensors="pt")
            for i, rec in zip(idx, _transformer_chunk(model, tok, inputs, cfg, t)):
                recs[i] = rec
    ordered = [recs[i] for i in range(len(texts))]
    return _assemble("sst_jw", "transformer", fine_tuned.label_names or ("negative", "positive"),
                     [r.pop("tokens") for r in ordered], ordered, [r.pop("content") for r in ordered], labels,
                     at.EPSILON["classification"], t, extra={"chefer": [r["chefer"] for r in ordered]})


def _transformer_chunk(model, tok, inputs, cfg, t: dict) -> list[dict]:
    valid = inputs["attention_mask"].bool()
    scores = {}
    for name, method, params in (("gradient", "grad_x_input", {"variant": "abs_sum", "gradient_of": "probability"}),
                                 ("loo", "leave_one_out", {}), ("chefer", "chefer", {})):
        start = time.perf_counter()
        exp = lab.explain(model, inputs, method, **params)
        t[name] += time.perf_counter() - start
        scores[name] = exp.scores.detach().float()
        special = exp.special
    view = at.transformer_view(model, inputs, tok)
    perm = at.permutation_test(view, cfg["n_permutations"], seed=cfg["seed"])
    t["permutation"] += perm.seconds
    adv = at.adversarial_attention(view, k=cfg["k"], epsilon=at.EPSILON["classification"], lam=adversary_lambda(cfg),
                                   steps=cfg["adv_steps"], lr=cfg["adv_lr"], seed=cfg["seed"])
    t["adversarial"] += adv.seconds
    out = []
    for i in range(valid.shape[0]):
        n = int(valid[i].sum())
        out.append({"tokens": view.tokens[i][:n], "content": (~special[i, :n]).numpy(),
                    "alpha": view.shown[i, :n].float().numpy(), "probs": view.probs[i].float().numpy(),
                    **{k: v[i, :n].numpy() for k, v in scores.items()},
                    "perm_median": float(perm.median_tvd[i]), "max_attention": float(perm.max_attention[i]),
                    "perm_alpha": perm.median_alpha[i, :n].float().numpy(), "perm_probs": perm.median_probs[i].numpy(),
                    **_adversarial_record(adv, i, n)})
    return out


# ---------------------------------------------------------------- summaries and tables
def tau_summary(a: Analysis, level: float = 0.05) -> dict:
    """{measure: {group: {mean, std, sig_frac, n}}} for every τ of an analysis (Table 2 layout)."""
    return {name: at.summarise_tau(corr, a.groups, level) for name, corr in a.tau.items()}


def mean_tau(a: Analysis, measure: str) -> float:
    vals = np.asarray(a.tau[measure].statistic, float)
    return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")


def performance_rows(tasks: Mapping[str, Task], models: Mapping) -> dict:
    """Table 1: test performance per dataset and encoder (paper: BiLSTM only)."""
    rows = {}
    for name, task in tasks.items():
        row = {}
        for enc in ENCODERS:
            if (name, enc) in models:
                m = test_performance(task, models[name, enc])
                paper = PAPER_TABLE1.get(name) if enc == "lstm" else None
                iv = m["paper_metric_interval"]
                row[f"test_{enc}"] = (paper, round(m["paper_metric"], 4))
                row[f"test_{enc}_ci_low"] = (None, round(iv.low, 4))
                row[f"test_{enc}_ci_high"] = (None, round(iv.high, 4))
                row[f"accuracy_{enc}"] = (None, round(m["accuracy"], 4))
        row["n_train"] = (None, len(task.train))
        row["n_test"] = (None, len(task.test))
        rows[task.spec.label] = row
    return rows


def paper_class(dataset: str, group, label_names: Sequence[str]):
    """The paper's Table 2 key for our predicted class `group` (our label index; "overall" for QA)."""
    order = PAPER_CLASS_ORDER.get(dataset)
    if order is None or group == "overall":
        return group
    return order.index(label_names[group])


def _group_label(dataset: str, group, label_names: Sequence[str]) -> str:
    if group == "overall":
        return "overall"
    return f"class {group}" + (f" ({label_names[group]})" if dataset in PAPER_CLASS_ORDER else "")


def table2_rows(analyses: Mapping[tuple[str, str], Analysis], level: float = 0.05) -> dict:
    """Table 2: mean τ, std and Sig. Frac. per dataset and predicted class, paper values alongside (matched by
    class name where the paper's class order differs from ours: SNLI)."""
    rows: dict[str, dict] = {}
    for (name, enc), a in analyses.items():
        if enc not in ("lstm", "average"):
            continue
        summary = tau_summary(a, level)
        for group in sorted(set(a.groups), key=str):
            key = f"{TASKS[name].label} / {_group_label(name, group, a.label_names)}"
            paper = PAPER_TABLE2.get(name, {}).get(paper_class(name, group, a.label_names))
            row = rows.setdefault(key, {})
            for measure, pcol, pidx in (("attn_grad", "tau_g", 0 if enc == "lstm" else 1),
                                        ("attn_loo", "tau_loo", 2 if enc == "lstm" else None)):
                s = summary[measure].get(group)
                if s is None:
                    continue
                p = paper[pidx] if paper is not None and pidx is not None else (None, None, None)
                col = f"{pcol}_{'bilstm' if enc == 'lstm' else 'average'}"
                row[col] = (p[0], round(s["mean"], 3))
                row[f"{col}_std"] = (p[1], round(s["std"], 3))
                row[f"{col}_sig"] = (p[2], round(s["sig_frac"], 3))
                row[f"n_{enc}"] = (None, s["n"])
    return rows


def tau_rows(analyses: Mapping) -> dict:
    """Mean τ per dataset and encoder with its 95 % bootstrap interval over the analysed instances."""
    rows = {}
    for (name, enc), a in analyses.items():
        row = {}
        for measure in ("attn_grad", "attn_loo", "grad_loo"):
            vals = _finite(_tau(a, measure))[0]
            if vals.size:
                iv = stats.bootstrap(vals)
                row[measure] = (None, round(iv.estimate, 3))
                row[f"{measure}_ci_low"] = (None, round(iv.low, 3))
                row[f"{measure}_ci_high"] = (None, round(iv.high, 3))
        rows[f"{TASKS[name].label} / {ENCODER_LABELS[enc]}"] = {**row, "n": (None, len(a))}
    return rows


def permutation_rows(analyses: Mapping) -> dict:
    rows = {}
    for (name, enc), a in analyses.items():
        med = a.perm_median_tvd
        rows[f"{TASKS[name].label} / {ENCODER_LABELS[enc]}"] = {
            "median_of_median_tvd": (None, round(float(np.median(med)), 4)),
            "frac_median_tvd_below_0.01": (None, round(float((med < 0.01).mean()), 3)),
            "frac_median_tvd_below_0.05": (None, round(float((med < 0.05).mean()), 3)),
            "mean_max_attention": (None, round(float(a.max_attention.mean()), 3)),
            "ms_per_instance": (None, round(1000 * a.timings["permutation_s_per_instance"], 2)),
            "n": (None, len(a))}
    return rows


def adversarial_rows(analyses: Mapping) -> dict:
    rows = {}
    for (name, enc), a in analyses.items():
        jsd = a.adv_eps_max_jsd
        if jsd.size == 0:
            continue
        corr = at.kendall_per_instance([jsd], [a.max_attention[:jsd.size]])
        rows[f"{TASKS[name].label} / {ENCODER_LABELS[enc]}"] = {
            "epsilon": (None, a.epsilon),
            "mean_eps_max_jsd": (None, round(float(jsd.mean()), 3)),
            "median_eps_max_jsd": (None, round(float(np.median(jsd)), 3)),
            "frac_jsd_above_0.6": (None, round(float((jsd > 0.6).mean()), 3)),
            **_relative_cells(a),
            "frac_feasible": (None, round(float(a.adv_feasible.mean()), 3)),
            "mean_any_iterate_jsd": (None, round(float(a.adv_any_iterate.mean()), 3)),
            "tau_jsd_vs_max_attention": (None, None if not np.isfinite(corr.statistic[0])
                                         else round(float(corr.statistic[0]), 3)),
            "s_per_instance": (None, round(a.timings["adversarial_s_per_instance"], 3)),
            "n": (None, int(jsd.size))}
    return rows


RELATIVE_JSD = 0.6 / at.LN2  # "near the bound": the absolute criterion JSD > 0.6 when the reachable maximum is ln 2


def _relative_cells(a: Analysis) -> dict:
    rel = a.adv_relative_jsd
    if not rel.size:
        return {}
    return {"median_reachable_max_jsd": (None, round(float(np.median(a.adv_reachable_max)), 3)),
            "median_relative_jsd": (None, round(float(np.median(rel)), 3)),
            "frac_relative_jsd_above_0.87": (None, round(float((rel > RELATIVE_JSD).mean()), 3))}


def premise_rows(analyses: Mapping) -> dict:
    """Premise reliance (pair tasks): how often the prediction changes, and by how much (TVD), when the attended
    premise/story context is zeroed; accuracy on the analysed instances with and without it. 95 % intervals."""
    rows = {}
    for (name, enc), a in analyses.items():
        if a.context_zeroed_probs is None:
            continue
        changed = (a.context_zeroed_probs.argmax(-1) != a.predicted).astype(float)
        moved = 0.5 * np.abs(a.context_zeroed_probs - a.probs).sum(-1)
        row = {}
        for col, iv in (("changed_prediction", stats.bootstrap(changed)), ("mean_tvd", stats.bootstrap(moved))):
            row.update({col: (None, round(iv.estimate, 3)), f"{col}_ci_low": (None, round(iv.low, 3)),
                        f"{col}_ci_high": (None, round(iv.high, 3))})
        row["accuracy"] = (None, round(float((a.predicted == a.labels).mean()), 3))
        row["accuracy_zeroed"] = (None, round(float((a.context_zeroed_probs.argmax(-1) == a.labels).mean()), 3))
        rows[f"{TASKS[name].label} / {ENCODER_LABELS[enc]}"] = {**row, "n": (None, len(a))}
    return rows


def transformer_rows(tr: Analysis, analyses: Mapping) -> dict:
    """Agreement on SST: BiLSTM/Average attention vs the Transformer's attention and Chefer's relevance."""
    rows = {}
    for key, label in ((("sst_jw", "lstm"), "BiLSTM attention"), (("sst_jw", "average"), "Average attention")):
        if key in analyses:
            a = analyses[key]
            rows[label] = {"tau_vs_grad": (None, round(mean_tau(a, "attn_grad"), 3)),
                           "tau_vs_loo": (None, round(mean_tau(a, "attn_loo"), 3)),
                           "tau_grad_vs_loo": (None, round(mean_tau(a, "grad_loo"), 3)),
                           "median_perm_tvd": (None, round(float(np.median(a.perm_median_tvd)), 4)),
                           "mean_eps_max_jsd": (None, round(float(a.adv_eps_max_jsd.mean()), 3))}
    rows["Transformer attention (last layer, [CLS], head mean)"] = {
        "tau_vs_grad": (None, round(mean_tau(tr, "attn_grad"), 3)),
        "tau_vs_loo": (None, round(mean_tau(tr, "attn_loo"), 3)),
        "tau_grad_vs_loo": (None, round(mean_tau(tr, "grad_loo"), 3)),
        "median_perm_tvd": (None, round(float(np.median(tr.perm_median_tvd)), 4)),
        "mean_eps_max_jsd": (None, round(float(tr.adv_eps_max_jsd.mean()), 3))}
    rows["Transformer Chefer relevance"] = {"tau_vs_grad": (None, round(mean_tau(tr, "chefer_grad"), 3)),
                                            "tau_vs_loo": (None, round(mean_tau(tr, "chefer_loo"), 3))}
    return rows


def timing_rows(models: Mapping, analyses: Mapping) -> dict:
    rows = {}
    for (name, enc), a in analyses.items():
        trained = models.get((name, enc))
        row = {"train_s": (None, trained.metrics.get("train_seconds") if trained is not None else None)}
        for k, v in a.timings.items():
            if k.endswith("_s_per_instance"):
                row[k.replace("_s_per_instance", "_ms")] = (None, round(1000 * v, 2))
        rows[f"{TASKS[name].label} / {ENCODER_LABELS[enc]}"] = row
    return rows


# ---------------------------------------------------------------- claims (paired bootstrap intervals)
def _tau(a: Analysis, measure: str) -> np.ndarray:
    return np.asarray(a.tau[measure].statistic, float)


def _finite(*cols: np.ndarray) -> list[np.ndarray]:
    """The columns restricted to the rows where every column is finite (undefined τ are left out)."""
    keep = np.logical_and.reduce([np.isfinite(c) for c in cols])
    return [c[keep] for c in cols]


def mean_of_means(per_dataset: Sequence[np.ndarray], seed: int = 0) -> stats.Interval | None:
    """Interval of the mean over datasets of each dataset's mean value (NaN left out); instances are resampled
    from the pooled rows, each keeping its dataset. None when no dataset has a finite value."""
    parts = [v[np.isfinite(v)] for v in map(np.asarray, per_dataset)]
    parts = [v for v in parts if v.size]
    if not parts:
        return None
    rows = np.concatenate([np.stack([v, np.full(v.size, g)], 1) for g, v in enumerate(parts)])

    def statistic(r):
        return float(np.mean([r[r[:, 1] == g, 0].mean() for g in np.unique(r[:, 1])]))

    return stats.bootstrap(rows, statistic, seed=seed)


def _centred(iv: stats.Interval, low: float, high: float) -> stats.Interval:
    """The interval shifted by the centre of [low, high]: 'within low..high' becomes 'within ±(high-low)/2'."""
    c = (low + high) / 2
    return replace(iv, estimate=iv.estimate - c, low=iv.low - c, high=iv.high - c)


def _range_claim(text: str, iv: stats.Interval | None, low: float, high: float, detail: str) -> dict:
    if iv is None:
        return {"claim": text, "detail": detail + " (no finite value)"}
    return {"claim": text, "interval": _centred(iv, low, high), "margin": (high - low) / 2, "kind": "within",
            "detail": f"{detail}; mean {iv} (interval shifted by the range's centre {(low + high) / 2:g})"}


def _parts(text: str, parts: Mapping[str, tuple[stats.Interval, float, str]], rule=stats.combine) -> dict:
    """A claim made of per-dataset parts {label: (interval, margin, kind)}, decided by `rule` over their verdicts."""
    verdicts = {k: stats.decide(iv, m, kind) for k, (iv, m, kind) in parts.items()}
    detail = "; ".join(f"{k}: {iv} → {verdicts[k]}" for k, (iv, _, _) in parts.items())
    return {"claim": text, "verdict": rule(list(verdicts.values())) if verdicts else None, "detail": detail}


def _kendall_rows(rows: np.ndarray) -> float:
    return float(at.kendall_per_instance([rows[:, 0]], [rows[:, 1]]).statistic[0])


def _by_encoder(analyses: Mapping, enc: str, skip=()) -> dict[str, Analysis]:
    return {TASKS[n].label: a for (n, e), a in analyses.items() if e == enc and n not in skip}


def _pairs(analyses: Mapping) -> dict[str, tuple[Analysis, Analysis]]:
    """{dataset: (BiLSTM, Average)} analyses of the same instances."""
    return {TASKS[n].label: (a, analyses[n, "average"]) for (n, e), a in analyses.items()
            if e == "lstm" and (n, "average") in analyses}


def _gap_claim(text: str, analyses: Mapping, first: str, second: str, margin: float) -> dict:
    """Mean over datasets (BiLSTM, SNLI excepted) of the per-instance τ(first) − τ(second) exceeds `margin`."""
    per = {k: np.subtract(*_finite(_tau(a, first), _tau(a, second)))
           for k, a in _by_encoder(analyses, "lstm", skip=("snli",)).items()}
    iv = mean_of_means(list(per.values()))
    detail = ", ".join(f"{k}: {v.mean():.3f}" for k, v in per.items() if v.size)
    return {"claim": text, "detail": detail} if iv is None else \
        {"claim": text, "interval": iv, "margin": margin, "kind": "greater", "detail": "per dataset " + detail}


def correlation_claims(analyses: Mapping) -> list[dict]:
    """Table 2 and Figs. 3–5: ranges of mean τ_g and paired gaps, each decided by a bootstrap interval."""
    out = []
    for enc, name, low, high, what in (("lstm", "BiLSTM", 0.30, 0.45, "modest"),
                                       ("average", "Average-encoder", 0.65, 0.80, "high")):
        per = _by_encoder(analyses, enc)
        if per:
            iv = mean_of_means([_tau(a, "attn_grad") for a in per.values()])
            detail = ", ".join(f"{k}: {mean_tau(a, 'attn_grad'):.3f}" for k, a in per.items())
            out.append(_range_claim(f"{name} attention–gradient τ_g is {what}: mean over datasets within "
                                    f"{low:.2f}–{high:.2f}", iv, low, high, detail))
    pairs = _pairs(analyses)
    if pairs:
        out.append(_parts("τ_g is higher for the Average encoder than for the BiLSTM on every dataset (paired over "
                          "instances)", {k: (stats.paired_difference(*_finite(_tau(av, "attn_grad"),
                                                                              _tau(ls, "attn_grad"))), 0.0, "greater")
                                         for k, (ls, av) in pairs.items()}))
    out.append(_gap_claim("Fig. 3: τ(gradient, LOO) exceeds τ(attention, LOO) by > 0.2 on average (BiLSTM, SNLI "
                          "excepted)", analyses, "grad_loo", "attn_loo", 0.2))
    out.append(_gap_claim("Fig. 4: τ(gradient, LOO) exceeds τ(attention, gradient) by ≈ 0.25 on average (> 0.2; "
                          "BiLSTM, SNLI excepted)", analyses, "grad_loo", "attn_grad", 0.2))
    if pairs:
        diffs = [np.subtract(*_finite(_tau(av, "attn_loo"), _tau(ls, "attn_loo"))) for ls, av in pairs.values()]
        iv = mean_of_means(diffs)
        if iv is not None:
            out.append({"claim": "Fig. 5: attention–LOO τ is higher for Average than BiLSTM by ≈ 0.375 on average "
                        "(> 0.25; paired over instances)", "interval": iv, "margin": 0.25, "kind": "greater",
                        "detail": ", ".join(f"{k}: {d.mean():.3f}" for k, d in zip(pairs, diffs) if d.size)})
    return out


def counterfactual_claims(cfg: Mapping, analyses: Mapping) -> list[dict]:
    """Figs. 6–8: permutation and adversarial attention, per dataset, combined over datasets."""
    out = []
    for enc in cfg["encoders"]:
        per = _by_encoder(analyses, enc)
        parts = {}
        for k, a in per.items():
            peaked = a.max_attention >= np.median(a.max_attention)
            rate = float((a.perm_median_tvd[peaked] < 0.05).mean())
            parts[k] = (stats.proportion(rate, int(peaked.sum())), 0.25, "greater")
        if parts:
            out.append(_parts(f"Fig. 6: there exist many instances with small Δŷ^med despite large attention "
                              f"({ENCODER_LABELS[enc]}): among the more peaked half (max α̂ ≥ its median), at least "
                              f"a quarter have Δŷ^med < 0.05, on every dataset (interval on the proportion)", parts))
    for enc in cfg["encoders"]:
        parts = {k: (stats.bootstrap((a.adv_eps_max_jsd > 0.6).astype(float)), 0.5, "greater")
                 for k, a in _by_encoder(analyses, enc).items() if a.adv_eps_max_jsd.size}
        if parts:
            out.append(_parts(f"Fig. 7: adversarial attention is often near the JSD bound ln 2 ≈ 0.69 "
                              f"({ENCODER_LABELS[enc]}): ε-max JSD > 0.6 for more than half the instances on every "
                              "dataset", parts))
        parts = {k: (stats.proportion(float((a.adv_relative_jsd > RELATIVE_JSD).mean()), a.adv_relative_jsd.size),
                     0.5, "greater") for k, a in _by_encoder(analyses, enc).items() if a.adv_relative_jsd.size}
        if parts:
            out.append(_parts(f"Fig. 7, relative to each instance's reachable maximum ({ENCODER_LABELS[enc]}): ε-max "
                              f"JSD above {RELATIVE_JSD:.0%} of the largest JSD any attention could reach from α̂ "
                              "for more than half the instances on every dataset", parts))
    parts = {k: (stats.bootstrap(np.stack([a.adv_eps_max_jsd, a.max_attention[:a.adv_eps_max_jsd.size]], 1),
                                 _kendall_rows), 0.0, "less")
             for k, a in _by_encoder(analyses, "lstm").items() if a.adv_eps_max_jsd.size > 2}
    if parts:
        out.append(_parts("Fig. 8: ε-max JSD decreases (weakly) with the maximum attention: Kendall τ < 0 on most "
                          "datasets (BiLSTM)", parts, rule=stats.majority))
    return out


def performance_claims(perf: Mapping) -> list[dict]:
    """Table 1: the BiLSTM's test performance within 0.05 of the paper's (interval over test examples)."""
    out = []
    for name in ("sst_jw", "babi1"):
        row = perf.get(TASKS[name].label, {})
        if "test_lstm" in row and "test_lstm_ci_low" in row:
            paper, ours = row["test_lstm"]
            iv = stats.Interval(ours - paper, row["test_lstm_ci_low"][1] - paper,
                                row["test_lstm_ci_high"][1] - paper, row["n_test"][1])
            out.append({"claim": f"Table 1: the BiLSTM's test performance on {TASKS[name].label} is within 0.05 of "
                        "the paper's", "interval": iv, "margin": 0.05, "kind": "within",
                        "detail": f"ours {ours:.3f} vs paper {paper:.2f} (interval of ours − paper)"})
    return out


def verdict_of(claim: Mapping) -> str | None:
    """The verdict a claim dict will get from `Results.add_claim` (before the smoke rule)."""
    if "interval" in claim:
        return stats.decide(claim["interval"], claim["margin"], claim["kind"])
    return claim.get("verdict")


def reading_comparison(cfg: Mapping, analyses: Mapping, main: Sequence[dict]) -> tuple[dict, list[dict]]:
    """The Average claims under both readings (`average_reading` and `other_average`); `main`: the claims of the
    default reading. Returns table rows {claim: verdict per reading} and the other reading's claims whose verdict
    differs from the default's (to be shown beside them)."""
    alt = other_average(cfg)
    if alt is None or not any(e == alt for _, e in analyses):
        return {}, []
    swapped = {(n, "average" if e == alt else e): a for (n, e), a in analyses.items() if e != "average"}
    average_only = {k: a for k, a in swapped.items() if k[1] == "average"}
    other = {c["claim"]: c for c in correlation_claims(swapped)
             + counterfactual_claims({**cfg, "encoders": ("average",)}, average_only)}
    rows, differ = {}, []
    for c in main:
        o = other.get(c["claim"])
        if o is None or "Average" not in c["claim"]:
            continue
        v, w = verdict_of(c), verdict_of(o)
        rows[c["claim"]] = {cfg["average_reading"]: v, alt.partition(":")[2]: w}
        if v != w:
            differ.append({**o, "claim": f"{o['claim']} — {ENCODER_LABELS[alt]} reading"})
    return rows, differ


def claims(cfg: Mapping, perf: Mapping, analyses: Mapping, tr: Analysis | None) -> list[dict]:
    """The paper's claims on our numbers, each a dict of `Results.add_claim` arguments (claim, detail, and an
    interval with its margin and kind, or a verdict combined from per-dataset intervals); the other Average
    reading's claims follow where their verdict differs."""
    return claims_and_readings(cfg, perf, analyses, tr)[0]


def claims_and_readings(cfg: Mapping, perf: Mapping, analyses: Mapping, tr: Analysis | None) -> tuple[list, dict]:
    """`claims` and the rows of the Average-reading table (`reading_comparison`), computed once."""
    main = correlation_claims(analyses) + counterfactual_claims(cfg, analyses)
    rows, differ = reading_comparison(cfg, analyses, main)
    out = main + differ + performance_claims(perf)  # the other reading's claims right after the paper's
    if tr is not None and ("sst_jw", "lstm") in analyses:
        out += transformer_claims(tr, analyses["sst_jw", "lstm"])
    return out, rows


def transformer_claims(tr: Analysis, lstm: Analysis) -> list[dict]:
    """Beyond the paper: the same questions for the Transformer (SST; its instances are the first len(tr) of the
    BiLSTM's, so τ differences are paired)."""
    n = min(len(tr), len(lstm))
    t_attn, l_attn = _finite(_tau(tr, "attn_loo")[:n], _tau(lstm, "attn_loo")[:n])
    chef, attn = _finite(_tau(tr, "chefer_loo"), _tau(tr, "attn_loo"))
    out = [
        {"claim": "Beyond: the Transformer's last-layer [CLS] attention agrees with LOO no better than the BiLSTM's "
                  "attention (paired difference of τ_loo < 0.05, SST)",
         "interval": stats.paired_difference(t_attn, l_attn), "margin": 0.05, "kind": "less",
         "detail": f"Transformer {t_attn.mean():.3f} vs BiLSTM {l_attn.mean():.3f}"},
        {"claim": "Beyond: Chefer's relevance agrees with LOO better than the Transformer's raw attention (paired "
                  "τ_loo, SST)", "interval": stats.paired_difference(chef, attn), "margin": 0.0, "kind": "greater",
         "detail": f"Chefer {chef.mean():.3f} vs attention {attn.mean():.3f}"},
        {"claim": "Beyond: permuting the Transformer's last-layer [CLS] attention rarely changes the output (median "
                  "Δŷ^med < 0.05)", "interval": stats.bootstrap(tr.perm_median_tvd, np.median), "margin": 0.05,
         "kind": "less", "detail": "median over instances"}]
    if tr.adv_eps_max_jsd.size:
        out.append({"claim": "Beyond: adversarial last-layer [CLS] attention with ε-max JSD > 0.6 exists for more "
                             "than half the SST sentences", "interval": stats.bootstrap(
                                 (tr.adv_eps_max_jsd > 0.6).astype(float)), "margin": 0.5, "kind": "greater",
                    "detail": "fraction of sentences"})
    return out


def start_results(cfg: Mapping, tasks: Mapping[str, Task], meta: Mapping | None = None) -> Results:
    """The notebook's Results, with the run's settings in `meta`; tables and claims are added as they are computed."""
    return Results(NOTEBOOK, cfg["profile"], meta={
        "datasets": list(tasks), "encoders": list(cfg["encoders"]), "attention": cfg["attention"],
        "average_reading": cfg["average_reading"], "adversary_penalty": cfg["adversary_penalty"],
        "embeddings": "MiniLM-L6 word-piece table (384-d); bAbI: random 50-d",
        "n_analysis": {TASKS[n].label: len(t.analysis_rows) for n, t in tasks.items()},
        "n_adversarial": {TASKS[n].label: t.n_adversarial for n, t in tasks.items()},
        "significance_level": cfg["level"], "seed": cfg["seed"], **(meta or {})})


def add_performance(res: Results, perf: Mapping) -> Results:
    return res.add_table(
        "table1_performance", "Test performance (F1 = macro-F1 for classification, accuracy for SNLI and bAbI) "
        "with its 95 % bootstrap interval over the n_test test examples; "
        "paper = Table 1 (BiLSTM). AG News here is Sports vs rest (offline AGN-2), SNLI is trained on its 9.8k "
        "validation pairs, IMDB on a 4.3k subset.", perf, direction={"test_lstm": "higher", "test_average": "higher"})


def add_analysis_tables(res: Results, analyses: Mapping, models: Mapping, level: float = 0.05) -> Results:
    res.add_table("table2_kendall_tau", f"Kendall τ between attention and gradient (τ_g) / leave-one-out (τ_loo), "
                  f"mean, std and Sig. Frac. (p < {level}) per predicted class; paper = Table 2. SNLI rows are our "
                  "classes (entailment, neutral, contradiction), each beside the paper's row for the same class (the "
                  "paper's order, from its Fig. 2 caption: neutral, contradiction, entailment).",
                  table2_rows(analyses, level))
    res.add_table("tau_means", "Mean Kendall τ per dataset and encoder (attention–gradient, attention–LOO, "
                  "gradient–LOO) with 95 % bootstrap intervals over the n analysed instances (undefined τ left out)",
                  tau_rows(analyses))
    res.add_table("fig6_permutation", "Permutation (Alg. 2): Δŷ^med = median TVD over 100 permutations of α̂ with h "
                  "fixed (one decoder call per batch)", permutation_rows(analyses))
    res.add_table("fig7_adversarial", "Adversarial attention (Alg. 3, k = 5, λ = 500, 500 Adam steps): ε-max JSD of "
                  "the final iterates; any_iterate = the best feasible JSD seen during the optimisation; relative = "
                  "ε-max JSD / the largest JSD any attention could reach from α̂ on that instance (all mass on its "
                  "least-attended token; below ln 2 on short inputs)",
                  adversarial_rows(analyses), direction={"mean_eps_max_jsd": "higher"})
    premise = premise_rows(analyses)
    if premise:
        res.add_table("premise_reliance", "Premise reliance (pair tasks; the check behind the SNLI Average result, "
                      "in place of a dead-ReLU story): share of analysed instances whose prediction changes, and mean "
                      "TVD of ŷ, when the attended premise/story context is set to 0 (query kept), with 95 % bootstrap "
                      "intervals; accuracy with and without the context. A model that ignores the premise leaves its "
                      "attention over the premise nothing to explain.", premise)
    return res



def add_timing(res: Results, models: Mapping, analyses: Mapping) -> Results:
    """Training seconds and analysis milliseconds per instance; `analyses` may include the Transformer's."""
    return res.add_table("timing", "Training seconds (recorded when the model was trained) and analysis "
                         "milliseconds per instance (adversarial: per instance of the adversarial subsample)",
                         timing_rows(models, analyses))


def add_transformer(res: Results, tr: Analysis, analyses: Mapping) -> Results:
    res.add_table("transformer", "Beyond the paper (SST test sentences): attention–importance agreement, permutation "
                  "and adversarial results for the fine-tuned MiniLM classifier's last-layer [CLS] attention, next to "
                  "the RNN models", transformer_rows(tr, analyses))
    return res


def add_claims(res: Results, cfg: Mapping, perf: Mapping, analyses: Mapping, tr: Analysis | None) -> Results:
    """Every claim, and the table of the Average claims' verdicts under both readings (when compared)."""
    out, rows = claims_and_readings(cfg, perf, analyses, tr)
    for c in out:
        res.add_claim(**c)
    if rows and res.profile != "smoke":  # words, not table values: kept in meta, shown by `readings_frame`; under
        res.meta["average_readings"] = rows  # smoke every sampled verdict is "not evaluated" (Results.add_claim)
    return res


def readings_frame(res: Results):
    """The Average claims' verdicts under the authors' configuration (tanh, m = 128) and the paper's appendix (ReLU,
    m = 256), one row per claim (empty when the readings were not compared)."""
    import pandas as pd

    return pd.DataFrame.from_dict(res.meta.get("average_readings", {}), orient="index")


def _cells(table: Mapping, col: str, fmt: str = "{:.2f}", ci: bool = False) -> str:
    """'row value [low, high]' for every row of a results table that has `col`."""
    out = []
    for row, cells in table["rows"].items():
        v = cells.get(col, {}).get("ours")
        if v is None:
            continue
        text = f"{row} {fmt.format(v)}"
        if ci and f"{col}_ci_low" in cells:
            text += f" [{fmt.format(cells[col + '_ci_low']['ours'])}, {fmt.format(cells[col + '_ci_high']['ours'])}]"
        paper = cells[col].get("paper")
        out.append(text + (f" (paper {paper:.2f})" if paper is not None else ""))
    return "; ".join(out)


def discussion_markdown(res: Results) -> str:
    """The notebook's discussion, formatted from the results object's tables (no fixed numbers); the verdicts are
    `lab.results.claims_markdown`'s."""
    t = res.tables
    parts = []
    if "table1_performance" in t:
        cells = {label: _cells(t["table1_performance"], f"test_{enc}", "{:.3f}", ci=True)
                 for enc, label in (("lstm", "BiLSTM"), ("average", "Average"))}
        parts.append("*Models (Table 1, 95 % intervals over test examples).* "
                     + " ".join(f"{label}: {text}." for label, text in cells.items() if text))
    if "tau_means" in t:
        parts.append("*Agreement (Table 2, Figs. 2–5): mean τ with 95 % intervals.* Attention–gradient: "
                     + _cells(t["tau_means"], "attn_grad", ci=True) + ". Attention–LOO: "
                     + _cells(t["tau_means"], "attn_loo", ci=True) + ". Gradient–LOO: "
                     + _cells(t["tau_means"], "grad_loo", ci=True) + ".")
    if "fig6_permutation" in t:
        parts.append("*Permutation (Fig. 6).* Median Δŷ^med: " + _cells(t["fig6_permutation"],
                                                                         "median_of_median_tvd", "{:.3f}")
                     + "; share of instances with Δŷ^med < 0.05: "
                     + _cells(t["fig6_permutation"], "frac_median_tvd_below_0.05") + ".")
    if "fig7_adversarial" in t:
        parts.append("*Adversarial attention (Figs. 7–8).* Share of instances with ε-max JSD > 0.6 (bound "
                     "ln 2 ≈ 0.69): " + _cells(t["fig7_adversarial"], "frac_jsd_above_0.6") + "; above 87 % of the "
                     "instance's reachable maximum: " + _cells(t["fig7_adversarial"], "frac_relative_jsd_above_0.87")
                     + "; Kendall τ of the "
                     "JSD with the maximum attention: " + _cells(t["fig7_adversarial"], "tau_jsd_vs_max_attention")
                     + ".")
    if "premise_reliance" in t:
        parts.append("*Premise reliance (pair tasks).* Share of predictions that change when the attended "
                     "premise/story context is zeroed: " + _cells(t["premise_reliance"], "changed_prediction",
                                                                   ci=True) + ".")
    readings = res.meta.get("average_readings")
    if readings:
        changed = [k for k, r in readings.items() if len(set(r.values())) > 1]
        parts.append("*Average encoder, two readings.* " + (
            f"{len(changed)} of {len(readings)} Average claims change verdict between the "
            "authors' tanh/128 and the appendix's ReLU/256; both verdicts are listed with the claims."
            if changed else "No Average claim changes verdict between the authors' tanh/128 and the appendix's "
            "ReLU/256."))
    if "transformer" in t:
        parts.append("*The Transformer (beyond the paper), SST.* τ with gradient: "
                     + _cells(t["transformer"], "tau_vs_grad") + ". τ with LOO: "
                     + _cells(t["transformer"], "tau_vs_loo") + ". τ between gradient and LOO: "
                     + _cells(t["transformer"], "tau_grad_vs_loo") + ".")
    return "\n\n".join(parts)


def task_overview(tasks: Mapping[str, Task]):
    """One row per dataset: sizes, vocabulary, mean length (word pieces) and how many instances are analysed."""
    import pandas as pd

    rows = {}
    for name, t in tasks.items():
        rows[t.spec.label] = {"train": len(t.train), "dev": len(t.dev), "test": len(t.test), "vocab": len(t.vocab),
                              "mean length": round(float(np.mean([len(x) for x in t.test.ids])), 1),
                              "analysed": len(t.analysis_rows), "adversarial": t.n_adversarial,
                              "ε": t.epsilon, "classes": len(t.label_names)}
    return pd.DataFrame.from_dict(rows, orient="index")


# ---------------------------------------------------------------- figures
def _class_colours(n: int) -> list[str]:
    return [COLORBLIND[4], COLORBLIND[1], COLORBLIND[2], COLORBLIND[0], COLORBLIND[3], COLORBLIND[5]][:max(n, 1)] + \
        COLORBLIND[6:]


def _grid(n_rows: int, n_cols: int, w: float = 2.6, h: float = 2.0):
    fig = Figure(figsize=(w * n_cols, h * n_rows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(n_rows, n_cols, squeeze=False))
    return fig, axes


def _by_class(a: Analysis):
    names = a.label_names if len(a.label_names) <= 6 else [str(i) for i in range(len(a.label_names))]
    pred = a.predicted
    return [(c, names[c] if c < len(names) else str(c), pred == c) for c in sorted(set(pred.tolist()))]


def tau_histograms(analyses: Mapping, measure: str = "attn_grad", encoders: Sequence[str] = ENCODERS) -> Figure:
    """Fig. 2: histograms of per-instance τ per dataset (columns) and encoder (rows), coloured by predicted class."""
    names = list(dict.fromkeys(n for n, _ in analyses))
    encs = [e for e in encoders if any((n, e) in analyses for n in names)]
    fig, axes = _grid(len(encs), len(names))
    colours = _class_colours(6)
    for r, enc in enumerate(encs):
        for c, name in enumerate(names):
            ax = axes[r, c]
            a = analyses.get((name, enc))
            if a is None:
                ax.set_axis_off()
                continue
            tau = np.asarray(a.tau[measure].statistic, float)
            for k, (cls, label, sel) in enumerate(_by_class(a)):
                vals = tau[sel & np.isfinite(tau)]
                ax.hist(vals, bins=np.linspace(-1, 1, 21), alpha=0.6, color=colours[k % len(colours)], label=label)
            ax.set_title(f"{TASKS[name].label} ({ENCODER_LABELS[enc]})", fontsize=9)
            ax.set_xlim(-1, 1)
            if r == len(encs) - 1:
                ax.set_xlabel(f"Kendall τ ({measure.replace('attn', 'attention').replace('_', ' vs ')})")
            if len(_by_class(a)) <= 3:
                ax.legend(fontsize=6)
    return fig


def gap_figure(analyses: Mapping, encoder: str = "lstm") -> Figure:
    """Figs. 3–4: mean τ(gradient, LOO) − τ(attention, LOO) and − τ(attention, gradient), per dataset."""
    fig, axes = _grid(1, 2, w=3.6, h=2.6)
    names = [n for (n, e) in analyses if e == encoder]
    for ax, other, title in ((axes[0, 0], "attn_loo", "Fig. 3: τ(grad, LOO) − τ(attn, LOO)"),
                             (axes[0, 1], "attn_grad", "Fig. 4: τ(grad, LOO) − τ(attn, grad)")):
        vals = [mean_tau(analyses[n, encoder], "grad_loo") - mean_tau(analyses[n, encoder], other) for n in names]
        ax.barh([TASKS[n].label for n in names], vals, color=COLORBLIND[0])
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(f"{title} ({ENCODER_LABELS[encoder]})", fontsize=9)
        ax.set_xlabel("difference in mean Kendall τ")
    return fig


def encoder_figure(analyses: Mapping) -> Figure:
    """Fig. 5: mean τ for the Average encoder minus the BiLSTM's, for LOO and gradients, per dataset."""
    fig, axes = _grid(1, 1, w=4.2, h=2.6)
    ax = axes[0, 0]
    names = [n for (n, e) in analyses if e == "lstm" and (n, "average") in analyses]
    y = np.arange(len(names))
    for off, measure, label, colour in ((-0.2, "attn_loo", "τ(attention, LOO)", COLORBLIND[0]),
                                        (0.2, "attn_grad", "τ(attention, gradient)", COLORBLIND[1])):
        vals = [mean_tau(analyses[n, "average"], measure) - mean_tau(analyses[n, "lstm"], measure) for n in names]
        ax.barh(y + off, vals, height=0.4, label=label, color=colour)
    ax.set_yticks(y, [TASKS[n].label for n in names])
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("mean τ (Average) − mean τ (BiLSTM)")
    ax.set_title("Fig. 5: Average vs BiLSTM", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def _scatter_panels(analyses: Mapping, encoder: str, x_of, y_of, xlabel: str, ylabel: str, title: str,
                    xlim=None) -> Figure:
    keys = [k for k in analyses if k[1] == encoder]
    fig, axes = _grid(1, max(len(keys), 1), w=2.6, h=2.4)
    colours = _class_colours(6)
    for ax, key in zip(axes[0], keys):
        a = analyses[key]
        x, y = x_of(a), y_of(a)
        for k, (cls, label, sel) in enumerate(_by_class(a)):
            sel = sel[:len(x)]
            ax.scatter(x[sel], y[sel], s=6, alpha=0.6, color=colours[k % len(colours)], label=label)
        ax.set_title(f"{TASKS[key[0]].label} ({ENCODER_LABELS[encoder]})", fontsize=9)
        ax.set_xlabel(xlabel)
        if xlim is not None:
            ax.set_xlim(*xlim)
        if len(_by_class(a)) <= 3:
            ax.legend(fontsize=6)
    axes[0, 0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    return fig


def permutation_figure(analyses: Mapping, encoder: str = "lstm") -> Figure:
    """Fig. 6: median output change under permutation (x) vs the maximum attention (y)."""
    return _scatter_panels(analyses, encoder, lambda a: a.perm_median_tvd, lambda a: a.max_attention,
                           "median Δŷ (TVD)", "max attention", "Fig. 6: permuting attention", xlim=(0, None))


def adversarial_histograms(analyses: Mapping, encoder: str = "lstm") -> Figure:
    """Fig. 7: histograms of the ε-max JSD, coloured by predicted class."""
    keys = [k for k in analyses if k[1] == encoder and analyses[k].adv_eps_max_jsd.size]
    fig, axes = _grid(1, max(len(keys), 1), w=2.6, h=2.2)
    colours = _class_colours(6)
    for ax, key in zip(axes[0], keys):
        a = analyses[key]
        jsd = a.adv_eps_max_jsd
        for k, (cls, label, sel) in enumerate(_by_class(a)):
            ax.hist(jsd[sel[:jsd.size]], bins=np.linspace(0, at.LN2, 15), alpha=0.6,
                    color=colours[k % len(colours)], label=label)
        ax.axvline(at.LN2, color="black", lw=0.8, ls="--")
        ax.set_title(f"{TASKS[key[0]].label} ({ENCODER_LABELS[encoder]})", fontsize=9)
        ax.set_xlabel("ε-max JSD")
        if len(_by_class(a)) <= 3:
            ax.legend(fontsize=6)
    fig.suptitle("Fig. 7: adversarial attention", fontsize=10)
    return fig


def adversarial_scatter(analyses: Mapping, encoder: str = "lstm") -> Figure:
    """Fig. 8: ε-max JSD (x) against the maximum attention (y)."""
    keys = {k: a for k, a in analyses.items() if k[1] == encoder and a.adv_eps_max_jsd.size}
    return _scatter_panels(keys, encoder, lambda a: a.adv_eps_max_jsd,
                           lambda a: a.max_attention[:a.adv_eps_max_jsd.size], "ε-max JSD", "max attention",
                           "Fig. 8: ε-max JSD vs max attention", xlim=(0, 0.7))


def transformer_figure(tr: Analysis, lstm: Analysis | None = None) -> Figure:
    """Beyond the paper: τ histograms of Transformer attention and Chefer relevance against gradient and LOO, and
    the permutation / adversarial distributions next to the BiLSTM's (SST)."""
    fig, axes = _grid(1, 4, w=2.6, h=2.3)
    bins = np.linspace(-1, 1, 21)
    for ax, (measures, title) in zip(axes[0, :2], ((("attn_grad", "chefer_grad"), "vs gradient"),
                                                    (("attn_loo", "chefer_loo"), "vs LOO"))):
        for measure, label, colour in ((measures[0], "attention", COLORBLIND[0]),
                                       (measures[1], "Chefer", COLORBLIND[1])):
            vals = np.asarray(tr.tau[measure].statistic, float)
            ax.hist(vals[np.isfinite(vals)], bins=bins, alpha=0.6, label=label, color=colour)
        ax.set_title(f"Transformer: τ {title}", fontsize=9)
        ax.set_xlabel("Kendall τ")
        ax.legend(fontsize=6)
    ax = axes[0, 2]
    ax.hist(tr.perm_median_tvd, bins=20, alpha=0.6, label="Transformer", color=COLORBLIND[2])
    if lstm is not None:
        ax.hist(lstm.perm_median_tvd, bins=20, alpha=0.6, label="BiLSTM", color=COLORBLIND[4])
    ax.set_title("permutation: Δŷ^med", fontsize=9)
    ax.set_xlabel("median TVD")
    ax.legend(fontsize=6)
    ax = axes[0, 3]
    jbins = np.linspace(0, at.LN2, 15)
    ax.hist(tr.adv_eps_max_jsd, bins=jbins, alpha=0.6, label="Transformer", color=COLORBLIND[2])
    if lstm is not None and lstm.adv_eps_max_jsd.size:
        ax.hist(lstm.adv_eps_max_jsd, bins=jbins, alpha=0.6, label="BiLSTM", color=COLORBLIND[4])
    ax.set_title("adversarial: ε-max JSD", fontsize=9)
    ax.set_xlabel("ε-max JSD")
    ax.legend(fontsize=6)
    return fig


def _out_text(a: Analysis, probs: np.ndarray) -> str:
    c = int(np.argmax(probs))
    name = a.label_names[c] if c < len(a.label_names) else str(c)
    return f"ŷ = {name} ({probs[c]:.3f})"


def instance_panels(a: Analysis, i: int) -> Figure:
    """Fig. 1 / App. D: original, median-permuted and adversarial attention on instance i, with the outputs."""
    if not 0 <= i < len(a):
        raise ExperimentError(f"instance must be in 0..{len(a) - 1} for {TASKS[a.dataset].label} / "
                              f"{ENCODER_LABELS[a.encoder]}, got {i}")
    tokens = [t for t in a.tokens[i]]
    head = f"{TASKS[a.dataset].label} / {ENCODER_LABELS[a.encoder]} #{i}"
    if a.queries is not None:
        head += f" — query: {a.queries[i]}"
    tau_g = float(a.tau["attn_grad"].statistic[i])
    panels = [(f"{head}\noriginal attention: {_out_text(a, a.probs[i])}, τ_g = {tau_g:.2f}", tokens, a.attention[i])]
    d_perm = 0.5 * float(np.abs(a.perm_probs[i] - a.probs[i]).sum())
    panels.append((f"median permutation: {_out_text(a, a.perm_probs[i])}, Δŷ = {d_perm:.3f}", tokens,
                   a.perm_alpha[i]))
    if i < len(a.adv_alpha):
        d_adv = 0.5 * float(np.abs(a.adv_probs[i] - a.probs[i]).sum())
        panels.append((f"adversarial (ε-max JSD = {a.adv_eps_max_jsd[i]:.3f}): {_out_text(a, a.adv_probs[i])}, "
                       f"Δŷ = {d_adv:.3f}", tokens, a.adv_alpha[i]))
    return token_heatmap_panels(panels, max_width=90, shared_scale=True)


def striking_instance(a: Analysis, max_tokens: int = 40) -> int:
    """A short instance with a large ε-max JSD and peaked original attention (for the Fig. 1-style heatmap)."""
    n = a.adv_eps_max_jsd.size
    if n == 0:
        return 0
    short = np.asarray([len(t) <= max_tokens for t in a.tokens[:n]])
    score = a.adv_eps_max_jsd + 0.5 * a.max_attention[:n] - 10 * (~short)
    return int(np.argmax(score))


def figure1(analyses: Mapping, preferred: tuple[str, str] = ("sst_jw", "lstm")) -> Figure:
    """Fig. 1: the striking instance of the preferred analysis (else the first one)."""
    a = analyses.get(preferred) or next(iter(analyses.values()))
    return instance_panels(a, striking_instance(a))


def instance_renderer(analyses: Mapping):
    """A render function for `lab.widgets.controls`: (dataset, encoder, instance) -> Figure."""

    def render(dataset: str, encoder: str, instance: int):
        key = (dataset, encoder)
        if key not in analyses:
            avail = ", ".join(f"{d}/{e}" for d, e in analyses)
            raise ExperimentError(f"no analysis for {dataset}/{encoder}; available: {avail}")
        return instance_panels(analyses[key], int(instance))

    return render
