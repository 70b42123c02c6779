"""A stand-in for FedGrpoTrainer used by the browser tests while elign.rl is not installed."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any


def make_config(preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    return dict(overrides, preset=preset)


class FakeTrainer:
    def __init__(self, config: dict[str, Any], callbacks: list[Any]) -> None:
        self.config, self.callbacks = config, callbacks

    def train(self, stop_event: threading.Event | None = None) -> None:
        from elign.checkpoints import save_checkpoint
        from elign.testing import tiny_model

        out = Path(self.config["out_dir"])
        out.mkdir(parents=True, exist_ok=True)
        for step in range(int(self.config["iterations"])):
            if stop_event is not None and stop_event.is_set():
                break
            m = {
                "reward_force_mean": -1 + 0.5 * math.tanh(step / 10),
                "reward_energy_mean": -0.5 + 0.01 * step,
                "kl": 0.001 * step,
                "clip_fraction": 0.1,
                "rollout_molecule_stability": 0.3,
                "time_iteration": 0.2,
            }
            for cb in self.callbacks:
                cb.on_step_end(step, m)
            time.sleep(0.2)
        model, config = tiny_model()
        save_checkpoint(out / "model.safetensors", model, config)
