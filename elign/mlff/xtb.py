"""GFN2-xTB through tblite (CPU): a process pool over molecules; failures reported per molecule.

Reference energies: isolated atoms at GFN2-xTB with their ground-state number of unpaired electrons.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from elign.mlff._pool import run_pool
from elign.mlff.base import BOHR_TO_ANGSTROM, HARTREE_TO_EV, missing_extra
from elign.mlff.single_point import SinglePointForceField

__all__ = ["XTBForceField", "xtb_single_point"]


def xtb_single_point(task: tuple[list[int], np.ndarray, int, str, float]) -> tuple[float, np.ndarray]:
    """(numbers, positions [n, 3] A, uhf, method, accuracy) -> (energy eV, forces [n, 3] eV/A)."""
    from tblite.interface import Calculator

    numbers, positions, uhf, method, accuracy = task
    calc = Calculator(method, np.asarray(numbers), np.asarray(positions) / BOHR_TO_ANGSTROM, charge=0.0, uhf=uhf)
    calc.set("verbosity", 0)
    calc.set("accuracy", accuracy)
    res = calc.singlepoint()
    energy = float(res.get("energy")) * HARTREE_TO_EV
    forces = -np.asarray(res.get("gradient")) * (HARTREE_TO_EV / BOHR_TO_ANGSTROM)  # [n, 3]
    return energy, forces


class XTBForceField(SinglePointForceField):
    """GFN2-xTB energies and forces; ``n_workers`` > 1 uses a spawned process pool (created on first use)."""

    name = "gfn2-xtb"
    supported_elements = frozenset(range(1, 87))
    method_label = "GFN2-xTB"

    def __init__(self, *args: Any, method: str = "GFN2-xTB", accuracy: float = 1.0, **kwargs: Any) -> None:
        """``*args``, ``**kwargs``: device, dtype, n_workers (:class:`SinglePointForceField`)."""
        super().__init__(*args, **kwargs)
        try:
            import tblite.interface  # noqa: F401
        except ImportError as err:
            raise missing_extra("tblite", err) from err
        self.method = method
        self.accuracy = accuracy
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor | None:
        if self.n_workers <= 1:
            return None
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.n_workers, mp_context=mp.get_context("spawn"))
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)
            self._executor = None

    def __del__(self) -> None:
        self.close()

    def _task(self, numbers: list[int], positions: np.ndarray, uhf: int, with_forces: bool) -> tuple:
        return numbers, positions, uhf, self.method, self.accuracy  # tblite gives the gradient anyway

    def _single_points(self, tasks: list[tuple]) -> list:
        return run_pool(xtb_single_point, tasks, self._pool())
