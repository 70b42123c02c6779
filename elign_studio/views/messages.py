"""The session's status line and error banner."""

from __future__ import annotations

import panel as pn
import param
from panel.viewable import Viewer

from elign_studio.session import StudioSession

__all__ = ["Messages"]


class Messages(Viewer):
    """``session.status`` as an info line and ``session.error`` as a banner, each hidden while empty."""

    session = param.ClassSelector(class_=StudioSession, doc="the state this view shows")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.status = pn.pane.Alert(
            "", alert_type="info", visible=False, sizing_mode="stretch_width", css_classes=["elign-status"]
        )
        self.error = pn.pane.Alert(
            "", alert_type="danger", visible=False, sizing_mode="stretch_width", css_classes=["elign-error"]
        )
        self.session.param.watch(self._update, ["status", "error"])
        self._update()

    def _update(self, *_) -> None:
        session = self.session
        self.status.param.update(object=session.status, visible=bool(session.status))
        self.error.param.update(object=session.error.replace("\n", "  \n"), visible=bool(session.error))

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(self.status, self.error, sizing_mode="stretch_width")
