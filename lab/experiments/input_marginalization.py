"""Notebook 06: input marginalisation (Kim et al. 2020, reproduced by Mehta et al.) — Tables 1-2, Figures 1-5."""
from __future__ import annotations

import time

import numpy as np
import torch

from lab import cache, stats
from lab.experiments import ExperimentError, merge_settings

NOTEBOOK = "06_input_marginalization"

# AUC_rep sample sizes: n_auc (CNN), n_auc_lstm (BiLSTM), n_auc_bert (MiniLM). Marginalisation costs
# (content tokens × candidates above σ) classifier rows per sentence; measured on this 2-core machine (one thread,
# loaded, 2026-12-03): CNN 0.4, BiLSTM 2.3, MiniLM about 11 CPU-s per 1,000 rows of 27 tokens. With σ = 1e-4 and no
# cap (K ≈ 300-1,000 candidates per position, 23 content tokens) a sentence costs the CNN 3-9 s, the BiLSTM 16-52 s
# and the MiniLM 75-250 s, so the n = 500 would take 0.4-1.3 h (CNN) and 2-7 h (BiLSTM): the default sizes
# below fit about 15 minutes; `paper` is n = 700 for both. The MiniLM keeps a cap (max_candidates_bert).
PROFILES = {
    "smoke": {"sst_train_size": 600, "snli_train_size": 300, "cnn_epochs": 1, "lstm_epochs": 1, "snli_epochs": 1,
              "n_test": 48, "n_auc": 2, "n_auc_lstm": 2, "n_auc_bert": 1, "auc_max_words": 8, "n_figure": 2,
              "n_mc_sentences": 1, "mc_sizes": [4, 16], "mc_vocab": 50, "max_candidates": 4, "max_candidates_bert": 4,
              "mc_max_words": 3, "use_cache": False},
    "default": {"sst_train_size": 30000, "snli_train_size": None, "cnn_epochs": 2, "lstm_epochs": 2, "snli_epochs": 2,
                "n_test": None, "n_auc": 100, "n_auc_lstm": 30, "n_auc_bert": 8, "auc_max_words": None, "n_figure": 2,
                "n_mc_sentences": 2, "mc_sizes": [10, 30, 100, 300], "mc_vocab": 1000, "max_candidates": None,
                "max_candidates_bert": 20, "mc_max_words": 8},
    "paper": {"sst_train_size": 30000, "snli_train_size": None, "cnn_epochs": 2, "lstm_epochs": 2, "snli_epochs": 2,
              "n_test": None, "n_auc": 700, "n_auc_lstm": 700, "n_auc_bert": 100, "auc_max_words": None,
              "n_figure": 2, "n_mc_sentences": 2, "mc_sizes": [10, 30, 100, 300], "mc_vocab": 1000,
              "max_candidates": None, "max_candidates_bert": None, "mc_max_words": 8},
}
AUC_SIZES = {"cnn": "n_auc", "lstm": "n_auc_lstm", "bert": "n_auc_bert"}
COMMON = {"sigma": 1e-4, "renormalize": True, "max_length": 64, "auc_stop": 0.2, "seed": 0, "lstm_train_cap": 15000,
          "n_samples": 100, "threads": 1, "use_cache": True, "deletions": ["pad", "unk", "mlm"]}


def settings(profile: str = "default", **overrides) -> dict:
    """Sizes of a profile plus the shared protocol (σ, renormalisation, AUC_rep stopping fraction)."""
    return merge_settings(PROFILES, COMMON, profile, overrides)


def _memo(cfg: dict, prefix: str, compute, **key):
    """compute(), memoised in LAB_CACHE_DIR under `key`, the settings and the code (`use_cache`)."""
    settings_key = {k: v for k, v in cfg.items() if k not in ("profile", "threads", "use_cache")}
    return cache.memoize("input_marginalization", prefix, compute, enabled=bool(cfg.get("use_cache")),
                         settings=settings_key, **key)


def _mlm_digest(mlm) -> str:
    return cache.digest([getattr(mlm, "model", mlm), getattr(mlm, "vocab", None)])


# ---------------------------------------------------------------- Table 1: target models
def _tokenizer():
    from lab.models.loading import load_tokenizer

    return load_tokenizer("minilm")


def target_models(cfg: dict, progress: bool = True) -> dict:
    """{"cnn", "lstm", "snli_lstm"} trained here (cached) and "bert" = the cached MiniLM SST-2 fine-tune."""
    from lab.data import load
    from lab.models.cnn import FitConfig, TextConfig, encode_texts, train_text_classifier
    from lab.models.training import fine_tune_preset

    tok = _tokenizer()
    seed, ml = cfg["seed"], cfg["max_length"]
    sst_train = encode_texts(tok, load("sst2", "train"), ml, cfg["sst_train_size"], seed)
    lstm_size = cfg["sst_train_size"] or cfg["lstm_train_cap"]
    sst_train_lstm = encode_texts(tok, load("sst2", "train"), ml, min(lstm_size, cfg["lstm_train_cap"]), seed)
    sst_test = encode_texts(tok, load("sst2", "dev"), ml, cfg["n_test"], seed)
    snli_train = encode_texts(tok, load("snli", "validation"), ml, cfg["snli_train_size"], seed)
    snli_test = encode_texts(tok, load("snli", "test"), ml, cfg["n_test"], seed)
    vocab = tok.vocab_size if hasattr(tok, "vocab_size") else len(tok)
    out = {
        "cnn": train_text_classifier("sst2", TextConfig(vocab, 2, "cnn"), sst_train, sst_test,
                                     FitConfig(epochs=cfg["cnn_epochs"], seed=seed), progress=progress),
        "lstm": train_text_classifier("sst2", TextConfig(vocab, 2, "lstm"), sst_train_lstm, sst_test,
                                      FitConfig(epochs=cfg["lstm_epochs"], seed=seed), progress=progress),
        "snli_lstm": train_text_classifier("snli", TextConfig(vocab, 3, "lstm", layers=1, hidden=300, pair=True),
                                           snli_train, snli_test,
                                           FitConfig(epochs=cfg["snli_epochs"], seed=seed, batch_size=128),
                                           progress=progress),
    }
    out["bert"] = fine_tune_preset("sst2", "smoke" if cfg["profile"] == "smoke" else "default")
    return out


