"""Settings read from environment variables, with defaults.

LAB_DATA_DIR   directory holding the datasets (default: <repo>/data; the Makefile points it at ../shared/data)
LAB_CACHE_DIR  where trained models and statistics are cached (default: $XDG_CACHE_HOME/lab or ~/.cache/lab)
LAB_DEVICE     torch device for training and explaining (default: cpu)
LAB_SEED       default random seed (default: 0)
"""
from __future__ import annotations

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


def figures_dir() -> Path:
    return Path(os.environ.get("LAB_FIGURES_DIR", REPO_ROOT / "figures"))


def results_dir() -> Path:
    return Path(os.environ.get("LAB_RESULTS_DIR", REPO_ROOT / "results"))


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
