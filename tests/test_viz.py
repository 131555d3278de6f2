import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from lab.viz import (bar_table, heatmap_matrix, image_grid, overlay, paper_style, perturbation_curves,
                     reference_curves, save_figure, scatter_cost_quality, token_heatmap, token_heatmap_panels,
                     upsample_bilinear)
from lab.viz.text import layout_tokens, lines_of


def test_save_figure_writes_png_and_pdf(lab_dirs):
    fig = perturbation_curves([0, 0.5, 1], {"a": [1, 0.5, 0.2]})
    paths = save_figure(fig, "01_demo", "curves")
    assert paths == [lab_dirs["figures"] / "01_demo" / "curves.png", lab_dirs["figures"] / "01_demo" / "curves.pdf"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"
    assert sorted(p.name for p in paths[0].parent.iterdir()) == ["curves.pdf", "curves.png"]  # no temp files
    with pytest.raises(ValueError, match="name"):
        save_figure(fig, "01_demo", "../escape")


def test_token_heatmap_wraps_a_long_document():
    rng = np.random.default_rng(0)
    tokens = [str(rng.choice(["the", "movie", "##ing", "wonderful", ",", "$5", "un", "##believ"])) for _ in range(500)]
    fig = token_heatmap(tokens, rng.random(500), max_width=80, title="500 tokens")
    ax = fig.axes[0]
    assert len(ax.texts) == 500
    n_lines = lines_of(ax)
    assert n_lines > 1
    # every line fits the budget, and tokens are shown exactly as given
    placed = layout_tokens(tokens, 80)
    assert max(x + w for _, x, w, _ in placed) <= 80
    assert n_lines == placed[-1][0] + 1
    assert [t.get_text() for t in ax.texts] == tokens
    # the figure grows with the text instead of shrinking the font
    short = token_heatmap(tokens[:20], rng.random(20), max_width=80)
    assert fig.get_figheight() > 3 * short.get_figheight()


def test_token_heatmap_signed_scores_use_a_diverging_map():
    fig = token_heatmap(["good", "bad", "ok"], [1.0, -1.0, 0.0])
    faces = fig.axes[0].collections[0].get_facecolors()
    red, blue, white = faces
    assert red[0] > red[2] and blue[2] > blue[0]  # positive red, negative blue
    assert min(white[:3]) > 0.9  # zero maps to the neutral centre
    unsigned = token_heatmap(["a", "b"], [0.0, 1.0]).axes[0].collections[0].get_facecolors()
    assert min(unsigned[0][:3]) > 0.9 and unsigned[1][1] < 0.3  # sequential from 0: white to dark red
    with pytest.raises(ValueError, match="2 tokens but 3 scores"):
        token_heatmap(["a", "b"], [1, 2, 3])


def test_token_heatmap_on_given_axes_and_panels():
    fig = Figure(figsize=(6, 2))
    ax = fig.add_subplot()
    assert token_heatmap(["a"] * 50, torch.ones(50), ax=ax) is fig
    panels = token_heatmap_panels([("rollout", ["a", "b"], [0.1, 0.2]), ("chefer", ["c"] * 200, np.ones(200))],
                                  max_width=40)
    assert len(panels.axes) == 2
    assert [ax.get_title(loc="left") for ax in panels.axes] == ["rollout", "chefer"]
    assert lines_of(panels.axes[1]) > lines_of(panels.axes[0])


def test_upsample_bilinear_matches_torch():
    m = np.random.default_rng(1).random((14, 14))
    ours = upsample_bilinear(m, (224, 224))
    ref = torch.nn.functional.interpolate(torch.tensor(m)[None, None], size=(224, 224), mode="bilinear",
                                          align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_overlay_upsamples_to_image_size():
    image = np.random.default_rng(2).integers(0, 255, (64, 48, 3), dtype=np.uint8)
    fig = overlay(image, np.arange(16.0).reshape(4, 4))
    base, heat = fig.axes[0].images
    assert base.get_array().shape == (64, 48, 3)
    assert heat.get_array().shape == (64, 48)
    assert heat.get_array().min() == 0 and heat.get_array().max() == 1  # min-max normalised
    # a flat vector of patch scores (e.g. 196 from ViT) and a C×H×W tensor are accepted
    fig = overlay(torch.rand(3, 32, 32), torch.rand(16))
    assert fig.axes[0].images[1].get_array().shape == (32, 32)


def test_image_grid_has_examples_by_methods():
    rng = np.random.default_rng(3)
    images = [rng.random((16, 16, 3)) for _ in range(2)]
    maps = {"rollout": [rng.random((4, 4))] * 2, "chefer": [rng.random((4, 4))] * 2, "gradcam": [rng.random((4, 4))] * 2}
    fig = image_grid(images, maps, row_titles=["dog", "cat"])
    assert len(fig.axes) == 2 * 4
    assert [ax.get_title() for ax in fig.axes[:4]] == ["input", "rollout", "chefer", "gradcam"]
    with pytest.raises(ValueError, match="2 images"):
        image_grid(images, [[m] for m in maps["chefer"][:1]])


def test_reference_curves_join_the_methods_on_their_axes():
    """Token-F1 at k (Chefer Fig. 3) with the oracle ceiling and the random baseline on the same axes: the
    references add unmarked black / grey lines below the curves and the legend lists methods then references."""
    fig = perturbation_curves([10, 20], {"chefer": [0.4, 0.5], "rollout": [0.3, 0.35]})
    ax = fig.axes[0]
    assert reference_curves([10, 20], {"oracle": [1.0, 0.9], "random": [0.1, 0.15]}, ax=ax) is fig
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["chefer", "rollout", "oracle", "random"]
    assert list(lines["oracle"].get_ydata()) == [1.0, 0.9] and lines["oracle"].get_marker() in ("None", "", None)
    assert lines["oracle"].get_zorder() < lines["chefer"].get_zorder()
    assert lines["oracle"].get_color() != lines["random"].get_color()
    alone = reference_curves([1, 2], {"random": [0.1, 0.2]}, legend=False)
    assert alone is not fig and alone.axes[0].get_legend() is None
    with pytest.raises(ValueError, match="'random' has 3 points"):
        reference_curves([1, 2], {"random": [0.1, 0.2, 0.3]})


def test_curves_matrix_and_scatter():
    with paper_style():
        fig = perturbation_curves([0, 0.1, 0.2], {"a": [1, 0.9, 0.5], "b": [1, 0.7, 0.2]},
                                  legend_values={"a": 0.81})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["a (0.81)", "b"]
    with pytest.raises(ValueError, match="curve 'a'"):
        perturbation_curves([0, 1], {"a": [1, 2, 3]})

    m = np.arange(6.0).reshape(2, 3)
    m[0, 1] = np.nan
    fig = heatmap_matrix(m, ["b0", "b1"], ["h0", "h1", "h2"])
    assert [t.get_text() for t in fig.axes[0].texts] == ["0.00", "2.00", "3.00", "4.00", "5.00"]  # NaN blank
    with pytest.raises(ValueError, match="2 row labels"):
        heatmap_matrix(np.ones((3, 3)), ["a", "b"])

    fig = scatter_cost_quality({"ig": (2.0, 0.8), "saliency": (0.01, 0.6)})
    assert fig.axes[0].get_xscale() == "log" and len(fig.axes[0].texts) == 2
    fig = bar_table({"a": {"x": 1, "y": 2}, "b": {"x": 3}}, paper={"a": {"x": 1.5, "y": None}})
    assert len(fig.axes[0].patches) == 4


# ---- paper style, umask, colour bars, legends (issue 16 item 7) --------------------------------------------------


def _renderer(fig):
    """Lay the figure out and draw it (as save_figure would) and return the renderer, for bounding boxes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _curves():
    return perturbation_curves([0, 0.5, 1], {"a": [1, 0.5, 0.2], "b": [1, 0.8, 0.6]})


def test_save_figure_embeds_truetype_not_type3_fonts(lab_dirs):
    import matplotlib as mpl

    with mpl.rc_context({"pdf.fonttype": 3}):  # matplotlib's own default: Type 3 fonts
        pdf = save_figure(_curves(), "01_demo", "fonts", formats=("pdf",))[0].read_bytes()
    assert b"/Subtype /Type3" not in pdf
    assert b"/Subtype /TrueType" in pdf or b"/Subtype /CIDFontType2" in pdf  # TrueType outlines (Type 42)


def test_lab_viz_figures_use_the_colour_blind_palette_on_screen():
    import matplotlib as mpl
    from matplotlib.colors import to_hex

    from lab.viz import COLORBLIND

    assert to_hex(mpl.rcParams["axes.prop_cycle"].by_key()["color"][0]) != COLORBLIND[0]  # not set globally
    lines = _curves().axes[0].get_lines()
    assert [to_hex(line.get_color()) for line in lines] == COLORBLIND[:2]
    bars = bar_table({"a": {"x": 1}, "b": {"x": 2}}).axes[0].patches
    assert [to_hex(p.get_facecolor()) for p in bars] == COLORBLIND[:2]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_save_figure_files_follow_the_umask(lab_dirs, umask, mode):
    import os

    old = os.umask(umask)
    try:
        paths = save_figure(_curves(), "01_demo", "perms")
    finally:
        os.umask(old)
    assert [p.stat().st_mode & 0o777 for p in paths] == [mode, mode]


def test_signed_token_heatmap_has_a_labelled_zero_centred_colour_bar():
    fig = token_heatmap(["good", "bad", "ok"], [2.0, -1.0, 0.5], colorbar_label="relevance")
    text_ax, bar_ax = fig.axes
    assert bar_ax.get_xlim() == (-2.0, 2.0)  # zero-centred
    from matplotlib.collections import QuadMesh

    assert [c.cmap.name for c in bar_ax.collections if isinstance(c, QuadMesh)] == ["RdBu_r"]  # diverging
    assert bar_ax.get_xlabel() == "relevance"
    renderer = _renderer(fig)
    assert not bar_ax.get_tightbbox(renderer).overlaps(text_ax.get_window_extent(renderer))
    assert bar_ax.get_tightbbox(renderer).y0 >= 0  # ticks and label inside the figure
    assert len(token_heatmap(["a", "b"], [0.0, 1.0]).axes) == 1  # unsigned: sequential, no bar
    host = Figure(figsize=(6, 2))
    token_heatmap(["a", "b"], [-1.0, 1.0], ax=host.add_subplot())
    assert len(host.axes) == 2 and host.axes[1].get_xlabel() == "score"


def test_token_heatmap_panels_get_one_bar_per_signed_panel_or_one_shared():
    panels = [("signed", ["a", "b"], [-1.0, 1.0]), ("unsigned", ["c"], [1.0]), ("signed too", ["d"], [-0.5])]
    assert len(token_heatmap_panels(panels).axes) == 3 + 2
    shared = token_heatmap_panels(panels, shared_scale=True)
    assert len(shared.axes) == 3 + 1
    assert [ax.get_title(loc="left") for ax in shared.axes[:3]] == ["signed", "unsigned", "signed too"]


def _legends_clear_of_data(fig):
    renderer = _renderer(fig)
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes), legend


def test_curve_legends_sit_outside_the_data():
    _legends_clear_of_data(_curves())
    _legends_clear_of_data(bar_table({"a": {"x": 1, "y": 2}, "b": {"x": 3, "y": 1}}))


def test_notebook_curve_figures_keep_legends_off_the_data():
    from lab.experiments import chefer_bert, mask_lrp
    from lab.viz import chefer_bert as viz_cb
    from lab.viz import mask_lrp as viz_ml

    bins = [0.01, 0.05, 0.1, 0.2, 0.5]
    curve = {"comprehensiveness": [0.1, 0.2, 0.3, 0.4, 0.5], "sufficiency": [0.5, 0.4, 0.3, 0.2, 0.1]}
    faith = {"bins": bins, "curves": {m: curve for m in ("chefer", "rollout", "lrp")},
             "rows": {m: {"comprehensiveness": 0.3, "sufficiency": 0.2} for m in ("chefer", "rollout", "lrp")}}
    _legends_clear_of_data(viz_cb.faithfulness_plot(faith, chefer_bert.LABELS, chefer_bert.PAPER_METHODS))
    fig3 = {"ks": [10, 20], "n": {"chefer": 5, "rollout": 5}, "macro": {"chefer": [0.2, 0.3], "rollout": [0.1, 0.2]},
            "micro": {"chefer": [0.2, 0.3], "rollout": [0.1, 0.2]}}
    _legends_clear_of_data(viz_cb.figure3_plot(fig3, chefer_bert.LABELS, chefer_bert.PAPER_METHODS))
    fractions = [0.1, 0.2, 0.3]
    evaluation = {"methods": {m: {"aopc_curve": [0.1, 0.2, 0.3], "lodds_curve": [-0.1, -0.2, -0.3]}
                              for m in ("rollout", "chefer", "mask_lrp")}}
    fig = viz_ml.curves_figure(evaluation, fractions, mask_lrp.LABELS)
    _legends_clear_of_data(fig)
    assert sum(ax.get_legend() is not None for ax in fig.axes) == 1
