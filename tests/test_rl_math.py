"""Pure-function tests of FED-GRPO's advantages and loss, against hand-computed values."""

import math

import pytest
import torch

from elign.rl.advantages import (
    carry_forward,
    composition_advantages,
    composition_drift,
    disentangled_advantages,
    group_zscore,
    shaped_energy_returns,
    uniqueness_advantages,
)
from elign.rl.config import AlignConfig
from elign.rl.loss import clipped_surrogate, gaussian_kl, warmup_cosine


def test_group_zscore_by_hand():
    v = torch.tensor([[1.0, 2.0, 3.0], [10.0, 10.0, 40.0]])
    valid = torch.ones(2, 3, dtype=torch.bool)
    z = group_zscore(v, valid, eps=0.0)
    s1 = math.sqrt(2 / 3)  # population std of 1, 2, 3
    assert torch.allclose(z[0], torch.tensor([-1 / s1, 0.0, 1 / s1]))
    # 10, 10, 40: mean 20, std sqrt(200)
    s2 = math.sqrt(200)
    assert torch.allclose(z[1], torch.tensor([-10 / s2, -10 / s2, 20 / s2]))


def test_group_zscore_excludes_invalid_members():
    v = torch.tensor([[1.0, 3.0, float("nan"), 1000.0]])
    valid = torch.tensor([[True, True, False, False]])
    z = group_zscore(v, valid, eps=0.0)
    assert torch.allclose(z, torch.tensor([[-1.0, 1.0, 0.0, 0.0]]))  # mean 2, std 1 over the valid two


def test_group_zscore_broadcasts_over_steps():
    v = torch.tensor([[[1.0, 5.0], [3.0, 5.0]]])  # [G=1, K=2, L=2]
    z = group_zscore(v, torch.ones(1, 2, dtype=torch.bool), eps=1e-6)
    assert torch.allclose(z[0, :, 0], torch.tensor([-1.0, 1.0]), atol=1e-5)
    assert torch.allclose(z[0, :, 1], torch.zeros(2))  # identical values: zero, not NaN


def test_shaped_returns_and_carry_forward():
    psi_0 = torch.tensor([2.0, 4.0])
    psi_t = torch.tensor([[1.0, 0.5], [3.0, 1.0]])
    t = torch.tensor([2, 1])
    assert torch.allclose(shaped_energy_returns(psi_0, psi_t, t, 1.0), torch.tensor([[1.0, 1.5], [1.0, 3.0]]))
    g = shaped_energy_returns(psi_0, psi_t, t, 0.5)  # 0.5^2 * 2 - 1, 0.5 * 2 - 0.5, ...
    assert torch.allclose(g, torch.tensor([[-0.5, 0.5], [-2.0, 1.0]]))
    vals = torch.tensor([[1.0, 9.0, 9.0, 4.0, 9.0]])
    ev = torch.tensor([True, False, False, True, False])
    assert torch.equal(carry_forward(vals, ev), torch.tensor([[1.0, 1.0, 1.0, 4.0, 4.0]]))
    with pytest.raises(ValueError):
        carry_forward(vals, ~ev)


def test_disentangled_mixing_by_hand():
    r_f = torch.tensor([[-1.0, -3.0]])  # z: +1, -1
    g_e = torch.tensor([[[10.0, 0.0], [30.0, 0.0]]])  # step 0 z: -1, +1; step 1: 0, 0
    valid = torch.ones(1, 2, dtype=torch.bool)
    a = disentangled_advantages(r_f, g_e, valid, w_force=1.0, w_energy=0.1, clip=5.0, eps=0.0)
    assert torch.allclose(a, torch.tensor([[[1 - 0.1, 1.0], [-1 + 0.1, -1.0]]]))
    # the energy channel's raw scale does not matter: scaling it by 1000 changes nothing
    a2 = disentangled_advantages(r_f, g_e * 1000, valid, 1.0, 0.1, 5.0, eps=0.0)
    assert torch.allclose(a, a2)


def test_mixing_clips_and_penalises_failures():
    r_f = torch.tensor([[0.0, 0.0, 0.0, 10.0, -5.0]])
    g_e = torch.zeros(1, 5, 1)
    valid = torch.tensor([[True, True, True, True, False]])
    a = disentangled_advantages(r_f, g_e, valid, w_force=10.0, w_energy=0.1, clip=5.0, failed_advantage=-2.0)
    assert a[0, 3, 0] == 5.0  # clipped from +17.3
    assert torch.allclose(a[0, :3, 0], torch.full((3,), -10.0 / math.sqrt(3) * 1.0).clamp(-5, 5), atol=1e-4)
    assert a[0, 4, 0] == -2.0  # failed rollout: explicit penalty, not a zero, not in the statistics


