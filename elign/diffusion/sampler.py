"""The sampling loop: strided chains, mixed sizes, trajectories, explicit randomness.

A chain of S steps visits the integer times ``timestep_grid(T, S)`` (T ... 0) and applies the EDM
reverse step between consecutive ones; S = T is the original full chain.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from elign.data.batch import MoleculeBatch
from elign.data.geometry import remove_mean_with_mask
from elign.diffusion.conditioning import TYPE_GUIDANCE, FixedTypes, types_context
from elign.diffusion.edm import EquivariantDiffusion
from elign.precision import bf16_autocast

__all__ = ["timestep_grid", "node_mask_from_sizes", "Trajectory", "ForceGuidance", "sample_chain", "sample_molecules"]


def timestep_grid(T: int, steps: int) -> list[int]:
    """Descending integer times from T to 0 with ``steps`` transitions (evenly strided)."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be in 1..{T}, got {steps}")
    grid = np.unique(np.round(np.linspace(0, T, steps + 1)).astype(int))[::-1]
    return grid.tolist()


def node_mask_from_sizes(sizes: torch.Tensor, max_atoms: int | None = None, device=None) -> torch.Tensor:
    """sizes [B] -> node_mask [B, N, 1] with the first sizes[b] atoms real."""
    sizes = torch.as_tensor(sizes, dtype=torch.long)
    if (sizes < 1).any():
        raise ValueError(f"molecule sizes must be >= 1, got {sizes.tolist()}")
    N = int(sizes.max()) if max_atoms is None else max_atoms
    mask = torch.arange(N)[None, :] < sizes[:, None]
    return mask.float().unsqueeze(-1).to(device)


@dataclass
class Trajectory:
    """Decoded frames of the chain: the latent at each kept time ``times[f]`` (T ...), then the sample (t = 0)."""

    times: list[int] = field(default_factory=list)
    positions: list[torch.Tensor] = field(default_factory=list)  # each [B, N, 3], Angstrom, CPU
    types: list[torch.Tensor] = field(default_factory=list)  # each [B, N] long (argmax), CPU
    x0_positions: list[torch.Tensor] = field(default_factory=list)  # each [B, N, 3]: the x0 prediction

    def add(self, t: int, positions: torch.Tensor, types: torch.Tensor, x0_positions: torch.Tensor) -> None:
        self.times.append(t)
        self.positions.append(positions.float().cpu())
        self.types.append(types.cpu())
        self.x0_positions.append(x0_positions.float().cpu())

    def add_latent(
        self, model: EquivariantDiffusion, t: int, z: torch.Tensor, x0: torch.Tensor, mask: torch.Tensor
    ) -> None:
        """Decode z_t (positions, argmax types) and the x0 prediction's positions into a frame."""
        x, h_cat, _ = model.unnormalize(z, mask)
        self.add(t, x, h_cat.argmax(-1), model.unnormalize(x0, mask)[0])

    def __len__(self) -> int:
        return len(self.times)


class ForceGuidance:
    """MLFF-guided sampling, the inference-time baseline that alignment removes.

    Once sigma_s < ``sigma_threshold``, positions move along the force field's forces after each
    reverse step: ``x <- x + scale * (1 - sigma_s) * F(x)``, then re-centred. Molecules the force field
    cannot score are not moved (counted in ``skipped``). ``calls`` counts molecule evaluations.
    """

    def __init__(
        self, force_field, scale: float, sigma_threshold: float = 0.8, atomic_numbers: list[int] | None = None
    ) -> None:
        if not (math.isfinite(scale) and scale >= 0):
            raise ValueError(f"guidance scale must be a finite number >= 0, got {scale}")
        if not (math.isfinite(sigma_threshold) and sigma_threshold >= 0):
            raise ValueError(f"guidance threshold must be a finite number >= 0, got {sigma_threshold}")
        self.ff, self.scale, self.sigma_threshold = force_field, scale, sigma_threshold
        self.atomic_numbers = atomic_numbers
        self.calls = 0
        self.skipped = 0
        self.seconds = 0.0

    def __call__(
        self, model: EquivariantDiffusion, z: torch.Tensor, s: torch.Tensor, node_mask: torch.Tensor
    ) -> torch.Tensor:
        sigma = model.scheduler.sigma(model.scheduler.gamma_of(s))  # [B]
        if float(sigma.max()) >= self.sigma_threshold:
            return z
        t0 = time.perf_counter()
        mols = model.to_batch(z, node_mask, self.atomic_numbers)
        with torch.autocast(z.device.type, enabled=False):  # the force field in float32 under a bf16 sampler
            result = self.ff(mols.to(self.ff.device))
        forces = torch.nan_to_num(result.forces.to(z.device, z.dtype)) * result.valid.to(z.device).view(-1, 1, 1)
        self.calls += z.shape[0]
        self.skipped += int((~result.valid).sum())
        step = (self.scale * (1 - sigma)).view(-1, 1, 1) * forces / model.norm_values[0]
        x = remove_mean_with_mask(z[..., :3] + step * node_mask, node_mask)
        self.seconds += time.perf_counter() - t0
        return torch.cat([x, z[..., 3:]], dim=-1)


