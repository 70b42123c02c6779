"""Entry point of ``panel serve elign_studio``: one studio per browser session."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # `panel serve elign_studio` from a checkout without an install
    sys.path.insert(0, _ROOT)

import os  # noqa: E402

import panel as pn  # noqa: E402

from elign_studio.app import create_app  # noqa: E402

LOCAL = ("127.0.0.1", "::1", "localhost")


def _remote_ip() -> str | None:
    ctx = pn.state.curdoc.session_context if pn.state.curdoc is not None else None
    request = getattr(ctx, "request", None)
    return getattr(request, "remote_ip", None)


ip = _remote_ip()
if ip not in (None, *LOCAL) and os.environ.get("ELIGN_STUDIO_ALLOW_REMOTE") != "1":
    pn.pane.Markdown(
        f"Elign Studio serves this computer only (request from {ip}); set "
        "ELIGN_STUDIO_ALLOW_REMOTE=1 to allow remote browsers."
    ).servable(title="Elign Studio")
else:
    create_app().servable(title="Elign Studio")
