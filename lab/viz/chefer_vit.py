"""Figures, widget view and table captions of notebook 01 (Chefer et al. on a ViT): pure functions of what
`lab.experiments.chefer_vit` computes. ``LABELS[method]`` names a method or a Table 3 variant in titles and legends."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

from matplotlib.figure import Figure

from lab.viz.curves import perturbation_curves
from lab.viz.image import image_grid, overlay
from lab.viz.style import COLORBLIND, legend_outside, paper_style

LABELS = {"rollout": "rollout", "raw_attention": "raw attention", "attn_gradcam": "GradCAM", "lrp": "LRP",
          "partial_lrp": "partial LRP", "chefer": "Ours (Chefer)", "chefer_no_gradient": "Ours w/o ∇A",
          "chefer_last_block": "∇A(1)R(n1)", "chefer_second_block": "∇A(B-1)R(n_B-1)"}
COLUMNS = ("negative_predicted", "negative_target", "positive_predicted", "positive_target")  # Table 1's panels
# Captions of the results tables; {n}: test images, {n_pairs}: two-object images, {gap}: the oracle-gap bound,
# {spread}: the attention-derived methods' spread.
CAPTIONS = {
    "table1_perturbation": "Positive / negative perturbation AUC (%), predicted and target class; positive: lower is "
    "better, negative: higher is better; n = {n} test images; rows random / oracle: pixels removed in random order / "
    "by the object mask (bounds, not methods)",
    "table1_normalised": "Table 1 AUCs normalised between the random-order (0) and mask-oracle (100) bounds; higher "
    "is better in every column",
    "table1_oracle_gap": "Negative-perturbation AUC points below the mask oracle (paired 95 % interval over images; a "
    "saturated benchmark has gap_low under {gap:g}; a negative gap: the map beats the oracle, which removes a large "
    "object's pixels in random order); the attention-derived methods spread over {spread:.1f} points",
    "table1_interval_half_widths": "Half-width of the 95 % bootstrap interval of each Table 1 AUC over the {n} test "
    "images; differences between methods have paired intervals in the claims",
    "table2_segmentation": "Segmentation against the object masks (%), higher is better; n = {n} test images (claims: "
    "paired bootstrap intervals over images)",
    "table3_ablation": "Ablations: segmentation and predicted-class perturbation (%); n = {n} test images",
    "figure2_class_specificity": "Two-object images explained for each class: mean |map_A - map_B| and shift of map "
    "mass onto the explained object (no paper numbers: Fig. 2 is qualitative); n = {n_pairs} two-object images",
}


def figure1(pixels: Sequence, maps: Mapping, labels: Sequence[int], predicted: Sequence[int],
            names: Sequence[str]) -> Figure:
    """Fig. 1: the images ``pixels`` (rows) × methods (columns) of ``maps`` {method: maps [N, H, W]}; row titles:
    true → predicted class (``names[i]``: the name of class i)."""
    n = len(pixels)
    titles = [f"{names[int(y)]}\n→ {names[int(p)]}" for y, p in zip(labels[:n], predicted[:n])]
    return image_grid(list(pixels), {LABELS.get(k, k): v[:n] for k, v in maps.items()}, row_titles=titles)


def figure2(pixels: Sequence, maps: Mapping, labels, names: Sequence[str]) -> Figure:
    """Fig. 2: each two-object image of ``pixels`` explained for each of its classes ``labels[i, k]`` (two rows per
    image); ``maps`` {method: [maps for the first class, maps for the second]}."""
    images, rows, titles = [], [], []
    for i in range(len(pixels)):
        for k in range(2):
            images.append(pixels[i])
            rows.append([maps[name][k][i] for name in maps])
            titles.append(f"{names[int(labels[i, k])]} →")
    return image_grid(images, rows, row_titles=titles, col_titles=[LABELS.get(k, k) for k in maps])


@paper_style()
def curves_figure(table1: Mapping) -> Figure:
    """Accuracy vs fraction of pixels removed, one panel per Table 1 column, AUC in the legend; the random-order and
    mask-oracle bounds (``table1["bound_curves"]``) dashed in grey on the predicted-class panels."""
    cols = [c for c in COLUMNS if c in table1["curves"]]
    names = list(dict.fromkeys(k for c in cols for k in table1["curves"][c]))
    colour = {k: COLORBLIND[i % len(COLORBLIND)] for i, k in enumerate(names)}
    values = {**table1["rows"], **table1.get("bound_rows", {})}
    fig = Figure(figsize=(5.6 * len(cols), 3.2), layout="constrained")
    for ax, col in zip(fig.subplots(1, len(cols), squeeze=False)[0], cols):
        bounds = table1.get("bound_curves", {}).get(col, {})
        keys = [*table1["curves"][col], *bounds]
        curves = {LABELS.get(k, k): v for k, v in {**table1["curves"][col], **bounds}.items()}
        perturbation_curves(table1["fractions"], curves, ax=ax, ylabel="top-1 accuracy",
                            xlabel="fraction of pixels removed", title=col.replace("_", ", "),
                            legend_values={LABELS.get(k, k): values[k][col] for k in keys},
                            legend_fmt="{name} ({value:.1f})")
        for line, k in zip(ax.get_lines(), keys):  # one colour per method
            line.set_color(colour.get(k, "0.5"))
            if k in bounds:
                line.set_linestyle("--")
                line.set_marker("")
        legend_outside(ax)  # re-drawn with the new colours, off the curves
    return fig


@paper_style()
def example_figure(example: Mapping, alpha: float = 0.5) -> Figure:
    """One test image with its mask outline, and a method's map for the explained class (``example``: what
    `lab.experiments.chefer_vit.explain_example` returns)."""
    fig = Figure(figsize=(6.4, 3.3), layout="constrained")
    ax_in, ax_map = fig.subplots(1, 2)
    ax_in.imshow(example["image"])
    ax_in.contour(example["mask"], levels=[0.5], colors="white", linewidths=0.8)
    ax_in.set_axis_off()
    ax_in.set_title(f"true: {example['true']}")
    overlay(example["image"], example["map"], ax=ax_map, alpha=alpha)
    ax_map.set_title(f"{LABELS.get(example['method'], example['method'])} → {example['explained']} "
                     f"(p={example['p']:.2f})\npredicted: {example['predicted']}")
    return fig


def example_renderer(explain: Callable[..., Mapping]):
    """render(index, method, target_class, start_layer, alpha) -> Figure for `lab.widgets.controls`, drawing
    ``explain(index, method, target_class, start_layer)`` (e.g. `explain_example` bound to a context)."""

    def render(index: int = 0, method: str = "chefer", target_class: str = "predicted", start_layer: int = 0,
               alpha: float = 0.5):
        return example_figure(explain(index, method, target_class, start_layer), alpha)

    return render
