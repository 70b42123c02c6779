"""Energy and RMS force along the denoising chain: two Bokeh figures whose data are replaced in place.

A new selection or a finished scoring sends only the new columns (the figures stay, nothing is rebuilt in
the browser), and the red frame marker follows the player in the browser (``follow``), without a server
round trip per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource, HoverTool, Legend, LegendItem, Range1d, Span
from bokeh.plotting import figure

__all__ = ["ChainPlots", "chain_series", "energy_span"]

COLOURS = ("#1f77b4", "#ff7f0e")  # one per model shown side by side
MAX_SETS = len(COLOURS)


def chain_series(sampled, b: int, first_frame: int = 0) -> dict[str, np.ndarray]:
    """Frames from ``first_frame`` on of molecule ``b`` with their energy and RMS force, unscored frames dropped.

    -> {"frame" [k], "energy" [k] eV/atom, "frame_f" [m], "rms_force" [m] eV/A, "unscored" int}
    """
    frames = np.arange(sampled.num_frames)[first_frame:]
    energy, rms = sampled.energy[b, first_frame:], sampled.rms_force[b, first_frame:]
    ok_e, ok_f = np.isfinite(energy), np.isfinite(rms) & (rms > 0)
    return {
        "frame": frames[ok_e],
        "energy": energy[ok_e],
        "frame_f": frames[ok_f],
        "rms_force": rms[ok_f],
        "unscored": int((~ok_e).sum()),
    }


def energy_span(series: list[np.ndarray], tail: float = 0.5) -> tuple[float, float]:
    """The energy axis: the span of the last ``tail`` of each chain's scored frames, padded by a tenth, so that
    the noise's spikes (10^4 eV/atom in the first frames) run off the top instead of flattening the molecule."""
    tails = [e[int(len(e) * (1 - tail)) :] for e in series if len(e)]
    if not tails:
        return -10.0, 1.0
    lo, hi = float(min(t.min() for t in tails)), float(max(t.max() for t in tails))
    pad = max(0.1 * (hi - lo), 0.05)
    return lo - pad, hi + pad


@dataclass
class _Chart:
    """One figure: a line per model (data replaced in place), their legend entries, the frame marker."""

    fig: figure
    sources: list[ColumnDataSource]
    legend: Legend
    items: list[LegendItem]
    marker: Span


def _chart(y_label: str, log: bool) -> _Chart:
    ranges = {} if log else {"y_range": Range1d(-10, 1)}  # linear: the formed molecule's span, set in ``show``
    fig = figure(
        height=240,
        sizing_mode="stretch_width",
        x_axis_label="frame",
        y_axis_label=y_label,
        y_axis_type="log" if log else "linear",
        tools="pan,wheel_zoom,box_zoom,reset,save",
        **ranges,
        toolbar_location="above",
    )
    fig.add_tools(HoverTool(tooltips=[("frame", "@x"), (y_label, "@y{0.0000}")]))
    sources = [ColumnDataSource({"x": [], "y": []}) for _ in COLOURS]
    items = []
    for src, colour in zip(sources, COLOURS, strict=True):
        line = fig.line("x", "y", source=src, line_width=2, color=colour)
        dots = fig.scatter("x", "y", source=src, size=3, color=colour)
        items.append(LegendItem(label="", renderers=[line, dots]))
    legend = Legend(items=[], orientation="horizontal", location="center")
    fig.add_layout(legend, "below")  # below the axes, never over the data
    marker = Span(location=0, dimension="height", line_color="red", line_dash="dashed", line_width=1)
    fig.add_layout(marker)
    return _Chart(fig, sources, legend, items, marker)


class ChainPlots:
    """Formation energy (linear) and RMS force (log axis) of one molecule's chain, for one or two models."""

    def __init__(self) -> None:
        self.energy = _chart("formation energy (eV/atom)", log=False)
        self.force = _chart("RMS force (eV/Å, log)", log=True)
        self.energy.fig.title.text = "Energy and RMS force along the chain (sample a molecule)"
        self.panel = pn.Row(
            pn.pane.Bokeh(self.energy.fig, sizing_mode="stretch_width"),
            pn.pane.Bokeh(self.force.fig, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )

    def follow(self, player: pn.widgets.Player) -> None:
        """The red frame marker moves with ``player`` in the browser."""
        for chart in (self.energy, self.force):
            player.jslink(chart.marker, value="location")

    def show(self, sets: list, b: int, first: int, frame: int) -> None:
        """Molecule ``b`` of each set from frame ``first`` on, the marker at ``frame``."""
        unscored, shown = 0, []
        empty = {"x": [], "y": []}
        for k in range(MAX_SETS):
            s = sets[k] if k < len(sets) and b < sets[k].energy.shape[0] else None
            d = chain_series(s, b, min(first, s.num_frames - 1)) if s is not None else None
            self.energy.sources[k].data = {"x": d["frame"], "y": d["energy"]} if d else empty
            self.force.sources[k].data = {"x": d["frame_f"], "y": d["rms_force"]} if d else empty
            if d is not None:
                unscored = max(unscored, d["unscored"])
                shown.append((k, s.model_name))
        start, end = energy_span([np.asarray(src.data["y"], dtype=float) for src in self.energy.sources])
        self.energy.fig.y_range.update(start=start, end=end)
        gaps = f"; {unscored} unscored frames left out" if unscored else ""
        if sets and not all(s.frames_scored for s in sets):
            gaps = "; scoring the other frames..."
        for chart in (self.energy, self.force):
            for k, name in shown:
                chart.items[k].label = {"value": name}
            chart.legend.items = [chart.items[k] for k, _ in shown]
            chart.marker.location = frame
        self.energy.fig.title.text = f"Energy from frame {first}{gaps}"
        self.force.fig.title.text = f"RMS force from frame {first}, log axis"
