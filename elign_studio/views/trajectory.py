"""Trajectories: sample, step through the denoising chain (one player with its slider and keys), side by side with
linked cameras, plots."""

from __future__ import annotations

import io
import math
import uuid

import numpy as np
import panel as pn
import param
from panel.viewable import Viewer

from elign_studio.session import StudioSession
from elign_studio.views.chain_plots import ChainPlots
from elign_studio.views.downloads import exported_file
from elign_studio.views.frame_keys import KeyedPlayer
from elign_studio.views.inputs import bounded_int_input
from elign_studio.views.viewer import MoleculeViewer

__all__ = ["TrajectoryView", "chain_force_top"]

SCALES = {"per frame": "frame", "fixed": "fixed", "whole chain": "chain"}  # button label -> viewer scale


FORMED_SHARE = 0.25  # "whole chain" colours by the last quarter of the chain: the molecule, not the noise


def chain_force_top(sets: list, b: int) -> float:
    """One colour-bar top for the whole chain of molecule ``b`` in all sets (side by side, one bar): the 95th
    percentile of |F| (eV/A) over the scored frames of the chain's last quarter, where the molecule has formed;
    the early frames' forces (10^4 eV/A on noise) saturate at the top instead of flattening the final molecule to
    one colour (1 if nothing is scored)."""
    vals = []
    for s in sets:
        if b < len(s.frames):
            frames = s.frames[b]
            start = min(len(frames) - 1, int(math.ceil((1 - FORMED_SHARE) * len(frames))))
            vals += [v for fr in frames[start:] for v in fr["force"] if v is not None]
    if not vals:
        return 1.0
    return float(max(1e-3, np.percentile(vals, 95)))


