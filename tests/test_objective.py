"""The pretraining objective options: loss weighting, time densities, size-bucketed batches."""

import math

import pytest
import torch

from elign.data.dense import DenseDataset
from elign.diffusion.objective import TrainingObjective
from elign.testing import tiny_model
from elign.training.pretrain import PretrainConfig, Pretrainer, lr_at


def test_truncated_snr_weight_equals_the_hand_computed_one():
    gamma = torch.tensor([-8.0, -1.0, 0.0, 0.5, 3.0, 9.0])  # SNR = exp(-gamma): 2981, 2.72, 1, 0.61, 0.05, 1.2e-4
    w = TrainingObjective(weighting="truncated_snr").loss_weight(gamma)
    expected = []
    for g in gamma.tolist():
        snr = math.exp(-g)
        expected.append(min(max(snr, 0.05), 1.5) / snr)
    assert torch.allclose(w, torch.tensor(expected), rtol=1e-5)
    assert w[2] == pytest.approx(1.0)  # SNR inside the caps: the eps loss unchanged
    assert w[0] < 1e-3 and w[-1] > 100  # low noise counts less, high noise more
    assert torch.equal(TrainingObjective().loss_weight(gamma), torch.ones(6))


def test_beta_time_density_favours_the_data_end_and_importance_weights_undo_it():
    obj = TrainingObjective(time_sampling="beta", beta_a=1.0, beta_b=2.0, importance_weighted=True)
    T = 99
    p = obj.time_probabilities(T)
    assert p.sum().item() == pytest.approx(1.0)
    assert p[0] / p[-1] > 50  # density 2(1 - t): near 2 at t = 0, near 0 at t = 1
    gen = torch.Generator().manual_seed(0)
    t_int, w = obj.sample_times(200_000, T, "cpu", gen)
    assert t_int.shape == (200_000, 1) and 0 <= t_int.min() and t_int.max() <= T
    assert t_int.float().mean().item() / T == pytest.approx(1 / 3, abs=0.01)  # Beta(1, 2) has mean 1/3
    # importance weights make E[w f(t)] the uniform average: check on f(t) = t
    assert (w * t_int[:, 0].float()).mean().item() == pytest.approx(T / 2, rel=0.02)
    _, plain = TrainingObjective(time_sampling="beta").sample_times(10, T, "cpu", gen)
    assert torch.equal(plain, torch.ones(10))


def test_default_objective_draws_exactly_what_edm_draws():
    model, _ = tiny_model()
    batch = DenseDataset.synthetic(8, seed=0).batch(torch.arange(8))
    a = model.training_loss(batch, torch.Generator().manual_seed(5))
    b = model.training_loss(batch, torch.Generator().manual_seed(5), TrainingObjective())
    assert torch.equal(a, b)
    c = model.training_loss(batch, torch.Generator().manual_seed(5), TrainingObjective(weighting="truncated_snr"))
    assert not torch.equal(a, c)


def test_weighted_loss_is_the_eps_loss_times_the_weight():
    model, _ = tiny_model()
    batch = DenseDataset.synthetic(8, seed=0).batch(torch.arange(8))
    obj = TrainingObjective(weighting="truncated_snr")
    plain = model.training_loss(batch, torch.Generator().manual_seed(5))
    weighted = model.training_loss(batch, torch.Generator().manual_seed(5), obj)
    t_int, _ = obj.sample_times(8, model.T, "cpu", torch.Generator().manual_seed(5))
    gamma = model.gamma(t_int.float() / model.T).view(8)
    assert torch.allclose(weighted, plain * obj.loss_weight(gamma), rtol=1e-6)


def test_bad_objective_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="loss weighting"):
        PretrainConfig(out_dir=str(tmp_path), loss_weighting="x0")
    with pytest.raises(ValueError, match="time sampling"):
        PretrainConfig(out_dir=str(tmp_path), time_sampling="logit")
    with pytest.raises(ValueError, match="Beta parameters"):
        PretrainConfig(out_dir=str(tmp_path), time_sampling="beta", beta_b=0)
    with pytest.raises(ValueError, match="batching"):
        PretrainConfig(out_dir=str(tmp_path), batching="sorted")


