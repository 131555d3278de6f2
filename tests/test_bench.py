"""`python -m lab bench` on tiny models: one row per method plus the reference, captum's IG beside ours, sane
ratios and memory, and a clear error for an unknown method (timings themselves are not asserted)."""
from __future__ import annotations

import time

import pytest
import torch

import lab  # noqa: F401  (registers the explainers)
from lab import bench
from tests.models import text_batch, tiny_bert


def test_bench_model_rows_ratios_and_captum_ig():
    model = tiny_bert(dtype=torch.float32)
    methods = ["rollout", "chefer", "integrated_gradients"]
    rows = bench.bench_model("tiny", model, text_batch(lengths=(7, 4, 5)), methods, repeat=1, ig_steps=3)
    names = [r["method"] for r in rows]
    assert names == ["(forward+backward)", "rollout", "chefer", "integrated_gradients", "captum IntegratedGradients"]
    for r in rows:
        assert r["s_per_example"] > 0 and r["ratio_fb"] > 0 and r["ratio_forward"] > 0 and r["peak_mb"] >= 0
    assert rows[0]["ratio_fb"] == 1.0
    table = bench.format_rows(rows)
    assert "chefer" in table and "captum IntegratedGradients" in table


def test_peak_memory_sees_a_large_allocation():
    with bench.rss_tracks_live_memory(), bench.PeakMemory(interval=0.001) as mem:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        time.sleep(0.02)
        del block
    assert mem.peak_mb > 32


def test_unknown_method_is_one_clear_error(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--methods", "no_such_method", "--no-vision"])
    assert "unknown explainers ['no_such_method']" in capsys.readouterr().err
