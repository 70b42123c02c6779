"""A cheap, differentiable force field for tests: Morse bonds between every pair of atoms, pure torch.

``E = sum_i e_atom(Z_i) + sum_{i<j} D [(1 - exp(-a (d_ij - r0_ij)))^2 - 1]`` with ``r0_ij`` the sum of
covalent radii: harmonic near each bond length, zero at infinite separation, so an isolated atom has
exactly ``e_atom(Z)`` (its reference energy). Forces are ``-dE/dx`` by autograd. Not chemistry.
"""

from __future__ import annotations

import torch

from elign.mlff.base import ComputeOutput, ForceField

__all__ = ["COVALENT_RADII", "SyntheticForceField"]

COVALENT_RADII: dict[int, float] = {
    1: 0.31, 5: 0.84, 6: 0.76, 7: 0.71, 8: 0.66, 9: 0.57, 14: 1.11, 15: 1.07, 16: 1.05,
    17: 1.02, 35: 1.20, 53: 1.39,
}  # fmt: skip


class SyntheticForceField(ForceField):
    name = "synthetic"
    supported_elements = frozenset(COVALENT_RADII)

    def __init__(
        self,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        depth: float = 4.0,
        width: float = 2.0,
        closed_shell_only: bool = False,
    ) -> None:
        super().__init__(device, dtype)
        self.depth = depth  # D, eV
        self.width = width  # a, 1/A
        self.closed_shell_only = closed_shell_only
        self._radius = torch.zeros(128, dtype=dtype, device=self.device)  # [128]
        self._e_atom = torch.zeros(128, dtype=dtype, device=self.device)  # [128]
        for z, r in COVALENT_RADII.items():
            self._radius[z] = r
            self._e_atom[z] = -10.0 * z**0.5  # arbitrary per-element constants (eV)

    def energy(self, positions: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # [B]
        N = positions.shape[1]
        diff = positions[:, :, None, :] - positions[:, None, :, :]  # [B, N, N, 3]
        eye = torch.eye(N, dtype=torch.bool, device=positions.device)
        pair = mask[:, :, None] & mask[:, None, :] & ~eye  # [B, N, N]
        d = torch.sqrt((diff**2).sum(-1) + (~pair).to(positions.dtype))  # [B, N, N], 1 off-pair (no NaN grad)
        r0 = self._radius[numbers][:, :, None] + self._radius[numbers][:, None, :]  # [B, N, N]
        morse = self.depth * ((1 - torch.exp(-self.width * (d - r0))) ** 2 - 1)  # [B, N, N]
        e_pair = 0.5 * torch.where(pair, morse, torch.zeros_like(morse)).sum(dim=(1, 2))  # [B]
        e_atom = torch.where(mask, self._e_atom[numbers], torch.zeros((), dtype=positions.dtype)).sum(1)  # [B]
        return e_pair + e_atom

    def _compute(self, positions: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor) -> ComputeOutput:
        with torch.enable_grad():
            x = positions.detach().requires_grad_(True)  # [B, N, 3]
            e = self.energy(x, numbers, mask)  # [B]
            (grad,) = torch.autograd.grad(e.sum(), x)
        return ComputeOutput(energy=e.detach(), forces=-grad)
