"""Grouped rollouts of the reverse chain with a shared prefix, storing what FED-GRPO trains on.

Each group draws its noise from its own generator, so a group's rollouts do not depend on which
other groups share the batch (or the process, under DDP).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from elign.data.batch import MoleculeBatch
from elign.data.geometry import sample_center_gravity_zero_gaussian
from elign.diffusion.conditioning import FixedTypes, types_context
from elign.diffusion.edm import EquivariantDiffusion
from elign.diffusion.sampler import node_mask_from_sizes, timestep_grid
from elign.diffusion.scheduler import gaussian_log_prob

__all__ = ["STATE_LIMIT", "Rollouts", "grouped_rollouts", "shared_first_steps"]

# |z| no latent of a molecule reaches (positions in A, unit noise, scaled types): a rollout past it has left the
# data (a step of a network that drifted where it is not trained), and what two networks say there means nothing
STATE_LIMIT = 50.0


@dataclass
class Rollouts:
    """R = G * K rollouts (group-major), L trained (branched) steps each.

    The first trained step's input is its group's shared state, so its z_t, std and x0_pred are the same (bit
    for bit) for the K rollouts of a group; its z_s, drawn with each rollout's own noise, are not. With the atom
    types fixed (a formula a group), the policy chooses only positions: log-probabilities and the KL cover the
    position channels (``positions_only``), and x0_pred carries the formula's assigned types.
    """

    group_size: int  # K
    node_mask: torch.Tensor  # [R, N, 1]
    t: torch.Tensor  # [L] long, diffusion time of the input of each trained step
    s: torch.Tensor  # [L] long, time of its output
    z_t: torch.Tensor  # [L, R, N, D] inputs of the trained steps
    z_s: torch.Tensor  # [L, R, N, D] sampled outputs
    std: torch.Tensor  # [L, R]
    log_prob: torch.Tensor  # [L, R] log p(z_s | z_t) under the policy that sampled them (PPO's old log-probs)
    x0_pred: torch.Tensor  # [L, R, N, D] x0 predictions at the inputs
    molecules: MoleculeBatch  # the decoded final molecules (R of them)
    positions_only: bool = False  # the types were fixed: only the position channels are the policy's choice
    context: torch.Tensor | None = None  # [R, C] what a conditioned network reads (element counts), else None
    prefix_z: torch.Tensor | None = None  # [S, G, N, D] each group's shared state entering each shared step
    prefix_t: torch.Tensor | None = None  # [S] long, diffusion time of those states
    prefix_s: torch.Tensor | None = None  # [S] long, time of the shared steps' outputs

    @property
    def channels(self) -> slice:
        """The latent channels the policy chooses: all, or the positions when the types are fixed."""
        return slice(0, 3) if self.positions_only else slice(None)

    @property
    def num_groups(self) -> int:
        return self.node_mask.shape[0] // self.group_size

    @property
    def num_steps(self) -> int:
        return self.t.shape[0]

    def finite(self) -> torch.Tensor:
        """[R] bool: every trained state, sample and log-probability of the rollout is finite."""
        finite = torch.isfinite(self.z_t).all(dim=(0, 2, 3)) & torch.isfinite(self.z_s).all(dim=(0, 2, 3))
        return finite & torch.isfinite(self.log_prob).all(0)

    def on_data(self) -> torch.Tensor:
        """[R] bool: the rollout is :meth:`finite` and its trained states and samples are within STATE_LIMIT."""
        return _within(self.z_t, (0, 2, 3)) & _within(self.z_s, (0, 2, 3)) & torch.isfinite(self.log_prob).all(0)

    def prefix_on_data(self) -> torch.Tensor:
        """[S, G] bool: each shared state is finite and within STATE_LIMIT (an empty [0, G] without a prefix)."""
        if self.prefix_z is None:
            return torch.zeros(0, self.num_groups, dtype=torch.bool, device=self.z_t.device)
        return _within(self.prefix_z, (2, 3))


def _within(z: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """z finite and |z| <= STATE_LIMIT over ``dims``."""
    return (torch.isfinite(z) & (z.abs() <= STATE_LIMIT)).all(dim=dims)


def _group_noise(
    model: EquivariantDiffusion,
    mask: torch.Tensor,
    generators: list[torch.Generator],
    per_group: int,
    positions_only: bool = False,
) -> torch.Tensor:
    """Noise for ``len(generators) * per_group`` molecules, block g drawn from generators[g]."""
    parts = []
    N = mask.shape[1]
    for g, gen in enumerate(generators):
        m = mask[g * per_group : (g + 1) * per_group]
        n = int(m[0, :, 0].sum())  # draw for the group's own size, so padding never shifts the stream
        m = m[:, :n]
        eps = sample_center_gravity_zero_gaussian(m, gen) if positions_only else model.scheduler.sample_noise(m, gen)
        parts.append(torch.nn.functional.pad(eps, (0, 0, 0, N - n)))
    return torch.cat(parts)


def _conditioning(model, types, mask, atomic_numbers, type_guidance: float):
    """(the groups' formulas as FixedTypes, the context [G, K] a composition-conditioned network reads), or Nones
    without formulas."""
    if types is None:
        return None, None
    fixed = FixedTypes(types[:, : mask.shape[1]].to(mask.device), atomic_numbers, guidance=type_guidance)
    context = types_context(types, model.num_types).to(mask.device) if model.context_dim else None  # [G, K]
    return fixed, context


def _predict(model, z, t, mask, context, fixed: FixedTypes | None):
    """(the network's noise prediction at z, the types' guidance gradient or None)."""
    if fixed is None:
        return model.predict_eps(z, t, mask, context), None
    return fixed.eps_and_gradient(model, z, t, mask, context)


def _reverse_step(
    model, z, mask, t_int, s_int, generators, per_group, fixed: FixedTypes | None, context, eps=None, type_grad=None
):
    """One reverse step of every group's molecules (noise drawn per group); -> (the step, the next latent: z_s, or
    with fixed types z_s, its positions moved by the types' guidance when it is on, with its type channels replaced
    by the formula's assignment noised to s). The step's sample z_s is the policy's action; the guidance and the
    replacement act after it, as the environment's part of the transition, so log-probabilities stay those of the
    network's own Gaussian. ``eps`` (and ``type_grad``): the prediction already made at z (the shared state)."""
    ones = torch.ones(z.shape[0], 1, device=z.device)
    s, t = ones * (s_int / model.T), ones * (t_int / model.T)
    if eps is None:
        eps, type_grad = _predict(model, z, t, mask, context, fixed)
    out = model.scheduler.step(z, eps, s, t, mask, noise=_group_noise(model, mask, generators, per_group))
    if fixed is None:
        return out, out.z_s
    z_next = out.z_s if type_grad is None else fixed.guide(model, out.z_s, type_grad, s, t, mask)
    fixed.assign(model, out.x0_pred, mask)  # the formula's types go to the nodes the prediction favours
    log_prob = gaussian_log_prob(out.z_s[..., :3], out.mean[..., :3], out.std, mask)  # positions only
    out = replace(out, x0_pred=fixed.finish(out.x0_pred), log_prob=log_prob)
    types_noise = _group_noise(model, mask, generators, per_group)[..., 3:]
    return out, fixed.noised(model, z_next, s, mask, eps=types_noise)


def _shared_prefix(model, mask, pairs, t_start: int, generators, fixed: FixedTypes | None, context):
    """Each group's first steps (the (t, s) ``pairs``), from noise at ``t_start``: -> (the state where the group
    branches [G, N, D], the states entering each step [S, G, N, D] or None without one)."""
    z = _group_noise(model, mask, generators, 1)
    if fixed is not None:
        t_first = torch.full((mask.shape[0], 1), t_start / model.T, device=mask.device)
        z = fixed.noised(model, z, t_first, mask, eps=_group_noise(model, mask, generators, 1)[..., 3:])
    states = []  # [G, N, D] per shared step
    for t_int, s_int in pairs:
        states.append(z)
        z = _reverse_step(model, z, mask, t_int, s_int, generators, 1, fixed, context)[1]
    return z, torch.stack(states) if states else None


@torch.no_grad()
def grouped_rollouts(
    model: EquivariantDiffusion,
    sizes: torch.Tensor,
    group_size: int,
    steps: int,
    shared_steps: int,
    generators: list[torch.Generator],
    atomic_numbers: list[int] | None = None,
    max_atoms: int | None = None,
    types: torch.Tensor | None = None,
    type_guidance: float = 0.0,
) -> Rollouts:
    """sizes [G]: one molecule size per group; generators: one per group, on the model's device; types [G, N]
    long (-1 on padding): each group's formula, fixed during the chain (needs ``atomic_numbers``), the positions
    guided by it with step ``type_guidance`` (:mod:`elign.diffusion.conditioning`), and read by a
    composition-conditioned network."""
    if len(generators) != len(sizes):
        raise ValueError(f"{len(sizes)} groups but {len(generators)} generators")
    device = model.gamma.gamma.device
    grid = timestep_grid(model.T, steps)
    pairs = list(zip(grid[:-1], grid[1:], strict=True))
    K = group_size
    mask = node_mask_from_sizes(sizes, max_atoms, device)  # [G, N, 1]
    fixed, context = _conditioning(model, types, mask, atomic_numbers, type_guidance)
    z, prefix = _shared_prefix(model, mask, pairs[:shared_steps], grid[0], generators, fixed, context)
    # the first branched step's input is its group's shared state: the network sees each group once
    t_first = torch.full((len(sizes), 1), pairs[shared_steps][0] / model.T, device=device)
    eps, type_grad = _predict(model, z, t_first, mask, context, fixed)
    eps = eps.repeat_interleave(K, 0)  # [R, N, D]
    type_grad = None if type_grad is None else type_grad.repeat_interleave(K, 0)  # [R, N, 3]
    mask, z = mask.repeat_interleave(K, 0), z.repeat_interleave(K, 0)  # [R, N, 1], [R, N, D]
    fixed = None if fixed is None else fixed.repeat_interleave(K)
    context = None if context is None else context.repeat_interleave(K, 0)  # [R, K]
    record = {"z_t": [], "z_s": [], "std": [], "log_prob": [], "x0_pred": []}
    for t_int, s_int in pairs[shared_steps:]:
        out, z_next = _reverse_step(model, z, mask, t_int, s_int, generators, K, fixed, context, eps, type_grad)
        for key, value in (("z_t", z), ("z_s", out.z_s), ("std", out.std), ("log_prob", out.log_prob)):
            record[key].append(value)
        record["x0_pred"].append(out.x0_pred)
        z, eps, type_grad = z_next, None, None
    z = z if fixed is None else fixed.finish(z)
    noise_x = _group_noise(model, mask, generators, K, positions_only=True)
    molecules = model.decode(z, mask, atomic_numbers=atomic_numbers, noise=noise_x, context=context)
    trained = pairs[shared_steps:]
    return Rollouts(
        group_size=K,
        node_mask=mask,
        t=torch.tensor([t for t, _ in trained], device=device),
        s=torch.tensor([s for _, s in trained], device=device),
        **{k: torch.stack(v) for k, v in record.items()},
        molecules=molecules,
        positions_only=fixed is not None,
        context=context,
        prefix_z=prefix,
        prefix_t=torch.tensor([t for t, _ in pairs[:shared_steps]], device=device),
        prefix_s=torch.tensor([s for _, s in pairs[:shared_steps]], device=device),
    )


def shared_first_steps(l_idx: torch.Tensor, r_idx: torch.Tensor, group_size: int):
    """Items (l, r) whose network input is another item's: the first trained step (l = 0) of rollouts of one
    group (:class:`~elign.rl.rollout.Rollouts`). -> (rows [U] of the distinct inputs, inverse [M] mapping each
    item to its row among them), or None when every input is distinct."""
    first = l_idx == 0
    if int(first.sum()) < 2:
        return None
    key = torch.where(first, -1 - r_idx // group_size, l_idx * (int(r_idx.max()) + 1) + r_idx)  # [M]
    distinct, inverse = torch.unique(key, return_inverse=True)
    if len(distinct) == len(key):
        return None
    positions = torch.arange(len(key), device=key.device)
    rows = torch.full_like(distinct, len(key)).scatter_reduce_(0, inverse, positions, "amin")  # first occurrences
    return rows, inverse
