"""Procedural scenes with pixel-exact object masks (offline stand-in for ImageNet / ImageNet-Segmentation).

Sixteen classes, each a **shape × texture** combination (4 shapes × 4 textures), so that neither the shape nor the
texture alone identifies a class:

    SHAPES = disc, square, triangle, cross      TEXTURES = solid, stripes, checks, dots

A scene holds 2–3 objects of different classes; the **designated object** is the largest one (35–60 % of the image
before occlusion and clipping at the frame) and gives the label; the others (8–16 %) share its shapes and textures,
so a map that lights up every object is penalised. Objects have random colours (a third of them grey), position,
scale and rotation (the texture rotates with the object), and occlude each other in random depth order. The
background is a low-contrast texture from the same set, plus small textured distractor shapes. Compositing has
no anti-aliasing, so a mask is exactly the set of pixels where its object is visible.

Two-object scenes (`two_objects=True`, Chefer Fig. 2) hold two objects of different classes and similar size,
one in each half (left/right or top/bottom), with both masks (disjoint by construction).

    ds = make_dataset("test", 500, seed=0)            # ImageDataset: images [N,3,H,W] (normalised), labels, masks
    two = make_dataset("test", 16, seed=0, two_objects=True)   # labels [N,2], masks [N,2,H,W]

Generation is vectorised numpy, in chunks of CHUNK images whose random streams depend only on
(seed, split, kind, chunk index): a smaller dataset is a prefix of a larger one, and any process gets the
same pixels. Datasets are cached in-process (an LRU of a few datasets).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

SHAPES = ("disc", "square", "triangle", "cross")
TEXTURES = ("solid", "stripes", "checks", "dots")
CLASS_NAMES = tuple(f"{s}/{t}" for s in SHAPES for t in TEXTURES)  # class = shape index * 4 + texture index
SPLITS = {"train": 0, "val": 1, "test": 2}
DATA_VERSION = 3  # bump whenever rendering changes: part of the trained ViT's cache key
IMAGE_SIZE = 64
MEAN = (0.5, 0.5, 0.5)  # the ViT convention (Chefer's code normalises with mean = std = 0.5)
STD = (0.5, 0.5, 0.5)
CHUNK = 16  # images per independently seeded chunk (a multiple of the number of classes)

# Sizes as fractions of the image (areas) or of its side (period), so a 32-px smoke image and a 224-px image look
# alike. Areas are the shape's nominal area before occlusion and clipping at the frame.
MAIN_AREA = (0.35, 0.6)  # the designated (labelled) object
OTHER_AREA = (0.08, 0.16)  # the other 1-2 objects of a scene
PAIR_AREA = (0.13, 0.17)  # each object of a two-object scene (fits in its half)
DISTRACTOR_AREA = (0.01, 0.03)
N_DISTRACTORS = 3
GREY_SHARE = 1 / 3  # share of grey (unsaturated) objects
TEXTURE_PERIOD = 7 / 64  # stripes/checks/dots period

class ImageDataError(ValueError):
    """Bad arguments to the image dataset (one-line message)."""


@dataclass
class ImageDataset:
    """Normalised images [N,3,H,W] float32, labels [N] (or [N,2]), boolean masks [N,H,W] (or [N,2,H,W])."""

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    split: str
    seed: int
    two_objects: bool = False
    class_names: tuple[str, ...] = CLASS_NAMES
    mean: tuple[float, ...] = MEAN
    std: tuple[float, ...] = STD

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i):
        if isinstance(i, (slice, list, np.ndarray, torch.Tensor)):
            return ImageDataset(self.images[i], self.labels[i], self.masks[i], self.split, self.seed,
                                self.two_objects, self.class_names, self.mean, self.std)
        return {"pixel_values": self.images[i], "label": self.labels[i], "mask": self.masks[i]}

    @property
    def num_labels(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def pixels(self, i: int | None = None) -> torch.Tensor:
        """Images back in [0, 1] (for display): [N,3,H,W] or [3,H,W]."""
        x = self.images if i is None else self.images[i]
        shape = (-1, 1, 1) if x.dim() == 3 else (1, -1, 1, 1)
        return x * torch.tensor(self.std).view(shape) + torch.tensor(self.mean).view(shape)

    def channel_mean(self) -> torch.Tensor:
        """Per-channel mean of the (normalised) images: the default value that perturbation tests fill in."""
        return self.images.mean(dim=(0, 2, 3))

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self), batch_size):
            yield self.images[start:start + batch_size], self.labels[start:start + batch_size]


# ---- geometry: shapes in object coordinates (u, v), all inside the unit disc ----------------------------


def _polygon(u, v, n_sides: int, apothem: float):
    """Regular polygon: every edge's half-plane (distance along its normal below the apothem)."""
    inside = np.ones(u.shape, dtype=bool)
    for k in range(n_sides):
        a = 2 * np.pi * k / n_sides + np.pi / 2
        inside &= u * np.cos(a) + v * np.sin(a) <= apothem
    return inside


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if shape == "disc":
        return np.hypot(u, v) <= 0.95
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.7
    if shape == "triangle":
        return _polygon(u, v, 3, 0.5)
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    raise ImageDataError(f"unknown shape {shape!r}; shapes: {', '.join(SHAPES)}")


