"""create_app(): the studio layout for one session (served by ``panel serve elign_studio`` or in Jupyter)."""

from __future__ import annotations

from typing import Any

import holoviews as hv
import panel as pn

from elign.runtime import tune_malloc
from elign_studio.notebook import in_notebook, load_resources
from elign_studio.session import StudioSession
from elign_studio.settings import StudioSettings
from elign_studio.views.checkpoints import CheckpointView
from elign_studio.views.grid import GridView
from elign_studio.views.messages import Messages
from elign_studio.views.molecules import MoleculeTable
from elign_studio.views.training import TrainingView
from elign_studio.views.trajectory import TrajectoryView

__all__ = ["create_app"]

POLL_MS = 300


def create_app(
    session: StudioSession | None = None, settings: StudioSettings | None = None, **session_kwargs: Any
) -> pn.viewable.Viewable:
    """Build the studio for one browser session (or one notebook cell).

    Background work reports through a periodic callback; the session's training thread is stopped
    (with a checkpoint) when the browser session ends.
    """
    tune_malloc()  # the network's pair tensors reuse freed memory (elign.runtime)
    served = pn.state.curdoc is not None and pn.state.curdoc.session_context is not None
    if served or not in_notebook():
        pn.extension("tabulator", notifications=False)
        hv.extension("bokeh", logo=False)
    else:  # Jupyter: one inline bundle, so the cell renders offline (elign_studio.notebook)
        load_resources()
    session = session or StudioSession(settings=settings, **session_kwargs)
    layout = pn.Column(
        pn.pane.Markdown("## Elign Studio\nEDM molecules aligned to machine-learning force fields (FED-GRPO)."),
        Messages(session=session),
        pn.Tabs(
            (
                "Trajectories",
                pn.Column(TrajectoryView(session=session), MoleculeTable(session=session), GridView(session=session)),
            ),
            ("Alignment", TrainingView(session=session)),
            ("Checkpoints", CheckpointView(session=session)),
            dynamic=False,
            sizing_mode="stretch_width",
        ),
        sizing_mode="stretch_width",
    )
    layout.session = session  # for notebooks and tests: the state behind the view

    def _start_polling(*_: Any) -> None:
        pn.state.add_periodic_callback(session.poll, period=POLL_MS)
        pn.state.add_periodic_callback(session.warm_up, period=1500, count=1)  # after the first render

    if served:
        pn.state.onload(_start_polling)
        pn.state.on_session_destroyed(lambda _ctx: session.close())
    else:  # notebook: poll once the layout is displayed
        pn.state.add_periodic_callback(session.poll, period=POLL_MS)
        session.warm_up()
    return layout
