"""Notebook 06: input marginalisation (Kim et al. 2020, reproduced by Mehta et al.) — Tables 1-2, Figures 1-5.

Paper constants, settings, studies and claims. The estimator: `lab.explainers.marginalization`; the CNN/BiLSTM
targets: `lab.models.cnn`; figures, widget and discussion: `lab.viz.input_marginalization`."""
from __future__ import annotations

import functools

import numpy as np

from lab import cache, config, stats
from lab.claims import decide_parts
from lab.data import load
from lab.experiments import ExperimentError, ExperimentSettings
from lab.explainers.marginalization import (CachedMLM, estimator_errors, mlm_replacements, sentence_attributions,
                                            weight_of_evidence)
from lab.metrics.perturbation import auc_rep
from lab.results import Results
from lab.models.cnn import TextClassifier, kim_targets, predict_fn, random_subset, special_mask, tokenize, word_pieces

NOTEBOOK = "06_input_marginalization"

# AUC_rep sizes: n_auc (CNN), n_auc_lstm (BiLSTM), n_auc_bert (MiniLM); their measured cost: notebook 06.
_DEFAULT = {"sst_train_size": 30000, "snli_train_size": None, "cnn_epochs": 2, "lstm_epochs": 2, "snli_epochs": 2,
            "n_test": None, "n_auc": 100, "n_auc_lstm": 30, "n_auc_bert": 8, "auc_max_words": None, "n_figure": 2,
            "n_mc_sentences": 2, "mc_sizes": [10, 30, 100, 300], "mc_vocab": 1000, "max_candidates": None,
            "max_candidates_bert": 20, "mc_max_words": 8}
PROFILES = {
    "smoke": {"sst_train_size": 600, "snli_train_size": 300, "cnn_epochs": 1, "lstm_epochs": 1, "snli_epochs": 1,
              "n_test": 48, "n_auc": 2, "n_auc_lstm": 2, "n_auc_bert": 1, "auc_max_words": 8, "n_figure": 2,
              "n_mc_sentences": 1, "mc_sizes": [4, 16], "mc_vocab": 50, "max_candidates": 4, "max_candidates_bert": 4,
              "mc_max_words": 3, "use_cache": False},
    "default": _DEFAULT,
    "paper": {**_DEFAULT, "n_auc": 700, "n_auc_lstm": 700, "n_auc_bert": 100, "max_candidates_bert": None},
}
AUC_SIZES = {"cnn": "n_auc", "lstm": "n_auc_lstm", "bert": "n_auc_bert"}
COMMON = {"sigma": 1e-4, "renormalize": True, "max_length": 64, "auc_stop": 0.2, "seed": 0, "lstm_train_cap": 15000,
          "n_samples": 100, "threads": 1, "use_cache": True, "deletions": ["pad", "unk", "mlm"]}
DELETIONS = {"pad": "[PAD]", "unk": "[UNK]", "mlm": "MLM"}  # AUC_rep's replacement token (Sec. 3.1.4 reads [PAD])


def _check(cfg: dict) -> None:
    if set(cfg["deletions"]) - set(DELETIONS):
        raise ExperimentError(f"unknown deletion(s) in {cfg['deletions']}; choose from {', '.join(DELETIONS)}")


settings = ExperimentSettings(PROFILES, COMMON, check=_check,
                              positive=("n_auc", "n_auc_lstm", "n_auc_bert", "n_figure", "n_mc_sentences", "mc_vocab",
                                        "max_candidates", "max_candidates_bert", "n_samples"))
PAPER_ACCURACY = {"lstm": (0.77, 0.7753), "bert": (0.92, 0.8578), "cnn": (0.75, 0.7300), "snli_lstm": (0.67, 0.6314)}
PAPER_AUC_REP = {"zero": (0.5608, 0.5284), "unk": (0.5328, 0.5170), "marg": (0.4834, 0.4972)}  # (repro, original)
METHODS = ("zero", "unk", "mask", "marg", "marg_mc")
ERASURES = {"zero": "pad", "unk": "unk", "mask": "mask"}  # erasure methods: their replacement token
AUC_METHODS = {"zero": "Zero ([PAD])", "unk": "Unk", "marg": "Marg (ours)"}
MODEL_NAMES = {"cnn": "CNN (SST-2)", "lstm": "BiLSTM (SST-2)", "bert": "MiniLM fine-tuned (SST-2)",
               "snli_lstm": "BiLSTM (SNLI)"}


