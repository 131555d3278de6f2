"""Content-addressed cache directories written atomically and checked before use.

Every cached artefact (a fine-tuned checkpoint, a memoised value ...) lives in
``cache_dir()/<kind>/<key>``. The key is a readable prefix plus a hash of every parameter that
produced the artefact (memoised values: and the code digest), so changing any of them gives a new directory.

A directory is written into a hidden sibling temp directory; a ``COMPLETE`` marker holding the size
and sha256 of every file is written last, and the temp directory is renamed into place with
``os.replace``. Loaders call :func:`verify`: an entry with a missing, truncated or altered file is
reported in one line naming the file, moved aside to ``cache_dir()/.corrupt/`` and rebuilt by the caller.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from lab import config

COMPLETE = "COMPLETE"
CORRUPT = ".corrupt"  # cache_dir()/.corrupt/<kind>/<key>-<time>: entries moved aside by verify()
_TMP_TAG = ".tmp-"

log = logging.getLogger("lab.cache")
if not log.handlers:  # one-line reports, visible in notebooks and scripts
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)


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
    """True when ``path`` has the marker of :func:`atomic_dir` (a cheap existence check; loaders use `verify`)."""
    return (Path(path) / COMPLETE).is_file()


def umask() -> int:
    """The process umask (read by setting and restoring it): files lab writes get ``0o666 & ~umask()``."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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

    The ``COMPLETE`` marker (the manifest: every file's size and sha256, and the entry's checksum) is
    written last, after the files are flushed; the directory gets the process umask's permissions. On an
    exception the temp directory is removed and ``final_path`` is left untouched. An incomplete
    directory already at ``final_path`` (e.g. copied by hand) is replaced.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{_TMP_TAG}{os.getpid()}-", dir=final.parent))
    try:
        yield tmp
        files = _manifest(tmp)
        marker = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": files, "checksum": _entry_checksum(files)}
        (tmp / COMPLETE).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n")
        os.chmod(tmp, 0o777 & ~umask())
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
    """Write ``data`` to ``path`` via a temp file + ``os.replace`` (readers never see half a file); the file gets
    the process umask's permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{_TMP_TAG}{os.getpid()}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~umask())
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


# ---- verification -------------------------------------------------------------------------------------------

_VERIFIED: dict[str, list] = {}  # entry -> stat signature of its files when their sha256 last matched


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _manifest(root: Path) -> dict[str, dict]:
    """{relative path: {"size", "sha256"}} of every file under ``root`` but the marker (and its temp files)."""
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel != COMPLETE and not rel.startswith(f".{COMPLETE}{_TMP_TAG}"):
            files[rel] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    return files


def _entry_checksum(files: dict[str, dict]) -> str:
    """16 hex digits over the names, sizes and hashes of an entry's files: its content checksum."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def _name(path: Path) -> str:
    """``path`` relative to the cache dir when inside it (how messages name files)."""
    try:
        return Path(path).resolve().relative_to(config.cache_dir().resolve()).as_posix()
    except ValueError:
        return str(path)


