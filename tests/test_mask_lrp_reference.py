"""Mask-LRP, GAE and AttCAT against the Mask-LRP authors' code (LinxinS97/Mask-LRP, ExplanationGenerator.MGAE /
GAE / AttCAT) on a tiny BERT with fixed weights (tests/fixtures/mask_lrp, written by
tools/reference/mask_lrp/generate.py). Their methods explain one unpadded input at a time; ours run as one padded
batch. Their [CLS] score is set to 0 (rollout[:, 0, 0] = 0); it is compared on the other tokens only."""
import json
from pathlib import Path

import pytest
import torch
from scipy.stats import spearmanr

import lab
from lab.experiments.mask_lrp import READINGS, reading_params

from tests.reference import bert_from_fixture, padded_batch

FIXTURE = Path(__file__).parent / "fixtures" / "mask_lrp" / "mask_lrp_bert.json"
SPEARMAN, TOLERANCE = 0.99, 1e-3


def _model_and_fixture():
    fixture = json.loads(FIXTURE.read_text())
    model = bert_from_fixture(fixture)
    return model, fixture


def _agreement(ours, theirs, first: int = 1):
    """(Spearman, max |difference|) of two score vectors, each divided by its max |value|, from token `first`."""
    a, b = ours[first:].double(), torch.as_tensor(theirs, dtype=torch.float64)[first:]
    rho = spearmanr(a.numpy(), b.numpy()).statistic
    return rho, float((a / a.abs().max() - b / b.abs().max()).abs().max())


def _explain(method, **params):
    model, fixture = _model_and_fixture()
    examples = fixture["examples"]
    target = torch.tensor([e["target"] for e in examples])
    exp = lab.explain(model, padded_batch(examples), method, target=target, **params)
    for i, e in enumerate(examples):
        torch.testing.assert_close(exp.logits[i], torch.tensor(e["logits"], dtype=torch.float64), atol=1e-9, rtol=0)
    return exp, examples


def test_fixture_is_small_and_from_the_authors_code():
    fixture = json.loads(FIXTURE.read_text())
    assert FIXTURE.stat().st_size < 200_000
    assert fixture["source"]["repository"] == "LinxinS97/Mask-LRP" and set(fixture["masks"]) == {"sparse",
                                                                                                 "one_block", "ones"}


@pytest.mark.parametrize("mask_name", ["sparse", "one_block", "ones"])
def test_mask_lrp_code_reading_matches_the_authors_mgae(mask_name):
    """Our mask_lrp under the code reading (no renormalisation, un-halved recorded A relevance, row-normalised
    rollout, halved matmul relevance, |Σ R| add weights) reproduces their MGAE: Spearman >= 0.99 and
    max-normalised difference <= 1e-3 (measured: <= 3e-6; the rest is the stabiliser of their safe_divide)."""
    _, fixture = _model_and_fixture()
    mask = torch.tensor(fixture["masks"][mask_name], dtype=torch.float64)
    exp, examples = _explain("mask_lrp", head_mask=mask, **reading_params("mask_lrp", "code"))
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        rho, diff = _agreement(exp.scores[i, :n], e["mgae"][mask_name])
        assert rho >= SPEARMAN and diff <= TOLERANCE, (i, rho, diff)


def test_gae_code_reading_matches_the_authors_gae_which_is_not_their_all_ones_mgae():
    """Their MGAE records A·V's relevance before the /2 (READINGS["recorded_rule"]): with all ones it is not GAE."""
    exp, examples = _explain("chefer", **reading_params("chefer", "code"))
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        rho, diff = _agreement(exp.scores[i, :n], e["gae"])
        assert rho >= SPEARMAN and diff <= TOLERANCE, (i, rho, diff)
        assert _agreement(torch.as_tensor(e["gae"]), e["mgae"]["ones"])[1] > TOLERANCE


def test_attcat_matches_the_authors_attcat_from_block_inputs():
    """AttCAT pairs block inputs hidden_states[b] with block b's attention (the authors' code), [CLS] included."""
    exp, examples = _explain("attcat")
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        rho, diff = _agreement(exp.scores[i, :n], e["attcat"], first=0)
        assert rho >= SPEARMAN and diff <= TOLERANCE, (i, rho, diff)


def test_the_text_reading_departs_from_the_authors_code_on_a_sparse_mask():
    """The readings are not cosmetic: renormalising the kept heads (the text) moves the scores away from MGAE."""
    _, fixture = _model_and_fixture()
    mask = torch.tensor(fixture["masks"]["one_block"], dtype=torch.float64)
    params = {**reading_params("mask_lrp", "code"), "renormalize": READINGS["renormalize"]["text"]}
    exp, examples = _explain("mask_lrp", head_mask=mask, **params)
    diffs = [_agreement(exp.scores[i, :len(e["input_ids"])], e["mgae"]["one_block"])[1] for i, e in enumerate(examples)]
    assert max(diffs) > 10 * TOLERANCE
