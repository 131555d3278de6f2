"""Where a result came from: the `meta.provenance` of every results file.

:func:`provenance` returns the git commit (and whether tracked files differ from it), the code digest, the
profile and ``--set`` overrides, a fingerprint of the data directory, the cached checkpoints used, the start and
end time, the machine, the torch thread count and the 1-minute load average at start and end. It never raises:
what cannot be found (no git, not a checkout, no load average) is ``None``. It costs a few milliseconds.

The clock starts when this module is first imported, i.e. with ``lab.results`` in a notebook's import cell.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from lab import cache, config

STARTED = time.perf_counter()  # monotonic: results' elapsed_s
_STARTED_AT = time.time()  # wall clock: provenance's "started"


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


_LOAD_AT_START = _load()


def git_state(repo: str | os.PathLike = config.REPO_ROOT) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout whose top level is ``repo``; dirty means a tracked file differs from the
    commit (untracked files are left out, as `git describe --dirty` does: the code digest covers new sources).
    (None, None) when git is missing or ``repo`` is not the top of a checkout."""
    repo = Path(repo).resolve()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout

    try:
        top, commit = git("rev-parse", "--show-toplevel", "HEAD").split()
        if Path(top).resolve() != repo:
            return None, None
        return commit, bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None, None


def data_fingerprint(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Digest of the names, sizes and modification times of every file under the data directory (the whole
    directory, not only the files this process read), with the file count and total size."""
    root = Path(root) if root is not None else config.data_dir()
    h = hashlib.sha256()
    files = size = 0
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        rel = os.path.relpath(folder, root)
        for name in sorted(names):
            try:
                st = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            files, size = files + 1, size + st.st_size
            h.update(f"{os.path.normpath(os.path.join(rel, name))}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return {"dir": str(root), "scope": "whole directory", "files": files, "bytes": size,
            "digest": h.hexdigest()[:16] if files else None}


def _overrides() -> Any:
    """The runner's ``--set`` overrides ($LAB_OVERRIDES, a JSON object); the raw text if it is not JSON."""
    text = os.environ.get("LAB_OVERRIDES", "").strip()
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return text


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def provenance(profile: str | None = None) -> dict[str, Any]:
    """Everything needed to tell which code, settings, data and models produced a result, and under what load."""
    import torch

    commit, dirty = git_state()
    return {
        "commit": commit, "dirty": dirty, "code_digest": cache.code_digest(),
        "profile": profile or config.current_profile(), "overrides": _overrides(),
        "data": data_fingerprint(), "checkpoints": cache.loaded_checkpoints(),
        "started": _iso(_STARTED_AT), "finished": _iso(time.time()),
        "machine": {"hostname": socket.gethostname(), "cpu": _cpu_model(), "cores": os.cpu_count()},
        "threads": torch.get_num_threads(), "load": {"start": _LOAD_AT_START, "end": _load()},
    }
