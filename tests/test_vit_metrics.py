"""Image metrics on synthetic cases, the small ViT (train -> cache -> reload), and the Chefer experiments end to end
on the smoke profile, plus the grid-from-config check on a ViT-B/16-shaped config."""
from functools import partial

import numpy as np
import pytest
import torch

from lab.metrics import images as mi


# ---- segmentation -----------------------------------------------------------------------------------------


def _square_masks(n=4, size=16):
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        masks[i, 2 + i:8 + i, 3:10] = True
    return masks


def test_perfect_map_scores_100_and_inverted_map_scores_worse():
    masks = _square_masks()
    perfect = mi.segmentation_scores(masks.float(), masks)
    assert perfect["pixel_accuracy"] == pytest.approx(100) and perfect["mIoU"] == pytest.approx(100)
    assert perfect["mAP"] == pytest.approx(100)
    inverted = mi.segmentation_scores(1 - masks.float(), masks)
    assert inverted["pixel_accuracy"] == pytest.approx(0) and inverted["mIoU"] == pytest.approx(0)
    assert inverted["mAP"] < 60
    noise = torch.rand(masks.shape, generator=torch.Generator().manual_seed(0))
    noisy = mi.segmentation_scores(masks.float() + 1.5 * noise, masks)
    assert inverted["mAP"] < noisy["mAP"] < perfect["mAP"]


def test_segmentation_is_invariant_to_affine_rescaling_and_pools_iou():
    masks = _square_masks()
    maps = torch.rand(masks.shape, generator=torch.Generator().manual_seed(1)) + masks
    a, b = mi.segmentation_scores(maps, masks), mi.segmentation_scores(3 * maps - 7, masks)
    assert a == pytest.approx(b)
    # pooled IoU: total intersection / total union over the dataset, not the mean of per-image IoUs
    pred = mi.minmax(maps) > mi.minmax(maps).flatten(1).mean(1).view(-1, 1, 1)
    fg = (pred & masks).sum().item() / (pred | masks).sum().item()
    assert a["iou_foreground"] == pytest.approx(100 * fg)
    assert a["mIoU"] == pytest.approx((a["iou_foreground"] + a["iou_background"]) / 2)


def test_average_precision_matches_hand_computation_and_sklearn():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    targets = torch.tensor([1, 0, 1, 0, 0])
    assert mi.average_precision(scores, targets) == pytest.approx(0.5 * 1 + 0.5 * (2 / 3))
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    s = np.round(rng.random(300), 1)  # many ties
    t = rng.random(300) < 0.3
    assert mi.average_precision(torch.from_numpy(s), torch.from_numpy(t)) == \
        pytest.approx(sklearn.average_precision_score(t, s))


def test_patch_maps_are_upsampled_bilinearly_and_checked():
    maps = torch.arange(4.0).reshape(1, 2, 2)
    up = mi.pixel_maps(maps, (8, 8))
    assert up.shape == (1, 8, 8) and up[0, 0, 0] == 0 and up[0, -1, -1] == 3
    assert torch.equal(mi.pixel_maps(up, (8, 8)), up)
    with pytest.raises(mi.MetricInputError, match="upsample"):
        mi.segmentation_scores(maps, torch.zeros(1, 8, 8, dtype=torch.bool))


# ---- perturbation -----------------------------------------------------------------------------------------


class _EvidenceModel(torch.nn.Module):
    """Toy classifier: class 1 when the mean of channel 0 over the evidence region exceeds 0.5."""

    def __init__(self, region):
        super().__init__()
        self.region = region

    def forward(self, pixel_values):
        score = (pixel_values[:, 0] * self.region).sum((1, 2)) / self.region.sum()
        logits = torch.stack([0.5 - score, score - 0.5], 1)
        return type("Out", (), {"logits": logits})()


def _evidence_case(n=6, size=10):
    region = torch.zeros(size, size)
    region[2:7, 2:7] = 1.0
    images = torch.zeros(n, 3, size, size)
    images[:, 0] = region  # evidence fully present: class 1
    labels = torch.ones(n, dtype=torch.long)
    return _EvidenceModel(region), images, labels, region.expand(n, size, size)


