"""What every part of a studio session shares: its settings, the status line and the error banner, the force
field that scores molecules, and the one background thread that samples and scores."""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any

import param

from elign_studio.settings import DEFAULT_FORCE_FIELDS, StudioSettings

__all__ = ["SessionBase", "fmt_error"]


def fmt_error(e: BaseException) -> str:
    """An exception as the error banner says it (the type named unless it is a plain value, runtime or OS error)."""
    return f"{type(e).__name__}: {e}" if not isinstance(e, ValueError | RuntimeError | OSError) else str(e)


class SessionBase(param.Parameterized):
    """The session's ``settings`` (folders, defaults), ``status`` and ``error`` for the page, the ``force_field``
    that scores molecules (sampled, opened or rolled out in alignment), and ``_executor``: one thread for
    sampling, scoring and warm-up.

    Each part of the session adds to :meth:`poll` and :meth:`close` and calls ``super()``.
    """

    force_field = param.Selector(
        default="synthetic", objects=list(DEFAULT_FORCE_FIELDS), doc="force field that scores sampled frames"
    )
    status = param.String(default="", doc="the last thing the session did, for the status line")
    error = param.String(default="", doc="the last failure, for the error banner (empty: none)")

    def __init__(self, settings: StudioSettings | None = None, **params: Any) -> None:
        self.settings = settings or StudioSettings.from_env()
        super().__init__(**params)
        self.param.force_field.objects = list(dict.fromkeys([self.settings.force_field, *DEFAULT_FORCE_FIELDS]))
        if "force_field" not in params:
            self.force_field = self.settings.force_field
        self._executor = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="elign-sample")

    def poll(self) -> list[dict[str, float]]:
        """Move finished background work into params; returns the alignment's metric rows that arrived now."""
        return []

    def close(self) -> None:
        """End of the browser session: the background thread starts no more work."""
        self._executor.shutdown(wait=False, cancel_futures=True)
