"""lab.models: loading (aliases, eager attention, offline errors) and cached fine-tuning on a tiny random BERT."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from transformers import BertConfig

from lab import cache
from lab.data.base import TextDataset, TextExample
from lab.models import loading, training
from lab.models import (ModelUnavailableError, PRESETS, evaluate, fine_tune, load_classifier, load_fine_tuned,
                        load_tokenizer, predict_proba)

TINY = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)
POS, NEG = ["good", "great", "fine", "lovely", "superb"], ["bad", "awful", "poor", "dull", "boring"]


def _dataset(n: int, seed: int, split: str = "train") -> TextDataset:
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(n):
        label = i % 2
        words = rng.choice(POS if label else NEG, size=rng.integers(1, 6)).tolist()
        examples.append(TextExample(text="the film was " + " ".join(words), label=label, uid=str(i)))
    return TextDataset("toy", split, ("negative", "positive"), examples)


TRAIN, EVAL = _dataset(40, 0), _dataset(24, 1, "dev")
ARGS = dict(model=TINY, eval_split=EVAL, epochs=2, lr=5e-3, batch_size=8, max_length=16, progress=False)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LAB_NUM_THREADS", "1")  # tiny models: threads only add overhead on a shared CPU


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with training.torch_threads(1):
        yield


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm")


_REAL_STEP = training._train_step


def _count_steps(monkeypatch, fail_at: int | None = None) -> list[int]:
    """Wrap the training step: count calls, optionally raise at call ``fail_at`` (an interruption)."""
    calls, real = [], _REAL_STEP

    def step(*args, **kwargs):
        calls.append(1)
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt("simulated interruption")
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "_train_step", step)
    return calls


def _train_loss(model, tokenizer) -> float:
    probs = predict_proba(model, tokenizer, [e.text for e in TRAIN], max_length=16)
    return float(-np.log(probs[np.arange(len(TRAIN)), TRAIN.labels]).mean())


def _model_dirs(tmp_path):
    root = tmp_path / "cache" / "models"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# ---------------------------------------------------------------- loading
def test_alias_and_passthrough_resolution(tmp_path):
    assert (loading.Path(loading.resolve_model_name("minilm")) / "config.json").is_file()
    assert loading.resolve_model_name("bert-base-uncased") == "bert-base-uncased"
    assert loading.resolve_model_name("textattack/bert-base-uncased-SST-2") == "textattack/bert-base-uncased-SST-2"
    assert loading.resolve_model_name(tmp_path) == str(tmp_path.resolve())
    with pytest.raises(ModelUnavailableError, match="no model directory"):
        loading.resolve_model_name(str(tmp_path / "missing" / "model"))


def test_load_classifier_is_eager_and_in_eval_mode(tmp_path):
    from transformers import BertForSequenceClassification

    BertForSequenceClassification(BertConfig(**{**TINY.to_dict(), "num_labels": 3})).save_pretrained(tmp_path / "tiny")
    model = load_classifier(tmp_path / "tiny", label_names=("neg", "neu", "pos"))
    assert model.config._attn_implementation == "eager"
    assert not model.training and not any(m.training for m in model.modules())
    assert model.config.num_labels == 3 and model.config.id2label[2] == "pos"
    out = model(torch.tensor([[101, 2204, 102]]), output_attentions=True)
    assert out.attentions is not None and out.attentions[0].shape == (1, 2, 3, 3)
    with pytest.raises(ValueError, match="classifier head of another size"):
        load_classifier(tmp_path / "tiny", num_labels=2)


def test_offline_hub_name_gives_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for load in (load_classifier, load_tokenizer):
        with pytest.raises(ModelUnavailableError) as err:
            load("some-org/not-a-cached-model-xyz")
        message = str(err.value)
        assert "not available offline" in message and "'minilm'" in message and "\n" not in message
        assert err.value.__cause__ is None and err.value.__suppress_context__


# ---------------------------------------------------------------- batching and prediction
def test_length_batches_cover_every_example_once():
    lengths = list(np.random.default_rng(0).integers(3, 60, size=203))
    batches = training._length_batches(lengths, batch_size=16, seed=5, chunk_batches=4)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(203)) and max(len(b) for b in batches) <= 16
    assert all(np.array_equal(a, b) for a, b in zip(batches, training._length_batches(lengths, 16, 5, 4)))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, training._length_batches(lengths, 16, 6, 4)))
    # within a chunk, batches hold similar lengths: far less padding than random batches would need
    pad = sum(max(lengths[i] for i in b) * len(b) for b in batches) - sum(lengths)
    rand = np.random.default_rng(1).permutation(203)
    pad_random = sum(max(lengths[i] for i in rand[s:s + 16]) * len(rand[s:s + 16]) for s in range(0, 203, 16)) - sum(lengths)
    assert pad < 0.5 * pad_random


def test_predict_proba_is_batch_independent_and_ordered(tokenizer):
    torch.manual_seed(0)
    model = loading.classifier_from_config(TINY, num_labels=2)
    texts = [e.text for e in TRAIN][:9] + ["a much longer sentence " * 5]
    one = predict_proba(model, tokenizer, texts, batch_size=1)
    many = predict_proba(model, tokenizer, texts, batch_size=4)
    assert one.shape == (10, 2) and np.allclose(one.sum(1), 1, atol=1e-5)
    assert np.allclose(one, many, atol=1e-5)  # dynamic padding + attention mask do not change predictions
    single = torch.softmax(model(**tokenizer(texts[3], return_tensors="pt")).logits, -1)[0].detach().numpy()
    assert np.allclose(one[3], single, atol=1e-5)


def test_pairs_are_tokenised_as_pairs(tokenizer):
    torch.manual_seed(0)
    model = loading.classifier_from_config(TINY, num_labels=3)
    probs = predict_proba(model, tokenizer, ["a man sleeps", "two dogs run"], ["a person rests", "cats sit"])
    ref = model(**tokenizer("a man sleeps", "a person rests", return_tensors="pt")).logits.softmax(-1)[0]
    assert np.allclose(probs[0], ref.detach().numpy(), atol=1e-5)
    enc = training._encode(tokenizer, ["a man sleeps"], ["a person rests"], 32)
    assert 1 in enc["token_type_ids"][0] and enc["input_ids"][0].count(tokenizer.sep_token_id) == 2


# ---------------------------------------------------------------- fine-tuning and its cache
def test_fine_tune_caches_and_second_call_does_not_train(tmp_path, tokenizer, monkeypatch, caplog):
    steps = _count_steps(monkeypatch)
    ft = fine_tune(TRAIN, tokenizer=tokenizer, **ARGS)
    assert len(steps) == 2 * 5 and not ft.from_cache  # 40 examples / 8 per batch x 2 epochs
    assert cache.is_complete(ft.path) and (ft.path / "metrics.json").is_file() and (ft.path / "config.json").is_file()
    m = ft.metrics
    assert m["n_train"] == 40 and m["n_eval"] == 24 and m["trained"] and m["train_seconds"] >= 0
    assert m["hparams"]["lr"] == 5e-3 and m["hparams"]["epochs"] == 2 and m["seed"] == 0
    assert m["eval_accuracy"] == pytest.approx(evaluate(ft.model, tokenizer, EVAL, max_length=16, progress=False))
    training.seed_everything(0)  # fine_tune's initial weights: same seed, same construction
    initial = loading.classifier_from_config(TINY, num_labels=2)
    assert _train_loss(ft.model, tokenizer) < _train_loss(initial, tokenizer)  # it learned something ...
    assert m["eval_accuracy"] >= 0.75  # ... enough for the toy task (separable by single words; seed 0)
    assert not ft.model.training and ft.model.config._attn_implementation == "eager"

    with caplog.at_level(logging.INFO, logger="lab.models"):
        again = fine_tune(TRAIN, tokenizer=tokenizer, **ARGS)
    assert len(steps) == 10 and again.from_cache and again.path == ft.path
    assert again.metrics == cache.read_json(ft.path / "metrics.json")
    assert sum("loaded cached fine-tuned model" in r.getMessage() for r in caplog.records) == 1
    assert again.model.config._attn_implementation == "eager" and not again.model.training
    for (name, a), (_, b) in zip(ft.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert again.model.config.id2label == {0: "negative", 1: "positive"}


def test_cache_key_depends_on_hyper_parameters_and_seed(tmp_path, tokenizer):
    fine_tune(TRAIN, tokenizer=tokenizer, **{**ARGS, "epochs": 1})
    fine_tune(TRAIN, tokenizer=tokenizer, **{**ARGS, "epochs": 1, "lr": 1e-3})
    fine_tune(TRAIN, tokenizer=tokenizer, seed=1, **{**ARGS, "epochs": 1})
    fine_tune(TRAIN[:32], tokenizer=tokenizer, **{**ARGS, "epochs": 1})
    assert len(_model_dirs(tmp_path)) == 4


def test_checkpoint_path_depends_on_every_hyper_parameter(tokenizer):
    changes = {"max_length": 20, "train_max_length": 12, "epochs": 3, "lr": 1e-3, "head_lr": 1e-2, "batch_size": 4,
               "warmup": 0.0,
               "weight_decay": 0.1, "train_size": 30, "eval_size": 10, "freeze_layers": 1, "freeze_embeddings": True,
               "model": BertConfig(**{**TINY.to_dict(), "hidden_size": 16}), "eval_split": _dataset(24, 2, "dev"),
               "pair": False, "cls_only_last_layer": True}
    assert set(changes) | {"train_split"} == set(training.DEFAULTS)  # a new hyper-parameter needs a line here
    base = training.checkpoint_path(TRAIN, tokenizer=tokenizer, **ARGS)
    assert base == training.checkpoint_path(TRAIN, tokenizer=tokenizer, **ARGS)
    for name, value in changes.items():
        path = training.checkpoint_path(TRAIN, tokenizer=tokenizer, **{**ARGS, name: value})
        assert (path != base) == (name != "pair"), name  # pair=False is what None resolves to on this data
    assert training.checkpoint_path(TRAIN, tokenizer=tokenizer, seed=1, **ARGS) != base
    assert training.checkpoint_path(_dataset(40, 3), tokenizer=tokenizer, **ARGS) != base  # other examples
    # a knob at its neutral default keeps the keys of checkpoints cached before it existed
    assert training.checkpoint_path(TRAIN, tokenizer=tokenizer, cls_only_last_layer=False, **ARGS) == base
    assert training.checkpoint_path(TRAIN, **ARGS) != base  # tokenizer given by object vs by the model's name


def test_preset_reference_as_base_model_is_keyed_by_the_upstream_checkpoint(monkeypatch):
    toy = {"train_split": "train", "eval_split": "dev", "train_size": 40, "max_length": 16}
    monkeypatch.setitem(PRESETS, ("toy_up", "default"), toy)
    monkeypatch.setattr(training, "_load_data", lambda dataset, hp, seed: (TRAIN, EVAL))
    up = training.checkpoint_path("toy_up")
    down = training.checkpoint_path(TRAIN, model="preset:toy_up/default")
    run = training._plan(TRAIN, None, {"model": "preset:toy_up"}, None, None)
    assert run.base == str(up) and run.upstream == ("toy_up", "default") and run.path == down
    assert run.hp["model"] == f"preset:toy_up/default@{up.name}" and down.name.startswith("toy-from-toy_up-default-")
    monkeypatch.setitem(PRESETS, ("toy_up", "default"), {**toy, "lr": 1e-3})  # upstream changes -> new key
    assert training.checkpoint_path(TRAIN, model="preset:toy_up/default") != down
    with pytest.raises(ValueError, match="no preset"):
        training.checkpoint_path(TRAIN, model="preset:nope/default")


def test_presets_resolve_and_all_overrides_a_subset():
    hp = training._resolve_params("sst2", None, {})
    assert hp == training._resolve_params("sst2", "default", {})
    assert hp["train_size"] is None and hp["lr"] == PRESETS[("sst2", "default")]["lr"]  # the whole train split
    yelp = training._resolve_params("yelp", None, {})
    assert yelp["train_size"] == PRESETS[("yelp", "default")]["train_size"] == 8000
    assert training._resolve_params("yelp", None, {"train_size": "all"})["train_size"] is None
    movies = training._resolve_params("movies", "default", {})
    assert movies["max_length"] == 512 and movies["train_max_length"] <= 512


def test_interrupted_training_leaves_no_loadable_checkpoint(tmp_path, tokenizer, monkeypatch):
    _count_steps(monkeypatch, fail_at=3)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(TRAIN, tokenizer=tokenizer, **{**ARGS, "epochs": 1})
    assert _model_dirs(tmp_path) == []  # no final dir, no temp dir, no resume state
    monkeypatch.setattr(training, "_train_step", _REAL_STEP)
    steps = _count_steps(monkeypatch)
    ft = fine_tune(TRAIN, tokenizer=tokenizer, **{**ARGS, "epochs": 1})
    assert not ft.from_cache and len(steps) == 5  # restarted from scratch


def test_interrupted_in_second_epoch_resumes_identically(tmp_path, tokenizer, monkeypatch, caplog):
    _count_steps(monkeypatch, fail_at=8)  # epoch 1 = steps 1-5; dies inside epoch 2
    with pytest.raises(KeyboardInterrupt):
        fine_tune(TRAIN, tokenizer=tokenizer, **ARGS)
    dirs = _model_dirs(tmp_path)
    assert len(dirs) == 1 and dirs[0].endswith(".resume")
    with pytest.raises(FileNotFoundError, match="not a complete"):
        load_fine_tuned(tmp_path / "cache" / "models" / dirs[0].removesuffix(".resume"))

    monkeypatch.setattr(training, "_train_step", _REAL_STEP)
    steps = _count_steps(monkeypatch)
    with caplog.at_level(logging.INFO, logger="lab.models"):
        resumed = fine_tune(TRAIN, tokenizer=tokenizer, **ARGS)
    assert len(steps) == 5 and any("resuming" in r.getMessage() for r in caplog.records)
    assert _model_dirs(tmp_path) == [resumed.path.name]  # the resume state is removed once complete

    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "reference"))
    reference = fine_tune(TRAIN, tokenizer=tokenizer, **ARGS)
    for (name, a), (_, b) in zip(resumed.model.state_dict().items(), reference.model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_fine_tune_does_not_modify_a_model_instance(tokenizer):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    instance = BertForSequenceClassification(TINY)
    before = {k: v.clone() for k, v in instance.state_dict().items()}
    ft = fine_tune(TRAIN, tokenizer=tokenizer, **{**ARGS, "model": instance, "epochs": 1})
    assert all(torch.equal(before[k], v) for k, v in instance.state_dict().items())
    assert not all(torch.equal(before[k], v) for k, v in ft.model.state_dict().items())


def test_head_lr_applies_to_pooler_and_classifier_only():
    torch.manual_seed(0)
    model = loading.classifier_from_config(TINY, num_labels=2)
    training._freeze(model, 1, False)
    opt = training._optimizer(model, 1e-4, 1e-2, 0.01)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        expected = None if name.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) else \
            1e-2 if name.startswith(("bert.pooler.", "classifier.")) else 1e-4
        assert lr_of.get(id(p)) == expected, name


def test_freeze_layers_keeps_bottom_layers_fixed(tokenizer):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    instance = BertForSequenceClassification(TINY)
    ft = fine_tune(TRAIN, tokenizer=tokenizer, freeze_layers=1, **{**ARGS, "model": instance, "epochs": 1})
    new = ft.model.state_dict()
    for name, value in instance.state_dict().items():
        frozen = name.startswith(("bert.embeddings.", "bert.encoder.layer.0."))
        assert torch.equal(value, new[name]) == frozen, name


def test_start_at_layer_reproduces_the_full_forward(tokenizer):
    torch.manual_seed(0)
    model = loading.classifier_from_config(TINY, num_labels=2)
    enc = training._encode(tokenizer, [e.text for e in TRAIN][:6], None, 16)
    prefix = training._precompute_prefix(model, enc, 1, 0, progress=False)
    idx = np.array([4, 0, 5])
    batch = training._collate(enc, idx, 0, "cpu")
    with torch.no_grad():
        full = model(**batch).logits
        with training._start_at_layer(model, 1, prefix, idx):
            resumed = model(**batch).logits
    assert torch.allclose(full, resumed, atol=1e-6)
    assert len(model.bert.encoder.layer) == 2 and not model.bert.embeddings._forward_hooks  # restored


def test_frozen_prefix_cache_trains_like_the_inline_path(tmp_path, tokenizer, monkeypatch):
    args = {**ARGS, "freeze_layers": 1, "epochs": 2}
    cached = fine_tune(TRAIN, tokenizer=tokenizer, **args)
    monkeypatch.setenv("LAB_PREFIX_CACHE_GB", "0")  # too little memory allowed: frozen layers run every step
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "inline"))
    inline = fine_tune(TRAIN, tokenizer=tokenizer, **args)
    for (name, a), (_, b) in zip(cached.model.state_dict().items(), inline.model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-5), name


def test_bad_arguments_give_clear_errors(tokenizer):
    with pytest.raises(ValueError, match="no preset 'nope'"):
        fine_tune("sst2", profile="nope")
    with pytest.raises(ValueError, match="need max_length"):
        fine_tune(TRAIN, tokenizer=tokenizer, **{**ARGS, "epochs": 0})
    with pytest.raises(ValueError, match="has no text_pair"):
        fine_tune(TRAIN, tokenizer=tokenizer, pair=True, **ARGS)
    with pytest.raises(ValueError, match="model has 2 layers"):
        fine_tune(TRAIN, tokenizer=tokenizer, freeze_layers=3, **ARGS)


# ---------------------------------------------------------------- presets
def test_presets_name_real_splits_and_smoke_is_small():
    from lab.data import DATASETS

    for (dataset, profile), preset in PRESETS.items():
        spec = DATASETS[dataset]
        spec.resolve_split(preset["train_split"])
        spec.resolve_split(preset["eval_split"])
        hp = training._resolve_params(dataset, profile, {})
        if profile == "smoke":
            assert hp["train_size"] <= 64 and hp["epochs"] == 1 and hp["max_length"] <= 64
    assert {d for d, _ in PRESETS} >= {"sst2", "movies", "imdb", "yelp", "sst5", "snli"}
    assert all((d, p) in PRESETS for d, _ in PRESETS for p in ("default", "smoke"))
    assert PRESETS[("snli", "default")]["pair"] and PRESETS[("movies", "default")]["max_length"] == 512


def test_cls_only_last_layer_trains_the_same_model(tmp_path, tokenizer, monkeypatch):
    """Without dropout the [CLS]-only last block gives the same loss and gradients, hence the same weights; with
    frozen layers it combines with the cached prefix."""
    args = {**ARGS, "freeze_layers": 1, "epochs": 2}
    full = fine_tune(TRAIN, tokenizer=tokenizer, **args)
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cls"))
    cls_only = fine_tune(TRAIN, tokenizer=tokenizer, cls_only_last_layer=True, **args)
    assert cls_only.path != full.path
    for (name, a), (_, b) in zip(full.model.state_dict().items(), cls_only.model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-5), name
    assert "forward" not in cls_only.model.bert.encoder.layer[-1].__dict__