def _memo(cfg: dict, prefix: str, compute, **key):
    """compute(), memoised in LAB_CACHE_DIR under `key`, the settings and the code (`use_cache`)."""
    settings_key = {k: v for k, v in cfg.items() if k not in ("profile", "threads", "use_cache")}
    return cache.memoize("input_marginalization", prefix, compute, enabled=bool(cfg.get("use_cache")),
                         settings=settings_key, **key)


def _mlm_digest(mlm) -> str:
    return cache.digest([getattr(mlm, "model", mlm), getattr(mlm, "vocab", None)])


def token_id(name: str) -> int:
    """The id of a special token ("pad", "unk", "mask", ...) in the targets' word pieces."""
    return getattr(word_pieces(), f"{name}_token_id")


# ---------------------------------------------------------------- the models, Table 1
def _preset(cfg: dict) -> str:
    return "smoke" if cfg["profile"] == "smoke" else "default"  # the paper profile uses the default models


def target_models(cfg: dict, progress: bool = True) -> dict:
    """{"cnn", "lstm", "snli_lstm"} trained here (cached) and "bert" = the cached MiniLM SST-2 fine-tune."""
    from lab.models.training import fine_tune_preset

    return {**kim_targets(cfg, progress), "bert": fine_tune_preset("sst2", _preset(cfg))}


def masked_lm(cfg: dict, progress: bool = True):
    """The trained masked LM (TrainedMLM); `CachedMLM(mlm.model)` is what the studies below take as `mlm`."""
    from lab.models.mlm import mlm_preset

    return mlm_preset(_preset(cfg), progress=progress)


def model_accuracy(trained, name: str) -> tuple[float, int]:
    """(test accuracy, number of test examples) of a target model."""
    if name == "bert":
        return trained.accuracy, trained.metrics["n_eval"]
    return trained.metrics["test_accuracy"], trained.metrics["n_test"]


def mlm_table(res, mlm) -> dict:
    m, before = mlm.metrics, mlm.metrics["before_training"]
    ours = {k: (None, m.get(key)) for k, key in (("top1", "top1"), ("top5", "top5"), ("perplexity", "perplexity"),
                                                 ("steps", "steps_done"), ("best_step", "best_step"),
                                                 ("output_vocabulary", "output_vocabulary"), ("oov_rate", "oov_rate"))}
    ours.update(train_min=(None, round(m.get("train_seconds", 0) / 60, 1)),
                train_cpu_min=(None, round(m.get("cpu_seconds", 0) / 60, 1)),
                load_at_start=(None, (m.get("load_average") or [None])[0]))
    rows = {"MiniLM + tied MLM head (ours)": ours,
            "before MLM training": {k: (None, before[k]) for k in ("top1", "top5", "perplexity")}}
    res.add_table("mlm", f"masked-LM accuracy at 15 % masked positions of {m['n_sentences']} held-out SST-2 "
                  "sentences (the paper uses pretrained bert-base-uncased, not available offline)", rows,
                  direction={"top1": "higher", "top5": "higher", "perplexity": "lower"})
    return rows


def start_results(cfg: dict, models: dict, mlm, meta: dict | None = None):
    """The results object with Table 1 (the targets' accuracies) and the masked LM's table."""
    res = Results(NOTEBOOK, cfg["profile"], meta={"sigma": cfg["sigma"], "renormalize": cfg["renormalize"],
                                                 "mlm": str(mlm.path), **(meta or {})})
    rows = {}
    for name in models:
        acc, (repro, orig) = model_accuracy(models[name], name)[0], PAPER_ACCURACY[name]
        rows[MODEL_NAMES[name]] = {"accuracy (Mehta)": (repro, acc), "accuracy (Kim)": (orig, acc)}
    res.add_table("table1_accuracy", "test accuracy of the target models (SST-2 test = the GLUE dev set; SNLI "
                  "trained on its validation split)", rows, direction={"accuracy (Mehta)": "higher",
                                                                      "accuracy (Kim)": "higher"})
    mlm_table(res, mlm)
    return res