def _bucketed(tmp_path, num=203, batch=10):
    data = DenseDataset.synthetic(num, seed=0, sizes=(3, 12))
    cfg = PretrainConfig(
        out_dir=str(tmp_path), hidden=8, n_layers=1, timesteps=20, batch_size=batch, batching="size_buckets"
    )
    return data, Pretrainer(cfg, data)


def test_size_buckets_cover_every_molecule_once_per_epoch_with_little_padding(tmp_path):
    data, t = _bucketed(tmp_path)
    spe = t.steps_per_epoch
    seen = torch.cat([t.batch_indices(s) for s in range(spe)])
    assert len(set(seen.tolist())) == len(seen) == spe * 10
    assert set(seen.tolist()) <= set(data.splits["train"].tolist())
    sizes = data.n_atoms
    spread = [int(sizes[t.batch_indices(s)].max() - sizes[t.batch_indices(s)].min()) for s in range(spe)]
    random_spread = [int(sizes[idx].max() - sizes[idx].min()) for idx in data.splits["train"][: spe * 10].view(spe, 10)]
    assert sum(spread) < sum(random_spread) / 3  # batches of near-equal size
    # a new order each epoch, and the molecules beyond whole batches differ between epochs
    assert not torch.equal(t.batch_indices(0), t.batch_indices(spe))
    second = torch.cat([t.batch_indices(s) for s in range(spe, 2 * spe)])
    assert set(second.tolist()) != set(seen.tolist())


def test_size_buckets_are_a_function_of_seed_epoch_and_step(tmp_path):
    _, a = _bucketed(tmp_path / "a")
    _, b = _bucketed(tmp_path / "b")
    spe = a.steps_per_epoch
    for s in (spe + 3, 1, 2 * spe + 5, 0):  # any order, as after a resume
        assert torch.equal(a.batch_indices(s), b.batch_indices(s))
    assert sorted(a.batch_indices(2).tolist()) != sorted(a.batch_indices(3).tolist())


def test_learning_rate_decays_from_its_start_step_and_holds_its_floor(tmp_path):
    cfg = PretrainConfig(
        out_dir=str(tmp_path), lr=4e-4, warmup_steps=10, lr_decay_start=100, lr_decay_steps=50, lr_min=4e-5
    )
    assert lr_at(0, cfg) == pytest.approx(4e-5)  # warm-up
    assert lr_at(99, cfg) == lr_at(100, cfg) == pytest.approx(4e-4)
    assert lr_at(125, cfg) == pytest.approx((4e-4 + 4e-5) / 2)  # half way down the cosine
    assert lr_at(150, cfg) == lr_at(10_000, cfg) == pytest.approx(4e-5)  # held at the floor, never rising again
    constant = PretrainConfig(out_dir=str(tmp_path), lr=4e-4, warmup_steps=10)
    assert lr_at(10_000, constant) == pytest.approx(4e-4)
    with pytest.raises(ValueError, match="lr_min"):
        PretrainConfig(out_dir=str(tmp_path), lr=1e-4, lr_decay_start=0, lr_min=1e-3)


def test_diffuse_is_the_original_edms_noising(edm_fixtures):
    from elign.io.checkpoints import load_checkpoint

    model, _, _ = load_checkpoint(edm_fixtures / "edm_qm9_tiny")
    r = torch.load(edm_fixtures / "edm_qm9_tiny" / "reference.pt", weights_only=True)
    z_t = model.scheduler.add_noise(r["xh_normalized"], r["t"], r["eps"]) * r["node_mask"]
    torch.testing.assert_close(z_t, r["zt"], atol=1e-6, rtol=1e-5)
