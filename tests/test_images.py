"""The procedural image dataset: determinism, exact masks, two-object images, balance, bad input."""
import numpy as np
import pytest
import torch

from lab.data import images as im


def test_same_seed_same_pixels_and_prefix_property():
    a = im.render("test", 70, seed=3)
    b = im.render("test", 70, seed=3)
    big = im.render("test", 140, seed=3)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])
    assert np.array_equal(a["image"], big["image"][:70])  # a smaller set is a prefix of a larger one
    other = im.render("test", 70, seed=4)
    assert not np.array_equal(a["image"], other["image"])
    assert not np.array_equal(a["image"], im.render("val", 70, seed=3)["image"])  # splits are independent


def test_mask_is_exactly_the_object_pixels():
    raw = im.render("train", 64, seed=0, layers=True, scene="single")
    mask, image = raw["mask"][..., None], raw["image"]
    assert np.array_equal(np.where(mask, raw["foreground"], raw["background"]), image)
    # the object differs from the background under every mask pixel, and nowhere else does the image change
    changed = (image != raw["background"]).any(-1)
    assert np.array_equal(changed, raw["mask"])
    areas = raw["mask"].reshape(64, -1).mean(1)
    assert areas.min() > 0.02 and areas.max() < 0.5


def test_objects_stay_inside_the_frame():
    raw = im.render("train", 64, seed=1, scene="single")
    m = raw["mask"]
    assert not (m[:, 0, :].any() or m[:, -1, :].any() or m[:, :, 0].any() or m[:, :, -1].any())


def test_classes_are_balanced_and_every_shape_appears():
    labels = im.render("train", 203, seed=0)["label"]
    counts = np.bincount(labels, minlength=len(im.CLASS_NAMES))
    assert counts.max() - counts.min() <= 1
    assert len(im.CLASS_NAMES) >= 8 and len(set(im.SHAPES)) == len(set(im.TEXTURES)) == len(im.CLASS_NAMES)


def test_two_object_images_have_distinct_labels_and_disjoint_masks():
    ds = im.make_dataset("test", 40, seed=0, two_objects=True)
    assert ds.labels.shape == (40, 2) and ds.masks.shape == (40, 2, im.IMAGE_SIZE, im.IMAGE_SIZE)
    assert (ds.labels[:, 0] != ds.labels[:, 1]).all()
    assert not (ds.masks[:, 0] & ds.masks[:, 1]).any()
    assert ds.masks.flatten(2).any(-1).all()  # both objects visible in every image
    raw = im.render("test", 40, seed=0, two_objects=True, layers=True)
    union = raw["mask"].any(1)
    assert np.array_equal((raw["image"] != raw["background"]).any(-1), union)


def test_dataset_tensors_normalisation_and_cache():
    ds = im.make_dataset("val", 24, seed=0, image_size=32)
    assert ds.images.shape == (24, 3, 32, 32) and ds.images.dtype == torch.float32
    assert ds.labels.dtype == torch.long and ds.masks.dtype == torch.bool
    assert -1.0 <= ds.images.min() and ds.images.max() <= 1.0  # mean = std = 0.5 maps [0, 1] to [-1, 1]
    assert torch.allclose(ds.pixels(), torch.from_numpy(im.render("val", 24, 0, image_size=32)["image"])
                          .permute(0, 3, 1, 2), atol=1e-6)
    assert im.make_dataset("val", 24, seed=0, image_size=32) is ds  # cached in-process
    sub = ds[:5]
    assert len(sub) == 5 and torch.equal(sub.images, ds.images[:5])
    assert ds.channel_mean().shape == (3,)


def test_training_batches_are_deterministic_and_cover_n():
    a = list(im.training_batches(100, 32, seed=0, image_size=32))
    b = list(im.training_batches(100, 32, seed=0, image_size=32))
    assert sum(len(y) for _, y in a) == 100
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    c = list(im.training_batches(100, 32, seed=0, image_size=32, epoch=1))
    assert not torch.equal(a[0][0], c[0][0])  # a new epoch draws new images


@pytest.mark.parametrize("kwargs, match", [
    (dict(split="dev", n=4), "unknown split"),
    (dict(split="test", n=0), "positive integer"),
    (dict(split="test", n=4, image_size=8), "image_size"),
])
def test_bad_arguments_fail_with_one_line(kwargs, match):
    with pytest.raises(im.ImageDataError, match=match):
        im.make_dataset(**kwargs)


def test_multi_scene_labels_the_large_object_over_smaller_objects_of_other_classes():
    raw = im.render("train", 48, seed=0, image_size=32, layers=True, scene="multi")
    mask, image, others = raw["mask"], raw["image"], raw["other_masks"]
    # the labelled object is drawn last: the image differs from everything under it exactly on its mask
    assert np.array_equal(np.where(mask[..., None], raw["foreground"], raw["background"]), image)
    assert np.array_equal((image != raw["background"]).any(-1), mask)
    areas = mask.reshape(48, -1).mean(1)
    assert areas.min() > 0.2 and areas.max() < 0.65 and np.median(areas) > 0.35
    present = raw["other_labels"] >= 0
    assert present[:, 0].all() and 0 < present[:, 1].sum() < 48  # one or two other objects
    assert not (raw["other_labels"] == raw["label"][:, None]).any()
    assert (raw["other_labels"][:, 0] != raw["other_labels"][:, 1]).all()
    both = im._other_labels(np.random.default_rng(0), np.repeat(np.arange(8), 200), 8)  # every draw, not 48
    assert (both[:, 0] != both[:, 1]).all() and not (both == np.repeat(np.arange(8), 200)[:, None]).any()
    assert not (others & mask[:, None]).any() and not others[~present].any()
    assert (others.reshape(48, 2, -1).mean(-1).max(1) < areas).all()  # the labelled object is the largest
    assert others.reshape(48, -1).any(-1).mean() > 0.8  # the other objects are (mostly) visible


def test_scenes_have_separate_streams_and_the_pair_set_follows_the_scene():
    single, multi = im.render("test", 16, 0, image_size=32, scene="single"), im.render("test", 16, 0, image_size=32)
    assert not np.array_equal(single["image"], multi["image"])
    ds = im.make_dataset("test", 8, seed=0, two_objects=True, image_size=32, scene="multi")
    assert ds.scene == "multi" and ds.labels.shape == (8, 2) and not (ds.masks[:, 0] & ds.masks[:, 1]).any()
    assert ds[:2].scene == "multi"
    batches = list(im.training_batches(40, 16, seed=0, image_size=32, scene="multi"))
    assert sum(len(y) for _, y in batches) == 40


def test_unknown_scene_fails_with_one_line():
    with pytest.raises(im.ImageDataError, match="unknown scene 'crowd'"):
        im.make_dataset("test", 4, scene="crowd")
