"""Group-relative, force/energy disentangled advantages (pure functions).

Shapes: G groups of K rollouts, L trained steps per rollout.
"""

from __future__ import annotations

import torch

__all__ = [
    "carry_forward",
    "composition_advantages",
    "composition_drift",
    "disentangled_advantages",
    "group_zscore",
    "shaped_energy_returns",
    "uniqueness_advantages",
]


def group_zscore(values: torch.Tensor, valid: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(v - mean_g v) / (std_g v + eps) within each group over its valid members.

    values [G, K, ...], valid [G, K] bool -> [G, K, ...]; invalid members get 0 and do not enter
    the statistics. The standard deviation is the population one (divides by the valid count).
    """
    values = torch.nan_to_num(values)  # invalid members may carry NaN; they are masked below
    mask = valid.to(values.dtype).view(*valid.shape, *([1] * (values.dim() - 2)))
    count = mask.sum(dim=1, keepdim=True).clamp(min=1)
    v = torch.where(mask > 0, values, torch.zeros_like(values))
    mean = v.sum(dim=1, keepdim=True) / count
    var = (((v - mean) * mask) ** 2).sum(dim=1, keepdim=True) / count
    denom = var.sqrt() + eps
    z = torch.where(denom > 0, (v - mean) / torch.where(denom > 0, denom, 1.0), 0.0)  # a constant group: 0
    return z * mask


def shaped_energy_returns(
    psi_0: torch.Tensor, psi_t: torch.Tensor, t_index: torch.Tensor, discount: float = 1.0
) -> torch.Tensor:
    """G_t = discount^t * Psi_0 - Psi_t.

    psi_0 [..., 1] or [...], psi_t [..., L], t_index [L] (the diffusion time of each trained step).
    """
    if psi_0.dim() == psi_t.dim() - 1:
        psi_0 = psi_0.unsqueeze(-1)
    return (discount ** t_index.to(psi_t.dtype)) * psi_0 - psi_t


def carry_forward(values: torch.Tensor, evaluated: torch.Tensor) -> torch.Tensor:
    """Fill unevaluated steps with the most recent evaluated one along the last axis.

    values [..., L], evaluated [L] bool with evaluated[0] True -> [..., L].
    """
    if not bool(evaluated[0]):
        raise ValueError("the first trained step must be evaluated")
    idx = torch.arange(values.shape[-1], device=values.device)
    last = torch.cummax(torch.where(evaluated, idx, torch.zeros_like(idx)), dim=0).values  # [L]
    return values[..., last]


def disentangled_advantages(
    reward_force: torch.Tensor,
    energy_returns: torch.Tensor,
    valid: torch.Tensor,
    w_force: float = 1.0,
    w_energy: float = 0.1,
    clip: float = 5.0,
    failed_advantage: float = -1.0,
    eps: float = 1e-6,
    w_success: float | None = None,
    rollout_channels: torch.Tensor | None = None,
) -> torch.Tensor:
    """A_t = clip(w_F * z(R_F) + w_E * z(G_t) [+ A_C], -c, c), each channel normalised within its group.

    reward_force [G, K], energy_returns [G, K, L], valid [G, K] -> advantages [G, K, L].
    Failed rollouts (the force field cannot score them) never enter the force and energy statistics. With
    ``w_success`` None they get ``failed_advantage`` on every step. With a weight, success is a third channel
    instead: the indicator valid (1/0) z-scored over all K members of the group and added as w_S * z(S), so
    a failed member is pushed down only relative to scorable members of its own group (a group that failed
    or succeeded entirely gets no push from it) and the group's advantages keep a zero mean.
    ``rollout_channels`` [G, K], the weighted channels judged on the final molecule alone (composition:
    :func:`composition_advantages`; uniqueness: :func:`uniqueness_advantages`), is added to every step of every
    member before the clip (a failed member's too, under ``w_success``).
    """
    a_f = group_zscore(reward_force, valid, eps).unsqueeze(-1)  # [G, K, 1]
    a_e = group_zscore(energy_returns, valid, eps)  # [G, K, L]
    a_c = 0.0 if rollout_channels is None else rollout_channels.unsqueeze(-1)  # [G, K, 1]
    if w_success is None:
        adv = (w_force * a_f + w_energy * a_e + a_c).clamp(-clip, clip)
        return torch.where(valid.unsqueeze(-1), adv, torch.full_like(adv, failed_advantage))
    everyone = torch.ones_like(valid)
    a_s = group_zscore(valid.to(reward_force.dtype), everyone, eps).unsqueeze(-1)  # [G, K, 1]
    return (w_force * a_f + w_energy * a_e + w_success * a_s + a_c).clamp(-clip, clip)


def composition_drift(fractions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean atom-type drift of a set of rollouts from their targets: fractions [R, E], target [R, E] -> [E]."""
    return (fractions - target).mean(dim=0)


def composition_advantages(fractions: torch.Tensor, drift: torch.Tensor, tolerance: float) -> torch.Tensor:
    """The composition channel: A_C = (mean_g p - p_i) . D / tolerance^2 within each group.

    fractions [G, K, E] (each rollout's atom-type fractions), drift D [E] (the running drift of the policy's
    fractions from QM9's) -> [G, K]. A rollout richer than its group in the elements the policy already
    over-makes is pushed down, one poorer pushed up: the policy-gradient of -|D|^2 / (2 tolerance^2), a penalty
    on the batch's drift, not on any one molecule's composition, so it vanishes when the policy makes QM9's
    composition and leaves the spread of compositions alone. Zero mean within each group.
    """
    centred = fractions.mean(dim=1, keepdim=True) - fractions  # [G, K, E]
    return (centred * drift).sum(-1) / tolerance**2


def uniqueness_advantages(counts: torch.Tensor, valid: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The uniqueness channel: A_U = z(-log(1 + n)) within each group over its valid members.

    counts n [G, K] (how often each rollout's molecule was made recently, :class:`elign.rl.uniqueness.
    RecentMolecules`), valid [G, K] bool (RDKit-valid) -> [G, K]. The logarithm makes the first repeats count most;
    invalid members get 0 (the force and success channels judge them), and a group whose valid members were all
    made equally often gets 0.
    """
    return group_zscore(-torch.log1p(counts.to(torch.float64)), valid, eps)
