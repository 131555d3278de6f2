"""Two trainings with the same settings give the same weights (`lab.cache.digest`), whatever the wall clock says;
another seed gives other weights. Tiny classifier (`training.fine_tune`), the smoke MLM and the smoke causal LM, each
trained in fresh cache folders (seconds)."""
from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import numpy as np
import pytest
from transformers import BertConfig

from lab import cache
from lab.data.base import TextDataset, TextExample

HAS_SST2 = (Path(os.environ.get("LAB_DATA_DIR", "/work/shared/data")) / "sst2").exists()
needs_sst2 = pytest.mark.skipif(not HAS_SST2, reason="needs the offline SST-2 data (LAB_DATA_DIR)")


@pytest.fixture
def train_in(tmp_path, monkeypatch):
    """train_in(name, fn, slow_clock=False): fn() with a fresh LAB_CACHE_DIR; with `slow_clock` every
    time.perf_counter() call advances an hour, so a wall-clock budget would stop training at once."""
    monkeypatch.setenv("LAB_NUM_THREADS", "1")

    def run(name: str, fn, slow_clock: bool = False):
        with monkeypatch.context() as m:
            m.setenv("LAB_CACHE_DIR", str(tmp_path / name))
            if slow_clock:
                hours = itertools.count(0.0, 3600.0)
                m.setattr(time, "perf_counter", lambda: next(hours))
            return fn()

    return run


def _toy(n: int, seed: int, split: str) -> TextDataset:
    rng = np.random.default_rng(seed)
    words = (["bad", "awful", "dull"], ["good", "great", "fine"])
    examples = [TextExample(text="the film was " + " ".join(rng.choice(words[i % 2], size=3)), label=i % 2,
                            uid=str(i)) for i in range(n)]
    return TextDataset("toy", split, ("negative", "positive"), examples)


def test_fine_tune_is_deterministic(train_in):
    from lab.models.training import fine_tune

    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=32)  # dropout on: its RNG must be seeded
    args = dict(model=config, epochs=2, lr=5e-3, batch_size=8, max_length=16, progress=False)
    train = _toy(32, 0, "train")

    def weights(seed):
        return cache.digest(fine_tune(train, seed=seed, **args).model)

    first = train_in("a", lambda: weights(0), slow_clock=True)
    assert train_in("b", lambda: weights(0)) == first
    assert train_in("c", lambda: weights(1)) != first


@needs_sst2
def test_mlm_is_deterministic_and_step_budgeted(train_in):
    from lab.models.mlm import mlm_preset, settings

    def run(seed):
        mlm = mlm_preset("smoke", seed=seed, progress=False)
        return cache.digest(mlm.model), mlm.metrics, cache.weights_checksum(mlm.path), cache.entry_checksum(mlm.path)

    first, metrics, weights, entry = train_in("a", lambda: run(0), slow_clock=True)
    assert metrics["steps_done"] == settings("smoke")["steps"]
    assert {"top1", "top5", "perplexity", "best_step"} <= set(metrics)
    again = train_in("b", lambda: run(0))
    assert again[0] == first
    # provenance records the weights checksum: equal for equal weights although metrics.json (timings) differs
    assert again[2] == weights and again[3] != entry
    other = train_in("c", lambda: run(1))
    assert other[0] != first and other[2] != weights


@needs_sst2
def test_causal_lm_is_deterministic_and_step_budgeted(train_in):
    from lab.models.causal_lm import causal_lm_preset, settings

    def run(seed):
        lm = causal_lm_preset("smoke", seed=seed, progress=False)
        return cache.digest(lm.model), lm.metrics

    first, metrics = train_in("a", lambda: run(0), slow_clock=True)
    assert metrics["steps_done"] == settings("smoke")["steps"]
    assert train_in("b", lambda: run(0))[0] == first
    assert train_in("c", lambda: run(1))[0] != first
