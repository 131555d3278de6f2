"""Notebook 00's results: the accuracy claim is decided by a bootstrap interval, conservation is an exact check."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from lab.experiments.tour import tour_results


def fine_tuned(acc, n):
    return SimpleNamespace(path="model", metrics={"eval_accuracy": acc, "n_eval": n}, accuracy=acc)


def chefer(delta):
    return {"chefer": SimpleNamespace(delta=torch.tensor([delta]))}


def verdicts(res):
    return [c["verdict"] for c in res.claims]


def test_accuracy_claim_is_decided_by_an_interval_over_dev_sentences():
    assert verdicts(tour_results("default", fine_tuned(0.91, 872), chefer(1e-4))) == ["holds", "holds"]
    assert verdicts(tour_results("default", fine_tuned(0.85, 872), chefer(0.5))) == ["fails", "fails"]
    res = tour_results("default", fine_tuned(0.885, 872), {})  # 0.885 ± 0.02 straddles 0.88
    assert verdicts(res) == ["inconclusive"] and res.claims[0]["interval"]["n"] == 872


def test_smoke_keeps_only_the_exact_conservation_check():
    res = tour_results("smoke", fine_tuned(0.91, 32), chefer(0.5))
    assert verdicts(res) == ["not evaluated", "fails"] and res.claims[1]["exact"]
