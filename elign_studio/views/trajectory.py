"""Trajectories: sample, step through the denoising chain (one player with its slider), side by side, plots."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn

from elign_studio.session import StudioSession
from elign_studio.views.viewer import MoleculeViewer

__all__ = ["trajectory_view", "chain_force_top", "chain_series"]

SCALES = {"per frame": "frame", "fixed": "fixed", "whole chain": "chain"}  # button label -> viewer scale


def chain_force_top(sets: list, b: int) -> float:
    """The 95th percentile of |F| (eV/A) over every scored frame of molecule ``b`` in all sets (1 if none)."""
    vals = [v for s in sets if b < len(s.frames) for fr in s.frames[b] for v in fr["force"] if v is not None]
    if not vals:
        return 1.0
    return float(max(1e-3, np.percentile(vals, 95)))


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
    params = pn.Param(
        session.param,
        parameters=["side_by_side", "seed", "num", "sample_steps", "n_atoms"],
        show_name=False,
        widgets={k: {"type": pn.widgets.IntInput, "width": 260} for k in ("seed", "num", "sample_steps", "n_atoms")},
        width=280,  # inside the 300-pixel control column, none clipped at its edge
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
    color.param.watch(lambda e: [setattr(v, "color_by", e.new) for v in viewers], "value")

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

    def _plot(frame: int, sets: list, b: int, first: int):
        opts = dict(responsive=True, height=240, tools=["hover"], show_grid=True)
        if not sets:
            return hv.Curve([], "frame", "eV/atom").opts(title="Energy and RMS force along the chain", **opts)
        curves_e, curves_f, unscored = [], [], 0
        for s in sets:
            if b >= s.energy.shape[0]:
                continue
            d = chain_series(s, b, min(first, s.num_frames - 1))
            unscored = max(unscored, d["unscored"])
            curves_e.append(
                hv.Curve((d["frame"], d["energy"]), "frame", "formation energy (eV/atom)", label=s.model_name).opts(
                    line_width=2
                )
            )
            curves_f.append(
                hv.Curve((d["frame_f"], d["rms_force"]), "frame", "RMS force (eV/Å, log)", label=s.model_name).opts(
                    line_width=2
                )
            )
        t = sets[0].times[min(frame, sets[0].num_frames - 1)]
        line = hv.VLine(frame).opts(color="red", line_dash="dashed")
        gaps = f"; {unscored} unscored frames left out" if unscored else ""
        title_e = f"Energy from frame {first} (frame {frame}, t = {t}{gaps})"
        opts["legend_position"] = "bottom"  # below the axes, never over the data
        e = (hv.Overlay(curves_e) * line).opts(title=title_e, **opts)
        f = (hv.Overlay(curves_f) * line).opts(title=f"RMS force from frame {first}, log axis", logy=True, **opts)
        return (e + f).cols(2)

    plot = pn.pane.HoloViews(
        pn.bind(_plot, session.param.frame, session.param.sets, session.param.selected, window.param.value),
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
            pn.Column(model, other, params, color, scale, fixed_top, go, width=300),
            pn.Column(
                note,
                pn.Row(*viewers, sizing_mode="stretch_width"),
                player,
                window,
                plot,
                sizing_mode="stretch_width",
            ),
            sizing_mode="stretch_width",
        ),
        sizing_mode="stretch_width",
    )
