import pytest
import torch

from elign.diffusion.sampler import node_mask_from_sizes, sample_chain, sample_molecules, timestep_grid
from elign.diffusion.scheduler import gaussian_log_prob
from elign.testing import QM9_Z, tiny_model


def test_timestep_grid():
    assert timestep_grid(10, 10) == list(range(10, -1, -1))
    assert timestep_grid(1000, 4) == [1000, 750, 500, 250, 0]
    g = timestep_grid(1000, 7)
    assert g[0] == 1000 and g[-1] == 0 and len(g) == 8 and all(a > b for a, b in zip(g, g[1:], strict=False))
    with pytest.raises(ValueError, match="steps must be in 1..1000"):
        timestep_grid(1000, 1001)


def test_mixed_sizes_and_padding():
    model, _ = tiny_model()
    mask = node_mask_from_sizes(torch.tensor([3, 6, 4]))
    mols, traj = sample_chain(
        model, mask, steps=10, generator=torch.Generator().manual_seed(0), trajectory_every=3, atomic_numbers=QM9_Z
    )
    assert mols.num_atoms.tolist() == [3, 6, 4]
    assert mols.positions[0, 3:].abs().max() == 0 and mols.one_hot[2, 4:].abs().max() == 0
    com = (mols.positions * mols.node_mask).sum(1) / mols.node_mask.sum(1)
    assert com.abs().max() < 1e-5
    assert torch.isfinite(mols.positions).all()
    # frames at steps 0, 3, 6, 9 of 10, then the decoded sample
    assert traj.times == [50, 35, 20, 5, 0] and len(traj.positions) == 5
    assert torch.equal(traj.positions[-1], mols.positions)
    assert set(mols.charges[mols.node_mask[..., 0] > 0].unique().tolist()) <= set(map(float, QM9_Z))


def test_seeded_sampling_is_reproducible_and_seed_sensitive():
    model, config = tiny_model()
    p = config.dataset_info().size_probabilities()
    a = sample_molecules(model, 5, p, steps=5, seed=1, batch_size=2)
    b = sample_molecules(model, 5, p, steps=5, seed=1, batch_size=2)
    c = sample_molecules(model, 5, p, steps=5, seed=2, batch_size=2)
    assert torch.equal(a.positions, b.positions)
    assert not torch.equal(a.positions, c.positions)
    assert a.batch_size == 5
    sizes = torch.tensor([3, 6, 4, 6, 5])  # batched by size internally, returned in the given order
    d = sample_molecules(model, 5, p, steps=5, seed=1, batch_size=2, sizes=sizes)
    assert d.num_atoms.tolist() == sizes.tolist() and d.max_atoms == 6


def test_reverse_step_log_prob_matches_com_free_gaussian():
    model, _ = tiny_model()
    mask = node_mask_from_sizes(torch.tensor([4, 2]), 5)
    g = torch.Generator().manual_seed(0)
    z = model.scheduler.sample_noise(mask, g)
    B = 2
    s, t = torch.full((B, 1), 0.5), torch.full((B, 1), 0.52)
    step = model.scheduler.step(z, model.predict_eps(z, t, mask), s, t, mask, g)
    # hand-computed: residual (CoM-free already) over (n-1)*3 + n*F dimensions
    F = model.feature_dim
    for b, n in enumerate([4, 2]):
        r = step.z_s[b, :n] - step.mean[b, :n]
        r = torch.cat([r[:, :3] - r[:, :3].mean(0), r[:, 3:]], -1)
        d = (n - 1) * 3 + n * F
        s2 = step.std[b] ** 2
        expect = -0.5 * (r**2).sum() / s2 - 0.5 * d * torch.log(2 * torch.pi * s2)
        assert torch.allclose(step.log_prob[b], expect, rtol=1e-5)
    assert torch.allclose(gaussian_log_prob(step.z_s, step.mean, step.std, mask), step.log_prob)
    # a sample further from the mean is less likely
    far = step.z_s + 0.5 * mask
    assert (gaussian_log_prob(far, step.mean, step.std, mask) < step.log_prob).all()
