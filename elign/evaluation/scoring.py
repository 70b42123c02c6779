"""Energies and forces of the molecules of a file (``elign score``), with evaluate's checks.

A molecule is scored only when the referees would judge it: a real geometry (no two atoms closer than 0.5 A,
finite coordinates), more than one atom, one connected fragment and an even electron count
(:func:`elign.evaluation.referees.precheck`); the force field adds its own flags (an element it lacks, a
non-finite output). Every other molecule keeps its row with the reason, and no figure averages it in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from elign.data.elements import ATOMIC_NUMBERS

__all__ = ["FileScores", "score_file"]


@dataclass
class FileScores:
    """Per molecule of a file: what the force field says of it, and whether it counts."""

    symbols: list[list[str]]  # per molecule, its atoms' element symbols
    energy: np.ndarray  # [M] eV (NaN where not scored)
    formation_energy: np.ndarray  # [M] eV/atom (NaN where not scored)
    rms_force: np.ndarray  # [M] eV/A (NaN where not scored)
    forces: list[np.ndarray]  # per molecule [n, 3] eV/A
    valid: np.ndarray  # [M] bool
    reason: list[str]  # per molecule, why it was not scored ("" when it was)

    def summary(self) -> list[str]:
        lines = [f"{int(self.valid.sum())}/{len(self.valid)} molecules scored"]
        if self.valid.any():
            rms = self.rms_force[self.valid]
            lines.append(
                f"formation energy per atom: mean {self.formation_energy[self.valid].mean():.4f} eV; RMS force: "
                f"mean {rms.mean():.4f} eV/A, median {np.median(rms):.4f} eV/A"
            )
        lines += [f"molecule {b} not scored: {r}" for b, r in enumerate(self.reason) if r]
        return lines


def score_file(path: str | os.PathLike, force_field) -> FileScores:
    """Score every molecule of an .sdf or .npz file with ``force_field`` (a loaded force field)."""
    from elign.data.batch import MoleculeBatch
    from elign.evaluation.referees import precheck
    from elign.io.export import read_molecules
    from elign.mlff import formation_energy_per_atom, rms_force

    records = read_molecules(path)
    if not records:
        raise ValueError(f"{path} holds no readable molecules")
    unknown = sorted({s for _, syms, _ in records for s in syms} - set(ATOMIC_NUMBERS))
    if unknown:
        raise ValueError(f"{path}: {unknown} are not element symbols")
    elements = sorted({s for _, syms, _ in records for s in syms}, key=ATOMIC_NUMBERS.__getitem__)
    index = {s: i for i, s in enumerate(elements)}
    types = [np.array([index[s] for s in syms], dtype=np.int64) for _, syms, _ in records]
    # an element the force field lacks is named first (a molecule holding one also falls apart under bond
    # tables that do not know it); the force field gives that reason itself
    supported = force_field.supported_elements or frozenset(ATOMIC_NUMBERS.values())
    checks = [
        None
        if set(z := [ATOMIC_NUMBERS[s] for s in syms]) - supported
        else precheck(z, np.asarray(x, dtype=np.float64), t, elements, supported)
        for (x, syms, _), t in zip(records, types, strict=True)
    ]
    ok = [i for i, c in enumerate(checks) if c is None]
    M = len(records)
    energy, e_form, rms = np.full(M, np.nan), np.full(M, np.nan), np.full(M, np.nan)
    forces = [np.full((len(syms), 3), np.nan) for _, syms, _ in records]
    reason = [c or "" for c in checks]
    if ok:
        batch = MoleculeBatch.from_lists(
            [torch.as_tensor(records[i][0], dtype=torch.float32) for i in ok],
            [torch.from_numpy(types[i]) for i in ok],
            [ATOMIC_NUMBERS[s] for s in elements],
        ).to(force_field.device)
        result = force_field(batch)
        e_f = formation_energy_per_atom(batch, result, force_field.reference_energies).cpu().numpy()
        r = rms_force(batch, result).cpu().numpy()
        for k, i in enumerate(ok):
            n = len(types[i])
            finite = bool(np.isfinite([float(result.energy[k]), e_f[k], r[k]]).all())
            if not bool(result.valid[k]) or not finite:
                reason[i] = result.reason[k] or "non-finite force-field output"
                continue
            energy[i], e_form[i], rms[i] = float(result.energy[k]), e_f[k], r[k]
            forces[i] = result.forces[k, :n].detach().cpu().numpy()
    valid = np.array([not r for r in reason])
    return FileScores([list(s) for _, s, _ in records], energy, e_form, rms, forces, valid, reason)
