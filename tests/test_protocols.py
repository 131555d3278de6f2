"""`lab.metrics.protocols`: one method's explanations (+ model) -> {metric: mean} and per-example rows, equal to the
metric functions they wrap and averaging to their means."""
import numpy as np
import pytest
import torch

from lab.metrics import aopc_lodds, auc_rep, comprehensiveness_sufficiency, kendall_tau, token_f1_curve
from lab.metrics import protocols as P
from tests.models import PAD_ID, UNK_ID, text_batch, tiny_bert

SETTINGS = dict(fractions=(0.25, 0.5, 1.0), bins=(0.2, 0.5), mode="replace", deletion_max=2, auc_rep_stop=0.5,
                ks=(1, 2))


@pytest.fixture(scope="module")
def units():
    model = tiny_bert(num_labels=2, dtype=torch.float64).eval()
    rows = text_batch(lengths=(6, 5, 7), seed=3)
    n, s = rows["input_ids"].shape
    valid = rows["attention_mask"].bool()
    special = ~valid
    special[:, 0] = True
    special[torch.arange(n), valid.sum(1) - 1] = True
    scores = torch.randn(n, s, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rationale = torch.zeros(n, s, dtype=torch.bool)
    rationale[:, 1:3] = True
    return P.TextUnits(model, rows, scores, special, valid & ~special, valid, torch.tensor([0, 1, 1]), UNK_ID,
                       PAD_ID, 16, rationale, scores.flip(1))


def test_text_protocols_equal_the_metric_functions(units):
    means, per = P.text_protocols(units, list(P.TEXT_COLUMNS), SETTINGS)
    assert list(means) == list(P.TEXT_COLUMNS) and set(per) == set(means)
    common = dict(special_mask=units.special, batch_size=16, progress=False)
    r = aopc_lodds(units.model, units.rows, units.scores, fractions=SETTINGS["fractions"], token_id=UNK_ID,
                   label="predicted", **common)
    assert means["aopc"] == pytest.approx(r["aopc_mean"]) and means["lodds"] == pytest.approx(r["lodds_mean"])
    r = comprehensiveness_sufficiency(units.model, units.rows, units.scores, bins=SETTINGS["bins"], mode="replace",
                                      token_id=UNK_ID, pad_id=PAD_ID, **common)
    assert means["sufficiency"] == pytest.approx(r["sufficiency_mean"])
    r = auc_rep(units.model, units.rows, units.scores, stop=0.5, token_id=UNK_ID, **common)
    assert means["auc_rep"] == pytest.approx(r["auc_mean"])
    tau = kendall_tau(units.scores, units.reference, mask=units.content).statistic
    assert means["kendall_loo"] == pytest.approx(float(np.nanmean(tau)))
    curve = token_f1_curve(units.scores, units.rationale, units.valid, (1, 2), special_mask=units.special)
    assert means["token_f1"] == pytest.approx(float(np.mean(curve["macro_f1"])))
    for m, v in per.items():  # per-example rows average to the means (deletion: over the correct examples)
        assert v.shape == (3,)
        if np.isfinite(v).any():
            assert np.nanmean(v) == pytest.approx(means[m], nan_ok=True), m


def test_columns_follow_the_request_and_missing_inputs(units):
    means, per = P.text_protocols(units, ["lodds", "aopc"], SETTINGS)
    assert list(means) == ["lodds", "aopc"]
    bare = P.TextUnits(**{**units.__dict__, "rationale": None, "reference": None})
    means, _ = P.text_protocols(bare, ["token_f1", "kendall_loo", "auc_rep"], SETTINGS)
    assert list(means) == ["auc_rep"]


def test_patch_level_pools_pixel_maps():
    maps = torch.arange(16.0).reshape(1, 4, 4)
    assert torch.equal(P.patch_level(maps, (4, 4)), maps)
    assert P.patch_level(maps, (2, 2))[0].tolist() == [[2.5, 4.5], [10.5, 12.5]]


def test_units_from_an_explanation_set(units):
    from lab.explainers.batch import explain_many

    es = explain_many(units.model, units.rows, "saliency", batch_size=2)
    u = P.TextUnits.from_explanations(es, units.model, units.rows, units.labels, UNK_ID, PAD_ID, 16)
    assert u.scores.shape == (3, 7) and u.scores.dtype == torch.float64
    assert torch.equal(u.content, units.content[:, :7])
    means, per = P.text_protocols(u, ["aopc", "auc_rep"], SETTINGS)
    direct = aopc_lodds(units.model, u.rows, u.scores, fractions=SETTINGS["fractions"], token_id=UNK_ID,
                        label="predicted", special_mask=u.special, batch_size=16, progress=False)
    assert means["aopc"] == pytest.approx(direct["aopc_mean"]) and per["auc_rep"].shape == (3,)


# ---- a study's examples -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def examples():
    from lab.explainers.batch import text_examples

    rows = text_batch(lengths=(6, 5, 7), seed=3)
    rationale = torch.zeros_like(rows["input_ids"], dtype=torch.bool)
    rationale[:, 1:3] = True
    return text_examples("t", tiny_bert(num_labels=2, dtype=torch.float64), rows, [0, 1, 1], rationale=rationale)


def test_examples_protocols_equal_the_units_on_trimmed_rows(examples):
    scores = torch.randn(examples.inputs["input_ids"].shape, generator=torch.Generator().manual_seed(1))
    settings = {**SETTINGS, "perturb_batch": 16}
    means, per = P.examples_protocols(examples, scores, settings, UNK_ID, PAD_ID, n=2)
    assert list(means) == [m for m in P.columns(examples) if m != "kendall_loo"]  # no reference: no τ
    assert all(len(v) == 2 for v in per.values())
    idx = torch.arange(2)
    rows = examples.rows(idx)
    w = rows["input_ids"].shape[1]
    units = P.TextUnits(examples.model, rows, scores[:2, :w].double(), examples.special[:2, :w],
                        examples.content[:2, :w], examples.valid[:2, :w], examples.labels[:2], UNK_ID, PAD_ID, 16,
                        examples.rationale[:2, :w])
    assert means == P.text_protocols(units, list(means), settings)[0]
    assert "token_f1" not in P.columns(type(examples)(**{**examples.__dict__, "rationale": None}))


def test_map_agreement_is_one_for_a_monotone_copy_and_ignores_special_tokens(examples):
    a = torch.randn(examples.inputs["input_ids"].shape, generator=torch.Generator().manual_seed(2))
    b = 3 * a + 1
    b[~examples.content] = 1e6  # special tokens and padding are not compared
    assert P.map_agreement(examples, a, b, 3) == pytest.approx(np.ones(3))
    assert P.map_agreement(examples, a, -a, 2) == pytest.approx(-np.ones(2))


# ---- tables over methods (`lab.metrics.ranking`) ----------------------------------------------------------------


def test_ranking_stability_orients_lower_is_better_metrics():
    from lab.metrics import ranking as R

    lodds = {"a": -2.0, "b": -1.0, "c": 0.0}
    values = {"pad": {m: {"aopc": a, "lodds": lodds[m]} for m, a in zip("abc", (0.3, 0.2, 0.1))},
              "mask": {m: {"aopc": a, "lodds": lodds[m]} for m, a in zip("abc", (0.1, 0.2, 0.3))}}
    tau, best = R.ranking_stability(values, ["aopc", "lodds"])
    assert tau["aopc"]["pad~mask"] == pytest.approx(-1.0) and tau["lodds"]["pad~mask"] == pytest.approx(1.0)
    assert best == {"aopc": {"pad": "a", "mask": "c"}, "lodds": {"pad": "a", "mask": "a"}}  # lodds: lower is better
    with pytest.raises(R.MetricInputError, match="unknown metric"):
        R.direction("accuracy_of_vibes")


def test_image_protocols_are_notebook_01s_protocols_with_batch_size_images_per_forward():
    """07's image columns come from `lab.metrics.images.perturbation_protocol` / `segmentation_protocol` (01's):
    the same AUCs and pooled segmentation scores, and `batch_size` images (each with all its fractions) per pass."""
    from lab.metrics import images as mi

    gen = torch.Generator().manual_seed(0)
    images, labels = torch.rand(5, 3, 8, 8, generator=gen), torch.tensor([0, 1, 0, 1, 1])
    masks, maps = torch.rand(5, 8, 8, generator=gen) > 0.5, torch.rand(5, 2, 2, generator=gen)
    weight, seen = torch.randn(3, 2, generator=gen), []

    def predict(x):
        seen.append(len(x))
        return x.mean((2, 3)) @ weight

    fractions = (0.0, 0.25, 0.5)
    u = P.ImageUnits(predict, images, labels, masks, maps, (2, 2), 0.0, fractions, batch_size=2)
    means, per = P.image_protocols(u, ["positive_auc", "negative_auc", "pixel_accuracy", "mAP", "mIoU"])
    assert seen == [2 * len(fractions), 2 * len(fractions), len(fractions)] * 2  # 2 + 2 + 1 images per direction
    pixel = mi.pixel_maps(maps, (8, 8))
    for direction in ("positive", "negative"):
        auc = mi.perturbation_auc(fractions, mi.perturbation_hits(predict, images, labels, pixel, direction,
                                                                  fractions, 0.0, 6))
        np.testing.assert_allclose(per[f"{direction}_auc"], auc)
        assert means[f"{direction}_auc"] == pytest.approx(float(auc.mean()))
    pooled = mi.segmentation_scores(pixel, masks)
    assert {k: means[k] for k in ("pixel_accuracy", "mAP", "mIoU")} == pytest.approx(
        {k: pooled[k] for k in ("pixel_accuracy", "mAP", "mIoU")})
    assert per["mAP"].mean() == pytest.approx(means["mAP"])
