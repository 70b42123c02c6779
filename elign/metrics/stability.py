"""Atom and molecule stability over a set of molecules, pooled as in EDM."""

from __future__ import annotations

from typing import Any

import numpy as np

from elign.metrics.bonds import atom_stability, decoder_symbols, split_molecules

__all__ = ["stability_metrics"]


def stability_metrics(batch: Any, decoder: Any) -> dict[str, Any]:
    """EDM's stability figures of a MoleculeBatch (or a sequence of (positions, types) pairs).

    Returns
      atom_stability:     stable atoms / all atoms, pooled over the set (NaN for no atoms),
      molecule_stability: fraction of molecules whose atoms are all stable (NaN for no molecules),
      n:                  number of molecules,
      per_molecule:       dict of arrays [n]: molecule_stable (bool), n_stable_atoms, n_atoms (int64).
    """
    symbols = decoder_symbols(decoder)
    mol_stable: list[bool] = []
    n_stable: list[int] = []
    n_atoms: list[int] = []
    for x, t in split_molecules(batch):
        stable, ok = atom_stability(x, t, symbols)
        mol_stable.append(ok)
        n_stable.append(int(stable.sum()))
        n_atoms.append(len(t))
    per_molecule = {
        "molecule_stable": np.array(mol_stable, dtype=bool),  # [n]
        "n_stable_atoms": np.array(n_stable, dtype=np.int64),  # [n]
        "n_atoms": np.array(n_atoms, dtype=np.int64),  # [n]
    }
    total_atoms = int(per_molecule["n_atoms"].sum())
    n = len(mol_stable)
    return {
        "atom_stability": sum(n_stable) / total_atoms if total_atoms else float("nan"),
        "molecule_stability": sum(mol_stable) / n if n else float("nan"),
        "n": n,
        "per_molecule": per_molecule,
    }
