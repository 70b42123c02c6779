"""The force-field protocol: energies (eV) and forces (eV/A) for a MoleculeBatch, with validity flags.

Every backend subclasses :class:`ForceField` and implements ``_compute`` on the molecules that passed the
shared checks (known elements, even electron count at charge 0, at least one atom). The base class
then flags non-finite outputs, so a molecule a model cannot score is always visible as ``valid=False``
with a reason, and its energy and forces are NaN (never a silent zero).

``ff(batch, forces=False)`` asks for energies only (FED-GRPO's potentials on x0 predictions need no forces);
a backend that can skip the force pass overrides ``_compute_energy``, and the result's forces are then NaN.

Formation energy per atom is defined the same way for every backend::

    (E(molecule) - sum_i E_ref(Z_i)) / n_atoms

with ``E_ref`` the backend's own isolated-atom energies (:attr:`ForceField.reference_energies`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from elign.data.batch import MoleculeBatch
from elign.data.elements import ELEMENT_SYMBOLS

__all__ = [
    "ELEMENT_SYMBOLS",
    "GROUND_STATE_UNPAIRED",
    "ComputeOutput",
    "ForceField",
    "ForceFieldResult",
    "MissingExtraError",
    "formation_energy_per_atom",
    "missing_extra",
    "rms_force",
]

HARTREE_TO_EV = 27.211386245988
BOHR_TO_ANGSTROM = 0.529177210903

# Unpaired electrons of the isolated neutral atom in its ground state (Hund's rule).
GROUND_STATE_UNPAIRED: dict[int, int] = {
    1: 1, 2: 0, 3: 1, 4: 0, 5: 1, 6: 2, 7: 3, 8: 2, 9: 1, 10: 0,
    11: 1, 12: 0, 13: 1, 14: 2, 15: 3, 16: 2, 17: 1, 18: 0, 33: 3, 34: 2, 35: 1, 53: 1,
}  # fmt: skip


class MissingExtraError(ImportError):
    """A backend's optional dependency is not installed."""


def missing_extra(package: str, err: Exception) -> MissingExtraError:
    return MissingExtraError(
        f"this force field needs the optional package {package!r}, which could not be imported ({err}). "
        "Install the extra with: pip install elign[mlff]"
    )


@dataclass
class ForceFieldResult:
    energy: torch.Tensor  # [B] eV, NaN where invalid
    forces: torch.Tensor  # [B, N, 3] eV/A, zero on padding, NaN on the atoms of invalid molecules
    valid: torch.Tensor  # [B] bool
    reason: list[str | None]  # why molecule b is invalid, None where valid

    @property
    def num_invalid(self) -> int:
        return int((~self.valid).sum().item())


@dataclass
class ComputeOutput:
    """What a backend returns for the molecules it was asked to score."""

    energy: torch.Tensor  # [b] eV
    forces: torch.Tensor | None  # [b, N, 3] eV/A; None from an energy-only call
    failures: list[str | None] | None = None  # per-molecule failure reasons (e.g. SCF not converged)

    @classmethod
    def from_single_points(
        cls, results: list[tuple[Any, str | None]], n_atoms: int, method: str, device: torch.device | str
    ) -> ComputeOutput:
        """One molecule's ``((energy eV, forces [n, 3] eV/A), error)`` a result, as a padded output: a failed
        molecule has energy NaN, zero forces and the first line of its error as its reason."""
        energy = torch.full((len(results),), math.nan, dtype=torch.float64)  # [B]
        forces = torch.zeros(len(results), n_atoms, 3, dtype=torch.float64)  # [B, N, 3]
        failures: list[str | None] = []
        for b, (value, err) in enumerate(results):
            if err is not None:
                failures.append(f"{method} failed: {err.splitlines()[0]}")
                continue
            energy[b] = value[0]
            forces[b, : len(value[1])] = torch.from_numpy(np.asarray(value[1]))
            failures.append(None)
        return cls(energy=energy.to(device), forces=forces.to(device), failures=failures)


