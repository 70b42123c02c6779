"""GFN2-xTB through tblite (CPU): a process pool over molecules; failures reported per molecule.

Reference energies: isolated atoms at GFN2-xTB with their ground-state number of unpaired electrons.
"""

from __future__ import annotations

import math
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch

from elign.mlff._pool import run_pool
from elign.mlff.base import (
    BOHR_TO_ANGSTROM,
    GROUND_STATE_UNPAIRED,
    HARTREE_TO_EV,
    ComputeOutput,
    ForceField,
    missing_extra,
)

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


class XTBForceField(ForceField):
    """GFN2-xTB energies and forces; ``n_workers`` > 1 uses a spawned process pool (created on first use)."""

    name = "gfn2-xtb"
    supported_elements = frozenset(range(1, 87))

    def __init__(
        self,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
        n_workers: int = 1,
        method: str = "GFN2-xTB",
        accuracy: float = 1.0,
    ) -> None:
        super().__init__(device, dtype)
        try:
            import tblite.interface  # noqa: F401
        except ImportError as err:
            raise missing_extra("tblite", err) from err
        self.method = method
        self.accuracy = accuracy
        self.n_workers = n_workers
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

    def _tasks(self, positions: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor, uhf: list[int]) -> list:
        pos, z, m = positions.detach().cpu().double().numpy(), numbers.cpu().numpy(), mask.cpu().numpy()
        return [(z[b][m[b]].tolist(), pos[b][m[b]], uhf[b], self.method, self.accuracy) for b in range(len(z))]

    def _run(self, tasks: list[Any], N: int) -> ComputeOutput:
        results = run_pool(xtb_single_point, tasks, self._pool())
        return ComputeOutput.from_single_points(results, N, "GFN2-xTB", self.device)

    def _compute(self, positions: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor) -> ComputeOutput:
        tasks = self._tasks(positions, numbers, mask, [0] * positions.shape[0])
        return self._run(tasks, positions.shape[1])

    def _compute_reference_energies(self) -> dict[int, float]:
        elements = sorted(GROUND_STATE_UNPAIRED)
        tasks = [([z], np.zeros((1, 3)), GROUND_STATE_UNPAIRED[z], self.method, self.accuracy) for z in elements]
        out = self._run(tasks, 1)
        return {z: float(e) for z, e in zip(elements, out.energy.tolist(), strict=True) if math.isfinite(e)}
