"""lab.cache: stable keys, atomic directories and files."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lab import cache

PARAMS = {"dataset": "sst2", "model": "minilm", "lr": 5e-5, "epochs": 1, "batch_size": 32, "seed": 0,
          "train_size": None, "freeze_layers": 0, "pair": False, "tags": ["a", "b"]}


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


# ---------------------------------------------------------------- cache_key
def test_key_ignores_argument_order_and_has_prefix():
    reordered = dict(reversed(list(PARAMS.items())))
    key = cache.cache_key("sst2 minilm", **PARAMS)
    assert key == cache.cache_key("sst2 minilm", **reordered)
    assert key.startswith("sst2-minilm-") and len(key.rsplit("-", 1)[1]) == 16


def test_key_is_stable_across_processes_and_versions():
    # sha256 of the sorted JSON: independent of PYTHONHASHSEED, dict order and the interpreter run
    assert cache.cache_key("p", **PARAMS) == "p-619cc2bb5ab230ee"


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_key_changes_with_every_parameter(name):
    changed = dict(PARAMS)
    value = PARAMS[name]
    changed[name] = {str: value + "x" if isinstance(value, str) else value, int: 7, float: 1e-4,
                     bool: not value, type(None): 100, list: ["a"]}[type(value)]
    assert cache.cache_key("p", **changed) != cache.cache_key("p", **PARAMS)
    dropped = {k: v for k, v in PARAMS.items() if k != name}
    assert cache.cache_key("p", **dropped) != cache.cache_key("p", **PARAMS)


def test_key_rejects_unserialisable_values():
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        cache.cache_key("p", model=object())


def test_cached_dir_is_under_the_cache_setting(tmp_path):
    assert cache.cached_dir("models", "k-1") == tmp_path / "cache" / "models" / "k-1"
    with pytest.raises(ValueError):
        cache.cached_dir("models", "../escape")


# ---------------------------------------------------------------- atomic_dir
def test_atomic_dir_success_is_complete_and_leaves_no_temp(tmp_path):
    final = tmp_path / "out" / "thing"
    with cache.atomic_dir(final) as tmp:
        assert tmp != final and tmp.parent == final.parent
        (tmp / "weights.bin").write_bytes(b"123")
        assert not final.exists() and not cache.is_complete(tmp)  # nothing visible before the end
    assert cache.is_complete(final)
    assert (final / "weights.bin").read_bytes() == b"123"
    assert _siblings(final) == []


def test_atomic_dir_exception_leaves_nothing(tmp_path):
    final = tmp_path / "out" / "thing"
    with pytest.raises(KeyboardInterrupt):
        with cache.atomic_dir(final) as tmp:
            (tmp / "half.bin").write_bytes(b"12")
            raise KeyboardInterrupt
    assert not final.exists()
    assert _siblings(final) == []


def test_atomic_dir_exception_keeps_previous_complete_version(tmp_path):
    final = tmp_path / "thing"
    with cache.atomic_dir(final) as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError):
        with cache.atomic_dir(final) as tmp:
            (tmp / "v").write_text("2")
            raise RuntimeError("boom")
    assert (final / "v").read_text() == "1" and cache.is_complete(final)


def test_marker_is_required_and_incomplete_dir_is_replaced(tmp_path):
    final = tmp_path / "thing"
    final.mkdir()
    (final / "weights.bin").write_bytes(b"partial")
    assert not cache.is_complete(final)
    with cache.atomic_dir(final) as tmp:
        (tmp / "weights.bin").write_bytes(b"full")
    assert cache.is_complete(final) and (final / "weights.bin").read_bytes() == b"full"
    assert _siblings(final) == []


def test_stale_temp_of_dead_writer_is_removed(tmp_path):
    final = tmp_path / "thing"
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(proc.stdout)
    stale = tmp_path / f".thing.tmp-{dead_pid}-abc"
    stale.mkdir()
    alive = tmp_path / f".thing.tmp-{os.getpid()}-xyz"  # a concurrent writer in a live process: kept
    alive.mkdir()
    with cache.atomic_dir(final) as tmp:
        (tmp / "x").write_text("x")
    assert not stale.exists() and alive.exists()


# ---------------------------------------------------------------- atomic files
def test_atomic_write_json_roundtrip_and_failure_keeps_old(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    cache.atomic_write_json(path, {"acc": 0.9, "n": 3})
    assert json.loads(path.read_text()) == {"acc": 0.9, "n": 3}
    with pytest.raises(TypeError):  # fails mid-write: the old file stays, no temp file is left
        cache.atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]
    assert json.loads(path.read_text()) == {"acc": 0.9, "n": 3}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_atomic_write_bytes_replaces_content(tmp_path):
    path = tmp_path / "blob.bin"
    cache.atomic_write_bytes(path, b"one")
    cache.atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"


def test_num_threads_setting_is_validated(monkeypatch):
    from lab import config

    monkeypatch.setenv("LAB_NUM_THREADS", "1")
    assert config.num_threads() == 1
    monkeypatch.setenv("LAB_NUM_THREADS", "")
    assert config.num_threads() is None
    monkeypatch.setenv("LAB_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="LAB_NUM_THREADS must be a positive integer"):
        config.num_threads()


# ---------------------------------------------------------------- memoize / digest
def test_digest_follows_content_not_identity():
    import torch

    a = {"x": torch.arange(6.0).reshape(2, 3), "y": [1, "b", None]}
    same = {"y": [1, "b", None], "x": torch.arange(6.0).reshape(2, 3)}
    assert cache.digest(a) == cache.digest(same)
    assert cache.digest(a) != cache.digest({**a, "x": torch.arange(6.0).reshape(3, 2)})  # shape
    assert cache.digest(a) != cache.digest({**a, "x": torch.arange(6).reshape(2, 3)})  # dtype
    changed = torch.arange(6.0).reshape(2, 3)
    changed[1, 2] += 1e-6
    assert cache.digest(a) != cache.digest({**a, "x": changed})  # one value
    lin = torch.nn.Linear(3, 2)
    copy = torch.nn.Linear(3, 2)
    copy.load_state_dict(lin.state_dict())
    assert cache.digest(lin) == cache.digest(copy)
    with torch.no_grad():
        copy.bias += 1
    assert cache.digest(lin) != cache.digest(copy)


def test_memoize_computes_once_per_key(monkeypatch):
    calls = []

    def compute(value):
        calls.append(value)
        return {"value": value}

    before = dict(cache.MEMO_STATS)
    assert cache.memoize("memo", "t", lambda: compute(1), k=1) == {"value": 1}
    assert cache.memoize("memo", "t", lambda: compute(99), k=1) == {"value": 1}  # a hit never calls compute
    assert cache.memoize("memo", "t", lambda: compute(2), k=2) == {"value": 2}
    assert calls == [1, 2]
    assert cache.MEMO_STATS["hits"] - before["hits"] == 1 and cache.MEMO_STATS["misses"] - before["misses"] == 2
    assert cache.memoize("memo", "t", lambda: compute(3), enabled=False, k=1) == {"value": 3}
    # any change to the computing code invalidates every memoised value
    monkeypatch.setattr(cache, "code_digest", lambda: "edited")
    assert cache.memoize("memo", "t", lambda: compute(4), k=1) == {"value": 4}
    assert calls == [1, 2, 3, 4]


def test_memoize_stores_nothing_when_compute_fails_and_recovers_from_a_corrupt_file():
    def boom():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.memoize("memo", "t", boom, k="x")
    assert not any(cache.is_complete(p) for p in (cache.cached_dir("memo", "x").parent).glob("*"))
    assert cache.memoize("memo", "t", lambda: 5, k="x") == 5
    (stored,) = [p for p in cache.cached_dir("memo", "x").parent.glob("t-*") if cache.is_complete(p)]
    (stored / "value.pt").write_bytes(b"not a pickle")
    assert cache.memoize("memo", "t", lambda: 6, k="x") == 6  # recomputed and rewritten
    assert cache.memoize("memo", "t", lambda: 7, k="x") == 6


def test_code_digest_ignores_presentation_code_only(tmp_path, monkeypatch):
    root = tmp_path / "lab"
    for rel in ("cache.py", "viz/plots.py", "widgets.py", "explainers/relevance.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x = 1\n")
    monkeypatch.setattr(cache, "__file__", str(root / "cache.py"))
    base = cache.code_digest()
    (root / "viz/plots.py").write_text("x = 2\n")
    (root / "widgets.py").write_text("x = 2\n")
    assert cache.code_digest() == base
    (root / "explainers/relevance.py").write_text("x = 2\n")
    assert cache.code_digest() != base
