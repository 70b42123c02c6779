"""Checkpoint choice: shipped models, a path, an upload; the force field used for scoring."""

from __future__ import annotations

import panel as pn
import param
from panel.viewable import Viewer

from elign_studio.serving import MAX_UPLOAD_MB
from elign_studio.session import StudioSession

__all__ = ["CheckpointView"]


class CheckpointView(Viewer):
    """Load a checkpoint by path or upload, list the models, choose the force field that scores samples."""

    session = param.ClassSelector(class_=StudioSession, doc="the state this view shows and edits")

    def __init__(self, **params) -> None:
        super().__init__(**params)
        session = self.session
        self.path = pn.widgets.TextInput(
            name="Checkpoint path (.safetensors file or original EDM run folder)",
            placeholder=str(session.settings.data_dir / "my-model.safetensors"),
            sizing_mode="stretch_width",
        )
        self.load = pn.widgets.Button(name="Load path", button_type="primary", width=120)
        self.upload = pn.widgets.FileInput(accept=".safetensors", name="Upload", css_classes=["elign-upload"])
        self.force_field = pn.widgets.Select.from_param(session.param.force_field, name="Force field for scoring")
        self.load.on_click(self._load)
        self.upload.param.watch(self._upload, "value")

    def _load(self, *_) -> None:
        if self.path.value.strip():
            self.session.add_checkpoint(self.path.value)

    def _upload(self, *_) -> None:
        if self.upload.value:
            self.session.add_upload(self.upload.filename or "upload.safetensors", self.upload.value)

    @param.depends("session.model_names")
    def _listing(self) -> pn.pane.Markdown:
        names = self.session.model_names
        if not names:
            return pn.pane.Markdown("*No model loaded yet.*")
        lines = [f"- **{n}**: `{self.session.models[n]}`" for n in names]
        return pn.pane.Markdown("Models available:\n\n" + "\n".join(lines))

    def __panel__(self) -> pn.viewable.Viewable:
        settings = self.session.settings
        roots = ", ".join(f"`{r}`" for r in settings.readable_roots)
        return pn.Column(
            pn.pane.Markdown(
                f"### Checkpoints\nReadable folders: {roots}. Files are written only under `{settings.data_dir}`."
            ),
            pn.Row(self.path, self.load, sizing_mode="stretch_width"),
            pn.Row(pn.pane.Markdown(f"or upload a `.safetensors` checkpoint (up to {MAX_UPLOAD_MB} MB):"), self.upload),
            self.force_field,
            self._listing,
            sizing_mode="stretch_width",
        )