def _marker(path: Path) -> dict | None:
    """The parsed ``COMPLETE`` marker of an entry; None when absent. Raises ValueError when unreadable."""
    try:
        info = json.loads((path / COMPLETE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable marker ({type(exc).__name__})") from exc
    if not isinstance(info, dict):
        raise ValueError("unreadable marker (not a JSON object)")
    return info


def _stats(path: Path, files: dict[str, dict]) -> tuple[list, tuple[str, str] | None]:
    """(stat signature of an entry's files, (file, what is wrong) for the first missing or wrong-sized one)."""
    signature = []
    for rel, want in sorted(files.items()):
        try:
            st = (path / rel).stat()
        except FileNotFoundError:
            return signature, (rel, "missing")
        if st.st_size != want["size"]:
            return signature, (rel, f"{st.st_size} bytes instead of {want['size']}")
        signature.append((rel, st.st_size, st.st_mtime_ns, st.st_ino))
    return signature, None


def _problem(path: Path, files: dict[str, dict]) -> tuple[str, str] | None:
    """(file, what is wrong) for the first file that does not match the manifest, else None. Sizes are always
    compared; contents are hashed once per process per entry (again when a file's stat changes)."""
    signature, problem = _stats(path, files)
    key = str(path.resolve())
    if problem is not None or _VERIFIED.get(key) == signature:
        return problem
    for rel, want in sorted(files.items()):
        if _sha256(path / rel) != want["sha256"]:
            return rel, "sha256 mismatch"
    _VERIFIED[key] = signature
    return None


def verify(path: str | os.PathLike) -> bool:
    """True when ``path`` is a complete cache entry whose files match its manifest: the one check every loader
    makes. A corrupt or partial entry is reported in one line naming the file and moved aside to
    ``cache_dir()/.corrupt/`` (False: the caller rebuilds it). An entry without a manifest (written by an older
    `lab`) is accepted and its manifest written once. False, silently, when there is no marker."""
    path = Path(path)
    try:
        info = _marker(path)
    except ValueError as exc:
        return _discard(path, COMPLETE, str(exc))
    if info is None:
        return False
    if not isinstance(info.get("files"), dict):
        return _adopt(path, info)
    problem = _problem(path, info["files"])
    return True if problem is None else _discard(path, *problem)


def _discard(path: Path, rel: str, reason: str) -> bool:
    """Move a corrupt entry to ``cache_dir()/.corrupt/<kind>/<key>-<time>``, say so in one line; False."""
    _VERIFIED.pop(str(path.resolve()), None)
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    dest = config.cache_dir() / CORRUPT / path.parent.name / f"{path.name}-{stamp}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.move(path, dest)
    except FileNotFoundError:  # another process moved or replaced it first
        return False
    log.warning("%s/%s is corrupt (%s); moved aside to %s, rebuilt when next needed", _name(path), rel, reason, dest)
    return False


def _adopt(path: Path, info: dict) -> bool:
    """Accept a legacy entry (marker without manifest): record its files' sizes and hashes now; True."""
    files = _manifest(path)
    info = {**info, "files": files, "checksum": _entry_checksum(files), "adopted": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        atomic_write_bytes(path / COMPLETE, (json.dumps(info, indent=1, sort_keys=True) + "\n").encode())
    except OSError as exc:
        log.warning("%s has no checksums (written by an older lab) and they cannot be recorded (%s); using it "
                    "unchecked", _name(path), exc)
        return True
    _VERIFIED[str(path.resolve())] = _stats(path, files)[0]  # just hashed: not again in this process
    log.info("%s has no checksums (written by an older lab): recorded them now (%d files, %.1f MB)", _name(path),
             len(files), sum(f["size"] for f in files.values()) / 1e6)
    return True


def entry_checksum(path: str | os.PathLike) -> str | None:
    """The content checksum of a verified entry (from its manifest); None when it is not a valid entry."""
    path = Path(path)
    if not verify(path):
        return None
    return _marker(path).get("checksum")


# ---- checkpoints this process loaded or trained (provenance of a results file) ----------------------------------

_CHECKPOINTS: dict[str, str] = {}


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".npz", ".npy")  # files that hold a checkpoint's tensors


def weights_checksum(path: str | os.PathLike) -> str | None:
    """16 hex digits over the names and hashes of a verified entry's weight files (`WEIGHT_SUFFIXES`), from its
    manifest: two trainings that give the same tensors give the same checksum, whatever their `metrics.json` says
    about time and load. An entry without weight files falls back to its content checksum; None when invalid."""
    path = Path(path)
    if not verify(path):
        return None
    marker = _marker(path)
    weights = {name: info["sha256"] for name, info in marker.get("files", {}).items() if name.endswith(WEIGHT_SUFFIXES)}
    return _entry_checksum(weights) if weights else marker.get("checksum")


def record_checkpoint(path: str | os.PathLike, checksum: str | None = None) -> None:
    """Note that this process used the cached checkpoint at ``path`` whose weights checksum is ``checksum``
    (default: `weights_checksum`, from its manifest)."""
    path = Path(path)
    if checksum is None:
        checksum = weights_checksum(path) or "unverified"
    _CHECKPOINTS[_name(path)] = checksum


def loaded_checkpoints() -> dict[str, str]:
    """{checkpoint directory (relative to the cache dir): weights checksum} for every checkpoint used so far."""
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
        # a plain-strided copy: .contiguous() keeps a one-element tensor's stride, which .view(uint8) refuses
        t = value.detach().cpu().clone(memory_format=torch.contiguous_format)
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


_CODE_DIGESTS: dict[str, str] = {}  # source root -> its digest, computed once per process


def code_digest() -> str:
    """Hash of every `lab` source file that computes numbers (all but plots, widgets, result files and the runner):
    a memoised value is recomputed as soon as any of them changes. Computed once per process (the code a process
    runs does not change under it; reading ~100 files costs tens of ms, too much per memoised review)."""
    root = Path(__file__).parent
    if str(root) not in _CODE_DIGESTS:
        h = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if rel.parts[0] in _PRESENTATION_CODE:
                continue
            h.update(str(rel).encode())
            h.update(path.read_bytes())
        _CODE_DIGESTS[str(root)] = h.hexdigest()[:16]
    return _CODE_DIGESTS[str(root)]


@dataclass(frozen=True)
class MemoEntry:
    """One memoised value: ``cache_dir()/kind/<prefix>-<hash of key and code>`` holding ``value.pt`` (torch.save
    format) and ``meta.json`` (kind, prefix, code digest, key), written atomically and checked by `verify`."""

    kind: str
    prefix: str
    key: dict
    code: str
    path: Path

    def load(self, default: Any = None) -> Any:
        """The stored value, or ``default`` when there is none (a corrupt one is reported and moved aside)."""
        import torch

        if not verify(self.path):
            return default
        try:
            value = torch.load(self.path / "value.pt", weights_only=False)
        except Exception as exc:  # e.g. written by another torch version
            _discard(self.path, "value.pt", f"unreadable: {type(exc).__name__}")
            return default
        MEMO_STATS["hits"] += 1
        return value

    def store(self, value: Any) -> Any:
        """Write ``value`` (and the entry's meta.json); returns ``value``."""
        import torch

        meta = {"kind": self.kind, "prefix": self.prefix, "code": self.code, "key": _canonical(self.key),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with atomic_dir(self.path) as tmp:
            torch.save(value, tmp / "value.pt")
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        MEMO_STATS["misses"] += 1
        return value


def memo_entry(kind: str, prefix: str, **key: Any) -> MemoEntry:
    """The memo entry of a value of ``kind`` computed from ``key`` by the current code (`code_digest`). `key`
    must name everything the value depends on besides the code (use :func:`digest` for tensors and models)."""
    code = code_digest()
    return MemoEntry(kind, prefix, key, code, cached_dir(kind, cache_key(prefix, code=code, **key)))


_MISS = object()


def memoize(kind: str, prefix: str, compute, *, enabled: bool = True, **key: Any) -> Any:
    """``compute()``, stored in :func:`memo_entry` ``(kind, prefix, **key)`` and loaded from there next time.
    ``enabled=False`` just calls ``compute()``. Hits and misses are counted in ``MEMO_STATS`` so a notebook can
    report what it reused."""
    if not enabled:
        return compute()
    entry = memo_entry(kind, prefix, **key)
    value = entry.load(_MISS)
    return entry.store(compute()) if value is _MISS else value


# ---- inventory (python -m lab cache) ----------------------------------------------------------------------------

@dataclass
class Entry:
    """One item of the cache directory, as :func:`entries` sees it (without hashing)."""

    kind: str
    name: str
    path: Path
    size: int  # bytes on disk
    mtime: float  # when it was finished (its marker), else last modified
    status: str  # ok | legacy | corrupt | incomplete | temp | moved aside | stray file
    detail: str = ""  # what is wrong, or whose temp directory it is
    meta: dict | None = None  # memo entries: their meta.json (kind, prefix, code digest, key)


def _size(path: Path) -> int:
    if not path.is_dir():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _status(path: Path) -> tuple[str, str]:
    """(status, detail) of one item of a kind folder; sizes are checked, contents are not hashed."""
    if path.name.startswith(".") and _TMP_TAG in path.name:
        pid = re.search(re.escape(_TMP_TAG) + r"(\d+)-", path.name)
        alive = pid is not None and _pid_alive(int(pid.group(1)))
        return "temp", "being written" if alive else "left by a killed writer"
    if not path.is_dir():
        return "stray file", ""
    try:
        info = _marker(path)
    except ValueError as exc:
        return "corrupt", f"{COMPLETE}: {exc}"
    if info is None:
        return "incomplete", f"no {COMPLETE} marker"
    if not isinstance(info.get("files"), dict):
        return "legacy", "no checksums yet"
    problem = _stats(path, info["files"])[1]
    return ("ok", "") if problem is None else ("corrupt", f"{problem[0]}: {problem[1]}")


def _entry(kind: str, path: Path) -> Entry:
    status, detail = _status(path)
    marker = path / COMPLETE
    mtime = (marker if marker.is_file() else path).stat().st_mtime
    meta = None
    if (path / "meta.json").is_file():
        with contextlib.suppress(OSError, ValueError):
            meta = read_json(path / "meta.json")
    return Entry(kind, path.name, path, _size(path), mtime, status, detail, meta)


def entries(kind: str | None = None) -> list[Entry]:
    """Every item of the cache directory (or of one ``kind``), sorted by kind and name; entries moved aside by
    `verify` are listed under the kind ``.corrupt`` as ``<kind>/<name>``."""
    out = []
    root = config.cache_dir()
    for kind_dir in sorted(p for p in root.iterdir() if p.is_dir() and kind in (None, p.name)):
        for path in sorted(kind_dir.iterdir()):
            with contextlib.suppress(FileNotFoundError):  # removed by a concurrent writer
                if kind_dir.name != CORRUPT:
                    out.append(_entry(kind_dir.name, path))
                    continue
                for moved in sorted(path.iterdir()):
                    out.append(Entry(CORRUPT, f"{path.name}/{moved.name}", moved, _size(moved),
                                     moved.stat().st_mtime, "moved aside"))
    return out


def kinds() -> list[str]:
    """The kind folders present in the cache directory."""
    return sorted(p.name for p in config.cache_dir().iterdir() if p.is_dir())


def clear(kind: str | None = None) -> int:
    """Delete every entry of ``kind`` (everything when None; nothing when there is no such kind); returns the
    bytes freed."""
    root = config.cache_dir()
    targets = list(root.iterdir()) if kind is None else [root / kind] if kind in kinds() else []
    freed = 0
    for target in targets:
        freed += _size(target)
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    return freed
