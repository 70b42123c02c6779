"""bfloat16 autocast: opt-in, refused without native support, and it really changes what the network computes."""

import pytest
import torch

import elign.precision
import elign.training.pretrain
from elign.data.dense import DenseDataset
from elign.diffusion.sampler import ForceGuidance, sample_molecules
from elign.mlff import load_force_field
from elign.precision import bf16_autocast
from elign.testing import QM9_Z, tiny_model
from elign.training.pretrain import PretrainConfig, Pretrainer


@pytest.fixture
def native(monkeypatch):
    """Pretend the CPU has native bf16 (torch emulates it on any CPU, so the maths is the same)."""
    monkeypatch.setattr(elign.precision, "native_bf16", lambda device: True)
    monkeypatch.setattr(elign.training.pretrain, "native_bf16", lambda device: True)


def test_autocast_is_a_no_op_when_off_and_refused_without_native_bf16(monkeypatch):
    layer = torch.nn.Linear(4, 4)
    with bf16_autocast("cpu", False):
        assert layer(torch.ones(2, 4)).dtype == torch.float32
    monkeypatch.setattr(elign.precision, "native_bf16", lambda device: False)
    with pytest.raises(ValueError, match="native bfloat16"):
        bf16_autocast("cpu", True)


def test_autocast_runs_matrix_products_in_bf16(native):
    with bf16_autocast("cpu", True):
        assert torch.nn.Linear(4, 4)(torch.ones(2, 4)).dtype == torch.bfloat16


def _sample(model, bf16, **kw):
    prior = torch.zeros(8)
    prior[5:8] = 1.0
    return sample_molecules(model, 6, prior, steps=20, seed=3, batch_size=4, bf16=bf16, **kw).positions


def test_bf16_sampling_is_close_to_float32_deterministic_and_not_identical(native):
    model, _ = tiny_model(seed=0)
    fp32, bf16 = _sample(model, False), _sample(model, True)
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    assert not torch.equal(fp32, bf16)  # the option reaches the network
    assert (fp32 - bf16).abs().max() < 0.5  # rounding, not another model
    assert torch.equal(bf16, _sample(model, True))


def test_force_guidance_scores_in_float32_under_a_bf16_sampler(native):
    seen = []

    class Recording:  # the synthetic field, noting whether autocast is on when it is called
        def __init__(self, ff):
            self.ff, self.device = ff, ff.device

        def __call__(self, mols):
            seen.append(torch.is_autocast_enabled("cpu"))
            return self.ff(mols)

    model, _ = tiny_model(seed=0)
    guide = ForceGuidance(Recording(load_force_field("synthetic")), 0.01, sigma_threshold=1.01, atomic_numbers=QM9_Z)
    _sample(model, True, guidance=guide)
    assert seen and not any(seen)


def test_cpu_bf16_pretraining_is_refused_without_native_bf16(tmp_path, monkeypatch):
    monkeypatch.setattr(elign.training.pretrain, "native_bf16", lambda device: False)
    cfg = PretrainConfig(out_dir=str(tmp_path), hidden=8, n_layers=1, batch_size=8, cpu_bf16=True)
    with pytest.raises(ValueError, match="cpu_bf16 needs"):
        Pretrainer(cfg, DenseDataset.synthetic(32, seed=0), device="cpu")


def test_cpu_bf16_pretraining_step_rounds_but_trains_the_same_objective(tmp_path, native):
    def first_loss(cpu_bf16):
        cfg = PretrainConfig(
            out_dir=str(tmp_path / str(cpu_bf16)), hidden=16, n_layers=2, timesteps=50, batch_size=8, cpu_bf16=cpu_bf16
        )
        return float(Pretrainer(cfg, DenseDataset.synthetic(32, seed=0), device="cpu").train_step()["loss"])

    fp32, bf16 = first_loss(False), first_loss(True)
    assert fp32 != bf16 and abs(fp32 - bf16) < 0.05 * fp32
