"""Procedural images with pixel-exact object masks (offline stand-in for ImageNet / ImageNet-Segmentation).

Eight classes, each a distinct **shape with its own texture** (so neither colour nor position identifies a class):

    disc/solid  square/stripes  triangle/checks  star/dots  cross/grid  ring/rings  hexagon/halves  crescent/speckle

Every image has one object at a random position, scale and rotation (the texture rotates with it) on a cluttered
background: low-frequency colour gratings, pixel noise and small distractors (dots and short thin lines, far
smaller than any object and never textured, so they cannot be mistaken for a class). The object is composited
without anti-aliasing, so its mask is exactly the set of pixels that show the object.

Scenes (`scene=`): "single" is the above; "multi" (the default, a harder benchmark) makes the labelled object large (35-60 %
of the image, possibly clipped at the frame) and adds one or two smaller objects (5-10 %) of *other* classes,
drawn under it and away from its centre, on a low-contrast background texture from the class textures: a
class-agnostic map that spends relevance on the other objects, or a map that ranks only part of the large
object, is penalised by perturbation and segmentation. The label and mask are the large object's.

Two-object images (`two_objects=True`) hold two objects of different classes in the two halves of the image
(left/right or top/bottom), with both masks (disjoint by construction), for class-specific maps (Chefer Fig. 2).

    ds = make_dataset("test", 500, seed=0, scene="multi")   # ImageDataset: images [N,3,H,W] (normalised), labels, masks
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

SHAPES = ("disc", "square", "triangle", "star", "cross", "ring", "hexagon", "crescent")
TEXTURES = ("solid", "stripes", "checks", "dots", "grid", "rings", "halves", "speckle")
CLASS_NAMES = tuple(f"{s}/{t}" for s, t in zip(SHAPES, TEXTURES))
SPLITS = {"train": 0, "val": 1, "test": 2}
DATA_VERSION = 2  # bump whenever rendering changes: part of the trained ViT's cache key
IMAGE_SIZE = 64
MEAN = (0.5, 0.5, 0.5)  # the ViT convention (Chefer's code normalises with mean = std = 0.5)
STD = (0.5, 0.5, 0.5)
CHUNK = 16  # images per independently seeded chunk (a multiple of the number of classes)

# Sizes as fractions of the image side, so a 32-px smoke image and a 224-px image look alike.
OBJECT_RADIUS = (0.2, 0.33)  # single-object images
PAIR_RADIUS = (0.18, 0.22)  # two-object images (each object fits in its half)
TEXTURE_PERIOD = 7 / 64  # stripes/checks/dots/grid/rings period
N_DISTRACTORS = 6
SCENES = ("single", "multi")
DEFAULT_SCENE = "multi"  # the benchmark of notebook 01 (issue 19); "single" saturates negative perturbation
MAIN_AREA = (0.35, 0.6)  # multi: the labelled object's nominal area (fraction of the image, before clipping)
OTHER_AREA = (0.05, 0.1)  # multi: each other object's nominal area
BACKGROUND_CONTRAST = (0.04, 0.12)  # multi: depth of the background texture's second tone


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
    scene: str = DEFAULT_SCENE
    class_names: tuple[str, ...] = CLASS_NAMES
    mean: tuple[float, ...] = MEAN
    std: tuple[float, ...] = STD

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i):
        if isinstance(i, (slice, list, np.ndarray, torch.Tensor)):
            return ImageDataset(self.images[i], self.labels[i], self.masks[i], self.split, self.seed,
                                self.two_objects, self.scene, self.class_names, self.mean, self.std)
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


def _star(u, v):
    """Five-pointed star: radius limit interpolated linearly in angle between tips (r=1) and notches (r=0.45)."""
    r = np.hypot(u, v)
    phi = np.mod(np.arctan2(v, u) - np.pi / 2, 2 * np.pi / 5) / (2 * np.pi / 5)  # 0 at a tip, 0.5 at a notch
    limit = 1.0 - 2 * np.minimum(phi, 1 - phi) * (1.0 - 0.45)
    return r <= limit


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r = np.hypot(u, v)
    if shape == "disc":
        return r <= 0.95
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.7
    if shape == "triangle":
        return _polygon(u, v, 3, 0.5)
    if shape == "star":
        return _star(u, v)
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    if shape == "ring":
        return (r <= 0.95) & (r >= 0.55)
    if shape == "hexagon":
        return _polygon(u, v, 6, 0.85)
    if shape == "crescent":
        return (r <= 0.95) & (np.hypot(u - 0.45, v) >= 0.75)
    raise ImageDataError(f"unknown shape {shape!r}; shapes: {', '.join(SHAPES)}")


def _cell_noise(ix: np.ndarray, iy: np.ndarray, salt: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random value in [0, 1) per integer cell (ix, iy) and per-object salt (a hash, no state)."""
    h = np.sin(ix * np.float32(12.9898) + iy * np.float32(78.233) + salt) * np.float32(43758.547)
    return h - np.floor(h)


