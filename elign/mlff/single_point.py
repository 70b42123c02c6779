"""Reference methods run one molecule at a time on the CPU (GFN2-xTB, DFT): float64, worker processes, a failure
reported per molecule, reference energies of isolated atoms in their ground-state spin."""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

import numpy as np
import torch

from elign.mlff._pool import TaskResult
from elign.mlff.base import GROUND_STATE_UNPAIRED, ComputeOutput, ForceField

__all__ = ["SinglePointForceField"]


class SinglePointForceField(ForceField):
    """Subclasses give ``method_label`` (named in failure reasons), ``_task`` (what one worker call needs) and
    ``_single_points`` (the calls, in ``n_workers`` processes)."""

    method_label = "single point"

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64, n_workers: int = 1):
        super().__init__(device, dtype)
        self.n_workers = n_workers

    @abstractmethod
    def _task(self, numbers: list[int], positions: np.ndarray, uhf: int, with_forces: bool) -> tuple:
        """One molecule's worker call: atomic numbers, positions [n, 3] A, unpaired electrons, forces or not."""

    @abstractmethod
    def _single_points(self, tasks: list[tuple]) -> list[TaskResult]:
        """((energy eV, forces [n, 3] eV/A), error) of each task."""

    def _reference_elements(self) -> list[int]:
        return sorted(GROUND_STATE_UNPAIRED)

    def _run(self, tasks: list[Any], n_atoms: int) -> ComputeOutput:
        return ComputeOutput.from_single_points(self._single_points(tasks), n_atoms, self.method_label, self.device)

    def _compute(self, positions: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor) -> ComputeOutput:
        pos, z, m = positions.detach().cpu().double().numpy(), numbers.cpu().numpy(), mask.cpu().numpy()
        tasks = [self._task(z[b][m[b]].tolist(), pos[b][m[b]], 0, True) for b in range(len(z))]
        return self._run(tasks, positions.shape[1])

    def _compute_reference_energies(self) -> dict[int, float]:
        elements = self._reference_elements()
        tasks = [self._task([z], np.zeros((1, 3)), GROUND_STATE_UNPAIRED[z], False) for z in elements]
        out = self._run(tasks, 1)
        return {z: float(e) for z, e in zip(elements, out.energy.tolist(), strict=True) if math.isfinite(e)}