# ---------------------------------------------------------------- one interface for the four targets
def attribute(model, inputs: dict, method: str, mlm, cfg: dict, target=None, keep: bool = False,
              progress: bool = False) -> dict:
    """`weight_of_evidence` of one method for any target (target None: the predicted class). Erasure = a point mass
    on [PAD] ("zero": the CNN/BiLSTM [PAD] row is the zero vector), [UNK] or [MASK]; marg = σ-truncation (Hugging
    Face classifiers: at most cfg['max_candidates_bert'] candidates); marg_mc = cfg['n_samples'] Monte Carlo draws."""
    text_clf = isinstance(model, TextClassifier)
    if method in ERASURES:
        p = {"candidates": "token", "token_id": token_id(ERASURES[method])}
    elif method == "marg":
        cap = cfg.get("max_candidates") if text_clf else cfg.get("max_candidates_bert", cfg.get("max_candidates"))
        p = {"candidates": "truncate", "sigma": cfg["sigma"], "renormalize": cfg["renormalize"], "max_candidates": cap}
    elif method == "marg_mc":
        p = {"candidates": "mc", "n_samples": cfg.get("n_samples", 100), "seed": cfg["seed"]}
    else:
        raise ExperimentError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    with config.torch_threads(cfg.get("threads", 1)):
        return weight_of_evidence(model, inputs, special_mask(inputs), mlm, target=target, keep=keep,
                                  erasure=None if text_clf else ERASURES.get(method), progress=progress,
                                  max_batch=1024 if text_clf else 256, **p)


# ---------------------------------------------------------------- Table 2 / Fig. 4: AUC_rep
def sst_test_sentences(n: int | None, seed: int = 0, max_words: int | None = None) -> list:
    """n random SST-2 test sentences (the GLUE dev set), optionally at most `max_words` words long."""
    return random_subset([e for e in load("sst2", "dev") if not max_words or len(e.text.split()) <= max_words], n,
                         seed)


def auc_rep_study(models: dict, mlm, cfg: dict, methods=tuple(AUC_METHODS), progress: bool = True) -> dict:
    """{model: {deletion: {method: auc_rep result}}} on cfg[AUC_SIZES[model]] SST-2 test sentences (nested samples):
    each method's scores computed once (memoised), its curve followed under every deletion of cfg['deletions']."""
    out, mlm_id = {}, _mlm_digest(mlm) if cfg.get("use_cache") else None
    with config.torch_threads(cfg.get("threads", 1)):
        for name in ("cnn", "lstm", "bert"):
            examples = sst_test_sentences(cfg[AUC_SIZES[name]], cfg["seed"], cfg["auc_max_words"])
            inputs = tokenize([e.text for e in examples], max_length=cfg["max_length"])
            model = models[name].model
            tokens = {d: mlm_replacements(mlm, inputs, special_mask(inputs)) if d == "mlm" else token_id(d)
                      for d in cfg["deletions"]}  # AUC_rep's replacement ids
            curves = functools.partial(_auc_curves, model, inputs, mlm=mlm, cfg=cfg, tokens=tokens, progress=progress)
            by_method = {m: _memo(cfg, f"auc-{name}-{m}", functools.partial(curves, m), model=cache.digest(model),
                                  inputs=cache.digest(inputs), method=m, mlm=mlm_id) for m in methods}
            out[name] = {d: {m: by_method[m][d] for m in methods} for d in cfg["deletions"]}
    return out


def _auc_curves(model, inputs: dict, method: str, mlm, cfg: dict, tokens: dict, progress: bool) -> dict:
    """{deletion: auc_rep result} of one method's scores (with its cost per sentence)."""
    att = attribute(model, inputs, method, mlm, cfg, progress=progress)
    metric_model = predict_fn(model) if isinstance(model, TextClassifier) else model  # what lab.metrics takes
    out = {}
    for deletion, token in tokens.items():
        out[deletion] = auc_rep(metric_model, inputs, att["scores"], stop=cfg["auc_stop"], token_id=token,
                                special_mask=special_mask(inputs), progress=False)
        out[deletion].update(seconds_per_sentence=att["seconds"] / len(inputs["input_ids"]),
                             classifier_rows=att["cost"]["classifier_rows"])
    return out


def _all_below_zero(claim: str, parts: dict, detail: str) -> dict:
    """A claim that holds when every interval of `parts` lies below 0 (`lab.claims.decide_parts`); `detail` heads
    the parts' "name: interval → verdict" list."""
    verdict, said = decide_parts({f"{k}:": (iv, 0.0, "less") for k, iv in parts.items()})
    return {"claim": claim, "verdict": verdict, "detail": detail + said}


