"""Shared test setup: headless matplotlib, no hub access, outputs redirected to temporary folders."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import matplotlib  # noqa: E402
import pytest  # noqa: E402

matplotlib.use("Agg")

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures_dir() -> Path:
    """tests/fixtures (tiny notebooks and files used by the tests)."""
    return FIXTURES


@pytest.fixture
def lab_dirs(tmp_path, monkeypatch):
    """Point LAB_FIGURES_DIR, LAB_RESULTS_DIR and LAB_CACHE_DIR at fresh temporary folders."""
    dirs = {name: tmp_path / name for name in ("figures", "results", "cache")}
    for name, path in dirs.items():
        path.mkdir()
        monkeypatch.setenv(f"LAB_{name.upper()}_DIR", str(path))
    return dirs


@pytest.fixture(autouse=True)
def _default_profile(monkeypatch):
    """Every test starts under the default profile (set_profile changes a module global and LAB_PROFILE)."""
    from lab import config

    monkeypatch.delenv("LAB_PROFILE", raising=False)
    monkeypatch.setattr(config, "_current_profile", None)


def pytest_configure(config):
    """Tiny models run ~10x faster single-threaded on the shared 2-core machines."""
    import torch

    torch.set_num_threads(1)