class ForceField(ABC):
    """Base class of every backend. Subclasses set ``name``, ``supported_elements`` and ``_compute``."""

    name: str = "force-field"
    supported_elements: frozenset[int] = frozenset()
    closed_shell_only: bool = True  # molecules with an odd electron count (charge 0) are flagged

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self._reference_energies: dict[int, float] | None = None

    # ------------------------------------------------------------- backend API
    @abstractmethod
    def _compute(self, positions: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor) -> ComputeOutput:
        """Energies and forces of molecules that passed the checks.

        positions [b, N, 3] (A, self.dtype, self.device), numbers [b, N] long (0 on padding),
        mask [b, N] bool. Forces on padding may be anything; the caller zeroes them.
        """

    def _compute_energy(self, positions: torch.Tensor, numbers: torch.Tensor, mask: torch.Tensor) -> ComputeOutput:
        """Energies only, same inputs as ``_compute``. Default: ``_compute`` (forces computed and dropped)."""
        return self._compute(positions, numbers, mask)

    def _compute_reference_energies(self) -> dict[int, float]:
        """Isolated-atom energies (eV). Default: evaluate each supported element as a single atom."""
        elements = sorted(self.supported_elements)
        numbers = torch.tensor(elements, dtype=torch.long, device=self.device)[:, None]  # [n_el, 1]
        positions = torch.zeros(len(elements), 1, 3, dtype=self.dtype, device=self.device)
        mask = torch.ones(len(elements), 1, dtype=torch.bool, device=self.device)
        out = self._compute(positions, numbers, mask)
        return {z: float(e) for z, e in zip(elements, out.energy.tolist(), strict=True)}

    @property
    def reference_energies(self) -> dict[int, float]:
        """Isolated-atom energies (eV) at this backend's level, by atomic number (computed once)."""
        if self._reference_energies is None:
            self._reference_energies = self._compute_reference_energies()
        return self._reference_energies

    # ----------------------------------------------------------------- calling
    def check(self, batch: MoleculeBatch) -> list[str | None]:
        """Reasons why each molecule cannot be scored (None where it can). One device sync."""
        mask = batch.node_mask[..., 0] > 0.5  # [B, N]
        z = torch.where(mask, batch.charges[..., 0].round().long(), 0)  # [B, N]
        table = torch.zeros(128, dtype=torch.bool, device=z.device)
        table[torch.tensor(sorted(self.supported_elements), dtype=torch.long, device=z.device)] = True
        unknown = mask & ~table[z.clamp(0, 127)]  # [B, N]
        n_electrons = z.sum(dim=1)  # [B]
        n_atoms = mask.sum(dim=1)  # [B]
        finite = torch.isfinite(batch.positions).all(dim=(1, 2))  # [B]
        bad = unknown.any(dim=1) | (n_atoms == 0) | ~finite
        if self.closed_shell_only:
            bad = bad | (n_electrons % 2 == 1)
        reasons: list[str | None] = [None] * batch.batch_size
        if not bool(bad.any()):
            return reasons
        z_cpu, unknown_cpu, ne_cpu, na_cpu = z.cpu(), unknown.cpu(), n_electrons.cpu(), n_atoms.cpu()
        finite_cpu = finite.cpu()
        for b in torch.nonzero(bad.cpu())[:, 0].tolist():
            if int(na_cpu[b]) == 0:
                reasons[b] = "empty molecule (no atoms)"
            elif not bool(finite_cpu[b]):
                reasons[b] = "non-finite input positions"
            elif bool(unknown_cpu[b].any()):
                els = sorted(set(z_cpu[b][unknown_cpu[b]].tolist()))
                names = ", ".join(f"{ELEMENT_SYMBOLS.get(e, '?')} (Z={e})" for e in els)
                reasons[b] = f"element not supported by {self.name}: {names}"
            else:
                reasons[b] = f"odd electron count ({int(ne_cpu[b])}) with charge 0: open shell not supported"
        return reasons

    @torch.no_grad()
    def __call__(self, batch: MoleculeBatch, forces: bool = True) -> ForceFieldResult:
        """Energies and forces of ``batch``; with ``forces=False`` energies only (forces all NaN)."""
        want_forces = forces
        B, N = batch.batch_size, batch.max_atoms
        out_device = batch.device
        mask = batch.node_mask[..., 0] > 0.5  # [B, N]
        reasons = self.check(batch)
        ok = torch.tensor([r is None for r in reasons], dtype=torch.bool)  # [B] cpu
        energy = torch.full((B,), math.nan, dtype=self.dtype, device=out_device)  # [B]
        forces = torch.zeros(B, N, 3, dtype=self.dtype, device=out_device)  # [B, N, 3]
        if bool(ok.any()):
            idx = torch.nonzero(ok)[:, 0]  # [b]
            all_ok = len(idx) == B
            sub = batch if all_ok else batch.index(idx.to(out_device))
            sub_mask = mask if all_ok else mask[idx.to(out_device)]
            numbers = torch.where(sub_mask, sub.charges[..., 0].round().long(), 0)  # [b, N]
            compute = self._compute if want_forces else self._compute_energy
            out = compute(sub.positions.to(self.device, self.dtype), numbers.to(self.device), sub_mask.to(self.device))
            e = out.energy.detach().to(out_device, self.dtype)  # [b]
            finite = torch.isfinite(e)  # [b]
            if want_forces:
                f = out.forces.detach().to(out_device, self.dtype)  # [b, N, 3]
                f = torch.where(sub_mask[..., None], f, torch.zeros((), dtype=f.dtype, device=f.device))
                finite = finite & torch.isfinite(f).all(dim=(1, 2))
            else:
                f = torch.zeros(len(idx), N, 3, dtype=self.dtype, device=out_device)
            finite = finite.cpu()
            failures = out.failures or [None] * len(idx)
            for k, b in enumerate(idx.tolist()):
                if failures[k] is not None:
                    reasons[b] = failures[k]
                elif not bool(finite[k]):
                    reasons[b] = f"{self.name} returned a non-finite energy or force"
            if all_ok:
                energy, forces = e, f
            else:
                dev_idx = idx.to(out_device)
                energy[dev_idx] = e
                forces[dev_idx] = f
        valid = torch.tensor([r is None for r in reasons], dtype=torch.bool, device=out_device)  # [B]
        energy = torch.where(valid, energy, torch.full_like(energy, math.nan))
        nan_atoms = (~valid)[:, None] & mask  # [B, N] real atoms of invalid molecules
        forces = torch.where(nan_atoms[..., None], torch.full_like(forces, math.nan), forces)
        if not want_forces:
            forces = torch.full_like(forces, math.nan)  # not computed: NaN, never a silent zero
        return ForceFieldResult(energy=energy, forces=forces, valid=valid, reason=reasons)

    # ---------------------------------------------------------------- figures
    def formation_energy_per_atom(self, batch: MoleculeBatch, result: ForceFieldResult) -> torch.Tensor:
        return formation_energy_per_atom(batch, result, self.reference_energies)

    def rms_force(self, batch: MoleculeBatch, result: ForceFieldResult) -> torch.Tensor:
        return rms_force(batch, result)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device}, dtype={self.dtype})"