def ordering_claim(model: str, per_method: dict, order=("marg", "unk", "zero"), deletion: str = "pad") -> dict:
    """'AUC_rep a < b < c' on the same sentences: every adjacent paired difference (a − b, b − c) below 0."""
    parts = {f"{a} − {b}": stats.paired_difference(np.asarray(per_method[a]["auc"], float),
                                                     np.asarray(per_method[b]["auc"], float))
             for a, b in zip(order, order[1:])}
    names = {"marg": "Marg", "unk": "Unk", "zero": "Zero"}
    return _all_below_zero(f"AUC_rep ordering {' < '.join(names[k] for k in order)} ({MODEL_NAMES[model]}, "
                           f"{DELETIONS[deletion]} deletion)", parts, "paired differences ")


def add_auc_table(res, study: dict, cfg: dict) -> dict:
    """Table 2: per (model, deletion) the mean AUC_rep, its '±' 95 % bootstrap half-width and the ordering claim."""
    rows = {label: {} for label in AUC_METHODS.values()}
    for m, per in study.items():
        for d, by in per.items():
            column = f"{MODEL_NAMES[m]} · {DELETIONS[d]}"
            for method, label in AUC_METHODS.items():
                iv = stats.bootstrap(np.asarray(by[method]["auc"], float))
                rows[label][column] = (PAPER_AUC_REP[method][0] if (m, d) == ("lstm", "pad") else None, iv.estimate)
                rows[label][f"{column} ±"] = (None, (iv.high - iv.low) / 2)
    for method, label in AUC_METHODS.items():
        rows[label]["Kim et al. (orig.)"] = (PAPER_AUC_REP[method][1], None)
    n = {m: len(next(iter(per.values()))["marg"]["auc"]) for m, per in study.items()}
    res.add_table("table2_auc_rep", f"AUC_rep (lower is better) under three deletions: tokens replaced "
                  f"most-important-first by [PAD] (the reproduction's text), [UNK], or the masked LM's most likely "
                  f"other word (Kim et al.'s original metric); p(ŷ|x^[i]) for the predicted class, x = fraction of "
                  f"content tokens replaced, area from 0 to {cfg['auc_stop']} divided by {cfg['auc_stop']}; "
                  f"sentences per model {n}; '±' = half-width of the 95 % bootstrap interval over sentences. Paper "
                  "values (700 sentences, [PAD], model not named) shown in the BiLSTM · [PAD] column.", rows,
                  direction={f"{MODEL_NAMES[m]} · {DELETIONS[d]}": "lower" for m, per in study.items() for d in per})
    for m, per in study.items():
        for d, by in per.items():
            res.add_claim(**ordering_claim(m, by, deletion=d))
    return rows


# ---------------------------------------------------------------- Figs. 1-3 and 5: coloured sentences
FIG3_SENTENCES = ("a good piece of work more often than not .", "the movie is bleak and disappointing .",
                  "a brilliant , romantic film .", "if steven soderbergh 's ` solaris ' is a failure it is a "
                  "glorious failure .")
FIG5_SENTENCES = ("sam i am", "less is more", "a great movie", "the plot is thin")


def _view(inputs: dict, runs: dict) -> dict:
    """What `lab.viz.input_marginalization` draws: word pieces [B][S], valid/special [B, S] and, per run, scores,
    target, log_probs and the kept candidates {(row, position): (word pieces, log-weights, log p(y | x_{i←w}))}."""
    tok = word_pieces()
    return {"tokens": [tok.convert_ids_to_tokens(r) for r in inputs["input_ids"].tolist()],
            "valid": inputs["attention_mask"].bool(), "special": special_mask(inputs),
            "runs": {k: {"scores": a["scores"], "target": a.get("target"), "log_probs": a.get("log_probs"),
                         "candidates": {key: (tok.convert_ids_to_tokens(ids.tolist()), log_w, log_py)
                                        for key, (ids, log_w, log_py) in a.get("candidates", {}).items()}}
                     for k, a in runs.items()}}


def attributions(models: dict, mlm, cfg: dict, texts, runs, pairs=None, keep: bool = False, **overrides) -> dict:
    """The view of `texts` (with `pairs`: premise | hypothesis) explained by every (model, method) of `runs`, each
    for its predicted class, under cfg with `overrides` (e.g. sigma, n_samples); `keep`: with the candidates."""
    inputs, cfg = tokenize(texts, pairs, cfg["max_length"]), {**cfg, **overrides}
    return _view(inputs, {(m, k): attribute(models[m].model, inputs, k, mlm, cfg, keep=keep) for m, k in runs})


