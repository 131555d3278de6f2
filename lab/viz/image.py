"""Relevance maps over images: one overlay, and the examples × methods grid of the Chefer figures."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from lab.viz.style import figure_axes, paper_style


def _array(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=float)


def as_image(image) -> np.ndarray:
    """H×W or H×W×3 floats in [0, 1]; accepts C×H×W tensors, uint8 arrays and normalised inputs."""
    img = _array(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] != 3):
        raise ValueError(f"overlay: image of shape {img.shape} is not H×W, H×W×3 or 3×H×W")
    if img.max() > 1.0 and img.min() >= 0 and img.max() <= 255:
        img = img / 255.0
    elif img.min() < 0 or img.max() > 1:  # e.g. mean/std-normalised model input: rescale for display
        img = (img - img.min()) / (img.max() - img.min() + 1e-12)
    return img


def upsample_bilinear(heatmap, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize to ``size`` = (H, W) with half-pixel centres, as torch's
    ``interpolate(mode="bilinear", align_corners=False)`` used by Chefer et al. for 14×14 → 224×224."""
    m = _array(heatmap)
    if m.ndim != 2:
        raise ValueError(f"upsample_bilinear: heatmap must be 2-D, got shape {m.shape}")

    def weights(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    r0, r1, wr = weights(m.shape[0], size[0])
    c0, c1, wc = weights(m.shape[1], size[1])
    rows = m[r0] * (1 - wr)[:, None] + m[r1] * wr[:, None]
    return rows[:, c0] * (1 - wc)[None, :] + rows[:, c1] * wc[None, :]


def _as_map(heatmap) -> np.ndarray:
    """2-D map; a flat vector of square length (e.g. 196 patch scores) is reshaped to 14×14."""
    m = _array(heatmap)
    if m.ndim == 1:
        side = int(round(np.sqrt(m.size)))
        if side * side != m.size:
            raise ValueError(f"overlay: a flat heatmap of {m.size} values is not a square grid of patches")
        m = m.reshape(side, side)
    return m


@paper_style()
def overlay(image, heatmap, ax=None, alpha: float = 0.5, cmap: str = "jet", normalize: bool = True,
            title: str | None = None) -> Figure:
    """``heatmap`` (any resolution; upsampled bilinearly to the image size) drawn over ``image``.

    With ``normalize`` the map is min-max scaled to [0, 1], as in Chefer et al.'s visualisations.
    """
    img = as_image(image)
    m = upsample_bilinear(_as_map(heatmap), img.shape[:2])
    if normalize:
        lo, hi = np.nanmin(m), np.nanmax(m)
        m = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    fig, ax = figure_axes(ax, figsize=(3, 3))
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    ax.imshow(m, cmap=cmap, alpha=alpha, vmin=0 if normalize else None, vmax=1 if normalize else None)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


@paper_style()
def image_grid(images: Sequence, maps, row_titles: Sequence[str] | None = None,
               col_titles: Sequence[str] | None = None, show_input: bool = True, alpha: float = 0.5,
               cmap: str = "jet", cell_in: float = 1.6) -> Figure:
    """Examples (rows) × methods (columns) of overlays, with the plain input image first.

    ``maps[i][j]`` is method j's map for example i, or ``maps`` is {method: [map per example]} (its keys
    then title the columns).
    """
    if isinstance(maps, Mapping):
        col_titles = list(maps) if col_titles is None else col_titles
        maps = [[maps[k][i] for k in maps] for i in range(len(images))]
    if len(maps) != len(images):
        raise ValueError(f"image_grid: {len(images)} images but maps for {len(maps)} examples")
    n_methods = len(maps[0]) if len(maps) else 0
    if col_titles is not None and len(col_titles) != n_methods:
        raise ValueError(f"image_grid: {len(col_titles)} column titles for {n_methods} methods")
    n_cols = n_methods + int(show_input)
    fig = Figure(figsize=(cell_in * n_cols, cell_in * len(images) + 0.3), layout="constrained")
    axes = fig.subplots(len(images), n_cols, squeeze=False)
    titles = (["input"] if show_input else []) + list(col_titles or [""] * n_methods)
    for i, image in enumerate(images):
        row = list(axes[i])
        if show_input:
            img = as_image(image)
            row[0].imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            row[0].set_axis_off()
        for j, m in enumerate(maps[i]):
            overlay(image, m, ax=row[j + int(show_input)], alpha=alpha, cmap=cmap)
        if row_titles is not None:
            row[0].set_axis_on()
            row[0].set_xticks([]), row[0].set_yticks([])
            for side in row[0].spines.values():
                side.set_visible(False)
            row[0].set_ylabel(row_titles[i])
    for j, t in enumerate(titles):
        axes[0][j].set_title(t)
    return fig