def texture_tone(texture: str, px: np.ndarray, py: np.ndarray, period: float, salt: np.ndarray) -> np.ndarray:
    """Boolean second-tone pattern in object-aligned pixel coordinates (px, py); True -> the darker colour.

    salt: per-object random offsets [n, 1, 1] (only "speckle" uses it: random cells of a third of the period).
    """
    phase_x, phase_y = px / period, py / period
    if texture == "solid":
        return np.zeros(px.shape, dtype=bool)
    if texture == "stripes":
        return np.mod(phase_y, 1.0) < 0.5
    if texture == "checks":
        return (np.floor(phase_x) + np.floor(phase_y)) % 2 == 0
    if texture == "dots":
        return np.hypot(np.mod(phase_x, 1.0) - 0.5, np.mod(phase_y, 1.0) - 0.5) < 0.3
    if texture == "grid":
        return (np.mod(phase_x, 1.0) < 0.3) | (np.mod(phase_y, 1.0) < 0.3)
    if texture == "rings":
        return np.mod(np.hypot(px, py) / period, 1.0) < 0.5
    if texture == "halves":
        return px > 0
    if texture == "speckle":
        cell = period / 3
        return _cell_noise(np.floor(px / cell), np.floor(py / cell), salt) < 0.45
    raise ImageDataError(f"unknown texture {texture!r}; textures: {', '.join(TEXTURES)}")


# ---- rendering ------------------------------------------------------------------------------------------


def _saturated_colours(rng, n: int) -> np.ndarray:
    """n bright saturated RGB colours (random hue): objects stand out from the greyish background."""
    hue = rng.uniform(0, 1, n)
    k = np.mod(hue[:, None] * 6 + np.array([5.0, 3.0, 1.0]), 6)
    rgb = 1 - np.clip(np.minimum(k, 4 - k), 0, 1)  # HSV with s=1, v=1
    sat = rng.uniform(0.65, 1.0, n)[:, None]
    val = rng.uniform(0.75, 1.0, n)[:, None]
    return (val * (1 - sat * rgb)).astype(np.float32)


def _background(rng, n: int, size: int, yy, xx) -> np.ndarray:
    """Clutter: a greyish base tinted by three random low-frequency gratings, plus pixel noise. [n,H,W,3]."""
    f32 = np.float32
    img = np.broadcast_to(rng.uniform(0.3, 0.6, (n, 1, 1, 1)).astype(f32), (n, size, size, 3)).copy()
    for _ in range(3):
        theta = rng.uniform(0, np.pi, (n, 1, 1)).astype(f32)
        wavelength = (rng.uniform(0.3, 1.2, (n, 1, 1)) * size).astype(f32)
        phase = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(f32)
        wave = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * (f32(2 * np.pi) / wavelength) + phase)
        img += wave[..., None] * rng.uniform(-0.1, 0.1, (n, 1, 1, 3)).astype(f32)
    img += rng.standard_normal((n, size, size, 3), dtype=f32) * f32(0.03)
    return np.clip(img, 0, 1, out=img)


