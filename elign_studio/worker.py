"""The training thread: any trainer of the contract (alignment, pretraining, distillation:
:mod:`elign.training.callbacks`) runs in a daemon thread, reports through a queue, stops on an Event.

The worker never touches widgets; the session drains :meth:`TrainingWorker.drain` from a periodic
callback. Pause is a stop (the trainer writes a checkpoint when it sees the event); resume starts a
new thread with the same ``out_dir``, from which the trainer resumes.

Besides each iteration's metrics, the alignment trainer's held-out evaluations send a few of their molecules
(:data:`HELD_OUT_SHOWN`), drawn by the policy of that iteration.
"""

from __future__ import annotations

import queue
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from elign.training.callbacks import Trainer, trainer_for

__all__ = [
    "EDITABLE",
    "HELD_OUT_SHOWN",
    "ConfigBuilder",
    "TrainerFactory",
    "TrainingWorker",
    "WorkerEvent",
    "default_config_builder",
    "default_trainer_factory",
    "preset_settings",
]

EventKind = Literal["started", "metrics", "molecules", "error", "finished"]
HELD_OUT_SHOWN = 4  # molecules of each held-out evaluation sent to the studio

_ACTIVE_DIRS: set[Path] = set()  # out_dirs being trained in this process (one thread each)
_ACTIVE_LOCK = threading.Lock()


@dataclass
class WorkerEvent:
    """What the training thread reports: ``kind``, the iteration (``step``) it concerns, its ``metrics``, the
    held-out ``molecules`` (grid cells, :func:`elign_studio.sampling.molecule_cells`) or a ``message``."""

    kind: EventKind
    step: int = -1
    metrics: dict[str, float] = field(default_factory=dict)
    molecules: list[dict] = field(default_factory=list)
    message: str = ""


TrainerFactory = Callable[[Any, list[Any]], Trainer]


def default_trainer_factory(config: Any, callbacks: list[Any]) -> Trainer:
    """The trainer of the config (alignment, pretraining or distillation: :func:`elign.training.callbacks.
    trainer_for`), built in the thread that runs it."""
    return trainer_for(config, callbacks)


class _QueueCallback:
    def __init__(self, events: queue.Queue[WorkerEvent]) -> None:
        self.events = events

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        clean = {}
        for k, v in metrics.items():
            try:
                clean[k] = float(v)
            except (TypeError, ValueError):
                continue
        self.events.put(WorkerEvent("metrics", step=int(step), metrics=clean))

    def on_held_out(self, step: int, molecules: Any) -> None:
        """The first few molecules of a held-out evaluation (a MoleculeBatch) as grid cells."""
        from elign_studio.sampling import molecule_cells

        try:
            cells = molecule_cells(molecules, HELD_OUT_SHOWN)
        except Exception:  # noqa: BLE001 - a picture of the policy never stops its training
            return
        self.events.put(WorkerEvent("molecules", step=int(step), molecules=cells))


class TrainingWorker:
    """One training thread at a time; many workers (sessions) may run side by side on other folders."""

    def __init__(self, trainer_factory: TrainerFactory | None = None) -> None:
        self.trainer_factory = trainer_factory or default_trainer_factory
        self.events: queue.Queue[WorkerEvent] = queue.Queue()
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, config: Any, out_dir: str | Path) -> None:
        """Start training ``config`` (which writes to ``out_dir``) in a daemon thread."""
        if self.running:
            raise RuntimeError("alignment is already running in this session; stop it first")
        out = Path(out_dir).resolve()
        with _ACTIVE_LOCK:
            if out in _ACTIVE_DIRS:
                raise RuntimeError(f"another session is already training into {out}")
            _ACTIVE_DIRS.add(out)
        self.stop_event = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(config, self.stop_event, out), name=f"elign-align-{out.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the trainer to checkpoint and return; wait up to ``timeout`` s. True when it has ended."""
        self.stop_event.set()
        if self._thread is not None and timeout is not None:
            self._thread.join(timeout)
        return not self.running

    def drain(self, limit: int = 10_000) -> list[WorkerEvent]:
        out: list[WorkerEvent] = []
        while len(out) < limit:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                break
        return out

    def _run(self, config: Any, stop_event: threading.Event, out_dir: Path) -> None:
        try:
            self.events.put(WorkerEvent("started", message=str(out_dir)))
            trainer = self.trainer_factory(config, [_QueueCallback(self.events)])
            trainer.train(stop_event)
            reason = "stopped" if stop_event.is_set() else "completed"
            self.events.put(WorkerEvent("finished", message=reason))
        except BaseException as e:  # noqa: BLE001 - every failure must reach the app
            tb = traceback.format_exc(limit=6)
            self.events.put(WorkerEvent("error", message=f"{type(e).__name__}: {e}\n{tb}"))
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE_DIRS.discard(out_dir)


EDITABLE = ("iterations", "prompts", "group_size", "steps", "lr")  # the alignment settings the studio edits
ConfigBuilder = Callable[[str, dict[str, Any]], Any]


def preset_settings(name: str) -> dict[str, Any]:
    """The editable settings of an alignment preset, as AlignConfig defines it."""
    from elign.rl.config import AlignConfig

    cfg = AlignConfig.preset(name)
    return {k: getattr(cfg, k) for k in EDITABLE}


def default_config_builder(preset: str, overrides: dict[str, Any]) -> Any:
    from elign.rl.config import AlignConfig

    return AlignConfig.preset(preset, **overrides)