@functools.lru_cache(maxsize=None)
def unit_area(shape: str) -> float:
    """Area of `shape` at radius 1 (in units of the radius squared), measured on a fine grid."""
    g = (np.arange(800) + 0.5) / 400 - 1
    u, v = np.meshgrid(g, g)
    return float(shape_mask(shape, u, v).mean() * 4)


def texture_tone(texture: str, px: np.ndarray, py: np.ndarray, period) -> np.ndarray:
    """Boolean second-tone pattern in object-aligned pixel coordinates (px, py); True -> the darker colour."""
    phase_x, phase_y = px / period, py / period
    if texture == "solid":
        return np.zeros(px.shape, dtype=bool)
    if texture == "stripes":
        return np.mod(phase_y, 1.0) < 0.5
    if texture == "checks":
        return (np.floor(phase_x) + np.floor(phase_y)) % 2 == 0
    if texture == "dots":
        return np.hypot(np.mod(phase_x, 1.0) - 0.5, np.mod(phase_y, 1.0) - 0.5) < 0.3
    raise ImageDataError(f"unknown texture {texture!r}; textures: {', '.join(TEXTURES)}")


# ---- rendering ------------------------------------------------------------------------------------------


def _colours(rng, n: int) -> np.ndarray:
    """n RGB colours: random hue, saturation and value; a GREY_SHARE of them grey (so colour never names a class)."""
    hue = rng.uniform(0, 1, n)
    k = np.mod(hue[:, None] * 6 + np.array([5.0, 3.0, 1.0]), 6)
    rgb = 1 - np.clip(np.minimum(k, 4 - k), 0, 1)  # HSV with s=1, v=1
    sat = rng.uniform(0.4, 1.0, n)[:, None] * (rng.uniform(0, 1, n) >= GREY_SHARE)[:, None]
    val = rng.uniform(0.55, 1.0, n)[:, None]
    return (val * (1 - sat * rgb)).astype(np.float32)


def _frames(rng, centres: np.ndarray, size: int, yy, xx):
    """Object-aligned pixel coordinates (px, py) [n,H,W] of objects at `centres` [n,2] (y, x), random rotation."""
    theta = rng.uniform(0, 2 * np.pi, (len(centres), 1, 1)).astype(np.float32)
    c = centres.astype(np.float32)
    dx, dy = xx - c[:, 1, None, None], yy - c[:, 0, None, None]
    cos, sin = np.cos(theta), np.sin(theta)
    return dx * cos + dy * sin, dy * cos - dx * sin


def _object_layer(rng, labels: np.ndarray, centres: np.ndarray, areas: np.ndarray, size: int, yy, xx):
    """(mask [n,H,W] bool, dark-tone [n,H,W] bool, colour [n,3], dark colour [n,3]) of one object per image,
    class `labels`, nominal area `areas` (fraction of the image)."""
    n = labels.shape[0]
    px, py = _frames(rng, centres, size, yy, xx)
    colour = _colours(rng, n)
    dark = colour * rng.uniform(0.2, 0.45, (n, 1)).astype(np.float32)
    period = np.float32(TEXTURE_PERIOD * size) * rng.uniform(0.8, 1.25, (n, 1, 1)).astype(np.float32)
    mask = np.zeros((n, size, size), dtype=bool)
    tone = np.zeros((n, size, size), dtype=bool)
    for s, shape in enumerate(SHAPES):  # grouped by shape, then by texture: a handful of vectorised calls
        sel = labels // len(TEXTURES) == s
        if sel.any():
            r = np.float32(size / np.sqrt(unit_area(shape))) * np.sqrt(areas[sel]).astype(np.float32)[:, None, None]
            mask[sel] = shape_mask(shape, px[sel] / r, py[sel] / r)
    for t, texture in enumerate(TEXTURES[1:], 1):  # "solid" has no second tone
        sel = labels % len(TEXTURES) == t
        if sel.any():
            tone[sel] = texture_tone(texture, px[sel], py[sel], period[sel])
    return mask, tone, colour, dark


def _paint(image: np.ndarray, on: np.ndarray, tone: np.ndarray, colour: np.ndarray, dark: np.ndarray) -> None:
    """Set the pixels `on` [n,H,W] of image [n,H,W,3] to each image's colour, or its dark colour where `tone`."""
    idx = np.nonzero(on)
    image[idx] = np.where(tone[idx][:, None], dark[idx[0]], colour[idx[0]])