def _draw_distractors(rng, img: np.ndarray, size: int, yy, xx) -> None:
    """Small solid dots and thin short lines in random colours, in place (drawn under the objects)."""
    n, f32 = img.shape[0], np.float32
    which = np.full((n, size, size), -1, dtype=np.int8)  # index of the distractor on top at each pixel
    colours = rng.uniform(0, 1, (n, N_DISTRACTORS, 3)).astype(f32)
    for d in range(N_DISTRACTORS):
        cy, cx = rng.uniform(0, size, (2, n, 1, 1)).astype(f32)
        is_line = rng.uniform(0, 1, (n, 1, 1)) < 0.5
        radius = (rng.uniform(0.02, 0.045, (n, 1, 1)) * size).astype(f32)
        angle = rng.uniform(0, np.pi, (n, 1, 1)).astype(f32)
        length = (rng.uniform(0.08, 0.16, (n, 1, 1)) * size).astype(f32)
        dx, dy = xx - cx, yy - cy
        cos, sin = np.cos(angle), np.sin(angle)
        line = (np.abs(dx * cos + dy * sin) <= length) & (np.abs(dy * cos - dx * sin) <= 0.6)
        dot = dx * dx + dy * dy <= radius * radius
        which[np.where(is_line, line, dot)] = d
    hit = which >= 0
    img[hit] = colours[np.arange(n)[:, None, None], np.maximum(which, 0)][hit]


def _object_layer(rng, labels: np.ndarray, centres: np.ndarray, radii: np.ndarray, size: int, yy, xx):
    """(mask [n,H,W] bool, colour layer [n,H,W,3]) of one object per image, class `labels`."""
    n = labels.shape[0]
    theta = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    centres = centres.astype(np.float32)
    dx, dy = xx - centres[:, 1, None, None], yy - centres[:, 0, None, None]
    cos, sin = np.cos(theta), np.sin(theta)
    px = dx * cos + dy * sin  # object-aligned pixel coordinates
    py = dy * cos - dx * sin
    r = radii.astype(np.float32)[:, None, None]
    colour = _saturated_colours(rng, n)
    dark = colour * rng.uniform(0.15, 0.4, (n, 1)).astype(np.float32)
    salt = rng.uniform(0, 100, (n, 1, 1)).astype(np.float32)
    period = TEXTURE_PERIOD * size
    mask = np.zeros((n, size, size), dtype=bool)
    tone = np.zeros((n, size, size), dtype=bool)
    for c in np.unique(labels):
        sel = labels == c
        mask[sel] = shape_mask(SHAPES[c], px[sel] / r[sel], py[sel] / r[sel])
        tone[sel] = texture_tone(TEXTURES[c], px[sel], py[sel], period, salt[sel])
    layer = np.where(tone[..., None], dark[:, None, None, :], colour[:, None, None, :]).astype(np.float32)
    return mask, layer


def _pixel_centres(size: int):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)
    return yy, xx


