"""The contract every trainer (pretraining, alignment) keeps with whoever runs it.

A trainer takes ``callbacks`` (objects with ``on_step_end``) when it is built and a ``stop_event`` when it
runs: setting the event makes it finish the current step, write a checkpoint and return. Trainers never
install signal handlers (a thread cannot); the CLI turns SIGTERM and SIGINT into the event.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Callback"]


class Callback(Protocol):
    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        """After a step that reports metrics; ``step`` counts the steps completed (1 after the first)."""
