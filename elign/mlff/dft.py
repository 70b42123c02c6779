"""A DFT oracle through PySCF: B3LYP/6-31G(2df,p) with density fitting by default (QM9's level).

One spawned process per molecule, ``n_workers`` at a time, each killed after ``time_limit`` seconds;
a molecule that times out, fails to converge or errors comes back invalid with the reason.
Reference energies: isolated atoms at the same level (UKS, ground-state multiplicity), computed on
first use for the elements asked for (``reference_elements``, QM9's H C N O F by default).
PySCF's ``b3lyp`` is the VWN-RPA variant since PySCF 2.3, the same as Gaussian's (QM9's program).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from elign.data.elements import QM9_ATOMIC_NUMBERS
from elign.mlff._pool import run_with_deadline
from elign.mlff.base import (
    BOHR_TO_ANGSTROM,
    ELEMENT_SYMBOLS,
    GROUND_STATE_UNPAIRED,
    HARTREE_TO_EV,
    ComputeOutput,
    ForceField,
    missing_extra,
)

__all__ = ["DFTForceField", "DFTLevel", "QM9_ATOM_U0_HARTREE", "dft_single_point"]

SECOND_ORDER_MAX_CYCLE = 50  # iterations of the second-order (Newton) SCF tried when DIIS does not converge

# QM9's isolated-atom U0 at B3LYP/6-31G(2df,p) (Gaussian), Hartree: for comparison only.
QM9_ATOM_U0_HARTREE = {1: -0.500273, 6: -37.846772, 7: -54.583861, 8: -75.064579, 9: -99.718730}


@dataclass(frozen=True)
class DFTLevel:
    xc: str = "b3lyp"
    basis: str = "6-31g(2df,p)"
    density_fit: bool = True
    grid_level: int = 3
    conv_tol: float = 1e-9
    max_cycle: int = 100


def dft_single_point(
    task: tuple[list[int], np.ndarray, int, dict[str, Any], int, bool],
) -> tuple[float, np.ndarray]:
    """(numbers, positions [n, 3] A, spin, level, threads, forces) -> (energy eV, forces [n, 3] eV/A)."""
    numbers, positions, spin, level_d, threads, with_forces = task
    from pyscf import dft, gto, lib

    lib.num_threads(threads)
    level = DFTLevel(**level_d)
    atoms = [(ELEMENT_SYMBOLS.get(z, z), tuple(float(c) for c in x)) for z, x in zip(numbers, positions, strict=True)]
    mol = gto.M(atom=atoms, basis=level.basis, charge=0, spin=spin, unit="Angstrom", verbose=0)
    mf = dft.UKS(mol) if spin else dft.RKS(mol)
    mf.xc = level.xc
    mf.grids.level = level.grid_level
    mf.conv_tol = level.conv_tol
    mf.max_cycle = level.max_cycle
    if level.density_fit:
        mf = mf.density_fit()
    energy = mf.kernel()
    if not mf.converged:
        # DIIS can stall on a distorted geometry; second-order SCF from its last density usually converges to
        # the same state (a converged first SCF is never touched, so cached results stay valid)
        mf = mf.newton()
        mf.max_cycle = SECOND_ORDER_MAX_CYCLE
        energy = mf.kernel(mf.make_rdm1())
        if not mf.converged:
            raise RuntimeError(f"SCF did not converge in {level.max_cycle} cycles, nor with second-order SCF")
    forces = np.zeros((len(numbers), 3))
    if with_forces:
        forces = -np.asarray(mf.nuc_grad_method().kernel()) * (HARTREE_TO_EV / BOHR_TO_ANGSTROM)  # [n, 3]
    return float(energy) * HARTREE_TO_EV, forces


class DFTForceField(ForceField):
    """PySCF DFT energies and forces (CPU); slow: meant for small evaluation subsamples."""

    name = "dft"
    supported_elements = frozenset(range(1, 37))

    def __init__(
        self,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
        level: DFTLevel | None = None,
        n_workers: int = 1,
        threads_per_worker: int | None = None,
        time_limit: float | None = 600.0,
        reference_elements: tuple[int, ...] = QM9_ATOMIC_NUMBERS,
    ) -> None:
        super().__init__(device, dtype)
        try:
            import pyscf  # noqa: F401
        except ImportError as err:
            raise missing_extra("pyscf", err) from err
        self.level = level or DFTLevel()
        self.name = f"dft:{self.level.xc}/{self.level.basis}"
        self.n_workers = n_workers
        self.threads = threads_per_worker or max(1, (os.cpu_count() or 1) // max(1, n_workers))
        self.time_limit = time_limit
        self.reference_elements = reference_elements

    def _run(self, tasks: list[Any], N: int) -> ComputeOutput:
        results = run_with_deadline(dft_single_point, tasks, self.n_workers, self.time_limit)
        return ComputeOutput.from_single_points(results, N, "DFT", self.device)

    def _compute(self, positions: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor) -> ComputeOutput:
        pos, z, m = positions.detach().cpu().double().numpy(), numbers.cpu().numpy(), mask.cpu().numpy()
        level = asdict(self.level)
        tasks = [(z[b][m[b]].tolist(), pos[b][m[b]], 0, level, self.threads, True) for b in range(len(z))]
        return self._run(tasks, positions.shape[1])

    def _compute_reference_energies(self) -> dict[int, float]:
        level = asdict(self.level)
        els = list(self.reference_elements)
        tasks = [([z], np.zeros((1, 3)), GROUND_STATE_UNPAIRED[z], level, self.threads, False) for z in els]
        out = self._run(tasks, 1)
        return {z: float(e) for z, e in zip(els, out.energy.tolist(), strict=True) if math.isfinite(e)}
