"""Size groups and the pair kernels: the fast network computes exactly what the padded one does."""

import pytest
import torch

import elign.models.grouping as grouping
from elign.diffusion.sampler import node_mask_from_sizes
from elign.io.checkpoints import load_checkpoint
from elign.models.grouping import size_groups
from elign.models.pair_ops import _NeighbourSum, _PairSum, _Score, pair_dense
from elign.testing import random_batch, tiny_model

SIZES = [3, 12, 5, 5, 9, 3, 12, 7, 4, 11]


def _eps(model, z, t, mask, grouped: bool, monkeypatch):
    monkeypatch.setattr(grouping, "GROUP_OVERHEAD_PAIRS", 0 if grouped else float("inf"))
    return model.predict_eps(z, t, mask)


def test_groups_cover_every_molecule_once_and_fit_it():
    mask = node_mask_from_sizes(torch.tensor(SIZES))
    groups = size_groups(mask, overhead=0)
    rows = torch.cat([r for r, _ in groups])
    assert sorted(rows.tolist()) == list(range(len(SIZES)))
    for r, n in groups:
        assert max(SIZES[i] for i in r.tolist()) == n
    assert [n for _, n in groups] == sorted({*SIZES})  # no overhead: one group per size


def test_groups_trade_padding_against_overhead():
    mask = node_mask_from_sizes(torch.tensor(SIZES))
    assert size_groups(mask, overhead=1e9) is None  # one group, the padded batch itself
    few = size_groups(mask, overhead=50)
    assert 1 < len(few) < len(set(SIZES))
    assert size_groups(node_mask_from_sizes(torch.tensor([6, 6, 6])), overhead=0) is None
    # four of 2 atoms and one of 8: padding costs 4 x (64 - 4) pairs but only 4 x (8 - 2) atoms
    small_and_large = node_mask_from_sizes(torch.tensor([2, 2, 2, 2, 8]))
    assert [n for _, n in size_groups(small_and_large, overhead=30)] == [2, 8]  # pairs: 140 against 350
    assert size_groups(small_and_large, overhead=30, exponent=1) is None  # atoms: 76 against 70


def test_groups_refuse_masks_whose_real_atoms_are_not_first():
    mask = node_mask_from_sizes(torch.tensor([4, 2]))
    mask[1] = torch.tensor([0.0, 1.0, 1.0, 0.0]).unsqueeze(-1)
    assert size_groups(mask, overhead=0) is None


def test_grouped_network_equals_padded_network_with_gradients(monkeypatch):
    model, _ = tiny_model(seed=3)
    batch = random_batch(SIZES, seed=1)
    z = model.normalize(batch) + 0.1 * model.scheduler.sample_noise(batch.node_mask, torch.Generator().manual_seed(2))
    t = torch.linspace(0.1, 0.9, len(SIZES)).unsqueeze(-1)
    outputs, grads = [], []
    for grouped in (False, True):
        model.zero_grad()
        eps = _eps(model, z, t, batch.node_mask, grouped, monkeypatch)
        (eps * torch.arange(eps.numel()).reshape(eps.shape).sin()).sum().backward()
        outputs.append(eps.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert (outputs[0] * (1 - batch.node_mask)).abs().max() == 0
    assert (outputs[1] * (1 - batch.node_mask)).abs().max() == 0
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_a_molecule_does_not_depend_on_its_batch_mates(monkeypatch):
    model, _ = tiny_model(seed=4)
    batch = random_batch(SIZES, seed=5)
    z, t = model.normalize(batch), torch.full((len(SIZES), 1), 0.4)
    together = _eps(model, z, t, batch.node_mask, True, monkeypatch)
    for b in (0, 1, 7):
        n = SIZES[b]
        alone = _eps(model, z[b : b + 1, :n], t[b : b + 1], batch.node_mask[b : b + 1, :n], True, monkeypatch)
        torch.testing.assert_close(together[b, :n], alone[0], rtol=1e-5, atol=1e-6)


def test_edm_fixture_reproduces_with_size_groups(edm_fixtures, monkeypatch):
    model, _, _ = load_checkpoint(edm_fixtures / "edm_qm9_full")
    r = torch.load(edm_fixtures / "edm_qm9_full" / "reference.pt", weights_only=True)
    mask = r["node_mask"]
    assert len(size_groups(mask, overhead=0)) == 4  # the fixture's four sizes, one group each
    with torch.no_grad():
        eps = _eps(model, r["zt"], r["t"], mask, True, monkeypatch)
    rel = ((eps - r["eps_pred"]) * mask).norm() / (r["eps_pred"] * mask).norm()
    assert rel.item() <= 1e-5


def test_pair_kernels_have_exact_gradients():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(2, 4, 4, 1, generator=g, dtype=torch.float64, requires_grad=True)
    m = torch.randn(2, 4, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_NeighbourSum.apply, (w, m))
    x = torch.randn(2, 3, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(1, 5, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(1, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_Score.apply, (x, weight, bias))
    assert torch.autograd.gradcheck(_Score.apply, (x, weight, None))
    src, dst = (torch.randn(2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    edge = torch.randn(2, 4, 4, 2, generator=g, dtype=torch.float64, requires_grad=True)
    w_e = torch.randn(5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_PairSum.apply, (src, dst, edge, w_e))
    expected = src[:, :, None] + dst[:, None, :] + edge @ w_e.T  # [2, 4, 4, 5]
    assert torch.allclose(_PairSum.apply(src, dst, edge, w_e), expected)


def test_pair_dense_is_the_linear_layer():
    layer = torch.nn.Linear(16, 12)
    x = torch.randn(4, 24, 24, 16, generator=torch.Generator().manual_seed(1))  # 2,304 pair rows: oneDNN's
    with torch.no_grad():
        fast, plain = pair_dense(layer, x), layer(x)
    assert fast.shape == plain.shape == (4, 24, 24, 12)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    assert pair_dense(layer, x).requires_grad  # with gradients, the layer itself


def test_without_gradients_the_network_skips_the_autograd_functions(monkeypatch):
    model, _ = tiny_model(seed=8)
    batch = random_batch(SIZES, seed=9)
    z, t = model.normalize(batch), torch.full((len(SIZES), 1), 0.5)
    recorded = model.predict_eps(z, t, batch.node_mask).detach()  # through the autograd functions
    for function in (_NeighbourSum, _PairSum, _Score):
        monkeypatch.setattr(function, "apply", None)  # any call now fails
    with torch.no_grad():
        eps = model.predict_eps(z, t, batch.node_mask)
    torch.testing.assert_close(eps, recorded, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("grouped", [False, True])
def test_network_runs_under_bf16_autocast(grouped, monkeypatch):
    model, _ = tiny_model(seed=6)
    batch = random_batch(SIZES, seed=7)
    z, t = model.normalize(batch), torch.full((len(SIZES), 1), 0.5)
    reference = _eps(model, z, t, batch.node_mask, grouped, monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eps = _eps(model, z, t, batch.node_mask, grouped, monkeypatch)
    eps.float().sum().backward()
    assert torch.isfinite(eps.float()).all()
    assert (eps.float() - reference).abs().max() < 0.1 * reference.abs().max()
