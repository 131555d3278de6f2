"""lab.cache: stable keys, atomic directories and files."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

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
    monkeypatch.setattr(cache, "_CODE_DIGESTS", {})
    base = cache.code_digest()
    (root / "viz/plots.py").write_text("x = 2\n")
    (root / "widgets.py").write_text("x = 2\n")
    cache._CODE_DIGESTS.clear()  # a new process
    assert cache.code_digest() == base
    (root / "explainers/relevance.py").write_text("x = 2\n")
    assert cache.code_digest() == base  # once per process: the code this process runs has not changed
    cache._CODE_DIGESTS.clear()
    assert cache.code_digest() != base


# ---------------------------------------------------------------- checksums, verification, recovery
def _entry(kind="models", key="m-1", files=None):
    """A finished cache entry with the given {name: bytes} files."""
    path = cache.cached_dir(kind, key)
    with cache.atomic_dir(path) as tmp:
        for name, data in (files or {"model.safetensors": b"w" * 4096, "metrics.json": b'{"acc": 0.9}'}).items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
    return path


def _cache_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "lab.cache" and r.levelname == "WARNING"]


def test_atomic_dir_writes_a_manifest_that_verify_checks():
    path = _entry(files={"model.safetensors": b"w" * 4096, "sub/config.json": b"{}"})
    marker = json.loads((path / cache.COMPLETE).read_text())
    assert marker["files"]["model.safetensors"]["size"] == 4096
    assert marker["files"]["sub/config.json"]["sha256"] == __import__("hashlib").sha256(b"{}").hexdigest()
    assert cache.verify(path) and cache.entry_checksum(path) == marker["checksum"]
    other = _entry(key="m-2", files={"model.safetensors": b"v" * 4096, "sub/config.json": b"{}"})
    assert cache.entry_checksum(other) != marker["checksum"]  # the checksum follows the content
    assert not cache.verify(cache.cached_dir("models", "absent"))


CORRUPTIONS = {
    "truncated weights": ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:100]), "bytes instead of"),
    "truncated metrics": ("metrics.json", lambda p: p.write_bytes(p.read_bytes()[:-3]), "bytes instead of"),
    "same-length garbage": ("model.safetensors", lambda p: p.write_bytes(b"\0" * p.stat().st_size), "sha256 mismatch"),
    "missing file": ("metrics.json", lambda p: p.unlink(), "missing"),
    "garbage marker": (cache.COMPLETE, lambda p: p.write_bytes(b"\xff{"), "unreadable marker"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_entry_is_reported_in_one_line_and_moved_aside(case, caplog, tmp_path):
    path = _entry()
    name, damage, reason = CORRUPTIONS[case]
    damage(path / name)
    assert not cache.verify(path)
    (message,) = _cache_warnings(caplog)
    assert message.startswith(f"models/m-1/{name} is corrupt (") and reason in message and "\n" not in message
    assert not path.exists()
    (moved,) = (tmp_path / "cache" / ".corrupt" / "models").iterdir()
    assert moved.name.startswith("m-1-") and str(moved) in message
    assert (moved / "model.safetensors").is_file()  # moved, not deleted
    again = _entry()  # the caller rebuilds it
    assert cache.verify(again)


def test_contents_are_hashed_once_per_process_and_again_after_a_change(monkeypatch, caplog):
    path = _entry()
    calls = []
    real = cache._sha256
    monkeypatch.setattr(cache, "_sha256", lambda p: calls.append(p.name) or real(p))
    assert cache.verify(path) and cache.verify(path) and len(calls) == 2  # two files, hashed once
    weights = path / "model.safetensors"
    st = weights.stat()
    weights.write_bytes(b"x" * st.st_size)  # same size: only the hash can tell
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert not cache.verify(path) and "sha256 mismatch" in _cache_warnings(caplog)[0]


def test_legacy_entry_is_accepted_and_gets_its_manifest_once(caplog):
    path = cache.cached_dir("models", "old-1")
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"w" * 100)
    (path / cache.COMPLETE).write_text(json.dumps({"finished": "2026-11-01T10:00:00"}) + "\n")  # the old marker
    with caplog.at_level("INFO", logger="lab.cache"):
        assert cache.verify(path) and cache.verify(path)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "lab.cache"]
    assert line.startswith("models/old-1 has no checksums") and "recorded them" in line
    marker = cache.read_json(path / cache.COMPLETE)
    assert marker["finished"] == "2026-11-01T10:00:00" and marker["files"]["model.safetensors"]["size"] == 100
    assert sorted(p.name for p in path.iterdir()) == ["COMPLETE", "model.safetensors"]  # no temp file left
    (path / "model.safetensors").write_bytes(b"w" * 99)  # from now on it is checked like any other entry
    assert not cache.verify(path)


def test_record_checkpoint_defaults_to_the_weights_checksum():
    """Provenance names a checkpoint by its weight files only: a second training with the same weights but another
    metrics.json (timings, load) has the same checksum; other weights, or another weight file, a different one."""
    path = _entry(key="ckpt-1")
    cache.record_checkpoint(path)
    recorded = cache.loaded_checkpoints()["models/ckpt-1"]
    assert recorded == cache.weights_checksum(path) != cache.entry_checksum(path)
    same = _entry(key="ckpt-2", files={"model.safetensors": b"w" * 4096, "metrics.json": b'{"acc": 0.9, "s": 7}'})
    assert cache.weights_checksum(same) == recorded and cache.entry_checksum(same) != cache.entry_checksum(path)
    other = _entry(key="ckpt-3", files={"model.safetensors": b"v" * 4096, "metrics.json": b'{"acc": 0.9}'})
    extra = _entry(key="ckpt-4", files={"model.safetensors": b"w" * 4096, "head.pt": b"h", "metrics.json": b"{}"})
    assert len({recorded, cache.weights_checksum(other), cache.weights_checksum(extra)}) == 3
    no_weights = _entry(key="ckpt-5", files={"settings.json": b"{}"})
    assert cache.weights_checksum(no_weights) == cache.entry_checksum(no_weights)
    assert cache.weights_checksum(path.parent / "missing") is None


def test_memo_entry_records_code_digest_and_key():
    cache.memoize("memo", "t", lambda: 1, k=1, name="x")
    entry = cache.memo_entry("memo", "t", k=1, name="x")
    meta = cache.read_json(entry.path / "meta.json")
    assert meta["code"] == cache.code_digest() and meta["key"] == {"k": 1, "name": "x"} and meta["prefix"] == "t"
    assert entry.load() == 1


@pytest.mark.parametrize("legacy", [False, True])
def test_corrupt_memo_value_is_reported_moved_aside_and_recomputed(legacy, caplog, tmp_path):
    assert cache.memoize("memo", "t", lambda: list(range(50)), k=1) == list(range(50))
    entry = cache.memo_entry("memo", "t", k=1)
    value = entry.path / "value.pt"
    value.write_bytes(b"\0" * value.stat().st_size)  # same length: only the checksum (or unpickling) can tell
    if legacy:  # an entry from before checksums: adopted, then unreadable
        (entry.path / cache.COMPLETE).write_text('{"finished": "2026-11-01T10:00:00"}')
    assert cache.memoize("memo", "t", lambda: "recomputed", k=1) == "recomputed"
    (message,) = _cache_warnings(caplog)
    assert message.startswith(f"memo/{entry.path.name}/value.pt is corrupt (")
    assert ("unreadable" if legacy else "sha256 mismatch") in message
    assert len(list((tmp_path / "cache" / ".corrupt" / "memo").iterdir())) == 1
    assert cache.memoize("memo", "t", lambda: "again", k=1) == "recomputed"  # the rebuilt entry is used


def test_files_and_directories_follow_the_process_umask():
    def mode(p):
        return os.stat(p).st_mode & 0o777

    for umask, file_mode, dir_mode in ((0o022, 0o644, 0o755), (0o077, 0o600, 0o700)):
        old = os.umask(umask)
        try:
            key = f"u{umask:o}"
            f = cache.atomic_write_json(cache.config.cache_dir() / f"{key}.json", {"a": 1})
            with cache.atomic_dir(cache.cached_dir("models", key)) as tmp:
                cache.atomic_write_json(tmp / "metrics.json", {"a": 1})
            cache.memoize("memo", key, lambda: 1)
            entry = cache.memo_entry("memo", key).path
        finally:
            os.umask(old)
        final = cache.cached_dir("models", key)
        assert mode(f) == file_mode and mode(final / "metrics.json") == file_mode
        assert mode(final / cache.COMPLETE) == file_mode and mode(final) == dir_mode
        assert mode(entry) == dir_mode and mode(entry / "value.pt") == file_mode


def test_cache_command_lists_verifies_and_clears(capsys, caplog):
    from lab.cli import main

    ok = _entry(key="sst2-minilm-1")
    bad = _entry(key="sst2-minilm-2")
    (bad / "model.safetensors").write_bytes(b"w")
    cache.memoize("wu_ong", "rel-lrp", lambda: [1.0] * 100, texts="abc")
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "models (2 entries" in out and "wu_ong (1 entries" in out
    assert any("sst2-minilm-1" in line and line.rstrip().endswith(" ok") and "kB" in line
               for line in out.splitlines())
    assert any("sst2-minilm-2" in line and " corrupt " in line and "model.safetensors" in line
               for line in out.splitlines())
    assert f"code {cache.code_digest()} (current); texts=abc" in out
    assert main(["cache", "verify"]) == 1 and not bad.exists() and ok.exists()
    assert "1 corrupt (moved aside), 2 ok" in capsys.readouterr().out
    assert main(["cache", "list", ".corrupt"]) == 0 and "models/sst2-minilm-2-" in capsys.readouterr().out
    assert main(["cache", "clear", "nope"]) == 2 and "no kind 'nope'" in capsys.readouterr().err
    assert main(["cache", "clear", "wu_ong"]) == 0 and ok.exists()
    assert "wu_ong" not in cache.kinds()
    assert main(["cache", "clear"]) == 0 and cache.kinds() == []


def test_digest_of_a_strided_one_element_tensor_equals_its_copy():
    """A column of a one-row matrix is a one-element tensor with stride 2 (notebook 01's class targets for one
    two-object image): its digest is that of the same values laid out plainly."""
    column = torch.arange(4.0).view(2, 2)[:1, 0]
    assert column.stride() == (2,)
    assert cache.digest(column) == cache.digest(torch.tensor([0.0]))
    assert cache.digest(column) != cache.digest(torch.tensor([1.0]))