class TrajectoryView(Viewer):
    """Sampling controls, one or two 3D viewers driven by one player, the chain plots and the XYZ export."""

    session = param.ClassSelector(class_=StudioSession, doc="the state this view shows and edits")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self._sampling_controls()
        self._display_controls()
        self._player_and_viewers()
        self.plots = ChainPlots()
        self.plots.follow(self.player)
        self._wire()

    def _sampling_controls(self) -> None:
        """Which models, the sampling parameters, Sample, and opening a file."""
        session = self.session
        self.model = pn.widgets.Select.from_param(session.param.sample_model, name="Model", width=270)
        self.other = pn.widgets.Select.from_param(
            session.param.compare_model, name="Compare with", width=270, visible=session.param.side_by_side
        )
        self.params = pn.Column(  # inside the 300-pixel control column, none clipped at its edge
            pn.widgets.Checkbox.from_param(session.param.side_by_side, css_classes=["elign-side-by-side"]),
            *(bounded_int_input(session, k, width=260) for k in ("seed", "num", "sample_steps", "n_atoms")),
            pn.widgets.TextInput.from_param(session.param.formula, width=260, placeholder="e.g. C7H10O2"),
            width=280,
        )
        self.go = pn.widgets.Button(
            name="Sample", button_type="primary", css_classes=["elign-sample"], loading=session.param.sampling
        )
        self.go.on_click(lambda _: session.sample())
        self.open = pn.widgets.FileInput(accept=".sdf,.sd,.mol,.npz,.xyz", css_classes=["elign-open"], width=260)
        self.open.param.watch(self._open, "value")

    def _display_controls(self) -> None:
        """How the molecules are drawn: colours, force range, arrows, hydrogens, labels, style, speed."""
        self.color = pn.widgets.RadioButtonGroup(options=["force", "element"], value="force", name="Colour atoms by")
        self.scale = pn.widgets.RadioButtonGroup(
            options=list(SCALES), value="per frame", name="Force colour range", css_classes=["elign-force-scale"]
        )
        self.fixed_top = pn.widgets.FloatInput(
            name="Fixed range top (eV/Å)",
            value=5.0,
            start=0.01,
            step=0.5,
            width=140,
            visible=self.scale.param.value.rx() == "fixed",
        )
        self.window = pn.widgets.IntSlider(name="Plots from frame", start=0, end=1, value=0, width=280)
        self.arrows = pn.widgets.Checkbox(name="Force arrows", value=False, css_classes=["elign-arrows"])
        self.hide_h = pn.widgets.Checkbox(name="Hide hydrogens", value=False, css_classes=["elign-hide-h"])
        self.atom_labels = pn.widgets.RadioButtonGroup(
            options=["none", "element", "index"], value="none", name="Atom labels", css_classes=["elign-labels"]
        )
        self.style = pn.widgets.Select(
            name="Representation", options=["ball and stick", "stick", "spacefill"], value="ball and stick", width=270
        )
        self.link_cameras = pn.widgets.Checkbox(
            name="Link cameras", value=True, css_classes=["elign-link-cameras"], visible=self.session.param.side_by_side
        )
        self.speed = pn.widgets.IntInput(  # a number box: the player's slider stays the one slider for frames
            name="Playback: ms per frame", start=20, end=2000, step=20, value=120, width=260
        )

    def _player_and_viewers(self) -> None:
        """The frame player (with its readout and keys), the two viewers it drives, and the trajectory download."""
        group = f"trajectory-{uuid.uuid4().hex}"  # this view's viewers: linked cameras, keys for its player
        self.player = pn.widgets.Player(  # its own slider is the one frame control
            name="",  # the readout above names the frame
            start=0,
            end=1,
            value=0,
            interval=120,
            loop_policy="once",
            show_loop_controls=False,
            sizing_mode="stretch_width",
            show_value=False,  # its own readout lagged behind server updates: the text below follows in the browser
            visible_buttons=["first", "previous", "pause", "play", "next", "last"],
        )
        self.frame_readout = pn.widgets.StaticText(name="Frame", value="0", css_classes=["elign-frame-readout"])
        self.player.jslink(self.frame_readout, value="value")  # the page writes the frame into the readout's text
        self.keyed_player = KeyedPlayer(player=self.player, group=group, sizing_mode="stretch_width")
        self.viewers = [
            MoleculeViewer(label="", group=group, sizing_mode="stretch_width", height=400),
            MoleculeViewer(label="", group=group, sizing_mode="stretch_width", height=400, visible=False),
        ]
        for v in self.viewers:  # the browser moves the viewers with the player; the server need not answer each frame
            self.player.jslink(v, value="frame")
        self.xyz = pn.widgets.FileDownload(
            callback=self._trajectory_file,
            filename="trajectory.xyz",
            label="Trajectory (XYZ)",
            css_classes=["elign-trajectory-download"],
            width=160,
        )

    def _wire(self) -> None:
        """The session drives the viewers, player and plots; the display controls drive both viewers."""
        session = self.session
        session.param.watch(self._show, ["sets", "selected"])
        session.param.watch(self._frame, "frame")
        session.param.watch(self._plot, ["sets", "selected"])
        self.player.link(session, value="frame")
        display = ((self.color, "color_by"), (self.arrows, "arrows"), (self.hide_h, "hide_h"))
        display += ((self.atom_labels, "atom_labels"), (self.style, "style"), (self.link_cameras, "link_cameras"))
        for widget, shown in display:  # each display control sets its MoleculeViewer param on both viewers
            for v in self.viewers:
                widget.link(v, value=shown)
        self.speed.link(self.player, value="interval")
        self.scale.param.watch(self._force_range, "value")
        self.fixed_top.param.watch(self._force_range, "value")
        self.window.param.watch(self._plot, "value")

    def _open(self, event) -> None:
        if event.new:
            self.session.open_molecules(self.open.filename or "molecules.sdf", event.new)

    def _top(self) -> tuple[str, float]:
        """-> (viewer scale mode, top of the force colour range in eV/A)"""
        mode = SCALES[self.scale.value]
        top = self.fixed_top.value if mode == "fixed" else chain_force_top(self.session.sets, self.session.selected)
        return mode, top

    def _force_range(self, *_) -> None:
        mode, top = self._top()
        for v in self.viewers:
            v.param.update(scale=mode, fmax=top)

    def _show(self, *_) -> None:
        sets, b, frame = self.session.sets, self.session.selected, self.session.frame
        if not sets:
            return
        mode, fmax = self._top()
        n_frames = sets[0].num_frames
        for k, v in enumerate(self.viewers):
            if k < len(sets) and b < len(sets[k].frames):
                v.param.update(
                    frames=sets[k].frames[b],
                    frame=min(frame, n_frames - 1),
                    fmax=fmax,
                    scale=mode,
                    label=f"{sets[k].model_name} #{b}",
                    visible=True,
                )
            else:
                v.visible = k == 0
        self.player.param.update(end=max(1, n_frames - 1), value=min(frame, n_frames - 1))
        self.frame_readout.value = str(min(frame, n_frames - 1))
        self.window.param.update(end=max(1, n_frames - 2), value=min(self.window.value, max(0, n_frames - 2)))

    def _frame(self, event) -> None:
        if self.player.value == event.new:  # the player moved (its buttons, keys): the page has moved the viewers
            return  # (the server's answer to an earlier frame, arriving late, would move them back)
        self.player.value = event.new
        self.frame_readout.value = str(event.new)
        for v in self.viewers:
            if v.visible:
                v.frame = event.new

    def _plot(self, *_) -> None:
        self.plots.show(self.session.sets, self.session.selected, self.window.value, self.session.frame)

    def _trajectory_file(self) -> io.BytesIO | None:
        return exported_file(self.session, self.xyz, self.session.export_trajectory)

    @param.depends("session.sets")
    def _note(self) -> pn.pane.Markdown:
        sets = self.session.sets
        if not sets:
            return pn.pane.Markdown("Sample a molecule to see its denoising trajectory.")
        return pn.pane.Markdown(
            f"Atoms coloured by per-atom |F| from **{sets[0].force_field}** "
            f"(grey: frame not scorable); bonds recomputed on every frame."
        )

    def __panel__(self) -> pn.viewable.Viewable:
        controls = [self.model, self.other, self.params, self.color, self.scale, self.fixed_top, self.arrows, self.go]
        controls += [pn.pane.Markdown("or open your own (.sdf, .npz, .xyz):", margin=(0, 5)), self.open]
        controls += [self.style, self.atom_labels, self.hide_h, self.link_cameras, self.speed]
        return pn.Column(
            pn.pane.Markdown("### Trajectories"),
            pn.Row(
                pn.Column(*controls, width=300),
                pn.Column(
                    self._note,
                    pn.Row(*self.viewers, sizing_mode="stretch_width"),
                    self.frame_readout,
                    self.keyed_player,
                    pn.Row(self.window, self.xyz),
                    self.plots.panel,
                    sizing_mode="stretch_width",
                ),
                sizing_mode="stretch_width",
            ),
            sizing_mode="stretch_width",
        )
