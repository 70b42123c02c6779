"""Per-session state of the studio (param.Parameterized), apart from any view; testable without a server.

:class:`StudioSession` is the parts in :mod:`elign_studio.state` in one object: checkpoints, alignment,
sampling and the trajectory shown, exports. A session owns its training worker and its sampling executor;
background work reports through queues and futures, and :meth:`StudioSession.poll` (a periodic callback in
the app) moves results into params.
"""

from __future__ import annotations

from typing import Any

from elign_studio.settings import StudioSettings
from elign_studio.state.alignment import DEFAULT_PRESET, METRIC_KEYS, RUN_STATES, AlignmentState
from elign_studio.state.export import ExportState
from elign_studio.worker import ConfigBuilder, TrainerFactory

__all__ = ["DEFAULT_PRESET", "METRIC_KEYS", "RUN_STATES", "StudioSession"]

MODEL_CHOICES = ("sample_model", "compare_model", "align_model")


class StudioSession(AlignmentState, ExportState):
    """One browser session's state: the models (:class:`~elign_studio.state.checkpoints.CheckpointState`), the
    alignment run (:class:`~elign_studio.state.alignment.AlignmentState`), sampling and the trajectory shown
    (:class:`~elign_studio.state.sampling.SamplingState`) and exports
    (:class:`~elign_studio.state.export.ExportState`), with the settings, status and error they share."""

    def __init__(
        self,
        settings: StudioSettings | None = None,
        trainer_factory: TrainerFactory | None = None,
        config_builder: ConfigBuilder | None = None,
        **params: Any,
    ) -> None:
        chosen = {k: params.pop(k) for k in MODEL_CHOICES if k in params}  # chosen among the models found
        super().__init__(settings=settings, trainer_factory=trainer_factory, config_builder=config_builder, **params)
        self.refresh_models()
        self.param.update(chosen)
