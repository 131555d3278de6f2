"""Interactive controls for a notebook's last section, built from a short spec.

    controls(render_fn, run_button=True, export=("03_mask_lrp", "heads_{layer}"),
             method=["chefer", "rollout"],     # list          -> Dropdown
             layer=(0, 11, 1),                  # (min,max,step[,default]) of ints -> IntSlider
             alpha=(0.0, 1.0, 0.1, 0.5),        # ... of floats -> FloatSlider
             signed=True,                       # bool          -> Checkbox
             text="a great movie")              # str           -> Text

``render_fn(**values)`` is a pure plotting function returning a Figure. With ``run_button=True`` it runs
only when "Run" is clicked (for heavy calls), otherwise on every change. "Export" saves the figure last
rendered with ``save_figure``, ``{name}`` placeholders in the figure name filled from the values that rendered
it (not the controls' current values, which may have changed since without a Run); with nothing rendered yet it
renders first.
"""
from __future__ import annotations

import html
import re
from numbers import Real
from pathlib import Path
from typing import Any, Callable, Mapping

import ipywidgets as W

from lab.viz.style import root_figure, save_figure


def make_widget(name: str, spec: Any) -> W.ValueWidget:
    """One widget from one spec entry (see the module docstring)."""
    common = {"description": name, "style": {"description_width": "initial"}}
    if isinstance(spec, W.ValueWidget):
        return spec
    if isinstance(spec, bool):
        return W.Checkbox(value=spec, indent=False, **common)
    if isinstance(spec, str):
        return W.Text(value=spec, **common)
    if isinstance(spec, Mapping) and spec:
        return W.Dropdown(options=list(spec.items()), **common)
    if isinstance(spec, tuple) and len(spec) in (3, 4) and all(
            isinstance(v, Real) and not isinstance(v, bool) for v in spec):
        lo, hi, step = spec[:3]
        value = spec[3] if len(spec) == 4 else lo
        if not lo <= value <= hi or step <= 0:
            raise ValueError(f"controls: {name}={spec!r} needs min <= default <= max and step > 0")
        cls = W.IntSlider if all(isinstance(v, int) for v in spec) else W.FloatSlider
        return cls(min=lo, max=hi, step=step, value=value, continuous_update=False, **common)
    if isinstance(spec, (list, tuple)) and spec:
        return W.Dropdown(options=list(spec), value=spec[0], **common)
    if isinstance(spec, Real) and not isinstance(spec, bool):
        return (W.IntText if isinstance(spec, int) else W.FloatText)(value=spec, **common)
    raise ValueError(f"controls: cannot build a widget for {name}={spec!r} "
                     "(use a list, a (min, max, step) tuple, a bool, a str or a number)")


class Controls:
    """Widgets + Run/Export buttons + an output area around a pure ``render_fn``.

    ``.widget`` is the container (a Controls object also displays itself); ``.values`` the current
    values; ``.run()`` renders and returns the Figure (``.figure``, rendered from ``.rendered_values``);
    ``.export()`` saves it and returns the paths.
    """

    def __init__(self, render_fn: Callable[..., Any], run_button: bool = True,
                 export: tuple[str, str] | None = None, **spec: Any):
        if export is not None and (len(export) != 2 or not all(isinstance(e, str) for e in export)):
            raise ValueError(f"controls: export must be (notebook, figure_name), got {export!r}")
        self.render_fn = render_fn
        self.export_to = export
        self.figure = None
        self.rendered_values: dict[str, Any] | None = None
        self.widgets = {name: make_widget(name, s) for name, s in spec.items()}
        self.output = W.Output()
        self.status = W.HTML()
        buttons: list[W.Widget] = []
        self.run_button = self.export_button = None
        if run_button:
            self.run_button = W.Button(description="Run", button_style="primary", icon="play")
            self.run_button.on_click(lambda _: self._guarded(self.run))
            buttons.append(self.run_button)
        else:
            for w in self.widgets.values():
                w.observe(lambda _change: self._guarded(self.run), names="value")
        if export is not None:
            self.export_button = W.Button(description="Export", icon="download")
            self.export_button.on_click(lambda _: self._guarded(self.export))
            buttons.append(self.export_button)
        self.widget = W.VBox([W.HBox(list(self.widgets.values()), layout=W.Layout(flex_flow="row wrap")),
                              W.HBox(buttons + [self.status]), self.output])

    @property
    def values(self) -> dict[str, Any]:
        return {name: w.value for name, w in self.widgets.items()}

    def run(self):
        """Call ``render_fn(**values)``, show the figure in the output area and return it."""
        self.status.value = "running…"
        values = self.values
        result = self.render_fn(**values)
        fig = root_figure(result) if hasattr(result, "get_figure") and not hasattr(result, "savefig") else result
        if not hasattr(fig, "savefig"):
            raise TypeError(f"controls: render_fn returned {type(result).__name__}, expected a matplotlib Figure")
        self.figure, self.rendered_values = fig, values
        self._show(fig)
        self.status.value = ""
        return fig

    def export(self) -> list[Path]:
        """Save the last rendered figure (rendering first if there is none) as figures/<notebook>/<name>.{png,pdf},
        the name filled from the values that rendered it."""
        if self.export_to is None:
            raise ValueError("controls: no export=(notebook, figure_name) was given")
        if self.figure is None:
            self.run()
        notebook, pattern = self.export_to
        name = re.sub(r"[^A-Za-z0-9._+-]+", "-", pattern.format(**self.rendered_values)).strip("-.")
        paths = save_figure(self.figure, notebook, name)
        self.status.value = "saved " + ", ".join(str(p) for p in paths)
        return paths

    def _show(self, fig) -> None:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is None:  # headless (tests, scripts): nothing to draw into
            return
        with self.output:
            self.output.clear_output(wait=True)
            display(fig)
        import matplotlib.pyplot as plt

        plt.close(fig)  # figures made through pyplot would otherwise be shown again at the cell's end

    def _guarded(self, action: Callable[[], Any]) -> None:
        """Button/observer callbacks: report errors on one line instead of a traceback in the log."""
        try:
            action()
        except Exception as e:  # noqa: BLE001 - shown to the user, never swallowed silently
            msg = html.escape(f"error: {type(e).__name__}: {e}")
            self.status.value = f"<span style='color:#b00'>{msg}</span>"

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def controls(render_fn: Callable[..., Any], run_button: bool = True,
             export: tuple[str, str] | None = None, **spec: Any) -> Controls:
    """Build widgets from ``spec`` around ``render_fn``; see the module docstring."""
    return Controls(render_fn, run_button=run_button, export=export, **spec)
