"""benchmarks/frozen: main's network computes what today's does, on the live model's own parameters, and main's
trainers run; nothing in the library is changed by them."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest
import torch

from elign.data.dense import DenseDataset
from elign.diffusion.sampler import node_mask_from_sizes
from elign.mlff import load_force_field
from elign.models.config import ModelConfig
from elign.models.egnn import EGNNDynamics
from elign.models.factory import build_model
from elign.rl.config import AlignConfig
from elign.rl.rewards import potentials_on_x0
from elign.rl.trainer import FedGrpoTrainer
from elign.training.pretrain import PretrainConfig, Pretrainer

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def frozen(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("frozen.egnn"), importlib.import_module("frozen.align")


def _tiny_model(**config) -> torch.nn.Module:
    """A small network with weights large enough that every layer, the position update too, moves the output."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=16, n_layers=2, **config))
    with torch.no_grad():
        for p in model.dynamics.parameters():
            p.normal_(0.0, 0.3)
    return model


def _inputs(dtype=torch.float32):
    mask = node_mask_from_sizes(torch.tensor([3, 9, 5, 9, 2, 7]))  # sizes in several size groups, with padding
    g = torch.Generator().manual_seed(1)
    z = torch.randn(*mask.shape[:2], 9, generator=g) * mask  # [B, N, 3 + F]
    return z.to(dtype), torch.rand(6, 1, generator=g).to(dtype), mask.to(dtype)


def _assert_same_maths(main, live) -> None:
    """In float64 the two forwards differ only by the order of their sums: far below any change to the maths
    (float32 rounding, amplified by these large weights, would hide one)."""
    z, t, mask = _inputs(torch.float64)
    today, then = live.predict_eps(z, t, mask).detach(), main.predict_eps(z, t, mask).detach()
    assert then[..., :3].abs().max() > 0.1  # the position update counts
    torch.testing.assert_close(then, today, rtol=1e-9, atol=1e-9 * today.abs().max().item())


@pytest.mark.parametrize("config", [{}, {"sin_embedding": True, "aggregation": "mean", "attention": False}])
@pytest.mark.parametrize("grad", [False, True])
def test_the_frozen_forward_computes_what_the_live_one_does(frozen, config, grad) -> None:
    egnn, _ = frozen
    live = _tiny_model(**config).double()
    with torch.set_grad_enabled(grad):
        _assert_same_maths(egnn.frozen_model(live), live)


def test_the_frozen_model_shares_the_live_parameters_and_leaves_the_classes_alone(frozen) -> None:
    egnn, _ = frozen
    forward = EGNNDynamics.forward
    live = _tiny_model().double()
    main = egnn.frozen_model(live)
    assert main.state_dict().keys() == live.state_dict().keys()
    with torch.no_grad():
        live.dynamics.egnn.embedding.weight.mul_(1.5)  # trained in the live model: seen by the frozen one
    _assert_same_maths(main, live)
    assert EGNNDynamics.forward is forward and type(live.dynamics) is EGNNDynamics


def test_main_pretrains_through_the_frozen_forward(frozen, tmp_path) -> None:
    egnn, _ = frozen
    data = DenseDataset.synthetic(64, sizes=(3, 6))

    def config(name: str) -> PretrainConfig:
        return PretrainConfig(out_dir=str(tmp_path / name), hidden=16, n_layers=2, batch_size=16, compile=False)

    today, main = Pretrainer(config("today"), data, "cpu"), egnn.FrozenForwardPretrainer(config("main"), data, "cpu")
    before = [p.detach().clone() for p in main.model.parameters()]
    torch.testing.assert_close(main.train_step()["loss"], today.train_step()["loss"], rtol=1e-4, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(before, main.model.parameters(), strict=True))


def test_main_aligns_with_its_own_update_and_potentials(frozen, tmp_path) -> None:
    _, align = frozen
    cfg = AlignConfig.preset(
        "cpu-demo", out_dir=str(tmp_path), mlff="synthetic", steps=6, shared_steps=2, prompts=2, group_size=2,
        eval_every=0, device="cpu", disconnected_failed=False, minibatches=1, energy_every=2,
    )  # fmt: skip
    trainer = align.FrozenFedGrpoTrainer(
        cfg, force_field=load_force_field("synthetic"), model=_tiny_model(timesteps=50),
        model_config=ModelConfig(hidden=16, n_layers=2, timesteps=50),
    )  # fmt: skip
    scored = trainer.rollout_and_score(0)
    numbers = trainer.info.atomic_numbers
    psi, valid = potentials_on_x0(trainer.policy, trainer.ff, scored.rollouts, scored.evaluated, numbers)
    torch.testing.assert_close(scored.psi_t, psi, equal_nan=True)  # every rollout scored, where today shares
    assert torch.equal(scored.psi_valid, valid) and scored.evaluated.sum() > 1
    metrics = trainer.update(scored.rollouts, trainer.advantages(scored)[0], 0)
    assert metrics["ratio_min"] == pytest.approx(1.0) and metrics["ratio_max"] == pytest.approx(1.0)
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-8) and math.isfinite(metrics["loss"])
    assert isinstance(trainer, FedGrpoTrainer) and FedGrpoTrainer.update is not align.FrozenFedGrpoTrainer.update