@torch.no_grad()
def sample_chain(
    model: EquivariantDiffusion,
    node_mask: torch.Tensor,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    trajectory_every: int | None = None,
    atomic_numbers: list[int] | None = None,
    z_T: torch.Tensor | None = None,
    step_callback: Callable[[int, int], None] | None = None,
    guidance: ForceGuidance | None = None,
    fixed_types: FixedTypes | None = None,
    context: torch.Tensor | None = None,
) -> tuple[MoleculeBatch, Trajectory | None]:
    """Run the reverse chain for the molecules of ``node_mask`` [B, N, 1] and decode them.

    ``trajectory_every=k`` keeps every k-th latent (and always the first and the last). ``fixed_types``: the atom
    types are given (a formula) and only the positions are sampled, guided by them when its ``guidance`` > 0
    (:mod:`elign.diffusion.conditioning`).
    ``context`` [B, C]: what a conditioned network reads (the element counts of a composition-conditioned one).
    """
    steps = model.T if steps is None else steps
    grid = timestep_grid(model.T, steps)
    B = node_mask.shape[0]
    z = model.scheduler.sample_noise(node_mask, generator) if z_T is None else z_T
    traj = Trajectory() if trajectory_every else None
    ones = torch.ones(B, 1, device=z.device, dtype=z.dtype)
    if fixed_types is not None:
        z = fixed_types.noised(model, z, ones * (grid[0] / model.T), node_mask, generator)
    for i, (t_int, s_int) in enumerate(zip(grid[:-1], grid[1:], strict=True)):
        s, t = ones * (s_int / model.T), ones * (t_int / model.T)
        if fixed_types is not None:
            eps, type_grad = fixed_types.eps_and_gradient(model, z, t, node_mask, context)
        else:
            eps, type_grad = model.predict_eps(z, t, node_mask, context), None
        step = model.scheduler.step(z, eps, s, t, node_mask, generator)
        if traj is not None and (i % trajectory_every == 0):
            traj.add_latent(model, t_int, z, step.x0_pred, node_mask)
        z = step.z_s
        if guidance is not None:
            z = guidance(model, z, ones * (s_int / model.T), node_mask)
        if type_grad is not None:
            z = fixed_types.guide(model, z, type_grad, s, t, node_mask)
        if fixed_types is not None:
            fixed_types.assign(model, step.x0_pred, node_mask)
            z = fixed_types.noised(model, z, ones * (s_int / model.T), node_mask, generator)
        if step_callback is not None:
            step_callback(i + 1, len(grid) - 1)
    if fixed_types is not None:
        z = fixed_types.finish(z)
    molecules = model.decode(z, node_mask, generator, atomic_numbers, context=context)
    if traj is not None:
        traj.add(0, molecules.positions, molecules.one_hot.argmax(-1), molecules.positions)
    return molecules, traj