def formation_energy_per_atom(
    batch: MoleculeBatch, result: ForceFieldResult, reference_energies: dict[int, float]
) -> torch.Tensor:  # [B] eV/atom, NaN where invalid or an element lacks a reference
    mask = batch.node_mask[..., 0] > 0.5  # [B, N]
    z = torch.where(mask, batch.charges[..., 0].round().long(), 0).clamp(0, 127)  # [B, N]
    table = torch.full((128,), math.nan, dtype=torch.float64, device=z.device)
    for el, e in reference_energies.items():
        table[el] = e
    table[0] = 0.0
    e_ref = table[z].sum(dim=1)  # [B]
    n = mask.sum(dim=1).clamp(min=1)  # [B]
    e_f = (result.energy.to(torch.float64) - e_ref) / n
    return torch.where(result.valid, e_f, torch.full_like(e_f, math.nan))


def rms_force(batch: MoleculeBatch, result: ForceFieldResult) -> torch.Tensor:  # [B] eV/A
    mask = batch.node_mask[..., 0] > 0.5  # [B, N]
    f2 = torch.where(mask, (result.forces**2).sum(dim=-1), torch.zeros((), dtype=result.forces.dtype))
    n = mask.sum(dim=1).clamp(min=1)  # [B]
    r = torch.sqrt(f2.sum(dim=1) / n)
    return torch.where(result.valid, r, torch.full_like(r, math.nan))
