"""Content-addressed cache directories written atomically.

Every cached artefact (a fine-tuned checkpoint, a table of statistics ...) lives in
``cache_dir()/<kind>/<key>``. The key is a readable prefix plus a hash of every parameter that
produced the artefact, so changing any parameter gives a new directory.

A directory is written into a hidden sibling temp directory; a ``COMPLETE`` marker is written
last and the temp directory is renamed into place with ``os.replace``. An interrupted writer
therefore leaves no directory that :func:`is_complete` accepts, and loaders must check it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from lab import config

COMPLETE = "COMPLETE"
_TMP_TAG = ".tmp-"


def _canonical(value: Any) -> Any:
    """JSON-friendly, order-independent form of a parameter value."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cache_key: parameter of type {type(value).__name__} is not JSON-serialisable; pass a str/number")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-.")[:60]


def cache_key(prefix: str = "", /, **params: Any) -> str:
    """A stable key: ``<prefix>-<16 hex digits of sha256(sorted JSON of params)>``.

    The same parameters always give the same key (across processes and dict orders); changing
    any value, or adding/removing a parameter, changes it.
    """
    blob = json.dumps(_canonical(params), sort_keys=True, separators=(",", ":"), allow_nan=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    slug = _slug(prefix)
    return f"{slug}-{digest}" if slug else digest


def cached_dir(kind: str, key: str) -> Path:
    """Where the artefact ``key`` of ``kind`` lives: ``cache_dir()/kind/key`` (not created)."""
    if not kind or "/" in kind or not key or "/" in key:
        raise ValueError(f"cached_dir: kind and key must be non-empty names without '/', got {kind!r}, {key!r}")
    return config.cache_dir() / kind / key


def is_complete(path: str | os.PathLike) -> bool:
    """True when ``path`` is a directory finished by :func:`atomic_dir` (its marker exists)."""
    return (Path(path) / COMPLETE).is_file()


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root`` to disk (best effort)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(final: Path) -> None:
    """Delete temp siblings of ``final`` left by writers that were killed (their pid is gone)."""
    pattern = re.compile(re.escape(f".{final.name}{_TMP_TAG}") + r"(\d+)-")
    for sibling in final.parent.glob(f".{final.name}{_TMP_TAG}*"):
        match = pattern.match(sibling.name)
        if match and not _pid_alive(int(match.group(1))):
            shutil.rmtree(sibling, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final_path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp directory to fill; on success it becomes ``final_path`` in one rename.

    The ``COMPLETE`` marker is written last, after the files are flushed. On an exception the
    temp directory is removed and ``final_path`` is left untouched. An incomplete directory
    already at ``final_path`` (e.g. copied by hand) is replaced.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{_TMP_TAG}{os.getpid()}-", dir=final.parent))
    try:
        yield tmp
        (tmp / COMPLETE).write_text(json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        _fsync_tree(tmp)
        if final.exists():
            # os.replace cannot overwrite a non-empty directory: move the old one aside first.
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}{_TMP_TAG}{os.getpid()}-old-", dir=final.parent))
            os.replace(final, trash / "old")
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file + ``os.replace`` (readers never see half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{_TMP_TAG}{os.getpid()}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=True, default=str) + "\n"
    return atomic_write_bytes(path, text.encode())


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


# ---- checkpoints this process loaded or trained (provenance of a results file) ----------------------------------

_CHECKPOINTS: dict[str, str] = {}


def record_checkpoint(path: str | os.PathLike, checksum: str) -> None:
    """Note that this process used the cached checkpoint at ``path`` whose content checksum is ``checksum``."""
    path = Path(path)
    try:
        name = str(path.resolve().relative_to(config.cache_dir().resolve()))
    except ValueError:
        name = str(path)
    _CHECKPOINTS[name] = checksum


def loaded_checkpoints() -> dict[str, str]:
    """{checkpoint directory (relative to the cache dir): content checksum} for every checkpoint used so far."""
    return dict(sorted(_CHECKPOINTS.items()))


# ---- memoised computations -----------------------------------------------------------------------------------

# Modules whose code cannot change a computed number (plots, widgets, result files, the notebook runner).
_PRESENTATION_CODE = ("viz", "widgets.py", "results.py", "runner.py", "cli.py", "__main__.py", "provenance.py",
                      "report.py")
MEMO_STATS = {"hits": 0, "misses": 0}


def digest(value: Any) -> str:
    """16 hex digits of sha256 over a value's content: tensors and arrays by dtype, shape and bytes, modules by
    their state dict, mappings and sequences element by element, anything else by its JSON form."""
    h = hashlib.sha256()
    _feed(h, value)
    return h.hexdigest()[:16]


def _feed(h, value: Any) -> None:
    import numpy as np
    import torch

    if isinstance(value, torch.nn.Module):
        h.update(b"module")
        _feed(h, dict(value.state_dict()))
    elif isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"tensor{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, np.ndarray):
        h.update(f"array{value.dtype}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (dict, list, tuple)) and (blob := _json_or_none(value)) is not None:
        h.update(b"json" + blob.encode())
    elif isinstance(value, dict):
        h.update(b"{")
        for k in sorted(value, key=str):
            h.update(str(k).encode() + b":")
            _feed(h, value[k])
        h.update(b"}")
    elif isinstance(value, (list, tuple)):
        h.update(b"[")
        for v in value:
            _feed(h, v)
        h.update(b"]")
    else:
        h.update(json.dumps(_canonical(value), sort_keys=True).encode())


def _json_or_none(value: Any) -> str | None:
    """The JSON text of nested lists/dicts of JSON scalars (hashed in one call), None for anything else."""
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return None


def code_digest() -> str:
    """Hash of every `lab` source file that computes numbers (all but plots, widgets, result files and the runner):
    a memoised value is recomputed as soon as any of them changes."""
    root = Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in _PRESENTATION_CODE:
            continue
        h.update(str(rel).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def memoize(kind: str, prefix: str, compute, *, enabled: bool = True, **key: Any) -> Any:
    """``compute()``, stored under ``cache_dir()/kind/<prefix>-<hash of key and code_digest()>`` and loaded from
    there next time (torch.save format, written atomically). `key` must name everything the value depends on
    besides the code (use :func:`digest` for tensors and models). ``enabled=False`` just calls ``compute()``.
    Hits and misses are counted in ``MEMO_STATS`` so a notebook can report what it reused."""
    if not enabled:
        return compute()
    import torch

    path = cached_dir(kind, cache_key(prefix, code=code_digest(), **key))
    if is_complete(path):
        try:
            value = torch.load(path / "value.pt", weights_only=False)
        except Exception:  # unreadable (e.g. written by another torch version): recompute and overwrite
            pass
        else:
            MEMO_STATS["hits"] += 1
            return value
    value = compute()
    with atomic_dir(path) as tmp:
        torch.save(value, tmp / "value.pt")
    MEMO_STATS["misses"] += 1
    return value
