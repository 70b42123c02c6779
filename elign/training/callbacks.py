"""The contract every trainer (pretraining, alignment, distillation) keeps with whoever runs it.

    trainer = Trainer(config, callbacks=[...])   # Pretrainer, FedGrpoTrainer, Distiller
    summary = trainer.train(stop_event)          # a dict: how far it got and why it stopped

A trainer takes ``callbacks`` (objects with ``on_step_end``) when it is built and a ``stop_event`` when it
runs: setting the event makes it finish the current step, write a checkpoint and return. Trainers never
install signal handlers (a thread cannot); the CLI turns SIGTERM and SIGINT into the event, and the studio's
worker runs any of them in a thread (:func:`trainer_for`). The alignment trainer also passes the molecules of each
held-out evaluation to the callbacks that have ``on_held_out(iteration, molecules)`` (a MoleculeBatch on the CPU).
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

__all__ = ["Callback", "Trainer", "trainer_for"]


class Callback(Protocol):
    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        """After a step that reports metrics; ``step`` counts the steps completed (1 after the first)."""


class Trainer(Protocol):
    def train(self, stop_event: threading.Event | None = None) -> dict:
        """Run until done or until ``stop_event`` is set (then checkpoint); -> a summary."""


def trainer_for(config: Any, callbacks: list[Callback]) -> Trainer:
    """The trainer of a config: AlignConfig -> FedGrpoTrainer, PretrainConfig -> Pretrainer (on the QM9 cache's
    training split), DistillConfig -> Distiller."""
    from elign.mlff.distill_config import DistillConfig
    from elign.rl.config import AlignConfig
    from elign.training.pretrain_config import PretrainConfig

    if isinstance(config, AlignConfig):
        from elign.rl.trainer import FedGrpoTrainer

        return FedGrpoTrainer(config, callbacks=callbacks)
    if isinstance(config, PretrainConfig):
        from elign.training.pretrain import Pretrainer

        return Pretrainer(config, callbacks=callbacks)
    if isinstance(config, DistillConfig):
        from elign.mlff.distill import Distiller

        return Distiller(config, callbacks=callbacks)
    raise TypeError(f"no trainer takes a {type(config).__name__}")
