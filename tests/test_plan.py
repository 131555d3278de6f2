"""`python -m lab plan` reads cache paths only: an uncached model is "to train" with the table's time, a cached one
reports its recorded training time, and nothing is trained."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from lab import cache, plan

pytestmark = pytest.mark.skipif(not (Path(os.environ.get("LAB_DATA_DIR", "/work/shared/data")) / "sst2").exists(),
                                reason="needs the offline SST-2 data (LAB_DATA_DIR)")


def test_plan_cached_vs_uncached(lab_dirs, monkeypatch):
    from lab.models import training

    monkeypatch.setattr(training, "fine_tune", lambda *a, **k: pytest.fail("plan must not train"))
    cold = plan.plan_lines(["00"], "smoke")
    assert cold[2] == "  SST-2 MiniLM: to train (no recorded time for profile smoke)"  # default timings don't apply
    assert cold[-1].startswith(f"total expected: ~{plan.SMOKE_NOTEBOOK_SECONDS['00_tour']} s")
    with monkeypatch.context() as m:  # an uncached default SST-2 checkpoint
        m.setattr(training, "checkpoint_path", lambda *a, **k: lab_dirs["cache"] / "models" / "absent")
        default = plan.plan_lines(["00"], "default")
    assert "SST-2 MiniLM: to train, expected ~894 s" in default[2]
    assert default[-1].startswith(f"total expected: ~{894 + plan.TIMINGS['notebook']['00_tour']} s")
    path = training.checkpoint_path("sst2", profile="smoke")
    with cache.atomic_dir(path) as tmp:
        cache.atomic_write_json(tmp / "metrics.json", {"train_seconds": 12.0})
    warm = plan.plan_lines(["00_tour"], "smoke")
    assert warm[2] == "  SST-2 MiniLM: cached (trained in 12 s)"
    assert warm[-1].startswith(f"total expected: ~{plan.SMOKE_NOTEBOOK_SECONDS['00_tour']} s")
    assert plan.main(["99"]) == 2
