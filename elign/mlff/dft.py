"""A DFT oracle through PySCF: B3LYP/6-31G(2df,p) with density fitting by default (QM9's level).

One spawned process per molecule, ``n_workers`` at a time, each killed after ``time_limit`` seconds;
a molecule that times out, fails to converge or errors comes back invalid with the reason.
Reference energies: isolated atoms at the same level (UKS, ground-state multiplicity), computed on
first use for the elements asked for (``reference_elements``, QM9's H C N O F by default).
PySCF's ``b3lyp`` is the VWN-RPA variant since PySCF 2.3, the same as Gaussian's (QM9's program).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from elign.data.elements import QM9_ATOMIC_NUMBERS
from elign.mlff._pool import run_with_deadline
from elign.mlff.base import BOHR_TO_ANGSTROM, ELEMENT_SYMBOLS, HARTREE_TO_EV, missing_extra
from elign.mlff.single_point import SinglePointForceField

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


class DFTForceField(SinglePointForceField):
    """PySCF DFT energies and forces (CPU); slow: meant for small evaluation subsamples."""

    name = "dft"
    supported_elements = frozenset(range(1, 37))
    method_label = "DFT"

    def __init__(
        self,
        *args: Any,
        level: DFTLevel | None = None,
        threads_per_worker: int | None = None,
        time_limit: float | None = 600.0,
        reference_elements: tuple[int, ...] = QM9_ATOMIC_NUMBERS,
        **kwargs: Any,
    ) -> None:
        """``*args``, ``**kwargs``: device, dtype, n_workers (:class:`SinglePointForceField`)."""
        super().__init__(*args, **kwargs)
        try:
            import pyscf  # noqa: F401
        except ImportError as err:
            raise missing_extra("pyscf", err) from err
        self.level = level or DFTLevel()
        self.name = f"dft:{self.level.xc}/{self.level.basis}"
        self.threads = threads_per_worker or max(1, (os.cpu_count() or 1) // max(1, self.n_workers))
        self.time_limit = time_limit
        self.reference_elements = reference_elements

    def _reference_elements(self) -> list[int]:
        return list(self.reference_elements)

    def _task(self, numbers: list[int], positions: np.ndarray, uhf: int, with_forces: bool) -> tuple:
        return numbers, positions, uhf, asdict(self.level), self.threads, with_forces

    def _single_points(self, tasks: list[tuple]) -> list:
        return run_with_deadline(dft_single_point, tasks, self.n_workers, self.time_limit)
