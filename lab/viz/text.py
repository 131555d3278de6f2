"""Token heatmaps drawn with matplotlib (no JavaScript), wrapped onto as many lines as the text needs.

Tokens are shown exactly as given (word pieces such as ``##ing`` included; nothing is merged). Text is set
in a monospaced font, so a line holds ``max_width`` character cells and wrapping by character budget is
exact: a 512-token document becomes ~30 legible lines instead of one unreadable strip. Signed scores get a
diverging map centred on 0 and a labelled colour bar under the text; unsigned ones a sequential map.
"""
from __future__ import annotations

import unicodedata
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import PatchCollection
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from lab.viz.style import paper_style, root_figure

MONO_FONT = "DejaVu Sans Mono"
CHAR_EM = 0.602  # advance width of one DejaVu Sans Mono character, in ems
LINE_EM = 1.55  # line pitch, in ems
GAP = 1  # character cells between tokens
MARGIN_IN = 0.08
TITLE_IN = 0.28
CBAR_IN = 0.6  # strip under a signed panel: a 0.1 in colour bar, its ticks and its label
CBAR_WIDTH_IN = 2.4


def _cells(text: str) -> int:
    """Character cells ``text`` occupies in a monospaced font (wide East-Asian characters take two)."""
    n = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        n += 2 if unicodedata.east_asian_width(ch) in "WF" else 1
    return max(n, 1)


def _label(token: str, max_width: int) -> str:
    """Printable label: control characters made visible, tokens longer than a line truncated with '…'."""
    label = str(token).replace("\n", "↵").replace("\t", "⇥").replace("\r", "")
    if _cells(label) > max_width:
        while _cells(label) > max_width - 1:
            label = label[:-1]
        label += "…"
    return label


def layout_tokens(tokens: Sequence[str], max_width: int = 100) -> list[tuple[int, int, int, str]]:
    """Greedy line wrapping: (line, x, width, label) per token, in character cells."""
    if max_width < 4:
        raise ValueError(f"token_heatmap: max_width={max_width} is too small (at least 4 characters)")
    placed, line, x = [], 0, 0
    for token in tokens:
        label = _label(token, max_width)
        w = _cells(label)
        if x > 0 and x + w > max_width:
            line, x = line + 1, 0
        placed.append((line, x, w, label))
        x += w + GAP
    return placed


def _scores(tokens: Sequence[str], scores) -> np.ndarray:
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    s = np.asarray(scores, dtype=float).reshape(-1)
    if len(s) != len(tokens):
        raise ValueError(f"token_heatmap: {len(tokens)} tokens but {len(s)} scores")
    return s


def _norm_and_cmap(scores: np.ndarray, signed: bool | None, cmap: str | None,
                   vmax: float | None = None):
    """(norm, cmap, signed): a diverging map centred on 0 for signed scores, sequential from 0 otherwise."""
    finite = scores[np.isfinite(scores)]
    if signed is None:
        signed = bool(finite.size and finite.min() < 0)
    top = vmax if vmax is not None else (float(np.abs(finite).max()) if finite.size else 1.0)
    top = top if top > 0 else 1.0
    if signed:
        return Normalize(-top, top), colormaps[cmap or "RdBu_r"], True
    return Normalize(min(0.0, float(finite.min()) if finite.size else 0.0), top), colormaps[cmap or "Reds"], False


def _text_colour(rgba) -> str:
    r, g, b = rgba[:3]
    return "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"


def _draw(ax, placed, scores, norm, cmap, fontsize: float, max_width: int, title: str | None) -> None:
    n_lines = placed[-1][0] + 1 if placed else 1
    boxes, faces = [], []
    for (line, x, w, label), s in zip(placed, scores):
        face = cmap(norm(s)) if np.isfinite(s) else (0.85, 0.85, 0.85, 1.0)
        boxes.append(Rectangle((x - 0.3, line + 0.08), w + 0.6, 0.84))
        faces.append(face)
        ax.text(x + w / 2, line + 0.5, label, ha="center", va="center_baseline", fontsize=fontsize,
                family=MONO_FONT, color=_text_colour(face), parse_math=False)
    ax.add_collection(PatchCollection(boxes, facecolors=faces, edgecolors="none"))
    ax.set_xlim(-0.5, max_width + 0.5)
    ax.set_ylim(n_lines, 0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, loc="left", fontsize=fontsize + 1)


def _fit_fontsize(ax, max_width: int, n_lines: int) -> float:
    """Largest font (≤ 11 pt) whose lines fit the width and height of an existing axes."""
    fig = root_figure(ax)
    box = ax.get_position()
    w_pt = box.width * fig.get_figwidth() * 72
    h_pt = box.height * fig.get_figheight() * 72
    return max(2.0, min(11.0, w_pt / ((max_width + 1) * CHAR_EM), h_pt / (n_lines * LINE_EM)))


def _panel_height_in(n_lines: int, fontsize: float, title: bool, colorbar: bool = False) -> float:
    return n_lines * LINE_EM * fontsize / 72 + (TITLE_IN if title else 0.0) + (CBAR_IN if colorbar else 0.0)


