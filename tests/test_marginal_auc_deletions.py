"""AUC_rep under three deletions (issue 18): per-position replacement ids in `auc_rep`, the masked LM's replacement
words, and one ordering claim per (model, deletion) whose verdict can differ between deletions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lab.metrics.perturbation import auc_rep

PAD, CLS, SEP, GOOD = 0, 101, 102, 7


def predict(input_ids, attention_mask=None):
    """p(positive) rises with the number of GOOD tokens: a toy classifier whose curve depends on the replacement."""
    good = (input_ids == GOOD).double().sum(1)
    p = torch.sigmoid(good - 1.0)
    return torch.stack([1 - p, p], dim=-1)


def batch():
    ids = torch.tensor([[CLS, GOOD, GOOD, 5, 6, 9, 10, 11, 12, 13, SEP]])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_auc_rep_takes_per_position_replacements():
    inputs = batch()
    scores = torch.arange(11, 0, -1).double()[None]  # GOOD tokens first
    special = torch.isin(inputs["input_ids"], torch.tensor([CLS, SEP]))
    const = auc_rep(predict, inputs, scores, stop=0.3, token_id=PAD, special_mask=special, progress=False)
    same = auc_rep(predict, inputs, scores, stop=0.3, token_id=torch.full_like(inputs["input_ids"], PAD),
                   special_mask=special, progress=False)
    assert torch.equal(const["auc"], same["auc"]) and same["params"]["token_id"] == "per-position"
    keep_good = inputs["input_ids"].clone()  # a replacement that puts GOOD back: the curve never drops
    flat = auc_rep(predict, inputs, scores, stop=0.3, token_id=keep_good, special_mask=special, progress=False)
    assert float(flat["auc"][0]) == pytest.approx(float(flat["probs"][0][0]))
    assert float(flat["auc"][0]) > float(const["auc"][0])
    from lab.metrics.perturbation import MetricInputError

    with pytest.raises(MetricInputError, match="inputs' shape"):
        auc_rep(predict, inputs, scores, token_id=torch.zeros(2, 3, dtype=torch.long), progress=False)


def test_mlm_replacements_are_the_most_likely_other_word():
    from lab.experiments import input_marginalization as im

    inputs = {"input_ids": torch.tensor([[CLS, 20, 21, SEP, PAD], [CLS, 22, SEP, PAD, PAD]]),
              "attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]),
              "token_type_ids": torch.zeros(2, 5, dtype=torch.long)}
    calls = []

    def mlm(row, positions):  # the original word is always the most likely; 30 + position is second
        calls.append(positions.tolist())
        logp = torch.full((len(positions), 40), -10.0, dtype=torch.float64)
        for k, p in enumerate(positions.tolist()):
            logp[k, row["input_ids"][0, p]] = -0.1
            logp[k, 30 + p] = -1.0
        return logp

    out = im.mlm_replacements(mlm, inputs, im.special_mask(inputs))
    assert out.tolist() == [[CLS, 31, 32, SEP, PAD], [CLS, 31, SEP, PAD, PAD]]
    assert calls == [[1, 2], [1]]  # content positions of the unpadded rows only
    assert im.token_id("unk") == 100 and im.token_id("pad") == PAD  # AUC_rep's [UNK] and [PAD] deletions
    with pytest.raises(im.ExperimentError, match="unknown deletion"):
        im.settings("smoke", deletions=["pad", "zero"])


def _study(means, n=200, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.3, 0.7, n)
    return {k: {"auc": (base + m + rng.normal(0, 0.02, n)).tolist()} for k, m in means.items()}


def test_one_ordering_claim_per_model_and_deletion_and_the_discussion_counts_them():
    from lab.experiments import input_marginalization as im
    from lab.results import Results
    from lab.viz import input_marginalization as imviz

    study = {"lstm": {"pad": _study({"marg": 0.1, "unk": 0.05, "zero": 0.0}),  # [PAD] favours Zero
                      "unk": _study({"marg": 0.0, "unk": 0.1, "zero": 0.05}),
                      "mlm": _study({"marg": 0.0, "unk": 0.05, "zero": 0.1})}}
    res = Results(im.NOTEBOOK, "default")
    rows = im.add_auc_table(res, study, {"auc_stop": 0.2})
    verdicts = {c["claim"]: c["verdict"] for c in res.claims}
    assert verdicts == {"AUC_rep ordering Marg < Unk < Zero (BiLSTM (SST-2), [PAD] deletion)": "fails",
                        "AUC_rep ordering Marg < Unk < Zero (BiLSTM (SST-2), [UNK] deletion)": "fails",
                        "AUC_rep ordering Marg < Unk < Zero (BiLSTM (SST-2), MLM deletion)": "holds"}
    assert rows["Marg (ours)"]["BiLSTM (SST-2) · [PAD]"][0] == im.PAPER_AUC_REP["marg"][0]
    assert rows["Marg (ours)"]["BiLSTM (SST-2) · MLM"][0] is None  # the paper's values are [PAD] deletion only
    text = imviz.discussion_markdown(res, im.DELETIONS.values())
    assert "MLM deletion: 1 holds (of 1 models)" in text and "[PAD] deletion: 1 fails" in text
    mean_mlm = float(np.mean(study["lstm"]["mlm"]["marg"]["auc"]))
    mlm_part = text.split("BiLSTM (SST-2) · MLM: ")[1].split(";")[0]
    assert f"Marg {mean_mlm:.3f} ±" in mlm_part