# ---------------------------------------------------------------- one interface for the four targets
PAPER_ACCURACY = {"lstm": (0.77, 0.7753), "bert": (0.92, 0.8578), "cnn": (0.75, 0.7300), "snli_lstm": (0.67, 0.6314)}
PAPER_AUC_REP = {"zero": (0.5608, 0.5284), "unk": (0.5328, 0.5170), "marg": (0.4834, 0.4972)}  # (repro, original)
METHODS = ("zero", "unk", "mask", "marg", "marg_mc")
MODEL_NAMES = {"cnn": "CNN (SST-2)", "lstm": "BiLSTM (SST-2)", "bert": "MiniLM fine-tuned (SST-2)",
               "snli_lstm": "BiLSTM (SNLI)"}
PAD_ID, UNK_ID, MASK_ID, CLS_ID, SEP_ID = 0, 100, 103, 101, 102  # bert-base-uncased WordPiece


def one_thread(fn):
    """Run `fn` with torch on cfg['threads'] (default 1) intra-op threads: on a shared, loaded 2-core CPU one thread
    per process is several times faster than oversubscribing."""
    import functools

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        from lab.models.training import torch_threads

        cfg = next((a for a in args if isinstance(a, dict) and "threads" in a), {})
        with torch_threads(cfg.get("threads", 1)):
            return fn(*args, **kwargs)

    return wrapped


class CachedMLM:
    """log p_MLM(·|x_{−i}) for (sentence, positions), memoised: the candidates of a sentence are the same for every
    target model and method, so the MLM runs once per sentence. `vocab` > 0 restricts p_MLM to its `vocab` most
    likely words, renormalised (used by the MC study to afford an exact reference)."""

    def __init__(self, model, vocab: int | None = None, max_batch: int = 64):
        self.model, self.vocab, self.max_batch, self._memo = getattr(model, "model", model), vocab, max_batch, {}

    def __call__(self, row: dict, positions) -> torch.Tensor:
        from lab.models.mlm import masked_log_probs

        positions = torch.as_tensor(positions).reshape(-1)
        key = (tuple(row["input_ids"][0].tolist()), tuple(row.get("token_type_ids", row["input_ids"])[0].tolist()),
               tuple(positions.tolist()))
        if key not in self._memo:
            logp = masked_log_probs(self.model, row, positions, max_batch=self.max_batch)
            if self.vocab:
                top = logp.topk(int(self.vocab), dim=-1)
                restricted = torch.full_like(logp, float("-inf"))
                restricted.scatter_(1, top.indices, top.values)
                logp = restricted.log_softmax(-1)
            self._memo[key] = logp
        return self._memo[key]


def _is_hf(model) -> bool:
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel)


def _classifier(trained):
    return trained.model


def log_probs_fn(model):
    """rows -> [N, C] log-probabilities for a CNN/BiLSTM or a Hugging Face classifier."""
    if _is_hf(model):
        from lab.explainers.marginalization import adapter_log_probs
        from lab.models.adapters import get_adapter

        return adapter_log_probs(get_adapter(model))
    return lambda rows: model(rows["input_ids"], rows.get("attention_mask"), rows.get("token_type_ids")).log_softmax(-1)


def predictor(model):
    """What lab.metrics takes: the HF model itself, or predict_fn(input_ids, attention_mask) -> probabilities."""
    if _is_hf(model):
        return model
    from lab.models.cnn import predict_fn

    return predict_fn(model)


def special_mask(inputs: dict) -> torch.Tensor:
    ids = inputs["input_ids"]
    return torch.isin(ids, torch.tensor([PAD_ID, CLS_ID, SEP_ID])) | ~inputs["attention_mask"].bool()


