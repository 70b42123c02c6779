"""One trainer contract (elign.training.callbacks): Trainer(config, callbacks).train(stop_event) -> summary, kept by
pretraining, alignment and distillation, and run by the studio's worker whatever the config."""

from __future__ import annotations

import threading
import time

import pytest

from elign.mlff.distill import Distiller
from elign.mlff.distill_config import DistillConfig
from elign.rl.config import AlignConfig
from elign.rl.trainer import FedGrpoTrainer
from elign.training.callbacks import trainer_for
from elign.training.pretrain import Pretrainer
from elign.training.pretrain_config import PretrainConfig
from elign_studio.worker import TrainingWorker


class Recorder:
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, step: int, metrics: dict) -> None:
        self.steps.append(step)


def _pretrain_config(out, **overrides) -> PretrainConfig:
    base = dict(out_dir=str(out), data="synthetic:16", hidden=8, n_layers=1, timesteps=20, batch_size=8)
    return PretrainConfig(**{**base, "log_every": 1, "val_every": 0, **overrides})


def test_each_config_gets_its_trainer(tmp_path) -> None:
    cb = [Recorder()]
    assert isinstance(trainer_for(_pretrain_config(tmp_path / "p"), cb), Pretrainer)
    align = AlignConfig.preset("cpu-demo", out_dir=str(tmp_path / "a"), mlff="synthetic")  # the shipped backbone
    assert isinstance(trainer_for(align, cb), FedGrpoTrainer)
    assert isinstance(trainer_for(DistillConfig(out_dir=str(tmp_path / "d")), cb), Distiller)
    with pytest.raises(TypeError, match="no trainer takes a dict"):
        trainer_for({}, cb)


def test_a_pretraining_config_alone_names_its_data_and_trains(tmp_path) -> None:
    recorder = Recorder()
    summary = Pretrainer(_pretrain_config(tmp_path, max_steps=3), callbacks=[recorder]).train()
    assert summary["step"] == 3 and recorder.steps[-1] == 3
    assert (tmp_path / "model.safetensors").is_file()


def test_the_studio_worker_runs_pretraining_and_stops_it(tmp_path) -> None:
    worker = TrainingWorker()
    worker.start(_pretrain_config(tmp_path, max_steps=10_000), tmp_path)
    deadline = time.monotonic() + 600  # generous: a busy machine
    events = []
    while time.monotonic() < deadline and not any(e.kind == "metrics" for e in events):
        events += worker.drain()
        time.sleep(0.05)
    assert any(e.kind == "metrics" for e in events), events
    assert worker.stop(timeout=600)
    events += worker.drain()
    assert [e.message for e in events if e.kind == "finished"] == ["stopped"]
    assert (tmp_path / "state.pt").is_file()  # stopping saved the run
    assert isinstance(worker.stop_event, threading.Event)