def _colorbar_below(fig: Figure, top_in: float, norm, cmap, label: str):
    """A horizontal colour bar with its label in the CBAR_IN strip that starts ``top_in`` below the figure top."""
    W, H = fig.get_figwidth(), fig.get_figheight()
    cax = fig.add_axes((MARGIN_IN / W, (H - top_in - 0.18) / H, min(CBAR_WIDTH_IN, W - 2 * MARGIN_IN) / W, 0.1 / H))
    return fig.colorbar(ScalarMappable(norm, cmap), cax=cax, orientation="horizontal", label=label)


@paper_style()
def token_heatmap(tokens: Sequence[str], scores, ax=None, title: str | None = None, cmap: str | None = None,
                  max_width: int = 100, signed: bool | None = None, fontsize: float | None = None,
                  vmax: float | None = None, colorbar_label: str = "score") -> Figure:
    """Tokens on coloured boxes, wrapped at ``max_width`` characters per line.

    ``signed=None`` picks a diverging map centred on 0 when any score is negative (red positive, blue
    negative), with a colour bar labelled ``colorbar_label`` under the text; else a sequential map from 0 to
    the largest score (or ``vmax``). NaN scores are grey.
    With ``ax`` given the font is sized to fit that axes; otherwise the figure height follows the text.
    """
    s = _scores(tokens, scores)
    placed = layout_tokens(tokens, max_width)
    n_lines = placed[-1][0] + 1 if placed else 1
    norm, cm, signed = _norm_and_cmap(s, signed, cmap, vmax)
    if ax is None:
        fontsize = fontsize or 9.0
        text_in = n_lines * LINE_EM * fontsize / 72
        fig = Figure(figsize=((max_width + 1) * CHAR_EM * fontsize / 72 + 2 * MARGIN_IN,
                              _panel_height_in(n_lines, fontsize, bool(title), signed) + 2 * MARGIN_IN))
        top = MARGIN_IN + (TITLE_IN if title else 0.0)
        ax = _add_axes_inches(fig, top_in=top, height_in=text_in)
        if signed:
            _colorbar_below(fig, top + text_in, norm, cm, colorbar_label)
    else:
        fig = root_figure(ax)
        if signed:  # takes its room from ax before the font is fitted to what is left
            fig.colorbar(ScalarMappable(norm, cm), ax=ax, location="bottom", shrink=0.5, fraction=0.12, pad=0.02,
                         label=colorbar_label)
        fontsize = fontsize or _fit_fontsize(ax, max_width, n_lines)
    _draw(ax, placed, s, norm, cm, fontsize, max_width, title)
    return fig


def _add_axes_inches(fig: Figure, top_in: float, height_in: float):
    """Axes spanning the figure width (less margins), ``top_in`` below the top edge, ``height_in`` tall."""
    W, H = fig.get_figwidth(), fig.get_figheight()
    bottom = H - top_in - height_in
    return fig.add_axes((MARGIN_IN / W, bottom / H, 1 - 2 * MARGIN_IN / W, height_in / H))


@paper_style()
def token_heatmap_panels(panels: Sequence[tuple[str, Sequence[str], object]], max_width: int = 100,
                         signed: bool | None = None, cmap: str | None = None, fontsize: float = 9.0,
                         shared_scale: bool = False, colorbar_label: str = "score") -> Figure:
    """Several token heatmaps stacked in one figure: ``panels`` is a list of (title, tokens, scores).

    Each panel is scaled to its own maximum unless ``shared_scale`` (then all use the largest |score|).
    Signed panels get a colour bar under them (with ``shared_scale``, one under the last panel).
    """
    if not panels:
        raise ValueError("token_heatmap_panels: no panels given")
    prepared = [(title, layout_tokens(tokens, max_width), _scores(tokens, scores)) for title, tokens, scores in panels]
    vmax = None
    if shared_scale:
        finite = np.concatenate([s[np.isfinite(s)] for _, _, s in prepared])
        vmax = float(np.abs(finite).max()) if finite.size else None
        if signed is None:
            signed = bool(finite.size and finite.min() < 0)
    maps = [_norm_and_cmap(s, signed, cmap, vmax) for _, _, s in prepared]
    bars = [m[2] and (not shared_scale or k == len(maps) - 1) for k, m in enumerate(maps)]
    heights = [_panel_height_in(p[-1][0] + 1 if p else 1, fontsize, bool(t), bar)
               for (t, p, _), bar in zip(prepared, bars)]
    fig = Figure(figsize=((max_width + 1) * CHAR_EM * fontsize / 72 + 2 * MARGIN_IN,
                          sum(heights) + MARGIN_IN * (len(heights) + 1)))
    top = MARGIN_IN
    for (title, placed, s), (norm, cm, _), bar, h in zip(prepared, maps, bars, heights):
        title_h, bar_h = (TITLE_IN if title else 0.0), (CBAR_IN if bar else 0.0)
        ax = _add_axes_inches(fig, top_in=top + title_h, height_in=h - title_h - bar_h)
        _draw(ax, placed, s, norm, cm, fontsize, max_width, title)
        if bar:
            _colorbar_below(fig, top + h - bar_h, norm, cm, colorbar_label)
        top += h + MARGIN_IN
    return fig


def lines_of(ax) -> int:
    """Number of text lines a token heatmap drew on ``ax`` (for tests and layout checks)."""
    return len({round(t.get_position()[1], 3) for t in ax.texts})


__all__ = ["token_heatmap", "token_heatmap_panels", "layout_tokens", "lines_of"]
