"""Checkpoint choice: shipped models, a path, an upload; the force field used for scoring."""

from __future__ import annotations

import panel as pn

from elign_studio.session import StudioSession

__all__ = ["checkpoint_view"]


def checkpoint_view(session: StudioSession) -> pn.viewable.Viewable:
    path = pn.widgets.TextInput(
        name="Checkpoint path (.safetensors file or original EDM run folder)",
        placeholder=str(session.settings.data_dir / "my-model.safetensors"),
        sizing_mode="stretch_width",
    )
    load = pn.widgets.Button(name="Load path", button_type="primary", width=120)
    upload = pn.widgets.FileInput(accept=".safetensors", name="Upload")
    load.on_click(lambda _: session.add_checkpoint(path.value) if path.value.strip() else None)

    def _upload(event) -> None:
        if upload.value:
            session.add_upload(upload.filename or "upload.safetensors", upload.value)

    upload.param.watch(_upload, "value")
    ff = pn.widgets.Select.from_param(session.param.force_field, name="Force field for scoring")

    @pn.depends(session.param.model_names)
    def listing(names: list[str]) -> pn.pane.Markdown:
        if not names:
            return pn.pane.Markdown("*No model loaded yet.*")
        lines = [f"- **{n}**: `{session.models[n]}`" for n in names]
        return pn.pane.Markdown("Models available:\n\n" + "\n".join(lines))

    roots = ", ".join(f"`{r}`" for r in session.settings.readable_roots)
    return pn.Column(
        pn.pane.Markdown(
            f"### Checkpoints\nReadable folders: {roots}. Files are written only under `{session.settings.data_dir}`."
        ),
        pn.Row(path, load, sizing_mode="stretch_width"),
        pn.Row(pn.pane.Markdown("or upload a `.safetensors` checkpoint:"), upload),
        ff,
        listing,
        sizing_mode="stretch_width",
    )
