"""What a download button sends: a file the session exports, named as written, or an error in the banner."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import panel as pn

from elign_studio.session import StudioSession

__all__ = ["exported_file"]


def exported_file(session: StudioSession, button: pn.widgets.FileDownload, export: Callable[[], Path]):
    """Run ``export``; -> the file's bytes for ``button`` (renamed to the file), or None with ``session.error``."""
    try:
        path = export()
    except (ValueError, OSError) as e:
        session.error = f"Export failed: {e}"
        return None
    button.filename = path.name
    session.status = f"Exported {path}"
    return io.BytesIO(path.read_bytes())