def _sizes(
    num: int, sizes_prob: torch.Tensor, seed: int, sizes: torch.Tensor | None, types: torch.Tensor | None
) -> torch.Tensor:
    """[num] long: the sizes the types fix, else those given, else drawn from ``sizes_prob`` with ``seed``."""
    if types is not None:
        sizes = (types >= 0).sum(dim=1)  # [num]
        if len(types) != num or int(sizes.min()) < 1:
            raise ValueError(f"types must give {num} molecules of at least one atom each")
    if sizes is None:
        size_gen = torch.Generator().manual_seed(seed)
        sizes = torch.multinomial(sizes_prob.double(), num, replacement=True, generator=size_gen)
    return torch.as_tensor(sizes, dtype=torch.long)


def _given_types(model: EquivariantDiffusion, types, atomic_numbers: list[int] | None) -> torch.Tensor | None:
    """The types to sample [num, N] long (or None), checked against what the model needs."""
    if types is not None:
        types = torch.as_tensor(types, dtype=torch.long)
        if atomic_numbers is None:
            raise ValueError("sampling given types needs the model's atomic numbers")
    if model.context_dim and types is None:
        raise ValueError("this model is conditioned on composition: give the formulas of the molecules to sample")
    return types


def sample_molecules(
    model: EquivariantDiffusion,
    num: int,
    sizes_prob: torch.Tensor,
    steps: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    atomic_numbers: list[int] | None = None,
    progress: bool = False,
    sizes: torch.Tensor | None = None,
    guidance: ForceGuidance | None = None,
    bf16: bool = False,
    types: torch.Tensor | None = None,
    fix_types: bool = True,
    type_guidance: float = TYPE_GUIDANCE,
) -> MoleculeBatch:
    """Sample ``num`` molecules, sizes drawn from ``sizes_prob`` [N_max + 1] (or given), in batches.

    Molecules are batched by size (largest first) so that little padding is computed; the result is
    in the order of ``sizes``, padded to the largest. The same seed, sizes and batch size give the
    same molecules. ``bf16`` runs the network's matrix products in bfloat16 (:mod:`elign.precision`):
    faster where the hardware has it, other molecules for the same seed. ``types`` [num, N] long (-1 on padding):
    the atom types of each molecule are given (formulas, :func:`elign.data.formula.formula_types`), which also
    fixes the sizes; only positions are sampled, with reconstruction guidance of step ``type_guidance`` (0: none;
    :mod:`elign.diffusion.conditioning`). A composition-conditioned model reads the types' element counts
    (and needs them); with ``fix_types=False`` it samples the types too, told only the counts.
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    gen = torch.Generator(device=device).manual_seed(seed)
    types = _given_types(model, types, atomic_numbers)
    sizes = _sizes(num, sizes_prob, seed, sizes, types)  # [num]
    n_max = int(sizes.max())
    order = torch.argsort(sizes, descending=True, stable=True)  # [num]
    steps_total = steps if steps is not None else model.T
    fields = ("positions", "one_hot", "charges", "node_mask")
    out = None
    bar = tqdm(total=num, desc=f"sampling ({steps_total} steps)", unit="mol", disable=not progress)
    for idx in order.split(batch_size):
        mask = node_mask_from_sizes(sizes[idx], device=device)
        fixed = context = None
        if types is not None and fix_types:
            fixed = FixedTypes(types[idx, : mask.shape[1]].to(device), list(atomic_numbers), guidance=type_guidance)
        if model.context_dim:
            context = types_context(types[idx], model.num_types).to(device)  # [b, K]
        with bf16_autocast(device, bf16):
            mols, _ = sample_chain(
                model, mask, steps, gen, atomic_numbers=atomic_numbers, guidance=guidance, fixed_types=fixed,
                context=context,
            )  # fmt: skip
        pad = n_max - mask.shape[1]
        parts = [torch.nn.functional.pad(getattr(mols, f).cpu(), (0, 0, 0, pad)) for f in fields]
        if out is None:
            out = [torch.zeros(num, *p.shape[1:], dtype=p.dtype) for p in parts]
        for buf, part in zip(out, parts, strict=True):
            buf[idx] = part
        bar.update(len(idx))
    bar.close()
    return MoleculeBatch(*out)
