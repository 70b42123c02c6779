"""MoleculeBatch: the one currency passed between data, models, sampler, rewards, metrics and export.

Dense and padded: molecule b has ``node_mask[b].sum()`` real atoms in its first rows; padding rows are
zero everywhere. Positions of real atoms are in Angstrom; the sampler keeps them centre-of-mass free.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

__all__ = ["MoleculeBatch"]


@dataclass
class MoleculeBatch:
    positions: torch.Tensor  # [B, N, 3] Angstrom, zero on padding
    one_hot: torch.Tensor  # [B, N, K] float, index into DatasetInfo.atom_decoder
    charges: torch.Tensor  # [B, N, 1] float atomic numbers, zero on padding
    node_mask: torch.Tensor  # [B, N, 1] float, 1 for real atoms

    def __post_init__(self) -> None:
        B, N, _ = self.node_mask.shape
        for f, last in (("positions", 3), ("charges", 1), ("node_mask", 1)):
            shape = tuple(getattr(self, f).shape)
            if shape != (B, N, last):
                raise ValueError(f"MoleculeBatch.{f} has shape {shape}, expected {(B, N, last)}")
        if self.one_hot.shape[:2] != (B, N):
            raise ValueError(f"MoleculeBatch.one_hot has shape {tuple(self.one_hot.shape)}, expected ({B}, {N}, K)")

    # ------------------------------------------------------------------ sizes
    @property
    def batch_size(self) -> int:
        return self.node_mask.shape[0]

    @property
    def max_atoms(self) -> int:
        return self.node_mask.shape[1]

    @property
    def num_atoms(self) -> torch.Tensor:  # [B] long
        return self.node_mask[..., 0].sum(dim=1).round().long()

    @property
    def atom_types(self) -> torch.Tensor:  # [B, N] long, -1 on padding
        types = self.one_hot.argmax(dim=-1)
        return torch.where(self.node_mask[..., 0] > 0.5, types, torch.full_like(types, -1))

    @property
    def device(self) -> torch.device:
        return self.positions.device

    @property
    def edge_mask(self) -> torch.Tensor:  # [B, N, N, 1] real pairs without self-edges
        m = self.node_mask[..., 0]
        eye = torch.eye(self.max_atoms, device=m.device, dtype=m.dtype)
        return (m[:, :, None] * m[:, None, :] * (1 - eye)).unsqueeze(-1)

    # ------------------------------------------------------------- transforms
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> MoleculeBatch:
        return MoleculeBatch(**{f.name: getattr(self, f.name).to(device=device, dtype=dtype) for f in fields(self)})

    def index(self, idx) -> MoleculeBatch:
        """Select molecules (a slice, list or tensor of indices)."""
        return MoleculeBatch(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def trim(self) -> MoleculeBatch:
        """Drop padding columns beyond the largest molecule."""
        n = int(self.num_atoms.max().item()) if self.batch_size else 0
        return MoleculeBatch(**{f.name: getattr(self, f.name)[:, :n] for f in fields(self)})

    def molecule(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions [n, 3] and atom-type indices [n] of molecule b, without padding."""
        n = int(self.num_atoms[b])
        return self.positions[b, :n], self.atom_types[b, :n]

    @staticmethod
    def from_lists(
        positions: list[torch.Tensor],
        atom_types: list[torch.Tensor],
        atomic_numbers: list[int] | torch.Tensor,
        max_atoms: int | None = None,
    ) -> MoleculeBatch:
        """Pad a list of molecules: positions [n_i, 3] (Angstrom) and type indices [n_i].

        ``atomic_numbers[k]`` is the atomic number of type k (e.g. [1, 6, 7, 8, 9] for QM9).
        """
        if len(positions) != len(atom_types):
            raise ValueError(f"{len(positions)} position arrays but {len(atom_types)} type arrays")
        z_of_type = torch.as_tensor(atomic_numbers, dtype=torch.float32)
        K = len(z_of_type)
        sizes = [len(t) for t in atom_types]
        N = max_atoms if max_atoms is not None else max(sizes, default=0)
        if sizes and max(sizes) > N:
            raise ValueError(f"a molecule has {max(sizes)} atoms, more than max_atoms={N}")
        B = len(positions)
        pos = torch.zeros(B, N, 3)
        one_hot = torch.zeros(B, N, K)
        charges = torch.zeros(B, N, 1)
        mask = torch.zeros(B, N, 1)
        for b, (x, t) in enumerate(zip(positions, atom_types, strict=True)):
            x = torch.as_tensor(x, dtype=torch.float32)
            t = torch.as_tensor(t, dtype=torch.long)
            if x.shape != (len(t), 3):
                raise ValueError(f"molecule {b}: positions {tuple(x.shape)} do not match {len(t)} atom types")
            if len(t) and (t.min() < 0 or t.max() >= K):
                raise ValueError(f"molecule {b}: atom type out of range 0..{K - 1}: {t.tolist()}")
            n = len(t)
            pos[b, :n] = x
            one_hot[b, torch.arange(n), t] = 1.0
            charges[b, :n, 0] = z_of_type[t]
            mask[b, :n] = 1.0
        return MoleculeBatch(pos, one_hot, charges, mask)