def test_oracle_relevance_drops_fast_under_positive_and_slowly_under_negative_perturbation():
    model, images, labels, oracle = _evidence_case()
    pos = mi.perturbation_curve(model, images, labels, oracle, "positive", fill=0.0)
    neg = mi.perturbation_curve(model, images, labels, oracle, "negative", fill=0.0)
    # 25 evidence pixels of 100: removing the top 20 % leaves 5/25 evidence (wrong); removing the bottom 80 %
    # leaves all of it (right)
    assert pos[0] == 1.0 and (pos[1:] == 0).all()
    assert (neg[:8] == 1).all() and neg[8] == 0
    auc_pos, auc_neg = mi.perturbation_auc(mi.FRACTIONS, pos), mi.perturbation_auc(mi.FRACTIONS, neg)
    assert auc_pos < auc_neg
    # an anti-oracle swaps the roles
    anti = mi.perturbation_curve(model, images, labels, -oracle, "positive", fill=0.0)
    assert mi.perturbation_auc(mi.FRACTIONS, anti) > auc_pos


def test_remove_pixels_sets_exactly_k_pixels_to_the_fill_value():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float).reshape(2, 3, 4, 4)
    rel = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0))
    order = mi.removal_order(rel, "positive")
    out = mi.remove_pixels(images, order, 5, torch.tensor([-1.0, -2.0, -3.0]))
    changed = (out != images).any(1)
    assert changed.flatten(1).sum(1).tolist() == [5, 5]
    top = rel.flatten(1).topk(5, dim=1).indices
    assert all(set(changed[i].flatten().nonzero().flatten().tolist()) == set(top[i].tolist()) for i in range(2))
    assert out[:, 1].flatten(1).gather(1, top).eq(-2).all()
    assert torch.equal(images, torch.arange(96, dtype=torch.float).reshape(2, 3, 4, 4))  # input untouched


def test_auc_is_the_mean_accuracy_over_the_range():
    assert mi.perturbation_auc(mi.FRACTIONS, [0.5] * 9) == pytest.approx(50)
    assert mi.perturbation_auc([0.1, 0.9], [1.0, 0.0]) == pytest.approx(50)
    with pytest.raises(mi.MetricInputError):
        mi.perturbation_auc([0.1, 0.2], [1.0])
    hits = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1]], dtype=float)  # 3 fractions x 3 examples
    per_image = mi.perturbation_auc([0.1, 0.5, 0.9], hits)
    assert per_image.shape == (3,) and per_image[1] == pytest.approx(0)
    assert per_image.mean() == pytest.approx(mi.perturbation_auc([0.1, 0.5, 0.9], hits.mean(1)))
    with pytest.raises(mi.MetricInputError, match="direction"):
        mi.removal_order(torch.zeros(1, 2, 2), "upward")


def test_mask_mass_prefers_maps_on_the_object():
    masks = _square_masks()
    assert (mi.mask_mass(masks.float(), masks) == 1).all()
    assert (mi.mask_mass(1 - masks.float(), masks) == 0).all()


# ---- the small ViT: train (smoke) -> cache -> reload --------------------------------------------------------

