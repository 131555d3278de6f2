import ipywidgets as W
import pytest
from matplotlib.figure import Figure

from lab.viz import perturbation_curves
from lab.widgets import controls, make_widget


class Recorder:
    """A pure render function that remembers what it was called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, **values):
        self.calls.append(values)
        return perturbation_curves([0, 1], {values["method"]: [1.0, values["k"] / 10]})


SPEC = dict(method=["chefer", "rollout"], k=(1, 10, 1), alpha=(0.0, 1.0, 0.1, 0.5), signed=True, text="a movie")


def test_spec_builds_the_right_widgets():
    c = controls(Recorder(), **SPEC)
    kinds = {name: type(w) for name, w in c.widgets.items()}
    assert kinds == {"method": W.Dropdown, "k": W.IntSlider, "alpha": W.FloatSlider,
                     "signed": W.Checkbox, "text": W.Text}
    assert c.values == {"method": "chefer", "k": 1, "alpha": 0.5, "signed": True, "text": "a movie"}
    assert isinstance(c.widget, W.VBox)
    with pytest.raises(ValueError, match="cannot build a widget for x="):
        make_widget("x", object())
    with pytest.raises(ValueError, match="min <= default <= max"):
        make_widget("x", (0, 1, 0.1, 5.0))


def test_run_button_renders_only_when_clicked():
    render = Recorder()
    c = controls(render, run_button=True, **SPEC)
    c.widgets["method"].value = "rollout"
    c.widgets["k"].value = 7
    assert render.calls == []  # heavy calls wait for "Run"
    c.run_button.click()
    assert render.calls == [{"method": "rollout", "k": 7, "alpha": 0.5, "signed": True, "text": "a movie"}]
    assert isinstance(c.figure, Figure)
    assert c.figure.axes[0].get_lines()[0].get_ydata()[1] == pytest.approx(0.7)


def test_without_run_button_renders_on_change():
    render = Recorder()
    c = controls(render, run_button=False, method=["a", "b"], k=(1, 5, 1))
    assert c.run_button is None
    c.widgets["k"].value = 3
    c.widgets["method"].value = "b"
    assert [call["k"] for call in render.calls] == [3, 3]
    assert render.calls[-1]["method"] == "b"


def test_export_writes_figure_files(lab_dirs):
    c = controls(Recorder(), export=("05_demo", "curve_{method}_k{k}"), method=["chefer"], k=(1, 10, 1, 4))
    paths = c.export()  # renders first when nothing is on screen yet
    assert [p.name for p in paths] == ["curve_chefer_k4.png", "curve_chefer_k4.pdf"]
    assert all(p.parent == lab_dirs["figures"] / "05_demo" and p.stat().st_size > 0 for p in paths)
    c.widgets["k"].value = 9
    c.run_button.click()
    c.export_button.click()
    assert (lab_dirs["figures"] / "05_demo" / "curve_chefer_k9.png").exists()
    assert "saved" in c.status.value


def test_export_saves_what_was_rendered_named_by_the_values_that_rendered_it(lab_dirs):
    render = Recorder()
    c = controls(render, export=("02_demo", "map_{method}_k{k}"), method=["chefer", "rollout"], k=(1, 10, 1, 4))
    shown = c.run()
    c.widgets["method"].value = "rollout"  # changed without Run: the screen still shows chefer
    c.widgets["k"].value = 9
    c.export_button.click()
    assert "saved" in c.status.value and len(render.calls) == 1  # no silent re-render
    assert sorted(p.name for p in (lab_dirs["figures"] / "02_demo").iterdir()) == ["map_chefer_k4.pdf",
                                                                                 "map_chefer_k4.png"]
    assert c.figure is shown and c.rendered_values["method"] == "chefer"
    assert shown.axes[0].get_legend().get_texts()[0].get_text() == "chefer"


def test_errors_in_callbacks_are_one_line_messages():
    def broken(**values):
        raise RuntimeError("model not trained")

    c = controls(broken, method=["a"])
    c.run_button.click()  # must not raise inside the widget callback
    assert "RuntimeError: model not trained" in c.status.value
    with pytest.raises(RuntimeError):
        c.run()  # called directly, errors propagate
    with pytest.raises(TypeError, match="expected a matplotlib Figure"):
        controls(lambda **v: 42, method=["a"]).run()