def _first_by_label(pool, labels, n: int) -> list:
    return [e for label in labels for e in [x for x in pool if x.label == label][:n]]


def figure_examples(cfg: dict, max_words: int = 14) -> list:
    """Fig. 1: the first n_figure // 2 (at least 1) positive, then negative short SST-2 test sentences."""
    return _first_by_label(sst_test_sentences(872, cfg["seed"] + 1, max_words), (1, 0), max(1, cfg["n_figure"] // 2))


def snli_examples(n: int = 2) -> list:
    """Fig. 2: the first n short SNLI test pairs labelled entailment, then the first n labelled contradiction."""
    return _first_by_label([e for e in load("snli", "test") if len(e.text.split()) <= 12], (0, 2), n)


def generative_attributions(lm, mlm, cfg: dict, sentences=FIG5_SENTENCES) -> dict:
    """Fig. 5: `sentence_attributions` of the causal LM (σ-truncation) with the sentences' inputs and view."""
    inputs = tokenize(sentences, max_length=cfg["max_length"])
    with config.torch_threads(cfg.get("threads", 1)):
        out = sentence_attributions(lm.model, inputs, special_mask(inputs), mlm, candidates="truncate",
                                    sigma=cfg["sigma"], renormalize=cfg["renormalize"],
                                    max_candidates=cfg.get("max_candidates"))
    out["inputs"], out["view"] = inputs, _view(inputs, {("lm", "marg"): out})
    return out


# ---------------------------------------------------------------- Monte Carlo vs truncation
def mc_study(models: dict, mlm, cfg: dict, model: str = "cnn", sigmas=(1e-2, 1e-3, 1e-4), seeds=(0, 1, 2),
             progress: bool = True) -> dict:
    """`estimator_errors` of `model` on cfg['n_mc_sentences'] short SST-2 sentences, p_MLM restricted to its
    cfg['mc_vocab'] most likely words (renormalised) for every estimator alike (to afford the exact sum); memoised."""
    examples = sst_test_sentences(cfg["n_mc_sentences"], cfg["seed"] + 2, max_words=cfg["mc_max_words"])
    inputs = tokenize([e.text for e in examples], max_length=cfg["max_length"])
    clf, restricted = models[model].model, CachedMLM(mlm, vocab=cfg["mc_vocab"])

    def score(candidates: str, show: bool, **over) -> dict:
        method = {"truncate": "marg", "mc": "marg_mc"}[candidates]
        return attribute(clf, inputs, method, restricted, {**cfg, **over}, progress=show)

    def compute() -> dict:
        study = estimator_errors(score, ~special_mask(inputs), sigmas, cfg["mc_sizes"], seeds, progress)
        return {**study, "mc_vocab": cfg["mc_vocab"], "model": model}

    return _memo(cfg, f"mc-{model}", compute, model=cache.digest(clf), mlm=_mlm_digest(mlm), sigmas=list(sigmas),
                 seeds=list(seeds))


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
    """'The MC error falls as n grows': each next n's per-token error minus the previous one's below 0 (paired)."""
    mc = [r for r in study["rows"] if r["kind"] == "mc"]
    parts = {f"n={a['param']}→{b['param']}": stats.paired_difference(b["abs_errors"], a["abs_errors"])
             for a, b in zip(mc, mc[1:])}
    return _all_below_zero("the Monte Carlo error falls as n grows (beyond the paper)", parts,
                           f"paired over {study['n_tokens']} tokens: ")


# ---------------------------------------------------------------- Fig. 5 models, widget, claims
def causal_lm(cfg: dict, progress: bool = True):
    from lab.models.causal_lm import causal_lm_preset

    return causal_lm_preset(_preset(cfg), progress=progress)


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
        content = (~special_mask(gen["inputs"])[0]).nonzero()[:, 0]
        best = int(content[gen["scores"][0, content].argmax()])
        word = gen["view"]["tokens"][0][best]
        res.add_claim("generative extension: 'sam' has the highest attribution in 'sam i am' (Fig. 5)",
                      word == "sam", detail=f"highest: {word!r} (one sentence of the paper's figure: no interval)")
