"""Alignment: preset and settings, start / stop (pause) / resume, live HoloViews curves per channel, and a few
molecules of the policy's latest held-out evaluation."""

from __future__ import annotations

import time

import holoviews as hv
import pandas as pd
import panel as pn
import param
from bokeh.models import BasicTicker
from holoviews.streams import Buffer
from panel.viewable import Viewer

from elign_studio.session import METRIC_KEYS, StudioSession
from elign_studio.views.grid import CELL_PX, MoleculeGrid
from elign_studio.views.inputs import bounded_int_input
from elign_studio.worker import HELD_OUT_SHOWN

__all__ = ["TrainingView"]

LABELS = {
    "reward_force_mean": "reward (force)",
    "reward_energy_mean": "reward (energy)",
    "kl": "KL to reference",
    "kl_prefix": "KL to reference (shared steps)",
    "clip_fraction": "clip fraction",
    "rollout_molecule_stability": "molecule stability",
    "rollout_composition_tv": "atom-type TV (rollouts)",
    "eval_atom_type_tv": "atom-type TV (held-out)",
    "rollout_repeated": "repeated molecules (rollouts)",
    "eval_uniqueness": "uniqueness (held-out)",
}
STABILITY_CHART = ("rollout_molecule_stability", "eval_uniqueness", "rollout_repeated")


MIN_REDRAW_S = 1.0


def _curves(data: pd.DataFrame, keys: tuple[str, ...], title: str, ylabel: str) -> hv.Overlay:
    """A line and markers per metric in ``keys`` against the iteration."""
    items = [hv.Curve(data, "step", (k, ylabel), label=LABELS[k]).opts(tools=["hover"]) for k in keys]
    items += [hv.Scatter(data, "step", (k, ylabel)).opts(size=4) for k in keys]
    return hv.Overlay(items).opts(
        title=title, responsive=True, height=220, legend_position="bottom_left", xformatter="%d", framewise=True,
        xticks=BasicTicker(min_interval=1),  # iterations: whole numbers, never two ticks with one label
    )  # fmt: skip


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"step": pd.Series(dtype=float), **{k: pd.Series(dtype=float) for k in METRIC_KEYS}})


