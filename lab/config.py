"""Settings read from environment variables, with defaults.

LAB_DATA_DIR   directory holding the datasets (default: <repo>/data; the Makefile points it at ../shared/data)
LAB_CACHE_DIR  where trained models and statistics are cached (default: $XDG_CACHE_HOME/lab or ~/.cache/lab)
LAB_DEVICE     torch device for training and explaining (default: cpu)
LAB_SEED       default random seed (default: 0)
LAB_PROFILE    the profile whose output folders are used when a process has not called set_profile (default: default)
LAB_RESULTS_DIR, LAB_FIGURES_DIR, LAB_EXECUTED_DIR   output folders of the default profile (others: <dir>/<profile>)
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    return Path(os.environ.get("LAB_DATA_DIR", REPO_ROOT / "data")).expanduser().resolve()


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lab"
    path = Path(os.environ.get("LAB_CACHE_DIR", default)).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def device() -> str:
    return os.environ.get("LAB_DEVICE", "cpu")


def default_seed() -> int:
    return int(os.environ.get("LAB_SEED", "0"))


# --- profiles and where each profile's outputs live -------------------------------------------------------
# A notebook's `profile` parameter decides where its outputs go, whoever executes it (the runner or JupyterLab):
# `default` writes results/, figures/ and notebooks/_executed/; any other profile writes <dir>/<profile>/, so
# nothing of one profile ever lands in another's files.
PROFILES = {  # name -> what it means; notebooks read `profile` in their parameters cell and size themselves
    "smoke": "tiny models and a handful of examples: checks that every notebook runs end to end",
    "default": "the workbook's numbers: reduced sample sizes that run on a laptop CPU",
    "paper": "the papers' sample sizes where the offline data allows (hours on a CPU)",
}
DEFAULT_PROFILE = "default"
_current_profile: str | None = None


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return profile


def set_profile(profile: str) -> str:
    """Make ``profile`` this process's profile (a notebook calls it right after its parameters cell): results,
    figures and executed copies then go to that profile's folders. Exported to ``LAB_PROFILE`` for child processes."""
    global _current_profile
    _current_profile = check_profile(profile)
    os.environ["LAB_PROFILE"] = profile
    return profile


def current_profile() -> str:
    """The profile set by :func:`set_profile`, else ``$LAB_PROFILE``, else ``default``."""
    return check_profile(_current_profile or os.environ.get("LAB_PROFILE") or DEFAULT_PROFILE)


def _profile_subdir(base: Path, profile: str | None) -> Path:
    profile = check_profile(profile) if profile is not None else current_profile()
    return base if profile == DEFAULT_PROFILE else base / profile


def figures_dir(profile: str | None = None) -> Path:
    """Figures of ``profile`` (default: the current one): $LAB_FIGURES_DIR (or figures/), plus /<profile>."""
    return _profile_subdir(Path(os.environ.get("LAB_FIGURES_DIR", REPO_ROOT / "figures")), profile)


def results_dir(profile: str | None = None) -> Path:
    """Results of ``profile`` (default: the current one): $LAB_RESULTS_DIR (or results/), plus /<profile>."""
    return _profile_subdir(Path(os.environ.get("LAB_RESULTS_DIR", REPO_ROOT / "results")), profile)


def executed_dir(profile: str | None = None) -> Path:
    """Executed notebooks (and their stamps) of ``profile``: $LAB_EXECUTED_DIR (or notebooks/_executed), plus
    /<profile>."""
    base = Path(os.environ.get("LAB_EXECUTED_DIR", REPO_ROOT / "notebooks" / "_executed"))
    return _profile_subdir(base, profile)


# No hub access here: make every Hugging Face call fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def num_threads() -> int | None:
    """$LAB_NUM_THREADS: torch intra-op threads for every lab process (unset: torch's default, all cores).
    On a CPU shared with other jobs, 1 thread per process is much faster than oversubscribed cores."""
    value = os.environ.get("LAB_NUM_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"LAB_NUM_THREADS must be a positive integer, got {value!r}")
    return int(value)


def apply_num_threads() -> None:
    n = num_threads()
    if n is not None:
        import torch

        torch.set_num_threads(n)


def machine_loaded() -> bool:
    """True when the 1-minute load average is at least the number of cores."""
    return os.getloadavg()[0] >= (os.cpu_count() or 1)


def threads(requested: int | None = None, fallback: int | str | None = None) -> int | None:
    """The one thread policy: ``requested``, else $LAB_NUM_THREADS, else ``fallback``, else None (torch's default).

    ``fallback="load"`` means 1 when the machine is loaded (:func:`machine_loaded`; OpenMP threads then spin against
    other jobs: measured 25x slower with 2 threads at load 10 on 2 cores), else None."""
    if requested:
        return int(requested)
    env = num_threads()
    if env is not None:
        return env
    if fallback == "load":
        return 1 if machine_loaded() else None
    return None if fallback is None else int(fallback)


@contextlib.contextmanager
def torch_threads(n: int | None = None, fallback: int | str | None = None):
    """Run torch with ``threads(n, fallback)`` intra-op threads (None: leave torch's setting), then restore."""
    import torch

    chosen, before = threads(n, fallback), torch.get_num_threads()
    if chosen:
        torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        torch.set_num_threads(before)
