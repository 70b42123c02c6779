"""Helpers for tests of models built on elign: tiny models, random batches, equivariance checks."""

from __future__ import annotations

import torch

from elign.data.batch import MoleculeBatch
from elign.data.elements import QM9_ATOMIC_NUMBERS, QM9_SYMBOLS
from elign.data.geometry import remove_mean_with_mask
from elign.diffusion.edm import EquivariantDiffusion
from elign.models.config import ModelConfig
from elign.models.factory import build_model

__all__ = ["tiny_config", "tiny_model", "random_batch", "random_rotation", "assert_equivariant"]

QM9_Z = list(QM9_ATOMIC_NUMBERS)


def tiny_config(**overrides) -> ModelConfig:
    """A 2-layer, 16-feature EDM with a short chain: milliseconds per step on a CPU."""
    base = dict(
        hidden=16,
        n_layers=2,
        timesteps=50,
        dataset={
            "name": "tiny",
            "atom_decoder": list(QM9_SYMBOLS),
            "n_nodes": {3: 1, 4: 2, 5: 2, 6: 1},
            "max_n_nodes": 6,
        },
    )
    return ModelConfig(**{**base, **overrides})


def tiny_model(seed: int = 0, **overrides) -> tuple[EquivariantDiffusion, ModelConfig]:
    torch.manual_seed(seed)
    config = tiny_config(**overrides)
    return build_model(config).eval(), config


def random_batch(
    sizes: list[int], num_types: int = 5, seed: int = 0, pad_to: int | None = None, scale: float = 1.5
) -> MoleculeBatch:
    """Random CoM-free molecules with the given sizes (types uniform, QM9 atomic numbers)."""
    g = torch.Generator().manual_seed(seed)
    pos = [torch.randn(n, 3, generator=g) * scale for n in sizes]
    types = [torch.randint(0, num_types, (n,), generator=g) for n in sizes]
    b = MoleculeBatch.from_lists(pos, types, QM9_Z[:num_types], max_atoms=pad_to)
    return MoleculeBatch(remove_mean_with_mask(b.positions, b.node_mask), b.one_hot, b.charges, b.node_mask)


def random_rotation(seed: int = 0, reflect: bool = False, dtype=torch.float32) -> torch.Tensor:
    """A random orthogonal 3x3 matrix (det +1, or -1 with ``reflect``)."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if reflect:
        q = q @ torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    return q.to(dtype)


def assert_equivariant(fn, z: torch.Tensor, node_mask: torch.Tensor, atol: float = 1e-4, seed: int = 0) -> None:
    """Check ``fn(z [B, N, 3 + F], node_mask) -> [B, N, 3 + F]`` is E(3) and permutation equivariant.

    Positions (the first 3 features) must rotate and reflect with the input and be unchanged by a
    translation (the output is a CoM-free vector field); other features must be invariant; atoms
    permute with the input. Raises AssertionError naming the broken symmetry and its error.
    """
    ref = fn(z, node_mask)
    x, h = z[..., :3], z[..., 3:]
    checks = {}
    for name, Q in (("rotation", random_rotation(seed)), ("reflection", random_rotation(seed + 1, reflect=True))):
        Q = Q.to(z.dtype)
        out = fn(torch.cat([x @ Q.T, h], -1), node_mask)
        expect = torch.cat([ref[..., :3] @ Q.T, ref[..., 3:]], -1)
        checks[name] = (out - expect) * node_mask
    shift = torch.randn(z.shape[0], 1, 3, generator=torch.Generator().manual_seed(seed), dtype=z.dtype) * 3
    out = fn(torch.cat([(x + shift) * node_mask, h], -1), node_mask)
    checks["translation"] = (out - ref) * node_mask
    perm = torch.randperm(z.shape[1], generator=torch.Generator().manual_seed(seed))
    out = fn(z[:, perm], node_mask[:, perm])
    checks["permutation"] = (out - ref[:, perm]) * node_mask[:, perm]
    scale = ref.abs().max().clamp(min=1.0)
    for name, err in checks.items():
        e = (err.abs().max() / scale).item()
        assert e <= atol, f"not {name} equivariant: max relative error {e:.2e} > {atol:.1e}"
