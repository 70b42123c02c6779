"""Alignment: preset and settings, start / stop (pause) / resume, live HoloViews curves per channel."""

from __future__ import annotations

import time

import holoviews as hv
import pandas as pd
import panel as pn
from holoviews.streams import Buffer

from elign_studio.session import METRIC_KEYS, StudioSession
from elign_studio.views.inputs import bounded_int_input

__all__ = ["training_view"]

LABELS = {
    "reward_force_mean": "reward (force)",
    "reward_energy_mean": "reward (energy)",
    "kl": "KL to reference",
    "clip_fraction": "clip fraction",
    "rollout_molecule_stability": "molecule stability",
}


MIN_REDRAW_S = 1.0


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"step": pd.Series(dtype=float), **{k: pd.Series(dtype=float) for k in METRIC_KEYS}})


def training_view(session: StudioSession) -> pn.viewable.Viewable:
    buffer = Buffer(_empty(), length=100_000, index=False)
    streamed = {"n": 0, "run": "", "sent": 0.0}

    def curves(data: pd.DataFrame, keys: tuple[str, ...], title: str, ylabel: str) -> hv.Overlay:
        items = [hv.Curve(data, "step", (k, ylabel), label=LABELS[k]).opts(tools=["hover"]) for k in keys]
        items += [hv.Scatter(data, "step", (k, ylabel)).opts(size=4) for k in keys]
        return hv.Overlay(items).opts(title=title, responsive=True, height=220, legend_position="bottom_left")

    opts = dict(streams=[buffer])
    reward = hv.DynamicMap(lambda data: curves(data, METRIC_KEYS[:2], "Rewards per channel", "reward"), **opts)
    kl = hv.DynamicMap(lambda data: curves(data, ("kl",), "KL", "KL"), **opts)
    clip = hv.DynamicMap(lambda data: curves(data, ("clip_fraction",), "Clip fraction", "fraction"), **opts)
    stab = hv.DynamicMap(lambda data: curves(data, ("rollout_molecule_stability",), "Stability", "fraction"), **opts)

    progress = pn.pane.Markdown("No run yet.", css_classes=["elign-train-state"])

    def _progress() -> None:  # one pane whose text changes: no re-layout of the page
        if not session.run_name:
            progress.object = "No run yet."
            return
        last = session.history[-1] if session.history else {}
        vals = ", ".join(f"{LABELS[k]} {last[k]:.3g}" for k in METRIC_KEYS if k in last)
        state = "running" if session.training else "stopped"
        if session.training and not session.history:  # the trainer is loading the model and force field
            progress.object = f"**{session.run_name}** (starting): loading the model and force field..."
            return
        progress.object = f"**{session.run_name}** ({state}): {len(session.history)} iterations received. {vals}"

    def _stream(*events) -> None:
        if streamed["run"] != session.run_name:
            buffer.clear()
            streamed.update(n=0, run=session.run_name)
        # at most one redraw per second while training (fast iterations would keep the browser busy);
        # everything left is flushed when training ends
        now = time.monotonic()
        if session.training and now - streamed["sent"] < MIN_REDRAW_S:
            return
        _progress()
        rows = session.history[streamed["n"] :]
        if rows:
            df = pd.DataFrame(rows).reindex(columns=["step", *METRIC_KEYS])
            buffer.send(df.astype(float))
            streamed["n"] += len(rows)
            streamed["sent"] = now

    session.param.watch(_stream, ["step", "run_name", "training"])

    align_model = pn.widgets.Select(
        name="Model to align", options=session.model_names, value=session.align_model or None
    )
    session.param.watch(lambda e: setattr(align_model, "options", e.new), "model_names")
    align_model.param.watch(lambda e: setattr(session, "align_model", e.new or ""), "value")
    settings = pn.Column(
        pn.widgets.Select.from_param(session.param.preset),
        *(bounded_int_input(session, k) for k in ("iterations", "prompts", "group_size", "steps")),
        pn.widgets.FloatInput.from_param(session.param.lr, format="0.0000000", step=1e-6),
    )
    start = pn.widgets.Button(name="Start new run", button_type="success")
    stop = pn.widgets.Button(name="Stop / pause", button_type="warning")
    resume = pn.widgets.Button(name="Resume", button_type="primary")
    start.on_click(lambda _: session.start_alignment(resume=False))
    stop.on_click(lambda _: session.stop_alignment())
    resume.on_click(lambda _: session.start_alignment(resume=True))

    def _buttons(*_) -> None:
        start.disabled = session.training
        resume.disabled = session.training or not session.run_name
        stop.disabled = not session.training

    session.param.watch(_buttons, ["training", "run_name"])
    _buttons()

    return pn.Column(
        pn.pane.Markdown(
            "### Alignment (FED-GRPO)\nTraining runs in a background thread; stop writes a "
            "checkpoint and resume continues the same run."
        ),
        pn.Row(
            pn.Column(align_model, settings, pn.Row(start, stop, resume), width=330),
            pn.Column(
                progress,
                pn.pane.HoloViews(reward, sizing_mode="stretch_width"),
                pn.Row(
                    pn.pane.HoloViews(kl, sizing_mode="stretch_width"),
                    pn.pane.HoloViews(clip, sizing_mode="stretch_width"),
                    pn.pane.HoloViews(stab, sizing_mode="stretch_width"),
                    sizing_mode="stretch_width",
                ),
                sizing_mode="stretch_width",
            ),
            sizing_mode="stretch_width",
        ),
        sizing_mode="stretch_width",
    )