def _balanced_labels(rng, n: int, n_classes: int) -> np.ndarray:
    """Each consecutive block of n_classes images holds every class once (in random order)."""
    blocks = -(-n // n_classes)
    return np.concatenate([rng.permutation(n_classes) for _ in range(blocks)])[:n]


def _single_chunk(rng, n: int, size: int) -> dict:
    yy, xx = _pixel_centres(size)
    labels = _balanced_labels(rng, n, len(SHAPES))
    background = _background(rng, n, size, yy, xx)
    _draw_distractors(rng, background, size, yy, xx)
    radii = rng.uniform(*OBJECT_RADIUS, n) * size
    centres = rng.uniform(0, 1, (n, 2)) * (size - 2 * radii[:, None] - 2) + radii[:, None] + 1
    mask, layer = _object_layer(rng, labels, centres, radii, size, yy, xx)
    image = np.where(mask[..., None], layer, background)
    return {"image": image, "label": labels, "mask": mask, "background": background, "foreground": layer}


@functools.lru_cache(maxsize=None)
def unit_area(shape: str) -> float:
    """Area of `shape` at radius 1 (in units of the radius squared), measured on a fine grid."""
    g = (np.arange(800) + 0.5) / 400 - 1
    u, v = np.meshgrid(g, g)
    return float(shape_mask(shape, u, v).mean() * 4)


def _radii(labels: np.ndarray, areas: np.ndarray, size: int) -> np.ndarray:
    """Radii (pixels) that give each object of class `labels` the nominal area `areas` (fraction of the image)."""
    units = np.array([unit_area(s) for s in SHAPES])[labels]
    return np.sqrt(areas / units) * size


def _textured_background(rng, n: int, size: int, yy, xx) -> np.ndarray:
    """A greyish base with a low-contrast class texture (random texture, period, angle) plus pixel noise."""
    f32 = np.float32
    base = rng.uniform(0.3, 0.6, (n, 1, 1, 1)).astype(f32) + rng.uniform(-0.05, 0.05, (n, 1, 1, 3)).astype(f32)
    theta = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(f32)
    px, py = xx * np.cos(theta) + yy * np.sin(theta), yy * np.cos(theta) - xx * np.sin(theta)
    period = (TEXTURE_PERIOD * size * rng.uniform(1.0, 1.5, (n, 1, 1))).astype(f32)
    salt = rng.uniform(0, 100, (n, 1, 1)).astype(f32)
    kind = rng.integers(0, len(TEXTURES), n)
    tone = np.zeros((n, size, size), dtype=bool)
    for t in np.unique(kind):
        sel = kind == t
        tone[sel] = texture_tone(TEXTURES[t], px[sel], py[sel], period[sel], salt[sel])
    depth = rng.uniform(*BACKGROUND_CONTRAST, (n, 1, 1, 1)).astype(f32)
    img = base - tone[..., None] * depth + rng.standard_normal((n, size, size, 3), dtype=f32) * f32(0.03)
    return np.clip(img, 0, 1, out=img)


def _far_centres(rng, centres: np.ndarray, size: int, tries: int = 4) -> np.ndarray:
    """One centre per image among `tries` uniform candidates: the one farthest from `centres` [n, 2]."""
    cand = rng.uniform(0.12, 0.88, (len(centres), tries, 2)) * size
    best = np.linalg.norm(cand - centres[:, None], axis=-1).argmax(1)
    return cand[np.arange(len(centres)), best]


def _other_labels(rng, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Two more labels per image [n, 2]: all three classes of an image differ."""
    first = rng.integers(1, n_classes, len(labels))
    second = rng.integers(1, n_classes - 1, len(labels))
    second += second >= first  # skips the first offset
    return (labels[:, None] + np.stack([first, second], 1)) % n_classes


def _multi_chunk(rng, n: int, size: int) -> dict:
    """A large labelled object (MAIN_AREA) drawn over one or two smaller objects of other classes (OTHER_AREA)."""
    yy, xx = _pixel_centres(size)
    labels = _balanced_labels(rng, n, len(SHAPES))
    others = _other_labels(rng, labels, len(SHAPES))
    background = _textured_background(rng, n, size, yy, xx)
    centres = rng.uniform(0.35, 0.65, (n, 2)) * size
    under, visible, present = background.copy(), [], np.stack([np.ones(n, bool), rng.uniform(0, 1, n) < 0.5], 1)
    for k in range(2):
        mask, layer = _object_layer(rng, others[:, k], _far_centres(rng, centres, size),
                                    _radii(others[:, k], rng.uniform(*OTHER_AREA, n), size), size, yy, xx)
        mask &= present[:, k, None, None]
        under = np.where(mask[..., None], layer, under)
        visible.append(mask)
    mask, layer = _object_layer(rng, labels, centres, _radii(labels, rng.uniform(*MAIN_AREA, n), size), size, yy, xx)
    image = np.where(mask[..., None], layer, under)
    return {"image": image, "label": labels, "mask": mask, "background": under, "foreground": layer,
            "other_labels": np.where(present, others, -1), "other_masks": np.stack(visible, 1) & ~mask[:, None]}


def _pair_labels(rng, n: int, n_classes: int) -> np.ndarray:
    first = _balanced_labels(rng, n, n_classes)
    second = (first + rng.integers(1, n_classes, n)) % n_classes  # always a different class
    return np.stack([first, second], axis=1)


def _pair_chunk(rng, n: int, size: int, scene: str = "single") -> dict:
    """Two objects of different classes, one in each half (left/right or top/bottom): disjoint masks."""
    yy, xx = _pixel_centres(size)
    labels = _pair_labels(rng, n, len(SHAPES))
    if scene == "multi":
        background = _textured_background(rng, n, size, yy, xx)
    else:
        background = _background(rng, n, size, yy, xx)
        _draw_distractors(rng, background, size, yy, xx)
    vertical = rng.uniform(0, 1, n) < 0.5  # split top/bottom instead of left/right
    half = size / 2
    image, masks, layers = background.copy(), [], []
    for k in range(2):
        radii = rng.uniform(*PAIR_RADIUS, n) * size
        along = rng.uniform(0, 1, n) * (half - 2 * radii - 2) + radii + 1 + k * half  # inside half k
        across = rng.uniform(0, 1, n) * (size - 2 * radii - 2) + radii + 1
        centres = np.where(vertical[:, None], np.stack([along, across], 1), np.stack([across, along], 1))
        mask, layer = _object_layer(rng, labels[:, k], centres, radii, size, yy, xx)
        image = np.where(mask[..., None], layer, image)
        masks.append(mask)
        layers.append(layer)
    return {"image": image, "label": labels, "mask": np.stack(masks, 1), "background": background,
            "foreground": np.stack(layers, 1)}


def _chunk_rng(seed: int, split: str, two_objects: bool, chunk: int, scene: str) -> np.random.Generator:
    entropy = [int(seed), SPLITS[split], int(two_objects), chunk] + ([SCENES.index(scene)] if scene != "single" else [])
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _chunk(rng, size: int, two_objects: bool, scene: str) -> dict:
    if two_objects:
        return _pair_chunk(rng, CHUNK, size, scene)
    return (_multi_chunk if scene == "multi" else _single_chunk)(rng, CHUNK, size)


def render(split: str, n: int, seed: int = 0, two_objects: bool = False, image_size: int = IMAGE_SIZE,
           layers: bool = False, scene: str = DEFAULT_SCENE) -> dict:
    """Raw arrays: image [N,H,W,3] in [0,1], label, mask; with `layers` also the background (everything under the
    labelled object(s)) and the object layers, and for "multi" scenes the other objects' `other_labels` [N,2] (-1:
    absent) and visible `other_masks` [N,2,H,W]."""
    _check(split, n, image_size, scene)
    parts = []
    for c in range(-(-n // CHUNK)):
        part = _chunk(_chunk_rng(seed, split, two_objects, c, scene), image_size, two_objects, scene)
        parts.append(part if layers else {k: part[k] for k in ("image", "label", "mask")})
    return {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]} if parts else {}


def _check(split: str, n: int, image_size: int, scene: str = DEFAULT_SCENE) -> None:
    if scene not in SCENES:
        raise ImageDataError(f"unknown scene {scene!r}; choose one of {', '.join(SCENES)}")
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
def _cached(split: str, n: int, seed: int, two_objects: bool, image_size: int, scene: str) -> ImageDataset:
    raw = render(split, n, seed, two_objects, image_size, scene=scene)
    return ImageDataset(normalise(raw["image"]), torch.from_numpy(raw["label"]).long(),
                        torch.from_numpy(raw["mask"]), split, seed, two_objects, scene)


def make_dataset(split: str, n: int, seed: int = 0, two_objects: bool = False,
                 image_size: int = IMAGE_SIZE, scene: str = DEFAULT_SCENE) -> ImageDataset:
    """`n` procedural images of `split` (train/val/test use independent random streams), deterministic by seed."""
    _check(split, n, image_size, scene)
    return _cached(split, int(n), int(seed), bool(two_objects), int(image_size), scene)


def training_batches(n: int, batch_size: int, seed: int = 0, image_size: int = IMAGE_SIZE,
                     epoch: int = 0, scene: str = DEFAULT_SCENE) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled training batches, generated chunk by chunk (never the whole set in memory).

    Every epoch draws fresh images (the seed stream includes the epoch): unlimited procedural data is the
    augmentation.
    """
    _check("train", n, image_size, scene)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 99, epoch]))
    stream_seed = int(seed) * 1000 + epoch
    per_pool = max(batch_size * 8, CHUNK)
    for start in range(0, n, per_pool):
        count = min(per_pool, n - start)
        raw = _render_range("train", stream_seed, start, count, image_size, scene)
        order = rng.permutation(count)
        x, y = normalise(raw["image"][order]), torch.from_numpy(raw["label"][order]).long()
        for b in range(0, count, batch_size):
            yield x[b:b + batch_size], y[b:b + batch_size]


def _render_range(split: str, seed: int, start: int, count: int, image_size: int, scene: str) -> dict:
    """Images start..start+count of the (split, seed) stream, rendering only the chunks that hold them."""
    first, last = start // CHUNK, (start + count - 1) // CHUNK
    parts = [_chunk(_chunk_rng(seed, split, False, c, scene), image_size, False, scene) for c in range(first, last + 1)]
    offset = start - first * CHUNK
    return {k: np.concatenate([p[k] for p in parts])[offset:offset + count] for k in ("image", "label")}