def tokenize(texts, text_pairs=None, max_length: int = 64) -> dict:
    enc = _tokenizer()(list(texts), list(text_pairs) if text_pairs is not None else None, padding=True,
                       truncation=True, max_length=max_length, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def method_params(method: str, cfg: dict) -> dict:
    """`marginalize` parameters of a method: erasure = a point mass on [PAD] ("zero": the CNN/BiLSTM [PAD] row is
    the zero vector), [UNK] or [MASK]; marg = σ-truncation; marg_mc = Monte Carlo with cfg['n_samples'] draws."""
    if method == "zero":
        return {"candidates": "token", "token_id": PAD_ID}
    if method == "unk":
        return {"candidates": "token", "token_id": UNK_ID}
    if method == "mask":
        return {"candidates": "token", "token_id": MASK_ID}
    if method == "marg":
        return {"candidates": "truncate", "sigma": cfg["sigma"], "renormalize": cfg["renormalize"],
                "max_candidates": cfg.get("max_candidates")}
    if method == "marg_mc":
        return {"candidates": "mc", "n_samples": cfg.get("n_samples", 100), "seed": cfg["seed"]}
    raise ExperimentError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


@one_thread
def attribute(model, inputs: dict, method: str, mlm, cfg: dict, target=None, keep: bool = False,
              progress: bool = False, **params) -> dict:
    """Scores [B, S] of one method for any target model (target default: the predicted class).

    Hugging Face classifiers go through `lab.explain` (erasure baselines through the existing `erasure` explainer,
    marginalisation through `input_marginalization`); CNN/BiLSTM through `marginalize` with the same formula."""
    import lab

    p = {**method_params(method, cfg), **params}
    if _is_hf(model) and p["candidates"] == "truncate" and "max_candidates" not in params:
        p["max_candidates"] = cfg.get("max_candidates_bert", p.get("max_candidates"))
    with torch.no_grad():
        logp = log_probs_fn(model)(inputs)
    tgt = logp.argmax(-1) if target is None else torch.as_tensor(target).reshape(-1).expand(len(logp))
    start = time.perf_counter()
    if _is_hf(model):
        if p["candidates"] == "token":
            token = {PAD_ID: "pad", UNK_ID: "unk", MASK_ID: "mask"}[p["token_id"]]
            exp = lab.explain(model, inputs, "erasure", target=tgt, token=token, max_batch=256)
            out = {"scores": exp.scores.double().cpu(), "cost": {"classifier_rows": None}}
        else:
            exp = lab.explain(model, inputs, "input_marginalization", target=tgt, mlm=mlm, keep_candidates=keep,
                              progress=progress, max_batch=256, **p)
            out = {"scores": exp.scores.double().cpu(), **exp.extras}
    else:
        from lab.explainers.marginalization import marginalize

        out = marginalize(log_probs_fn(model), inputs, tgt, special_mask(inputs), mlm, keep=keep,
                          progress=progress, max_batch=1024, **p)
    out["target"], out["log_probs"], out["seconds"] = tgt, logp.detach(), time.perf_counter() - start
    return out


# ---------------------------------------------------------------- masked LM, Table 1
def masked_lm(cfg: dict, progress: bool = True):
    """The trained masked LM (TrainedMLM); `CachedMLM(mlm.model)` is what the studies below take as `mlm`."""
    from lab.models.mlm import mlm_preset

    return mlm_preset("smoke" if cfg["profile"] == "smoke" else "default", progress=progress)


def mlm_table(res, mlm) -> dict:
    m = mlm.metrics
    rows = {"MiniLM + tied MLM head (ours)": {"top1": (None, m["top1"]), "top5": (None, m["top5"]),
                                              "perplexity": (None, m["perplexity"]),
                                              "steps": (None, m.get("steps_done")),
                                              "best_step": (None, m.get("best_step")),
                                              "output_vocabulary": (None, m.get("output_vocabulary")),
                                              "oov_rate": (None, m.get("oov_rate")),
                                              "train_min": (None, round(m.get("train_seconds", 0) / 60, 1)),
                                              "train_cpu_min": (None, round(m.get("cpu_seconds", 0) / 60, 1)),
                                              "load_at_start": (None, (m.get("load_average") or [None])[0])},
            "before MLM training": {"top1": (None, m["before_training"]["top1"]),
                                    "top5": (None, m["before_training"]["top5"]),
                                    "perplexity": (None, m["before_training"]["perplexity"])}}
    res.add_table("mlm", f"masked-LM accuracy at 15 % masked positions of {m['n_sentences']} held-out SST-2 "
                  "sentences (the paper uses pretrained bert-base-uncased, not available offline)", rows,
                  direction={"top1": "higher", "top5": "higher", "perplexity": "lower"})
    return rows


def accuracy_rows(models: dict) -> dict:
    rows = {}
    for name, trained in models.items():
        acc = trained.accuracy if name == "bert" else trained.metrics["test_accuracy"]
        repro, orig = PAPER_ACCURACY[name]
        rows[MODEL_NAMES[name]] = {"accuracy (Mehta)": (repro, acc), "accuracy (Kim)": (orig, acc)}
    return rows


def start_results(cfg: dict, models: dict, mlm, meta: dict | None = None):
    from lab.results import Results

    res = Results(NOTEBOOK, cfg["profile"], meta={"sigma": cfg["sigma"], "renormalize": cfg["renormalize"],
                                                 "mlm": str(mlm.path), **(meta or {})})
    res.add_table("table1_accuracy", "test accuracy of the target models (SST-2 test = the GLUE dev set; SNLI "
                  "trained on its validation split)", accuracy_rows(models), direction={"accuracy (Mehta)": "higher",
                                                                                        "accuracy (Kim)": "higher"})
    mlm_table(res, mlm)
    return res


# ---------------------------------------------------------------- Table 2 / Fig. 4: AUC_rep
def sst_test_sentences(n: int, seed: int = 0, max_words: int | None = None) -> list:
    """n random SST-2 test sentences (the GLUE dev set), optionally at most `max_words` words long."""
    from lab.data import load

    examples = list(load("sst2", "dev"))
    if max_words:
        examples = [e for e in examples if len(e.text.split()) <= max_words]
    rows = np.random.default_rng(seed).permutation(len(examples))[:n]
    return [examples[i] for i in sorted(rows)]


DELETIONS = {"pad": "[PAD]", "unk": "[UNK]", "mlm": "MLM"}  # AUC_rep's replacement token (Sec. 3.1.4 reads [PAD])
AUC_METHODS = {"zero": "Zero ([PAD])", "unk": "Unk", "marg": "Marg (ours)"}


def mlm_replacements(mlm, inputs: dict, special: torch.Tensor) -> torch.Tensor:
    """[B, S] replacement ids for AUC_rep's MLM deletion (Kim et al.'s original metric replaces tokens with masked-LM
    predictions): at each content position the most likely word under p_MLM(·|x_{−i}) other than x_i itself (the
    MLM's output vocabulary, specials excluded); other positions keep their id. `mlm`: (row, positions) -> [k, V]."""
    out = inputs["input_ids"].clone()
    for i in range(len(out)):
        real = inputs["attention_mask"][i].bool().nonzero()[:, 0]
        row = {k: v[i:i + 1, real] for k, v in inputs.items()}
        local = (~special[i, real]).nonzero()[:, 0]
        if len(local):
            logp = mlm(row, local).clone()
            logp[torch.arange(len(local)), row["input_ids"][0, local]] = float("-inf")
            out[i, real[local]] = logp.argmax(-1)
    return out


def deletion_token(deletion: str, mlm, inputs: dict, special: torch.Tensor):
    """AUC_rep's `token_id` for a deletion: [PAD], [UNK], or the per-position MLM replacements."""
    if deletion == "mlm":
        return mlm_replacements(mlm, inputs, special)
    if deletion in DELETIONS:
        return {"pad": PAD_ID, "unk": UNK_ID}[deletion]
    raise ExperimentError(f"unknown deletion {deletion!r}; choose one of {', '.join(DELETIONS)}")


@one_thread
def auc_rep_study(models: dict, mlm, cfg: dict, methods=tuple(AUC_METHODS), progress: bool = True) -> dict:
    """{model: {deletion: {method: auc_rep result}}} on cfg[AUC_SIZES[model]] SST-2 test sentences (nested samples):
    each method's scores are computed once and its curve followed under every deletion of cfg['deletions']."""
    out, mlm_id = {}, _mlm_digest(mlm) if cfg.get("use_cache") else None
    for name in ("cnn", "lstm", "bert"):
        n = cfg[AUC_SIZES[name]]
        examples = sst_test_sentences(n, cfg["seed"], cfg["auc_max_words"])
        inputs = tokenize([e.text for e in examples], max_length=cfg["max_length"])
        model = _classifier(models[name])
        tokens = {d: deletion_token(d, mlm, inputs, special_mask(inputs)) for d in cfg["deletions"]}
        by_method = {}
        for method in methods:
            def compute(model=model, inputs=inputs, method=method):
                return _auc_curves(model, inputs, method, mlm, cfg, tokens, progress)

            # memoised per model, sentences, method and masked LM (seconds: those of the computing run)
            by_method[method] = _memo(cfg, f"auc-{name}-{method}", compute, model=cache.digest(model),
                                      inputs=cache.digest(inputs), method=method, mlm=mlm_id)
        out[name] = {d: {m: by_method[m][d] for m in methods} for d in cfg["deletions"]}
    return out


def _auc_curves(model, inputs: dict, method: str, mlm, cfg: dict, tokens: dict, progress: bool) -> dict:
    """{deletion: auc_rep result} of one method's scores (with its cost per sentence)."""
    from lab.metrics.perturbation import auc_rep

    att = attribute(model, inputs, method, mlm, cfg, progress=progress)
    out = {}
    for deletion, token in tokens.items():
        curve = auc_rep(predictor(model), inputs, att["scores"], stop=cfg["auc_stop"], token_id=token,
                        special_mask=special_mask(inputs), progress=False)
        curve["seconds_per_sentence"] = att["seconds"] / len(inputs["input_ids"])
        curve["classifier_rows"] = att.get("cost", {}).get("classifier_rows")
        out[deletion] = curve
    return out


def auc_intervals(study: dict) -> dict:
    """{model: {deletion: {method: Interval}}}: mean AUC_rep, 95 % bootstrap interval over the sentences."""
    return {m: {d: {k: stats.bootstrap(np.asarray(v["auc"], float)) for k, v in by.items()}
                for d, by in per.items()} for m, per in study.items()}


def ordering_claim(model: str, per_method: dict, order=("marg", "unk", "zero"), deletion: str = "pad") -> dict:
    """'AUC_rep a < b < c' on the same sentences: every adjacent paired difference (a − b, b − c) below 0."""
    parts = {f"{a} − {b}": stats.paired_difference(np.asarray(per_method[a]["auc"], float),
                                                     np.asarray(per_method[b]["auc"], float))
             for a, b in zip(order, order[1:])}
    verdicts = {k: stats.decide(iv, 0.0, "less") for k, iv in parts.items()}
    names = {"marg": "Marg", "unk": "Unk", "zero": "Zero"}
    return {"claim": f"AUC_rep ordering {' < '.join(names[k] for k in order)} ({MODEL_NAMES[model]}, "
                     f"{DELETIONS[deletion]} deletion)",
            "verdict": stats.combine(verdicts.values()),
            "detail": "paired differences " + "; ".join(f"{k}: {iv} → {verdicts[k]}" for k, iv in parts.items())}


def _column(model: str, deletion: str) -> str:
    return f"{MODEL_NAMES[model]} · {DELETIONS[deletion]}"


def add_auc_table(res, study: dict, cfg: dict) -> dict:
    """Table 2 with one column per (model, deletion) and its '±' half-width; the ordering claim per column."""
    rows, ivs = {}, auc_intervals(study)
    for method, label in AUC_METHODS.items():
        rows[label] = {}
        for m, per in study.items():
            for d in per:
                iv = ivs[m][d][method]
                paper = PAPER_AUC_REP[method][0] if (m, d) == ("lstm", "pad") else None
                rows[label][_column(m, d)] = (paper, iv.estimate)
                rows[label][f"{_column(m, d)} ±"] = (None, (iv.high - iv.low) / 2)
        rows[label]["Kim et al. (orig.)"] = (PAPER_AUC_REP[method][1], None)
    n = {m: len(next(iter(per.values()))["marg"]["auc"]) for m, per in study.items()}
    res.add_table("table2_auc_rep", f"AUC_rep (lower is better) under three deletions: tokens replaced "
                  f"most-important-first by [PAD] (the reproduction's text), [UNK], or the masked LM's most likely "
                  f"other word (Kim et al.'s original metric); p(ŷ|x^[i]) for the predicted class, x = fraction of "
                  f"content tokens replaced, area from 0 to {cfg['auc_stop']} divided by {cfg['auc_stop']}; "
                  f"sentences per model {n}; '±' = half-width of the 95 % bootstrap interval over sentences. Paper "
                  "values (700 sentences, [PAD], model not named) shown in the BiLSTM · [PAD] column.", rows,
                  direction={_column(m, d): "lower" for m, per in study.items() for d in per})
    for m, per in study.items():
        for d, by in per.items():
            res.add_claim(**ordering_claim(m, by, deletion=d))
    return rows


def deletion_figure(study: dict, model: str = "lstm", deletion: str = "pad"):
    """Fig. 4: mean p(ŷ | x^[i]) against the fraction of tokens replaced, one line per method."""
    from lab.viz import perturbation_curves

    curves = {k: v["mean_curve"].numpy() for k, v in study[model][deletion].items()}
    grid = next(iter(study[model][deletion].values()))["grid"].numpy()
    return perturbation_curves(grid, curves, ylabel="p(ŷ | x^[i])",
                               xlabel=f"fraction of tokens replaced by {DELETIONS[deletion]}",
                               title=f"AUC_rep curves, {MODEL_NAMES[model]}, {DELETIONS[deletion]} deletion",
                               legend_values={k: v["auc_mean"] for k, v in study[model][deletion].items()})


# ---------------------------------------------------------------- Figs. 1-3: coloured sentences
def _panel(inputs, scores, i: int, title: str):
    tok = _tokenizer()
    inner_sep = (inputs["input_ids"][i] == SEP_ID) & inputs["attention_mask"][i].bool()
    inner_sep[int(inputs["attention_mask"][i].sum()) - 1] = False  # the final [SEP] is not shown
    keep = ~special_mask(inputs)[i] | inner_sep  # a pair's middle [SEP] is drawn as "|"
    ids = inputs["input_ids"][i][keep]
    tokens = tok.convert_ids_to_tokens(ids.tolist())
    vals = scores[i][keep].numpy().copy()
    vals[(ids == SEP_ID).numpy()] = 0.0
    return title, ["|" if t == "[SEP]" else t for t in tokens], vals


def figure_examples(cfg: dict, max_words: int = 14) -> list:
    """One positive and one negative short SST-2 test sentence per figure row (the first n_figure // 2 each)."""
    pool = sst_test_sentences(872, cfg["seed"] + 1, max_words=max_words)
    pos = [e for e in pool if e.label == 1][: max(1, cfg["n_figure"] // 2)]
    neg = [e for e in pool if e.label == 0][: max(1, cfg["n_figure"] // 2)]
    return pos + neg


@one_thread
def sst_figure(models: dict, mlm, cfg: dict, examples, names=("lstm", "bert", "cnn"), method: str = "marg"):
    """Fig. 1: Marg attributions of the predicted class, for each model and sentence (red supports, blue opposes)."""
    from lab.viz import token_heatmap_panels

    inputs = tokenize([e.text for e in examples], max_length=cfg["max_length"])
    panels = []
    for name in names:
        att = attribute(_classifier(models[name]), inputs, method, mlm, cfg)
        probs = att["log_probs"].exp()
        for i, e in enumerate(examples):
            y = int(att["target"][i])
            panels.append(_panel(inputs, att["scores"], i, f"{MODEL_NAMES[name]} · gold {'+' if e.label else '−'} · "
                                 f"predicted {'+' if y else '−'} (p={float(probs[i, y]):.2f})"))
    return token_heatmap_panels(panels, signed=True)


SNLI_LABELS = ("entailment", "neutral", "contradiction")


@one_thread
def snli_figure(models: dict, mlm, cfg: dict, n: int = 2, method: str = "marg"):
    """Fig. 2: premise | hypothesis attributions of the SNLI BiLSTM for entailment and contradiction examples."""
    from lab.data import load
    from lab.viz import token_heatmap_panels

    examples = [e for e in load("snli", "test") if len(e.text.split()) <= 12]
    chosen = [e for e in examples if e.label == 0][:n] + [e for e in examples if e.label == 2][:n]
    inputs = tokenize([e.text for e in chosen], [e.text_pair for e in chosen], cfg["max_length"])
    att = attribute(_classifier(models["snli_lstm"]), inputs, method, mlm, cfg)
    probs = att["log_probs"].exp()
    panels = []
    for i, e in enumerate(chosen):
        y = int(att["target"][i])
        panels.append(_panel(inputs, att["scores"], i, f"gold {SNLI_LABELS[e.label]} · predicted {SNLI_LABELS[y]} "
                             f"(p={float(probs[i, y]):.2f}) · premise | hypothesis"))
    return token_heatmap_panels(panels, signed=True)


FIG3_SENTENCES = ("a good piece of work more often than not .", "the movie is bleak and disappointing .",
                  "a brilliant , romantic film .", "if steven soderbergh 's ` solaris ' is a failure it is a "
                  "glorious failure .")


@one_thread
def zero_vs_marg_figure(models: dict, mlm, cfg: dict, model: str = "lstm", sentences=FIG3_SENTENCES):
    """Fig. 3: Zero erasure vs marginalisation on the same sentences (predicted class)."""
    from lab.viz import token_heatmap_panels

    inputs = tokenize(sentences, max_length=cfg["max_length"])
    clf = _classifier(models[model])
    panels = []
    results = {m: attribute(clf, inputs, m, mlm, cfg) for m in ("zero", "marg")}
    for i in range(len(sentences)):
        for m, att in results.items():
            y = int(att["target"][i])
            panels.append(_panel(inputs, att["scores"], i, f"{'Zero' if m == 'zero' else 'Marg'} · "
                                 f"{MODEL_NAMES[model]} · predicted {'+' if y else '−'}"))
    return token_heatmap_panels(panels, signed=True)


# ---------------------------------------------------------------- Monte Carlo vs truncation
@one_thread
def mc_study(models: dict, mlm, cfg: dict, model: str = "cnn", sigmas=(1e-2, 1e-3, 1e-4), seeds=(0, 1, 2),
             progress: bool = True) -> dict:
    """Error of MC (n draws) and σ-truncation against the exact marginalisation, with their costs (classifier
    rows), on cfg['n_mc_sentences'] short SST-2 sentences. To afford the exact sum on a CPU, p_MLM is restricted to
    its cfg['mc_vocab'] most likely words (renormalised) for every estimator alike. Memoised with `use_cache`."""
    return _memo(cfg, f"mc-{model}", lambda: _mc_study(models, mlm, cfg, model, sigmas, seeds, progress),
                 model=cache.digest(_classifier(models[model])), mlm=_mlm_digest(mlm), sigmas=list(sigmas),
                 seeds=list(seeds))


def _mc_study(models: dict, mlm, cfg: dict, model: str, sigmas, seeds, progress: bool) -> dict:
    examples = sst_test_sentences(cfg["n_mc_sentences"], cfg["seed"] + 2, max_words=cfg["mc_max_words"])
    inputs = tokenize([e.text for e in examples], max_length=cfg["max_length"])
    clf = _classifier(models[model])
    content = ~special_mask(inputs)
    mlm = CachedMLM(mlm, vocab=cfg["mc_vocab"])
    full = attribute(clf, inputs, "marg", mlm, {**cfg, "sigma": 0.0, "max_candidates": None}, progress=progress)
    ref = full["scores"][content]
    rows = []
    for s in sigmas:
        a = attribute(clf, inputs, "marg", mlm, {**cfg, "sigma": s, "max_candidates": None})
        err = (a["scores"][content] - ref).abs()
        rows.append({"estimator": f"truncate σ={s:g}", "kind": "truncate", "param": s, "mae": float(err.mean()),
                     "abs_errors": err.tolist(), "rows_per_token": a["cost"]["classifier_rows"] / int(content.sum())})
    for n in cfg["mc_sizes"]:
        errs, cost = [], []
        for seed in seeds:
            a = attribute(clf, inputs, "marg_mc", mlm, {**cfg, "n_samples": n, "seed": seed})
            errs.append((a["scores"][content] - ref).abs().numpy())
            cost.append(a["cost"]["classifier_rows"] / int(content.sum()))
        per_seed = [float(e.mean()) for e in errs]
        rows.append({"estimator": f"MC n={n}", "kind": "mc", "param": n, "mae": float(np.mean(per_seed)),
                     "mae_std": float(np.std(per_seed)), "abs_errors": np.mean(errs, 0).tolist(),
                     "rows_per_token": float(np.mean(cost))})
    return {"rows": rows, "full_rows_per_token": full["cost"]["classifier_rows"] / int(content.sum()),
            "mc_vocab": cfg["mc_vocab"],
            "n_tokens": int(content.sum()), "model": model, "full_seconds": full["seconds"]}


def mc_figure(study: dict):
    """Mean |a − a_full| against classifier forward rows per token: MC (by n) and truncation (by σ)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for kind, marker in (("mc", "o"), ("truncate", "s")):
        pts = [r for r in study["rows"] if r["kind"] == kind]
        ax.plot([r["rows_per_token"] for r in pts], [r["mae"] for r in pts], marker=marker,
                label="Monte Carlo (n draws)" if kind == "mc" else "σ-truncation")
        for r in pts:
            ax.annotate(f"{r['param']:g}", (r["rows_per_token"], r["mae"]), textcoords="offset points",
                        xytext=(3, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("classifier forward rows per token (cost)")
    ax.set_ylabel("mean |a − a_exact|")
    ax.set_title(f"MC vs truncation ({MODEL_NAMES[study['model']]}; exact over the top {study['mc_vocab']} "
                 "MLM words)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def add_mc_table(res, study: dict) -> dict:
    rows = {r["estimator"]: {"mean_abs_error": (None, r["mae"]), "rows_per_token": (None, r["rows_per_token"])}
            for r in study["rows"]}
    res.add_table("mc_vs_truncation", f"estimators of the exact weight of evidence ({study['n_tokens']} tokens, "
                  f"{MODEL_NAMES[study['model']]}; p_MLM restricted to its top {study['mc_vocab']} words, "
                  f"renormalised, for all estimators; exact = {study['full_rows_per_token']:.0f} rows/token)", rows,
                  direction={"mean_abs_error": "lower", "rows_per_token": "lower"})
    res.add_claim(**mc_claim(study))
    return rows


def mc_claim(study: dict) -> dict:
    """'The MC error falls as n grows': each next n's per-token error (mean over seeds) minus the previous one's,
    paired over tokens, below 0."""
    mc = [r for r in study["rows"] if r["kind"] == "mc"]
    parts = {f"n={a['param']}→{b['param']}": stats.paired_difference(b["abs_errors"], a["abs_errors"])
             for a, b in zip(mc, mc[1:])}
    verdicts = {k: stats.decide(iv, 0.0, "less") for k, iv in parts.items()}
    return {"claim": "the Monte Carlo error falls as n grows (beyond the paper)",
            "verdict": stats.combine(verdicts.values()) if parts else None,
            "detail": f"paired over {study['n_tokens']} tokens: "
                      + "; ".join(f"{k}: {iv} → {verdicts[k]}" for k, iv in parts.items())}


def cost_ratio(study: dict, sigma: float = 1e-4) -> dict:
    """Rows per token MC needs to match σ-truncation's error (the first n at or below it), and the ratio."""
    trunc = next(r for r in study["rows"] if r["kind"] == "truncate" and r["param"] == sigma)
    mc = [r for r in study["rows"] if r["kind"] == "mc"]
    match = next((r for r in mc if r["mae"] <= trunc["mae"]), None)
    return {"sigma": sigma, "truncation_mae": trunc["mae"], "truncation_rows": trunc["rows_per_token"],
            "mc_n": None if match is None else match["param"],
            "mc_rows": None if match is None else match["rows_per_token"],
            "ratio": None if match is None else match["rows_per_token"] / trunc["rows_per_token"]}


# ---------------------------------------------------------------- Fig. 5: generative extension
FIG5_SENTENCES = ("sam i am", "less is more", "a great movie", "the plot is thin")


def causal_lm(cfg: dict, progress: bool = True):
    from lab.models.causal_lm import causal_lm_preset

    return causal_lm_preset("smoke" if cfg["profile"] == "smoke" else "default", progress=progress)


@one_thread
def generative_attributions(lm, mlm, cfg: dict, sentences=FIG5_SENTENCES) -> dict:
    """a_i = logodds p(x) − logodds p^[i](x) for short sentences (class 1 of the LM's two-class view)."""
    from lab.explainers.marginalization import marginalize, sentence_log_probs_fn

    inputs = tokenize(sentences, max_length=cfg["max_length"])
    fn = sentence_log_probs_fn(lm.model)
    out = marginalize(fn, inputs, torch.ones(len(sentences), dtype=torch.long), special_mask(inputs), mlm,
                      "truncate", sigma=cfg["sigma"], renormalize=cfg["renormalize"],
                      max_candidates=cfg.get("max_candidates"))
    with torch.no_grad():
        out["log_p"] = fn(inputs)[:, 1]
    out["inputs"] = inputs
    return out


def generative_figure(gen: dict, sentences=FIG5_SENTENCES):
    from lab.viz import token_heatmap_panels

    panels = [_panel(gen["inputs"], gen["scores"], i, f"log p(x) = {float(gen['log_p'][i]):.1f}")
              for i in range(len(sentences))]
    return token_heatmap_panels(panels, signed=True)


# ---------------------------------------------------------------- widget
@one_thread
def candidate_table(model, mlm, cfg: dict, text: str, position: int, method: str = "marg", sigma: float = 1e-4,
                    n_samples: int = 100, top: int = 15, text_pair: str | None = None):
    """The candidates w at one content position with p_MLM weight and p(y|x_{i←w}) (a pandas DataFrame)."""
    import pandas as pd

    inputs = tokenize([text], None if text_pair is None else [text_pair], cfg["max_length"])
    att = attribute(model, inputs, method, mlm, {**cfg, "sigma": sigma, "n_samples": n_samples}, keep=True)
    content = (~special_mask(inputs)[0]).nonzero()[:, 0].tolist()
    if not content:
        raise ExperimentError("the text has no content token")
    pos = content[min(max(int(position), 0), len(content) - 1)]
    cands = att.get("candidates", {}).get((0, pos))
    tok = _tokenizer()
    if cands is None:
        return att, pos, pd.DataFrame()
    ids, log_w, log_py = cands
    order = torch.argsort(log_w, descending=True)[:top]
    frame = pd.DataFrame({"candidate": tok.convert_ids_to_tokens(ids[order].tolist()),
                          "weight": log_w[order].exp().numpy(), "p(y | x_i←w)": log_py[order].exp().numpy()})
    return att, pos, frame


def renderer(models: dict, mlm, cfg: dict):
    """Widget render function: (text, model, method, sigma, n_samples, position) -> Figure with the coloured
    sentence and the top candidates (with their MLM weights and class probabilities) at the chosen position."""
    import matplotlib.pyplot as plt

    from lab.viz import token_heatmap

    def render(text: str, model: str, method: str, sigma: float, n_samples: int, position: int):
        if not text.strip():
            raise ExperimentError("type a sentence")
        clf = _classifier(models[model])
        premise, hypothesis = (text.split("|", 1) + [None])[:2] if model == "snli_lstm" else (text, None)
        if model == "snli_lstm" and hypothesis is None:
            raise ExperimentError("SNLI: write 'premise | hypothesis'")
        att, pos, frame = candidate_table(clf, mlm, cfg, premise.strip(), position, method, 10 ** sigma,
                                          n_samples, text_pair=None if hypothesis is None else hypothesis.strip())
        inputs = tokenize([premise.strip()], None if hypothesis is None else [hypothesis.strip()], cfg["max_length"])
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 5.5), gridspec_kw={"height_ratios": [1, 2.2]})
        title, tokens, vals = _panel(inputs, att["scores"], 0, f"{MODEL_NAMES[model]} · {method}")
        token_heatmap(tokens, vals, ax=ax1, title=title, signed=True)
        chosen = _tokenizer().convert_ids_to_tokens([int(inputs["input_ids"][0, pos])])[0]
        if len(frame):
            ax2.barh(range(len(frame))[::-1], frame["weight"], color="tab:blue", label="weight (p_MLM or MC share)")
            ax2.set_yticks(range(len(frame))[::-1],
                           [f"{c}  p(y)={p:.2f}" for c, p in zip(frame["candidate"], frame["p(y | x_i←w)"])],
                           fontsize=7)
            ax2.set_title(f"candidates for '{chosen}' (position {pos}); {int(att['n_candidates'][0, pos])} kept",
                          fontsize=9)
            ax2.legend(fontsize=7)
        else:
            ax2.text(0.5, 0.5, f"{method}: one fixed replacement token (erasure)", ha="center", va="center")
            ax2.axis("off")
        fig.tight_layout()
        return fig

    return render


def model_accuracy(trained, name: str) -> tuple[float, int]:
    """(test accuracy, number of test examples) of a target model."""
    if name == "bert":
        return trained.accuracy, trained.metrics["n_eval"]
    return trained.metrics["test_accuracy"], trained.metrics["n_test"]


def add_claims(res, cfg: dict, models: dict, mlm, gen: dict | None = None) -> None:
    """The MLM target, Table 1 accuracies (bootstrap of the correct/incorrect indicator) and Fig. 5."""
    m = mlm.metrics
    res.add_claim("our masked LM reaches top-5 > 50 % on held-out SST-2 (issue target)",
                  interval=stats.proportion(m["top5"], m["n_masked"]), margin=0.5, kind="greater",
                  detail=f"top-1 {m['top1']:.3f}, top-5 {m['top5']:.3f}, perplexity {m['perplexity']:.1f}, "
                         f"over {m['n_masked']} masked positions")
    for name, (repro, _) in PAPER_ACCURACY.items():
        acc, n = model_accuracy(models[name], name)
        res.add_claim(f"{MODEL_NAMES[name]} test accuracy within 5 points of the reproduction's {repro} (or above)",
                      interval=stats.proportion(acc, n), margin=repro - 0.05, kind="greater",
                      detail=f"ours {acc:.3f} on {n} test examples")
    if gen is not None:
        tok = _tokenizer()
        ids = gen["inputs"]["input_ids"][0]
        content = (~special_mask(gen["inputs"])[0]).nonzero()[:, 0]
        best = int(content[gen["scores"][0, content].argmax()])
        word = tok.convert_ids_to_tokens([int(ids[best])])[0]
        res.add_claim("generative extension: 'sam' has the highest attribution in 'sam i am' (Fig. 5)",
                      word == "sam", detail=f"highest: {word!r} (one sentence of the paper's figure: no interval)")


def _auc_discussion(res) -> str:
    """Table 2 per (model, deletion) column, then the ordering verdicts counted per deletion."""
    rows = res.tables["table2_auc_rep"]["rows"]
    columns = [c for c in next(iter(rows.values())) if not c.endswith("±") and c != "Kim et al. (orig.)"]
    per_col = ["{}: {}".format(c, ", ".join(f"{meth.split(' ')[0]} {r[c]['ours']:.3f} ± {r[c + ' ±']['ours']:.3f}"
                                            for meth, r in rows.items())) for c in columns]
    paper = ", ".join(f"{meth.split(' ')[0]} {r[c]['paper']}" for meth, r in rows.items() for c in columns
                      if r[c].get("paper") is not None)
    text = ("*Table 2, AUC_rep (mean ± 95 % half-width; lower is better).* " + "; ".join(per_col)
            + (f" (reproduction's values, [PAD]: {paper})." if paper else "."))
    verdicts = []
    for deletion, label in DELETIONS.items():
        found = [c["verdict"] for c in res.claims if c["claim"].startswith("AUC_rep ordering")
                 and c["claim"].endswith(f"{label} deletion)")]
        if found:
            counts = ", ".join(f"{found.count(v)} {v}" for v in dict.fromkeys(found))
            verdicts.append(f"{label} deletion: {counts} (of {len(found)} models)")
    if verdicts:
        text += " Marg < Unk < Zero under " + "; ".join(verdicts) + "."
    return text


def discussion_markdown(res) -> str:
    """The notebook's discussion, formatted from the results object's tables (no fixed numbers); the verdicts are
    `lab.results.claims_markdown`'s."""
    t, parts = res.tables, []
    if "mlm" in t:
        ours = t["mlm"]["rows"]["MiniLM + tied MLM head (ours)"]
        parts.append(f"*The masked LM.* Held-out top-1 {ours['top1']['ours']:.3f}, top-5 {ours['top5']['ours']:.3f}, "
                     f"perplexity {ours['perplexity']['ours']:.0f} after {ours['steps']['ours']} steps (issue target: "
                     "top-5 ≥ 0.5; the paper uses pretrained BERT).")
    if "table1_accuracy" in t:
        acc = [(m, r["accuracy (Mehta)"], r["accuracy (Kim)"]) for m, r in t["table1_accuracy"]["rows"].items()]
        parts.append("*Table 1 (ours vs Mehta / Kim).* "
                     + "; ".join(f"{m} {a['ours']:.3f} ({a['paper']} / {k['paper']})" for m, a, k in acc) + ".")
    if "table2_auc_rep" in t:
        parts.append(_auc_discussion(res))
    if "mc_vs_truncation" in t:
        mc = t["mc_vs_truncation"]["rows"].items()
        parts.append("*Monte Carlo vs truncation (beyond the paper), mean |a − a_exact| at rows per token.* "
                     + "; ".join(f"{k} {r['mean_abs_error']['ours']:.4f} at {r['rows_per_token']['ours']:.0f}"
                                 for k, r in mc) + ".")
    return "\n\n".join(parts)
