"""Helpers shared by the commands: signals and the output-path check."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM and SIGINT set the yielded event (a trainer then checkpoints and returns); the previous handlers
    come back afterwards. The only place signals are handled (elign.training.callbacks)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def check_outputs(args: argparse.Namespace) -> None:
    """Every command's output paths (its ``output_files`` / ``output_dirs`` defaults) are checked before work."""
    from elign.io.checkpoints import check_writable

    if getattr(args, "derive_out", None):  # an output path that defaults to one derived from the input
        args.out = args.derive_out(args)
    for name in getattr(args, "output_files", ()):
        if getattr(args, name, None):
            check_writable(getattr(args, name))
    for name in getattr(args, "output_dirs", ()):
        if getattr(args, name, None):
            check_writable(getattr(args, name), directory=True)