class TrainingView(Viewer):
    """The model to align, its settings, start / stop / resume, the live curves of the run and its policy's latest
    held-out molecules."""

    session = param.ClassSelector(class_=StudioSession, doc="the state this view shows and edits")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        session = self.session
        self.buffer = Buffer(_empty(), length=100_000, index=False)
        self._streamed_rows = 0  # rows of session.history already sent to the curves
        self._streamed_run = ""
        self._sent_at = 0.0

        def chart(keys: tuple[str, ...], title: str, ylabel: str) -> hv.DynamicMap:
            return hv.DynamicMap(lambda data: _curves(data, keys, title, ylabel), streams=[self.buffer])

        self.reward = chart(METRIC_KEYS[:2], "Rewards per channel", "reward")
        self.kl = chart(("kl", "kl_prefix"), "KL", "KL")
        self.clip = chart(("clip_fraction",), "Clip fraction", "fraction")
        self.stab = chart(STABILITY_CHART, "Stability and diversity", "fraction")
        self.composition = chart(
            ("rollout_composition_tv", "eval_atom_type_tv"), "Atom types: distance to QM9 (TV)", "TV"
        )
        self.progress = pn.pane.Markdown("No run yet.", css_classes=["elign-train-state"])
        self.align_model = pn.widgets.Select.from_param(session.param.align_model, name="Model to align")
        self.settings = pn.Column(
            pn.widgets.Select.from_param(session.param.preset),
            *(bounded_int_input(session, k) for k in ("iterations", "prompts", "group_size", "steps")),
            pn.widgets.FloatInput.from_param(session.param.lr, format="0.0000000", step=1e-6),
        )
        self.start = pn.widgets.Button(name="Start new run", button_type="success")
        self.stop = pn.widgets.Button(name="Stop / pause", button_type="warning")
        self.resume = pn.widgets.Button(name="Resume", button_type="primary")
        self.start.on_click(lambda _: session.start_alignment(resume=False))
        self.stop.on_click(lambda _: session.stop_alignment())
        self.resume.on_click(lambda _: session.start_alignment(resume=True))
        session.param.watch(self._stream, ["step", "run_name", "run_state"])
        session.param.watch(self._buttons, ["run_state", "run_name"])
        self._buttons()
        self.held_out = MoleculeGrid(
            columns=HELD_OUT_SHOWN, host_class="elign-held-out-grid", sizing_mode="stretch_width", height=40
        )
        self.held_out_note = pn.pane.Markdown(
            "The policy's molecules appear here after the run's first held-out evaluation.",
            css_classes=["elign-held-out-note"],
        )
        session.param.watch(self._held_out, ["held_out", "held_out_step"])

    def _held_out(self, *_) -> None:
        session = self.session
        self.held_out.molecules = session.held_out
        self.held_out.height = CELL_PX + 10 if session.held_out else 40
        self.held_out_note.object = (
            f"The first {len(session.held_out)} molecules of the held-out evaluation at iteration "
            f"{session.held_out_step}: fresh samples of the policy on seeds no iteration trains on."
            if session.held_out
            else "The policy's molecules appear here after the run's first held-out evaluation."
        )

    def _progress(self) -> None:  # one pane whose text changes: no re-layout of the page
        session = self.session
        if not session.run_name:
            self.progress.object = "No run yet."
        elif session.run_state == "starting":  # the trainer is loading the model and force field
            self.progress.object = f"**{session.run_name}** (starting): loading the model and force field..."
        else:
            last = session.history[-1] if session.history else {}
            vals = ", ".join(f"{LABELS[k]} {last[k]:.3g}" for k in METRIC_KEYS if k in last)
            self.progress.object = (
                f"**{session.run_name}** ({session.run_state}): {len(session.history)} iterations received. {vals}"
            )

    def _stream(self, *_) -> None:
        session = self.session
        if self._streamed_run != session.run_name:
            self.buffer.clear()
            self._streamed_rows, self._streamed_run = 0, session.run_name
        # at most one redraw per second while training (fast iterations would keep the browser busy);
        # everything left is flushed when training ends
        now = time.monotonic()
        if session.training and now - self._sent_at < MIN_REDRAW_S:
            return
        self._progress()
        rows = session.history[self._streamed_rows :]
        if rows:
            df = pd.DataFrame(rows).reindex(columns=["step", *METRIC_KEYS])
            self.buffer.send(df.astype(float))
            self._streamed_rows += len(rows)
            self._sent_at = now

    def _buttons(self, *_) -> None:
        training = self.session.training
        self.start.disabled = training
        self.resume.disabled = training or not self.session.run_name
        self.stop.disabled = self.session.run_state not in ("starting", "running")

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown(
                "### Alignment (FED-GRPO)\nTraining runs in a background thread; stop writes a "
                "checkpoint and resume continues the same run."
            ),
            pn.Row(
                pn.Column(self.align_model, self.settings, pn.Row(self.start, self.stop, self.resume), width=330),
                pn.Column(
                    self.progress,
                    pn.pane.HoloViews(self.reward, sizing_mode="stretch_width", linked_axes=False),
                    pn.GridBox(  # two a row: each plot wide enough for its title and legend
                        pn.pane.HoloViews(self.kl, sizing_mode="stretch_width", linked_axes=False),
                        pn.pane.HoloViews(self.clip, sizing_mode="stretch_width", linked_axes=False),
                        pn.pane.HoloViews(self.stab, sizing_mode="stretch_width", linked_axes=False),
                        pn.pane.HoloViews(self.composition, sizing_mode="stretch_width", linked_axes=False),
                        ncols=2,
                        sizing_mode="stretch_width",
                    ),
                    pn.Card(
                        self.held_out_note,
                        self.held_out,
                        title="The policy's molecules (held-out evaluation)",
                        sizing_mode="stretch_width",
                        css_classes=["elign-held-out"],
                    ),
                    sizing_mode="stretch_width",
                ),
                sizing_mode="stretch_width",
            ),
            sizing_mode="stretch_width",
        )