def test_success_channel_by_hand():
    # group 0: two scorable members (force z +1 / -1) and two failed ones; success z = (+1, +1, -1, -1)
    # group 1: every member failed: no channel has anything to compare, so no push at all
    r_f = torch.tensor([[-1.0, -3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    g_e = torch.zeros(2, 4, 1)
    valid = torch.tensor([[True, True, False, False], [False, False, False, False]])
    a = disentangled_advantages(
        r_f, g_e, valid, w_force=1.0, w_energy=0.1, clip=5.0, failed_advantage=-2.0, eps=0.0, w_success=0.5
    )
    assert torch.allclose(a[0, :, 0], torch.tensor([1 + 0.5, -1 + 0.5, -0.5, -0.5]))
    assert torch.equal(a[1], torch.zeros(4, 1))
    # one success among four: z(S) = (+sqrt(3), -1/sqrt(3) x 3); the group's advantages sum to zero
    one = torch.tensor([[True, False, False, False]])
    b = disentangled_advantages(torch.tensor([[-2.0, 0, 0, 0]]), torch.zeros(1, 4, 1), one, eps=0.0, w_success=1.0)
    assert torch.allclose(
        b[0, :, 0], torch.tensor([math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3)]), atol=1e-6
    )
    assert abs(float(b.sum())) < 1e-5


def test_clipped_surrogate_by_hand():
    logp_old = torch.zeros(4)
    logp_new = torch.log(torch.tensor([1.0, 1.5, 0.5, 1.05]))
    adv = torch.tensor([1.0, 1.0, -1.0, -2.0])
    loss, s = clipped_surrogate(logp_new, logp_old, adv, clip_eps=0.1)
    # min(rA, clip(r)A): 1*1=1; min(1.5, 1.1)=1.1; min(-0.5, -0.9)=-0.9; min(-2.1, -2.1)=-2.1
    assert loss.item() == pytest.approx(-(1 + 1.1 - 0.9 - 2.1) / 4, rel=1e-6)
    assert s["clip_fraction"].item() == pytest.approx(0.5)  # items 2 and 3 are clipped
    assert s["ratio_max"].item() == pytest.approx(1.5)
    assert s["approx_kl"].item() == pytest.approx(-logp_new.mean().item())


def test_surrogate_gradient_vanishes_outside_the_clip():
    logp_new = torch.log(torch.tensor([1.5])).requires_grad_()
    loss, _ = clipped_surrogate(logp_new, torch.zeros(1), torch.tensor([1.0]), 0.1)
    loss.backward()
    assert logp_new.grad.item() == 0.0


def test_gaussian_kl_by_hand():
    mask = torch.tensor([[[1.0], [1.0], [0.0]]])
    mean = torch.zeros(1, 3, 4)
    ref = torch.zeros(1, 3, 4)
    ref[0, 0, 3] = 2.0  # a feature difference of 2 on a real atom
    ref[0, :2, 0] = 5.0  # a translation of positions: invisible on the CoM-free subspace
    ref[0, 2, 1] = 7.0  # padding: ignored
    kl = gaussian_kl(mean, ref, torch.tensor([0.5]), mask)
    assert kl.item() == pytest.approx(4 / (2 * 0.25))


def test_warmup_cosine_is_clamped_after_the_last_step():
    assert warmup_cosine(0, 100, 5, 0.1) == pytest.approx(0.2)
    assert warmup_cosine(5, 100, 5, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(100, 100, 5, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(250, 100, 5, 0.1) == pytest.approx(0.1)  # the published schedule rose again here
    values = [warmup_cosine(i, 100, 5, 0.1) for i in range(5, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_config_validation_names_the_bad_values():
    with pytest.raises(ValueError, match="group_size=1"):
        AlignConfig(group_size=1)
    with pytest.raises(ValueError, match="shared_steps=50"):
        AlignConfig(steps=50, shared_steps=50)
    with pytest.raises(ValueError, match="failed_mode='zero'"):
        AlignConfig(failed_mode="zero")
    with pytest.raises(ValueError, match="unknown preset"):
        AlignConfig.preset("fast")
    paper = AlignConfig.preset("paper")
    assert (paper.prompts, paper.group_size, paper.steps, paper.trained_steps) == (4, 24, 1000, 400)
    assert (paper.clip_eps, paper.kl_beta, paper.lr, paper.w_energy) == (2e-3, 0.04, 4e-6, 0.1)
    assert all(AlignConfig.help().values())


def test_the_composition_channel_pushes_against_the_drift_with_zero_group_mean():
    # one group of three: fractions over (H, C); the policy over-makes H by 0.1
    fractions = torch.tensor([[[0.7, 0.3], [0.5, 0.5], [0.6, 0.4]]])  # [G=1, K=3, E=2]
    drift = composition_drift(fractions[0], torch.tensor([[0.5, 0.5]] * 3))
    assert torch.allclose(drift, torch.tensor([0.1, -0.1]))
    adv = composition_advantages(fractions, drift, tolerance=0.1)  # [1, 3]
    assert adv[0, 0] < 0 < adv[0, 1] and abs(float(adv[0, 2])) < 1e-6  # richest in H pushed down
    assert abs(float(adv.sum())) < 1e-5
    assert torch.allclose(adv, composition_advantages(fractions, drift * 2, tolerance=0.1 * 2**0.5))  # D / tol^2
    assert torch.count_nonzero(composition_advantages(fractions, torch.zeros(2), 0.1)) == 0  # no drift, no push


def test_the_composition_channel_is_added_before_the_clip():
    rf, returns, valid = torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2, 3), torch.ones(1, 2, dtype=torch.bool)
    plain = disentangled_advantages(rf, returns, valid, clip=1.5)
    shifted = disentangled_advantages(rf, returns, valid, clip=1.5, rollout_channels=torch.tensor([[1.0, -1.0]]))
    assert torch.allclose(plain, torch.tensor([[[1.0] * 3, [-1.0] * 3]]))
    assert torch.allclose(shifted, torch.tensor([[[1.5] * 3, [-1.5] * 3]]))  # 2 and -2, clipped


def test_recent_molecules_count_the_memory_and_the_other_rollouts_and_forget_beyond_it():
    from elign.rl.uniqueness import RecentMolecules

    recent = RecentMolecules(memory=2)
    assert recent.observe(["C", "C", None, "O"], ["C", "C", None, "O"]).tolist() == [1, 1, 0, 0]
    # this process's rollouts, counted against every process's batch and the memory
    assert recent.observe(["C", "N"], ["C", "N", "N", None]).tolist() == [2, 1]
    assert recent.counts(["C", "O", "N"]).tolist() == [3, 1, 2]  # against the memory
    recent.remember(["S"])  # the first batch is forgotten
    assert recent.counts(["C", "O", "N", "S"]).tolist() == [1, 0, 2, 1]
    again = RecentMolecules(memory=2)
    again.load_state_dict(recent.state_dict())
    assert list(again.batches) == list(recent.batches)
    assert RecentMolecules.repeated_share(torch.tensor([0.0, 2.0, 0.0]), torch.tensor([True, True, False])) == 0.5


def test_the_uniqueness_channel_pushes_repeats_down_within_their_group_and_leaves_invalid_ones_alone():
    counts = torch.tensor([[0.0, 3.0, 0.0, 9.0], [2.0, 2.0, 2.0, 0.0]])  # [G=2, K=4]
    valid = torch.tensor([[True, True, True, False], [True, True, True, True]])
    adv = uniqueness_advantages(counts, valid)
    assert adv[0, 0] > 0 > adv[0, 1] and adv[0, 0] == adv[0, 2] and adv[0, 3] == 0  # invalid: no push
    assert adv[1, 3] > 0 > adv[1, 0] and abs(float(adv[0, :3].sum())) < 1e-9 and abs(float(adv[1].sum())) < 1e-9
    assert torch.count_nonzero(uniqueness_advantages(torch.full((1, 3), 4.0), torch.ones(1, 3, dtype=bool))) == 0
    # log(1 + n): the first repeat costs more than each of the next nine
    three = uniqueness_advantages(torch.tensor([[0.0, 1.0, 10.0]]), torch.ones(1, 3, dtype=bool))[0]
    assert float(three[0] - three[1]) > float(three[1] - three[2]) / 9 * 3
