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
