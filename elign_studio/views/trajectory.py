"""Trajectories: sample, step through the denoising chain (one player with its slider), side by side, plots."""

from __future__ import annotations

import io

import numpy as np
import panel as pn

from elign_studio.session import StudioSession
from elign_studio.views.chain_plots import ChainPlots
from elign_studio.views.inputs import bounded_int_input
from elign_studio.views.viewer import MoleculeViewer

__all__ = ["trajectory_view", "chain_force_top"]

SCALES = {"per frame": "frame", "fixed": "fixed", "whole chain": "chain"}  # button label -> viewer scale


def chain_force_top(sets: list, b: int) -> float:
    """The 95th percentile of |F| (eV/A) over every scored frame of molecule ``b`` in all sets (1 if none)."""
    vals = [v for s in sets if b < len(s.frames) for fr in s.frames[b] for v in fr["force"] if v is not None]
    if not vals:
        return 1.0
    return float(max(1e-3, np.percentile(vals, 95)))


def trajectory_view(session: StudioSession) -> pn.viewable.Viewable:
    model = pn.widgets.Select(name="Model", options=session.model_names, value=session.sample_model or None, width=270)
    other = pn.widgets.Select(
        name="Compare with", options=session.model_names, value=session.compare_model or None, width=270
    )

    def _options(e) -> None:
        model.options = e.new
        other.options = e.new

    session.param.watch(_options, "model_names")
    model.param.watch(lambda e: setattr(session, "sample_model", e.new or ""), "value")
    other.param.watch(lambda e: setattr(session, "compare_model", e.new or ""), "value")
    params = pn.Column(  # inside the 300-pixel control column, none clipped at its edge
        pn.widgets.Checkbox.from_param(session.param.side_by_side),
        *(bounded_int_input(session, k, width=260) for k in ("seed", "num", "sample_steps", "n_atoms")),
        width=280,
    )
    go = pn.widgets.Button(name="Sample", button_type="primary", css_classes=["elign-sample"])
    go.on_click(lambda _: session.sample())
    session.param.watch(lambda e: setattr(go, "loading", e.new), "sampling")
    color = pn.widgets.RadioButtonGroup(options=["force", "element"], value="force", name="Colour atoms by")
    scale = pn.widgets.RadioButtonGroup(
        options=list(SCALES), value="per frame", name="Force colour range", css_classes=["elign-force-scale"]
    )
    fixed_top = pn.widgets.FloatInput(
        name="Fixed range top (eV/Å)", value=5.0, start=0.01, step=0.5, width=140, visible=False
    )
    window = pn.widgets.IntSlider(name="Plots from frame", start=0, end=1, value=0, width=280)

    player = pn.widgets.Player(  # its own slider is the one frame control
        name="Frame",
        start=0,
        end=1,
        value=0,
        interval=120,
        loop_policy="once",
        show_loop_controls=False,
        sizing_mode="stretch_width",
        show_value=True,
        visible_buttons=["first", "previous", "pause", "play", "next", "last"],
    )
    player.param.watch(lambda e: setattr(session, "frame", e.new), "value")

    viewers = [
        MoleculeViewer(label="", sizing_mode="stretch_width", height=400),
        MoleculeViewer(label="", sizing_mode="stretch_width", height=400, visible=False),
    ]
    for v in viewers:  # the browser moves the viewers with the player; the server need not answer each frame
        player.jslink(v, value="frame")
    color.param.watch(lambda e: [setattr(v, "color_by", e.new) for v in viewers], "value")
    arrows = pn.widgets.Checkbox(name="Force arrows", value=False, css_classes=["elign-arrows"])
    arrows.param.watch(lambda e: [setattr(v, "arrows", e.new) for v in viewers], "value")

    def _force_range(*_) -> None:
        mode = SCALES[scale.value]
        fixed_top.visible = mode == "fixed"
        top = fixed_top.value if mode == "fixed" else chain_force_top(session.sets, session.selected)
        for v in viewers:
            v.param.update(scale=mode, fmax=top)

    scale.param.watch(_force_range, "value")
    fixed_top.param.watch(_force_range, "value")

    def _show(*_) -> None:
        sets, b = session.sets, session.selected
        if not sets:
            return
        mode = SCALES[scale.value]
        fmax = fixed_top.value if mode == "fixed" else chain_force_top(sets, b)
        n_frames = sets[0].num_frames
        for k, v in enumerate(viewers):
            if k < len(sets) and b < len(sets[k].frames):
                v.param.update(
                    frames=sets[k].frames[b],
                    frame=min(session.frame, n_frames - 1),
                    fmax=fmax,
                    scale=mode,
                    label=f"{sets[k].model_name} #{b}",
                    visible=True,
                )
            else:
                v.visible = k == 0
        player.param.update(end=max(1, n_frames - 1), value=min(session.frame, n_frames - 1))
        window.param.update(end=max(1, n_frames - 2), value=min(window.value, max(0, n_frames - 2)))

    session.param.watch(_show, ["sets", "selected"])

    def _frame(e) -> None:
        player.value = e.new
        for v in viewers:
            if v.visible:
                v.frame = e.new

    session.param.watch(_frame, "frame")

    def _trajectory_file():
        try:
            path = session.export_trajectory()
        except (ValueError, OSError) as e:
            session.error = f"Export failed: {e}"
            return None
        xyz.filename = path.name
        session.status = f"Exported {path}"
        return io.BytesIO(path.read_bytes())

    xyz = pn.widgets.FileDownload(
        callback=_trajectory_file,
        filename="trajectory.xyz",
        label="Trajectory (XYZ)",
        css_classes=["elign-trajectory-download"],
        width=160,
    )

    plots = ChainPlots()
    plots.follow(player)

    def _plot(*_) -> None:
        plots.show(session.sets, session.selected, window.value, session.frame)

    session.param.watch(_plot, ["sets", "selected"])
    window.param.watch(_plot, "value")

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
            pn.Column(model, other, params, color, scale, fixed_top, arrows, go, width=300),
            pn.Column(
                note,
                pn.Row(*viewers, sizing_mode="stretch_width"),
                player,
                pn.Row(window, xyz),
                plots.panel,
                sizing_mode="stretch_width",
            ),
            sizing_mode="stretch_width",
        ),
        sizing_mode="stretch_width",
    )
