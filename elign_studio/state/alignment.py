"""The alignment run of a session: which model, the preset and the settings it sets, the run's name, state,
step and metric history, a few molecules of the policy's latest held-out evaluation, and the training thread
that runs it."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import param

from elign.rl.config import PRESETS
from elign_studio.state.base import fmt_error
from elign_studio.state.checkpoints import CheckpointState, ModelChoice
from elign_studio.worker import (
    EDITABLE,
    ConfigBuilder,
    TrainerFactory,
    TrainingWorker,
    default_config_builder,
    preset_settings,
)

__all__ = ["ACTIVE_RUN_STATES", "DEFAULT_PRESET", "METRIC_KEYS", "RUN_STATES", "AlignmentState"]

METRIC_KEYS = (
    "reward_force_mean",
    "reward_energy_mean",
    "kl",
    "kl_prefix",  # the KL on the groups' shared steps, which no advantage trains (a drift there shows first here)
    "clip_fraction",
    "rollout_molecule_stability",
    "rollout_composition_tv",  # the rollouts' atom-type distance to QM9 (a guard against composition drift)
    "eval_atom_type_tv",  # the same on the held-out evaluation's molecules, at its iterations only
    "rollout_repeated",  # the share of valid rollouts whose molecule the run made recently (diversity lost)
    "eval_uniqueness",  # the held-out molecules' uniqueness (a guard), at the evaluation's iterations only
)
RUN_STATES = ("idle", "starting", "running", "stopping", "completed", "stopped", "failed")
ACTIVE_RUN_STATES = ("starting", "running", "stopping")  # a training thread owns the run folder
DEFAULT_PRESET = "cpu-demo"
_PRESET_DEFAULTS = preset_settings(DEFAULT_PRESET)  # the declared defaults are the default preset's


class AlignmentState(CheckpointState):
    """The model to align (``align_model``), ``preset`` and its editable settings, the run (``run_name``,
    ``run_state``, ``step``, ``history`` of metric rows, ``held_out`` molecules of its policy) and ``worker``, the
    :class:`TrainingWorker` whose events :meth:`poll` drains."""

    align_model = ModelChoice(doc="name (in model_names) of the model to align")
    preset = param.Selector(
        default=DEFAULT_PRESET, objects=sorted(PRESETS), doc="alignment preset; choosing one sets the fields below"
    )
    iterations = param.Integer(
        default=_PRESET_DEFAULTS["iterations"], bounds=(1, None), doc="policy-update iterations of a run"
    )
    prompts = param.Integer(default=_PRESET_DEFAULTS["prompts"], bounds=(1, None), doc="molecule sizes per iteration")
    group_size = param.Integer(
        default=_PRESET_DEFAULTS["group_size"], bounds=(2, None), doc="rollouts per size (one normalisation group)"
    )
    steps = param.Integer(default=_PRESET_DEFAULTS["steps"], bounds=(1, None), doc="denoising steps of the rollouts")
    lr = param.Number(default=_PRESET_DEFAULTS["lr"], bounds=(0, None), doc="peak learning rate")
    run_name = param.String(default="", doc="folder (under runs/) of the current or last alignment run")
    run_state = param.Selector(
        default="idle",
        objects=list(RUN_STATES),
        doc="the alignment run: idle (none yet), starting (loading), running, stopping (checkpointing), "
        "completed, stopped (resumable) or failed",
    )
    step = param.Integer(default=0, doc="iterations the trainer reports completed in this run")
    held_out = param.List(
        default=[],
        doc="the first molecules of the run's latest held-out evaluation, drawn by the policy of held_out_step: "
        "grid cells {elements, xyz, bonds, label}",
    )
    held_out_step = param.Integer(default=0, doc="the iteration whose held-out evaluation drew held_out")

    def __init__(
        self, trainer_factory: TrainerFactory | None = None, config_builder: ConfigBuilder | None = None, **params: Any
    ) -> None:
        super().__init__(**params)
        if trainer_factory is None and self.settings.trainer:
            trainer_factory = self.settings.load_object(self.settings.trainer)
        if config_builder is None and self.settings.config_builder:
            config_builder = self.settings.load_object(self.settings.config_builder)
        self.worker = TrainingWorker(trainer_factory)
        self.config_builder = config_builder or default_config_builder
        self.history: list[dict[str, float]] = []
        if self.preset != DEFAULT_PRESET:  # a preset chosen at construction sets what was not given explicitly
            self._apply_preset()
            self.param.update({k: params[k] for k in EDITABLE if k in params})

    @property
    def training(self) -> bool:
        """A training thread owns the current run (starting, running or stopping)."""
        return self.run_state in ACTIVE_RUN_STATES

    @property
    def run_dir(self) -> Path:
        return self.settings.folder("runs") / self.run_name

    @param.depends("model_names", watch=True)
    def _offer_align_models(self) -> None:
        self._offer_models("align_model")

    @param.depends("preset", watch=True)
    def _apply_preset(self) -> None:
        for k, v in preset_settings(self.preset).items():
            if k in self.param:
                setattr(self, k, type(getattr(self, k))(v))

    def start_alignment(self, resume: bool = False) -> bool:
        """Start (or resume, same run folder) alignment in the background. False with ``error`` set."""
        self.error = ""
        if self.worker.running:
            self.error = "Alignment is already running in this session."
            return False
        if not resume or not self.run_name:
            self.history = []  # emptied before the new name is announced: views redraw on run_name
            self.param.update(held_out=[], held_out_step=0)
            self.step = 0
            model = re.sub(r"[^A-Za-z0-9]+", "-", self.align_model).strip("-")[:32] or "model"
            self.run_name = f"{model}-{self.preset}-" + time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
        try:
            checkpoint = self.model_path(self.align_model)
            overrides = {k: getattr(self, k) for k in EDITABLE}
            overrides.update(out_dir=str(self.run_dir), checkpoint=str(checkpoint), mlff=self.force_field)
            config = self.config_builder(self.preset, overrides)
            self.worker.start(config, self.run_dir)
        except Exception as e:  # noqa: BLE001 - shown in the app
            self.error = f"Cannot start alignment: {fmt_error(e)}"
            return False
        self.run_state = "starting"
        self.status = f"{'Resumed' if resume else 'Started'} alignment of {self.align_model} into {self.run_dir}"
        return True

    def stop_alignment(self, timeout: float | None = None) -> None:
        """Ask the trainer to write a checkpoint and stop (pause: resume continues the same run)."""
        if self.worker.running:
            self.run_state = "stopping"
            self.worker.stop(timeout)
            self.status = "Stopping: the trainer writes a checkpoint after the current iteration..."
        self.poll()

    def _finish_run(self, how: str) -> None:
        ckpts = self._run_checkpoints(self.run_dir)
        if ckpts:
            label = self._register(f"{self.run_name}", ckpts[-1])
            self.status = f"Alignment {how} after {self.step} iterations; checkpoint {ckpts[-1]} ({label})"
        else:
            self.status = f"Alignment {how}; no checkpoint was written in {self.run_dir}"

    def poll(self) -> list[dict[str, float]]:
        """The worker's events into ``history``, ``step`` and ``run_state`` (then the other parts' work)."""
        new: list[dict[str, float]] = []
        for ev in self.worker.drain():
            if ev.kind == "metrics":
                row = {"step": float(ev.step), **ev.metrics}
                self.history.append(row)
                new.append(row)
                self.step = ev.step
                if self.run_state == "starting":
                    self.run_state = "running"
            elif ev.kind == "molecules":
                self.param.update(held_out=ev.molecules, held_out_step=ev.step)
            elif ev.kind == "error":
                self.error = f"Alignment failed: {ev.message}"
                self.run_state = "failed"
                self._finish_run("failed")
            elif ev.kind == "finished" and self.run_state != "failed":
                self.run_state = ev.message  # "completed" or "stopped"
                self._finish_run(ev.message)
        if self.training and not self.worker.running and not new:  # ended without a word: resumable
            self.run_state = "stopped"
        return new + super().poll()

    def close(self) -> None:
        """Stop training (with a checkpoint), then the rest."""
        self.worker.stop()
        super().close()
