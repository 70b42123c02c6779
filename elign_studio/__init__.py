"""Elign Studio: a Panel app to load checkpoints, align them live and inspect denoising trajectories.

``panel serve elign_studio`` serves it; in Jupyter ``from elign_studio import create_app; create_app()``
displays it inline. Importing this package imports nothing heavy and starts nothing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """Build the studio layout for one session (see :func:`elign_studio.app.create_app`)."""
    from elign_studio.app import create_app as _create_app

    return _create_app(*args, **kwargs)