def _background(rng, n: int, size: int, yy, xx) -> np.ndarray:
    """A low-contrast texture from TEXTURES (random period, angle, colour) plus pixel noise: [n,H,W,3]."""
    f32 = np.float32
    base = _colours(rng, n) * f32(0.6) + f32(0.2)
    px, py = _frames(rng, rng.uniform(0, size, (n, 2)), size, yy, xx)
    kind = rng.integers(0, len(TEXTURES), n)
    period = (TEXTURE_PERIOD * size * rng.uniform(1.0, 2.0, (n, 1, 1))).astype(f32)
    tone = np.zeros((n, size, size), dtype=bool)
    for t in np.unique(kind):
        tone[kind == t] = texture_tone(TEXTURES[t], px[kind == t], py[kind == t], period[kind == t])
    img = np.where(tone[..., None], base[:, None, None] * f32(0.8), base[:, None, None]).astype(f32)
    img += rng.standard_normal((n, size, size, 3), dtype=f32) * f32(0.03)
    return np.clip(img, 0, 1, out=img)


def _draw_distractors(rng, img: np.ndarray, size: int, yy, xx) -> None:
    """Small textured shapes of random classes, in place (drawn under the objects)."""
    n = img.shape[0]
    for _ in range(N_DISTRACTORS):
        labels = rng.integers(0, len(CLASS_NAMES), n)
        mask, tone, colour, dark = _object_layer(rng, labels, rng.uniform(0, size, (n, 2)),
                                                 rng.uniform(*DISTRACTOR_AREA, n), size, yy, xx)
        _paint(img, mask, tone, colour, dark)


def _pixel_centres(size: int):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)
    return yy, xx