TINY = dict(train_size=128, test_size=32, batch_size=32)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """A private LAB_CACHE_DIR shared by this module's ViT tests (the smoke ViT trains once, in seconds)."""
    import os

    old = os.environ.get("LAB_CACHE_DIR")
    os.environ["LAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield os.environ["LAB_CACHE_DIR"]
    if old is None:
        os.environ.pop("LAB_CACHE_DIR")
    else:
        os.environ["LAB_CACHE_DIR"] = old


def test_smoke_vit_trains_caches_and_reloads(tiny_cache, monkeypatch):
    from lab import cache
    from lab.models import vit

    first = vit.train_vit("smoke", progress=False, **TINY)
    assert cache.is_complete(first.path) and str(first.path).startswith(tiny_cache)
    assert 0.0 <= first.metrics["test_accuracy"] <= 1.0 and first.metrics["test_size"] == 32
    assert first.model.config._attn_implementation == "eager"
    monkeypatch.setattr(vit, "_train", lambda *a, **k: pytest.fail("a cached ViT must not be retrained"))
    again = vit.train_vit("smoke", progress=False, **TINY)
    assert again.path == first.path and again.metrics == first.metrics
    x = torch.zeros(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(first.model(pixel_values=x).logits, again.model(pixel_values=x).logits, atol=1e-6)
    other = vit.cache_path(vit.vit_settings("smoke", **dict(TINY, lr=1e-4)), seed=0)
    assert other != first.path  # any hyper-parameter changes the key


def test_training_follows_the_thread_policy_and_restores_it(lab_dirs, monkeypatch):
    """train_vit used to force 2 threads for the rest of the process, ignoring LAB_NUM_THREADS=1."""
    from lab.models import vit

    seen = []
    monkeypatch.setattr(vit, "_train", lambda *a, **k: seen.append(torch.get_num_threads()) or {})
    monkeypatch.setenv("LAB_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        vit.train_vit("smoke", progress=False, force=True, **TINY)
        assert seen == [1] and torch.get_num_threads() == 2
        vit.train_vit("smoke", progress=False, force=True, threads=2, **TINY)
        assert seen == [1, 2]
    finally:
        torch.set_num_threads(before)


def test_vit_settings_reject_unknown_profiles_and_names():
    from lab.models import vit

    with pytest.raises(vit.VitProfileError, match="unknown ViT profile"):
        vit.vit_settings("huge")
    with pytest.raises(vit.VitProfileError, match="unknown ViT setting"):
        vit.vit_settings("smoke", depth=3)
    with pytest.raises(vit.VitProfileError, match="multiple"):
        vit.vit_settings("smoke", patch_size=5)
    with pytest.raises(vit.VitProfileError, match="unknown scene 'crowd'"):
        vit.vit_settings("smoke", scene="crowd")


def test_the_scene_is_part_of_the_vit_key_and_setup_evaluates_on_the_vits_scene(tiny_cache, monkeypatch):
    from lab.data import images
    from lab.experiments import chefer_vit as cv
    from lab.models import vit

    assert len({vit.cache_path(vit.vit_settings("smoke", scene=s), 0) for s in images.SCENES}) == len(images.SCENES)
    monkeypatch.setitem(vit.PROFILES, "smoke", dict(vit.PROFILES["smoke"], **TINY))
    ctx = cv.setup(cv.settings("smoke", n_examples=4, n_pairs=2, progress=False, scene="single"))
    assert ctx.test.scene == ctx.pairs.scene == "single" and ctx.test.masks.shape == (4, 32, 32)
    assert ctx.model_info["scene"] == vit.load_vit(ctx.model_info["checkpoint"]).settings["scene"] == "single"
    assert ctx.model_info["checkpoint"] == str(vit.cache_path(vit.vit_settings("smoke", scene="single", **TINY), 0))


# ---- the experiments, end to end on the smoke profile ----------------------------------------------------------


def test_chefer_experiments_run_end_to_end_on_the_smoke_profile(tiny_cache, lab_dirs, monkeypatch):
    monkeypatch.setenv("LAB_CACHE_DIR", tiny_cache)
    from lab.experiments import chefer_vit as cv
    from lab.models import vit
    from lab.viz import chefer_vit as cvz

    monkeypatch.setitem(vit.PROFILES, "smoke", dict(vit.PROFILES["smoke"], **TINY))
    cfg = cv.settings("smoke", n_examples=6, n_pairs=2, methods=["rollout", "attn_gradcam", "lrp", "chefer"],
                      ablations=["chefer_last_block"], progress=False)
    ctx = cv.setup(cfg)
    assert ctx.model_info["grid"] == (4, 4) and ctx.model_info["image_size"] == 32
    maps = {s: cv.compute_maps(ctx, cfg["methods"], s) for s in cv.SETTINGS}
    assert set(maps["target"]) == {"attn_gradcam", "lrp", "chefer"}  # rollout is class-agnostic
    assert all(m.shape == (6, 32, 32) for m in maps["predicted"].values())
    from lab import cache

    hits = cache.MEMO_STATS["hits"]  # explain_many memoises the maps: asked again, they are loaded, not recomputed
    assert torch.equal(cv.compute_maps(ctx, ["chefer"])["chefer"], maps["predicted"]["chefer"])
    assert cache.MEMO_STATS["hits"] == hits + 1
    t1 = cv.perturbation_results(ctx, maps)
    t2 = cv.segmentation_results(ctx, maps["predicted"])
    t3 = cv.ablation_results(ctx, t1, t2)
    spec = cv.class_specificity(ctx, ["rollout", "chefer"])
    assert t1["rows"]["rollout"]["negative_target"] is None
    assert len(t1["curves"]["negative_predicted"]["chefer"]) == len(mi.EXTENDED_FRACTIONS)  # steps to 99 %
    b = t1["bound_rows"]
    assert b["oracle"]["negative_predicted"] >= b["random"]["negative_predicted"] - 1e-9
    col = "negative_predicted"
    expected = mi.normalised_auc(t1["rows"]["chefer"][col], b["random"][col], b["oracle"][col])
    assert t1["normalised"]["chefer"][col] == (None if np.isnan(expected) else pytest.approx(expected))  # None: bounds tie
    assert all(0 <= v <= 100 for r in t1["rows"].values() for v in r.values() if v is not None)
    assert set(t3["rows"]) == {"chefer_last_block", "chefer"}
    assert spec["rows"]["rollout"]["map_change"] == pytest.approx(0, abs=1e-6)  # same map for both classes
    res = cv.build_results(ctx, t1, t2, t3, spec)
    path = res.save()
    assert path.parent == lab_dirs["results"] / "smoke"  # smoke results never land in the default folder
    cell = res.tables["table2_segmentation"]["rows"]["chefer"]["mAP"]
    assert cell == {"paper": 86.03, "ours": t2["rows"]["chefer"]["mAP"]}
    assert any("Fig. 2" in c["claim"] for c in res.claims) and "table1_interval_half_widths" in res.tables
    assert {"random", "oracle"} <= set(res.tables["table1_perturbation"]["rows"])  # the bounds are rows
    assert not any("oracle" in c["claim"] or "random" in c["detail"] for c in res.claims)  # never in claims
    assert set(res.tables["table1_oracle_gap"]["rows"]) == set(t1["rows"])
    assert res.claims and all(c["verdict"] == "not evaluated" for c in res.claims)  # smoke
    names = ctx.test.class_names
    example = cv.explain_example(ctx, 1, "chefer", target_class=names[1])
    assert example["explained"] == names[1] and example["true"] == names[int(ctx.test.labels[1])]
    for fig in (cvz.figure1(ctx.test.pixels()[:2], maps["predicted"], ctx.test.labels, ctx.test.labels, names),
                cvz.figure2(ctx.pairs.pixels()[:1], spec["maps"], ctx.pairs.labels, names), cvz.curves_figure(t1),
                cvz.example_renderer(partial(cv.explain_example, ctx))(1, "chefer", names[1])):
        assert hasattr(fig, "savefig")
    with pytest.raises(cv.ExperimentError, match="index"):
        cv.explain_example(ctx, 99, "chefer")
    with pytest.raises(cv.ExperimentError, match="target_class"):
        cv.explain_example(ctx, 0, "chefer", target_class="unicorn")


def test_experiment_settings_reject_bad_values():
    from lab.experiments import chefer_vit as cv

    with pytest.raises(cv.ExperimentError, match="unknown method"):
        cv.settings("smoke", methods=["chefer", "magic"])
    with pytest.raises(cv.ExperimentError, match="fill"):
        cv.settings("smoke", fill="blue")
    with pytest.raises(cv.ExperimentError, match="extra_fractions"):
        cv.settings("smoke", extra_fractions=(0.5,))
    assert cv.settings("smoke", fill="blur")["fill"] == "blur"
    assert cv.settings("smoke", n_examples=None)["n_examples"] == cv.PROFILES["smoke"]["n_examples"]


PATCH_LOOPS = ("leave_one_out", "erasure")  # one forward pass per patch (196 here): timed by `lab bench` instead


@pytest.mark.slow
def test_every_image_explainer_and_metric_runs_on_a_vit_b16_shaped_checkpoint(tmp_path, lab_dirs):
    """ViT-B/16 geometry (224 px, 16-px patches, width 768, 12 heads; 2 blocks to stay fast), saved and loaded as a
    checkpoint the way the notebook takes one: the 14x14 grid and all sizes come from the config. Every image
    explainer but the two patch loops; perturbation (blur fill, bounds) on two of them to keep the cost down."""
    import lab
    from transformers import ViTConfig, ViTForImageClassification

    from lab.experiments import chefer_vit as cv

    torch.manual_seed(0)
    ViTForImageClassification(ViTConfig(num_hidden_layers=2, num_labels=16)).save_pretrained(tmp_path / "b16")
    vision = [m for m, spec in lab.EXPLAINERS.items() if "vision" in spec.modalities and m not in PATCH_LOOPS]
    cfg = cv.settings("smoke", n_examples=2, n_pairs=1, methods=vision, progress=False, fill="blur",
                      fractions=(0.1, 0.9), extra_fractions=(0.99,), checkpoint=str(tmp_path / "b16"))
    ctx = cv.setup(cfg)
    assert ctx.model_info["grid"] == (14, 14) and ctx.model_info["image_size"] == 224
    assert ctx.model.config.hidden_size == 768
    maps = {}
    for name in vision:
        params = {"head_mask": torch.ones(2, 12)} if name == "mask_lrp" else {}
        params.update({"steps": 4} if name == "integrated_gradients" else {})
        maps[name] = cv.explain_pixels(ctx, ctx.test.images, name, **params)[0]
    assert all(m.shape == (2, 224, 224) and torch.isfinite(m).all() for m in maps.values()), list(maps)
    t2 = cv.segmentation_results(ctx, maps)
    assert set(t2["rows"]) == set(vision) and all(0 <= v <= 100 for r in t2["rows"].values() for v in r.values())
    t1 = cv.perturbation_results(ctx, {"predicted": {k: maps[k] for k in ("rollout", "chefer")}})
    assert {"random", "oracle"} == set(t1["bound_rows"]) and len(t1["curves"]["negative_predicted"]["chefer"]) == 3
    spec = cv.class_specificity(ctx, ["rollout", "chefer"])
    assert cv.build_results(ctx, t1, t2, {"rows": {}, "per_image": {}}, spec).tables["table1_normalised"]


def test_checkpoint_loading_refuses_other_architectures_in_one_line(tmp_path):
    from transformers import BertConfig

    from lab.models import vit

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(vit.VitProfileError, match="'bert' model; only ViT"):
        vit.load_checkpoint(tmp_path)
    with pytest.raises(vit.VitProfileError, match="cannot load checkpoint"):
        vit.load_checkpoint(tmp_path / "missing")


# ---- claims decided by paired bootstrap intervals over images ----------------------------------------------------


def synthetic_tables(means, n=60, noise=2.0, seed=0):
    """Table 1 / Table 2 dicts from per-image AUCs around `means[method][col]` (shared per-image difficulty, so
    the pairing matters) and segmentation counts whose pixel accuracy is about `means[method]["seg"]`."""
    from lab.experiments import chefer_vit as cv

    rng = np.random.default_rng(seed)
    base = rng.normal(0, 10, n)
    per_image = {m: {c: 50 + base + v + rng.normal(0, noise, n) for c, v in cols.items() if c != "seg"}
                 for m, cols in means.items()}
    counts = {}
    for m, cols in ((m, cols) for m, cols in means.items() if "seg" in cols):
        correct = np.clip(cols["seg"] + rng.normal(0, noise, n), 0, 100)
        counts[m] = np.stack([correct, np.full(n, 100.0), correct / 100, correct / 2, np.full(n, 50.0),
                              correct / 2, np.full(n, 50.0)], 1)
    t1 = {"rows": {m: {c: float(v.mean()) for c, v in cols.items()} for m, cols in per_image.items()},
          "per_image": per_image}
    t2 = {"rows": {m: {k: v for k, v in mi.segmentation_from_counts(c).items() if k in cv.SEGMENTATION}
                   for m, c in counts.items()}, "counts": counts}
    return t1, t2


def test_segmentation_counts_reproduce_the_pooled_scores():
    maps, masks = torch.rand(5, 8, 8), torch.rand(5, 8, 8) > 0.6
    counts = mi.segmentation_counts(maps, masks)
    assert counts.shape == (5, len(mi.SEGMENTATION_COUNTS))
    assert mi.segmentation_from_counts(counts) == pytest.approx(mi.segmentation_scores(maps, masks))
    assert mi.segmentation_from_counts(counts[:2]) == pytest.approx(mi.segmentation_scores(maps[:2], masks[:2]))


def test_vit_table_claims_hold_fail_or_stay_open_on_their_intervals():
    from lab.experiments import chefer_vit as cv

    pred = ("positive_predicted", "negative_predicted")
    means = {"chefer": {"positive_predicted": -10, "negative_predicted": 10, "seg": 80},
             "rollout": {"positive_predicted": 0, "negative_predicted": 0, "seg": 60},
             "partial_lrp": {"positive_predicted": 0.5, "negative_predicted": -0.5},
             "lrp": {"positive_predicted": 8, "negative_predicted": 2, "seg": 40}}
    t1, t2 = synthetic_tables(means)
    v = {c["claim"]: c["verdict"] for c in cv.table_claims(t1, t2)}
    assert v["Chefer is best on every column of Table 1 (perturbation)"] == "holds"
    assert v["Chefer is best on every column of Table 2 (segmentation)"] == "holds"
    assert v["LRP is worst on segmentation (all three metrics)"] == "holds"
    assert v["LRP is worst on positive perturbation (predicted class)"] == "holds"
    assert v["partial LRP ≈ rollout on predicted-class perturbation (within 3 AUC points)"] == "holds"
    means = {"chefer": {"positive_predicted": 3, "negative_predicted": 10},  # worse than rollout on positive
             "rollout": {c: 0 for c in pred}, "partial_lrp": {c: 6 for c in pred}}  # 6 points from rollout
    t1, t2 = synthetic_tables(means)
    v = {c["claim"]: c for c in cv.table_claims(t1, t2)}
    best = v["Chefer is best on every column of Table 1 (perturbation)"]
    assert best["verdict"] == "fails" and "positive_predicted" in best["detail"]
    assert v["partial LRP ≈ rollout on predicted-class perturbation (within 3 AUC points)"]["verdict"] == "fails"
    t1, t2 = synthetic_tables({m: {c: 0 for c in pred} for m in ("chefer", "rollout")}, n=15)
    assert cv.table_claims(t1, t2)[0]["verdict"] in ("inconclusive", "fails")
    col = "positive_predicted"
    tied = mi.advantage(t1["per_image"]["chefer"][col], t1["per_image"]["rollout"][col], col, "lower")
    assert tied.low < 0 < tied.high


def test_vit_fig2_claims_use_per_pair_shifts():
    from lab.experiments import chefer_vit as cv
    from lab.results import Results

    rng = np.random.default_rng(0)
    spec = {"per_pair": {"chefer": 0.2 + rng.normal(0, 0.02, 40), "attn_gradcam": 0.1 + rng.normal(0, 0.02, 40),
                         "rollout": rng.normal(0, 0.002, 40)}}
    res = Results("01_chefer_vit", "default")
    for c in cv.specificity_claims(spec):
        res.add_claim(**c)
    assert [c["verdict"] for c in res.claims] == ["holds", "holds"] and "interval" in res.claims[1]
    spec["per_pair"]["rollout"] = 0.1 + rng.normal(0, 0.02, 40)  # a class-agnostic map that moves: not expected
    assert cv.specificity_claims(spec)[0]["verdict"] == "fails"


# ---- perturbation protocol options: fills, extended steps, bounds -------------------------------------------------


def test_blur_fill_takes_each_removed_pixel_from_the_blurred_image():
    images = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    blurred = mi.blur(images, sigma=1.5)
    assert blurred.shape == images.shape
    assert torch.allclose(mi.blur(torch.full((1, 3, 12, 12), 0.3)), torch.full((1, 3, 12, 12), 0.3), atol=1e-6)
    assert blurred.std() < images.std()  # smoother
    order = mi.removal_order(torch.rand(2, 12, 12, generator=torch.Generator().manual_seed(1)), "positive")
    out = mi.remove_pixels(images, order, 30, blurred)
    removed = (out != images).any(1)
    assert torch.equal(out[:, :, removed[0]][0], blurred[:, :, removed[0]][0])
    assert torch.equal(out.masked_select(~removed[:, None]), images.masked_select(~removed[:, None]))
    with pytest.raises(mi.MetricInputError, match="fill"):
        mi.remove_pixels(images, order, 3, blurred[:1])


def test_perturbation_with_per_image_fill_is_batched_consistently():
    model, images, labels, oracle = _evidence_case(n=6)
    fill = torch.zeros_like(images)
    fill[:3] = 1.0  # the first three images are "repaired" by their fill: evidence stays present
    hits = mi.perturbation_hits(model, images, labels, oracle, "positive", mi.EXTENDED_FRACTIONS, fill, batch_size=11)
    assert hits.shape == (11, 6) and hits[:, :3].all() and not hits[1:, 3:].any()


def test_bounds_random_and_oracle_and_the_normalised_auc():
    model, images, labels, _ = _evidence_case(n=8)
    masks = model.region.bool().expand(8, -1, -1)
    oracle, rand = mi.oracle_map(masks), mi.random_map(masks.shape)
    assert (oracle[masks] > oracle[~masks].max()).all()  # every object pixel above every other
    aucs = {name: {d: mi.perturbation_auc(mi.EXTENDED_FRACTIONS, mi.perturbation_curve(
        model, images, labels, m, d, mi.EXTENDED_FRACTIONS, fill=0.0)) for d in ("negative", "positive")}
        for name, m in (("oracle", oracle), ("random", rand))}
    assert aucs["oracle"]["negative"] > aucs["random"]["negative"]
    assert aucs["oracle"]["positive"] < aucs["random"]["positive"]
    for d in ("negative", "positive"):
        assert mi.normalised_auc(aucs["oracle"][d], aucs["random"][d], aucs["oracle"][d]) == pytest.approx(100)
        assert mi.normalised_auc(aucs["random"][d], aucs["random"][d], aucs["oracle"][d]) == pytest.approx(0)
    assert mi.normalised_auc(40.0, 20.0, 60.0) == pytest.approx(50)  # negative: halfway
    assert mi.normalised_auc(30.0, 40.0, 20.0) == pytest.approx(50)  # positive: halfway, lower is better
    assert np.isnan(mi.normalised_auc(1.0, 2.0, 2.0))  # a model at chance: the bounds coincide, nothing to rank


# ---- the image protocols (lab.metrics.images) behind Tables 1-3 and Fig. 2 ------------------------------------------


def test_perturbation_protocol_is_the_auc_over_fractions_and_the_curve_beyond():
    model, images, labels, oracle = _evidence_case(n=6)
    maps = {"predicted": {"oracle": oracle, "anti": -oracle}, "target": {"oracle": oracle}}
    out = mi.perturbation_protocol(model, images, labels, maps, mi.FRACTIONS, (0.95, 0.99), fill=0.0, batch_size=4)
    assert list(out["rows"]["oracle"]) == ["negative_predicted", "positive_predicted", "negative_target",
                                           "positive_target"]
    for name, m in (("oracle", oracle), ("anti", -oracle)):
        for d in ("negative", "positive"):
            hits = mi.perturbation_hits(model, images, labels, m, d, mi.EXTENDED_FRACTIONS, 0.0)
            assert out["curves"][f"{d}_predicted"][name] == pytest.approx(hits.mean(1).tolist())
            auc = mi.perturbation_auc(mi.FRACTIONS, hits[:len(mi.FRACTIONS)])  # the 95 / 99 % steps stay out
            assert out["per_image"][name][f"{d}_predicted"] == pytest.approx(auc)
            assert out["rows"][name][f"{d}_predicted"] == pytest.approx(auc.mean())
    assert out["rows"]["oracle"]["negative_predicted"] > out["rows"]["anti"]["negative_predicted"]


def test_bounds_normalise_rows_and_check_the_benchmark():
    bounds = {"random": {"negative_predicted": 20.0, "positive_predicted": 40.0},
              "oracle": {"negative_predicted": 60.0, "positive_predicted": 20.0}}
    rows = {"m": {"negative_predicted": 40.0, "negative_target": 50.0, "positive_predicted": 30.0,
                  "positive_target": None}}
    assert mi.normalised_rows(rows, bounds) == {"m": {"negative_predicted": pytest.approx(50),
                                                      "negative_target": pytest.approx(75),
                                                      "positive_predicted": pytest.approx(50), "positive_target": None}}
    assert mi.normalised_rows(rows, {"random": bounds["oracle"], "oracle": bounds["oracle"]})["m"][
        "negative_predicted"] is None  # bounds that coincide rank nothing
    rng = np.random.default_rng(0)
    per = {m: {"negative_predicted": v + rng.normal(0, 1, 30)} for m, v in (("a", 50), ("b", 30))}
    table = {"rows": {"a": {"negative_predicted": 50.0}, "b": {"negative_predicted": 30.0}}, "per_image": per,
             "bound_per_image": {"oracle": {"negative_predicted": np.full(30, 60.0)}}}
    checks = mi.benchmark_checks(table, ["a", "b", "absent"])
    assert checks["attention_spread"] == pytest.approx(20)
    assert checks["rows"]["a"]["gap_to_oracle"] == pytest.approx(60 - per["a"]["negative_predicted"].mean())
    assert checks["rows"]["a"]["gap_low"] < checks["rows"]["a"]["gap_to_oracle"] < checks["rows"]["a"]["gap_high"]
    assert mi.benchmark_checks({**table, "bound_per_image": {}}, ["a"]) == {
        "rows": {}, "attention_spread": None, "oracle_gap": 2.0, "spread_target": 5.0}


def test_segmentation_protocol_advantage_and_class_shift():
    masks = _square_masks()
    maps = {"good": masks.float() + 0.1 * torch.rand(masks.shape, generator=torch.Generator().manual_seed(0)),
            "bad": torch.rand(masks.shape, generator=torch.Generator().manual_seed(1))}
    seg = mi.segmentation_protocol(maps, masks)
    assert seg["rows"]["good"] == pytest.approx({k: mi.segmentation_scores(maps["good"], masks)[k]
                                                 for k in ("pixel_accuracy", "mAP", "mIoU")})
    values = {m: mi.per_image_values({"per_image": {}}, seg, m) for m in maps}
    assert set(values["good"]) == {"pixel_accuracy", "mAP", "mIoU"} and values["good"]["mAP"].shape == (4, 7)
    iv = mi.advantage(values["good"]["mIoU"], values["bad"]["mIoU"], "mIoU")
    assert iv.estimate == pytest.approx(seg["rows"]["good"]["mIoU"] - seg["rows"]["bad"]["mIoU"])
    assert mi.advantage(values["bad"]["mIoU"], values["good"]["mIoU"], "mIoU", "lower").estimate == \
        pytest.approx(iv.estimate)
    pair_masks = torch.stack([masks, masks.flip(-1)], 1)  # [N, 2, H, W]: two objects per image
    follows = mi.class_shift(pair_masks[:, 0].float(), pair_masks[:, 1].float(), pair_masks)
    ignores = mi.class_shift(maps["bad"], maps["bad"], pair_masks)
    assert (follows[1] > 0.2).all()
    assert torch.equal(ignores[0], torch.zeros(4)) and torch.equal(ignores[1], torch.zeros(4))


def test_fill_values_in_the_normalised_input_space():
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.equal(mi.fill_value("mean", images, (0.5,) * 3, (0.5,) * 3), images.mean(dim=(0, 2, 3)))
    assert torch.allclose(mi.fill_value("zero", images, (0.5, 0.4, 0.3), (0.5, 0.2, 0.1)),
                          torch.tensor([-1.0, -2.0, -3.0]))
    assert torch.equal(mi.fill_value(0.25, images, (0.5,) * 3, (0.5,) * 3), torch.full((3,), 0.25))
    assert torch.equal(mi.fill_value("blur", images, (0.5,) * 3, (0.5,) * 3), mi.blur(images, sigma=8 / 32))
