"""One thread policy (`lab.config.threads` / `torch_threads`) and one progress bar (`lab.progress.progress`)."""
import pytest
import torch

from lab import config
from lab.progress import progress


def test_thread_policy_order(monkeypatch):
    monkeypatch.delenv("LAB_NUM_THREADS", raising=False)
    assert config.threads() is None and config.threads(fallback=1) == 1
    monkeypatch.setattr(config, "machine_loaded", lambda: True)
    assert config.threads(fallback="load") == 1
    monkeypatch.setattr(config, "machine_loaded", lambda: False)
    assert config.threads(fallback="load") is None
    monkeypatch.setenv("LAB_NUM_THREADS", "3")
    assert config.threads(fallback=1) == 3 and config.threads(fallback="load") == 3
    assert config.threads(2, fallback=1) == 2
    monkeypatch.setenv("LAB_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="LAB_NUM_THREADS"):
        config.threads()


def test_torch_threads_sets_and_restores(monkeypatch):
    monkeypatch.delenv("LAB_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    with config.torch_threads(2) as n:
        assert n == 2 and torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    with config.torch_threads() as n:
        assert n is None and torch.get_num_threads() == before


def test_training_uses_the_config_policy():
    from lab.models import training

    assert training.torch_threads is config.torch_threads


def test_progress_iterates_and_is_silent_when_disabled(capsys):
    bar = progress(range(3), "x", enabled=False)
    bar.set_postfix(loss=1.0)
    assert list(bar) == [0, 1, 2] and len(bar) == 3
    assert capsys.readouterr().err == ""
    assert list(progress(iter("ab"), "y", total=2)) == ["a", "b"]