def _balanced_labels(rng, n: int, n_classes: int) -> np.ndarray:
    """Each consecutive block of n_classes images holds every class once (in random order)."""
    blocks = -(-n // n_classes)
    return np.concatenate([rng.permutation(n_classes) for _ in range(blocks)])[:n]


def _other_labels(rng, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Two more labels per image [n, 2]: all three classes of an image differ."""
    first = rng.integers(1, n_classes, len(labels))
    second = rng.integers(1, n_classes - 1, len(labels))
    second += second >= first  # skips the first offset
    return (labels[:, None] + np.stack([first, second], 1)) % n_classes


def _composite(rng, image: np.ndarray, objects: list, size: int, yy, xx) -> tuple[np.ndarray, list]:
    """Draw objects [(labels, centres, areas, present)] in a random depth order per image; the visible masks."""
    drawn = [(*_object_layer(rng, lab, cen, area, size, yy, xx), present) for lab, cen, area, present in objects]
    depth = rng.permuted(np.tile(np.arange(len(objects)), (image.shape[0], 1)), axis=1)  # [n, objects]
    owner = np.full(image.shape[:3], -1, dtype=np.int8)  # which object is visible at each pixel
    for level in range(len(objects)):
        for k, (mask, tone, colour, dark, present) in enumerate(drawn):
            on = mask & (present & (depth[:, level] == k))[:, None, None]
            _paint(image, on, tone, colour, dark)
            owner[on] = k
    return image, [owner == k for k in range(len(objects))]


def _single_chunk(rng, n: int, size: int) -> dict:
    """Scenes of 2-3 objects of different classes; the largest one is the label and the mask."""
    yy, xx = _pixel_centres(size)
    labels = _balanced_labels(rng, n, len(CLASS_NAMES))
    others = _other_labels(rng, labels, len(CLASS_NAMES))
    background = _background(rng, n, size, yy, xx)
    _draw_distractors(rng, background, size, yy, xx)
    main = (labels, rng.uniform(0.3, 0.7, (n, 2)) * size, rng.uniform(*MAIN_AREA, n), np.ones(n, bool))
    third = rng.uniform(0, 1, n) < 0.5
    objects = [main] + [(others[:, k], rng.uniform(0.1, 0.9, (n, 2)) * size, rng.uniform(*OTHER_AREA, n),
                         np.ones(n, bool) if k == 0 else third) for k in range(2)]
    image, masks = _composite(rng, background.copy(), objects, size, yy, xx)
    return {"image": image, "label": labels, "mask": masks[0], "background": background,
            "object_masks": np.stack(masks, 1), "object_labels": np.c_[labels, others[:, 0],
                                                                       np.where(third, others[:, 1], -1)]}


def _pair_chunk(rng, n: int, size: int) -> dict:
    """Two objects of different classes, one in each half (left/right or top/bottom): disjoint masks."""
    yy, xx = _pixel_centres(size)
    first = _balanced_labels(rng, n, len(CLASS_NAMES))
    labels = np.stack([first, _other_labels(rng, first, len(CLASS_NAMES))[:, 0]], 1)
    background = _background(rng, n, size, yy, xx)
    _draw_distractors(rng, background, size, yy, xx)
    vertical = rng.uniform(0, 1, n) < 0.5  # split top/bottom instead of left/right
    image, masks = background.copy(), []
    for k in range(2):
        along = (rng.uniform(0.4, 0.6, n) + k) * size / 2  # inside half k
        across = rng.uniform(0.4, 0.6, n) * size
        centres = np.where(vertical[:, None], np.stack([along, across], 1), np.stack([across, along], 1))
        mask, tone, colour, dark = _object_layer(rng, labels[:, k], centres, rng.uniform(*PAIR_AREA, n), size,
                                                 yy, xx)
        mask &= np.where(vertical[:, None, None], (yy < size / 2) == (k == 0), (xx < size / 2) == (k == 0))
        _paint(image, mask, tone, colour, dark)
        masks.append(mask)
    return {"image": image, "label": labels, "mask": np.stack(masks, 1), "background": background,
            "object_masks": np.stack(masks, 1), "object_labels": labels}


def _chunk_rng(seed: int, split: str, two_objects: bool, chunk: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS[split], int(two_objects), chunk]))


def render(split: str, n: int, seed: int = 0, two_objects: bool = False, image_size: int = IMAGE_SIZE,
           layers: bool = False) -> dict:
    """Raw arrays: image [N,H,W,3] in [0,1], label, mask (with `layers` also the background, `object_masks`
    [N,K,H,W]: the visible pixels of every object, the designated one first, and `object_labels` [N,K], -1 for an
    absent third object)."""
    _check(split, n, image_size)
    parts = []
    for c in range(-(-n // CHUNK)):
        rng = _chunk_rng(seed, split, two_objects, c)
        part = (_pair_chunk if two_objects else _single_chunk)(rng, CHUNK, image_size)
        parts.append(part if layers else {k: part[k] for k in ("image", "label", "mask")})
    return {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]} if parts else {}


def _check(split: str, n: int, image_size: int) -> None:
    if split not in SPLITS:
        raise ImageDataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ImageDataError(f"n must be a positive integer, got {n!r}")
    if not isinstance(image_size, (int, np.integer)) or image_size < 16:
        raise ImageDataError(f"image_size must be an integer >= 16, got {image_size!r}")


def normalise(image: np.ndarray, mean=MEAN, std=STD) -> torch.Tensor:
    """[N,H,W,3] in [0,1] -> [N,3,H,W] float32, (x - mean) / std."""
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(0, 3, 1, 2))).float()
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


@functools.lru_cache(maxsize=6)
def _cached(split: str, n: int, seed: int, two_objects: bool, image_size: int) -> ImageDataset:
    raw = render(split, n, seed, two_objects, image_size)
    return ImageDataset(normalise(raw["image"]), torch.from_numpy(raw["label"]).long(),
                        torch.from_numpy(raw["mask"]), split, seed, two_objects)


def make_dataset(split: str, n: int, seed: int = 0, two_objects: bool = False,
                 image_size: int = IMAGE_SIZE) -> ImageDataset:
    """`n` procedural images of `split` (train/val/test use independent random streams), deterministic by seed."""
    _check(split, n, image_size)
    return _cached(split, int(n), int(seed), bool(two_objects), int(image_size))


def training_batches(n: int, batch_size: int, seed: int = 0, image_size: int = IMAGE_SIZE,
                     epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled training batches, generated chunk by chunk (never the whole set in memory).

    Every epoch draws fresh images (the seed stream includes the epoch): unlimited procedural data is the
    augmentation.
    """
    _check("train", n, image_size)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 99, epoch]))
    stream_seed = int(seed) * 1000 + epoch
    per_pool = max(batch_size * 8, CHUNK)
    for start in range(0, n, per_pool):
        count = min(per_pool, n - start)
        raw = _render_range("train", stream_seed, start, count, image_size)
        order = rng.permutation(count)
        x, y = normalise(raw["image"][order]), torch.from_numpy(raw["label"][order]).long()
        for b in range(0, count, batch_size):
            yield x[b:b + batch_size], y[b:b + batch_size]


def _render_range(split: str, seed: int, start: int, count: int, image_size: int) -> dict:
    """Images start..start+count of the (split, seed) stream, rendering only the chunks that hold them."""
    first, last = start // CHUNK, (start + count - 1) // CHUNK
    parts = [_single_chunk(_chunk_rng(seed, split, False, c), CHUNK, image_size) for c in range(first, last + 1)]
    offset = start - first * CHUNK
    return {k: np.concatenate([p[k] for p in parts])[offset:offset + count] for k in ("image", "label")}
