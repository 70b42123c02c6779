"""Trajectories: sample, step through the denoising chain (slider + player), side by side, linked plots."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn

from elign_studio.session import StudioSession
from elign_studio.views.viewer import MoleculeViewer

__all__ = ["trajectory_view"]


def _fmax(sets: list, b: int) -> float:
    vals = [v for s in sets if b < len(s.frames) for fr in s.frames[b] for v in fr["force"] if v is not None]
    if not vals:
        return 1.0
    return float(max(1e-3, np.percentile(vals, 95)))


def trajectory_view(session: StudioSession) -> pn.viewable.Viewable:
    model = pn.widgets.Select(name="Model", options=session.model_names, value=session.sample_model or None)
    other = pn.widgets.Select(
        name="Compare with", options=session.model_names, value=session.compare_model or None
    )

    def _options(e) -> None:
        model.options = e.new
        other.options = e.new

    session.param.watch(_options, "model_names")
    model.param.watch(lambda e: setattr(session, "sample_model", e.new or ""), "value")
    other.param.watch(lambda e: setattr(session, "compare_model", e.new or ""), "value")
    params = pn.Param(
        session.param,
        parameters=["side_by_side", "seed", "num", "sample_steps", "n_atoms"],
        show_name=False,
        widgets={
            "seed": pn.widgets.IntInput,
            "num": pn.widgets.IntInput,
            "sample_steps": pn.widgets.IntInput,
            "n_atoms": pn.widgets.IntInput,
        },
    )
    go = pn.widgets.Button(name="Sample", button_type="primary", css_classes=["elign-sample"])
    go.on_click(lambda _: session.sample())
    session.param.watch(lambda e: setattr(go, "loading", e.new), "sampling")
    color = pn.widgets.RadioButtonGroup(options=["force", "element"], value="force", name="Colour atoms by")

    slider = pn.widgets.IntSlider(name="Frame", start=0, end=1, value=0, sizing_mode="stretch_width")
    player = pn.widgets.Player(
        start=0,
        end=1,
        value=0,
        interval=120,
        loop_policy="once",
        show_loop_controls=False,
        width=420,
        show_value=False,
        visible_buttons=["first", "previous", "pause", "play", "next", "last"],
    )
    slider.link(player, value="value", bidirectional=True)
    slider.param.watch(lambda e: setattr(session, "frame", e.new), "value")

    viewers = [
        MoleculeViewer(label="", sizing_mode="stretch_width", height=400),
        MoleculeViewer(label="", sizing_mode="stretch_width", height=400, visible=False),
    ]
    color.param.watch(lambda e: [setattr(v, "color_by", e.new) for v in viewers], "value")

    def _show(*_) -> None:
        sets, b = session.sets, session.selected
        if not sets:
            return
        fmax = _fmax(sets, b)
        n_frames = sets[0].num_frames
        for k, v in enumerate(viewers):
            if k < len(sets) and b < len(sets[k].frames):
                v.param.update(
                    frames=sets[k].frames[b],
                    frame=min(session.frame, n_frames - 1),
                    fmax=fmax,
                    label=f"{sets[k].model_name} #{b}",
                    visible=True,
                )
            else:
                v.visible = k == 0
        slider.param.update(end=max(1, n_frames - 1), value=min(session.frame, n_frames - 1))
        player.end = max(1, n_frames - 1)

    session.param.watch(_show, ["sets", "selected"])

    def _frame(e) -> None:
        slider.value = e.new
        for v in viewers:
            if v.visible:
                v.frame = e.new

    session.param.watch(_frame, "frame")

    def _plot(frame: int, sets: list, b: int):
        opts = dict(responsive=True, height=220, tools=["hover"], show_grid=True)
        if not sets:
            return hv.Curve([], "frame", "eV/atom").opts(
                title="Energy and RMS force along the trajectory", **opts
            )
        curves_e, curves_f = [], []
        for s in sets:
            if b >= s.energy.shape[0]:
                continue
            x = np.arange(s.num_frames)
            curves_e.append(
                hv.Curve((x, s.energy[b]), "frame", "formation energy (eV/atom)", label=s.model_name)
            )
            curves_f.append(hv.Curve((x, s.rms_force[b]), "frame", "RMS force (eV/Å)", label=s.model_name))
        t = sets[0].times[min(frame, sets[0].num_frames - 1)]
        line = hv.VLine(frame).opts(color="red", line_dash="dashed")
        title_e = f"Energy along the chain (frame {frame}, t = {t})"
        e = (hv.Overlay(curves_e) * line).opts(title=title_e, **opts)
        f = (hv.Overlay(curves_f) * line).opts(title="RMS force along the chain", **opts)
        return (e + f).cols(2)

    plot = pn.pane.HoloViews(
        pn.bind(_plot, session.param.frame, session.param.sets, session.param.selected),
        sizing_mode="stretch_width",
    )

    @pn.depends(session.param.sets)
    def note(sets: list) -> pn.pane.Markdown:
        if not sets:
            return pn.pane.Markdown("Sample a molecule to see its denoising trajectory.")
        return pn.pane.Markdown(
            f"Atoms coloured by per-atom |F| from **{sets[0].force_field}** "
            f"(grey: frame not scorable); bonds recomputed on every frame."
        )

    def _side(*_) -> None:
        other.visible = session.side_by_side

    session.param.watch(_side, "side_by_side")
    _side()
    return pn.Column(
        pn.pane.Markdown("### Trajectories"),
        pn.Row(
            pn.Column(model, other, params, color, go, width=300),
            pn.Column(
                note,
                pn.Row(*viewers, sizing_mode="stretch_width"),
                pn.Row(player, slider, sizing_mode="stretch_width"),
                plot,
                sizing_mode="stretch_width",
            ),
            sizing_mode="stretch_width",
        ),
        sizing_mode="stretch_width",
    )
