"""Composition guards: what a model makes, against what QM9 holds.

Alignment can raise stability by changing the chemistry (hydrogen-rich, saturated molecules are the easy way to
low forces and valid valences). These figures say whether it did:

- atom-type fractions and their total variation distance (TV) to QM9's;
- hydrogen fraction and the mean degree of unsaturation (rings + pi bonds, from the formula:
  1 + C + N/2 - (H + F)/2);
- bond-type fractions (single, double, triple under EDM's distance rules) and their TV to QM9's;
- ring sizes (smallest set of smallest rings of the bond graph: 3, 4, 5, 6, 7 or more) and their TV to QM9's,
  and rings per molecule;
- distinct heavy-atom formulas, beside the number a QM9 sample of the same size is expected to hold.

The QM9 side lives in ``elign/data/qm9_reference.json`` (:mod:`elign.data.reference` builds it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from elign.metrics.bonds import bond_orders, decoder_symbols, split_molecules

__all__ = [
    "BOND_LABELS",
    "RING_LABELS",
    "bond_type_counts",
    "composition_counts",
    "composition_metrics",
    "expected_distinct",
    "heavy_formula",
    "qm9_guards",
    "total_variation",
]

BOND_LABELS = ("single", "double", "triple")
RING_LABELS = ("3", "4", "5", "6", "7+")
# QM9's own figures a report shows beside a model's
REFERENCE_FIGURES = (
    "hydrogen_fraction",
    "unsaturation",
    "rings_per_molecule",
    "novelty_held_out",
    "novelty_qm9_sample",
)


def total_variation(p: Sequence[float], q: Sequence[float]) -> float:
    """Half the L1 distance of two distributions over the same labels (0: equal, 1: disjoint)."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"distributions over different labels: {p.shape} vs {q.shape}")
    return float(0.5 * np.abs(p - q).sum())


def _fractions(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts, dtype=np.float64)


def heavy_formula(types: np.ndarray, symbols: Sequence[str]) -> str:
    """Hill-ordered formula of the heavy atoms only (C first, then alphabetical): 'C4NO'."""
    counts = Counter(symbols[int(k)] for k in types if symbols[int(k)] != "H")
    order = sorted(counts, key=lambda a: (a != "C", a))
    return "".join(f"{a}{counts[a] if counts[a] > 1 else ''}" for a in order)


def _ring_sizes(orders: np.ndarray) -> list[int]:
    """Sizes of the smallest set of smallest rings of the bond graph [n, n]."""
    from rdkit import Chem

    n = len(orders)
    i, j = np.nonzero(np.triu(orders, k=1))
    if len(i) < n:  # a forest (rings need as many edges as atoms in some component)
        return []
    mol = Chem.RWMol()
    for _ in range(n):
        mol.AddAtom(Chem.Atom(6))
    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        mol.AddBond(a, b, Chem.BondType.SINGLE)
    return [len(r) for r in Chem.GetSymmSSSR(mol.GetMol())]


def composition_counts(molecules: Any, decoder: Any) -> dict[str, Any]:
    """Raw counts of a set of molecules (a MoleculeBatch or (positions, types) pairs).

    -> atoms [K] per decoder entry, bonds [3] per order, rings [5] per size label, rings_per_molecule [M],
    unsaturation [M], heavy_formulas [M].
    """
    symbols = decoder_symbols(decoder)
    atoms = np.zeros(len(symbols), dtype=np.int64)
    bonds = np.zeros(len(BOND_LABELS), dtype=np.int64)
    rings = np.zeros(len(RING_LABELS), dtype=np.int64)
    per_rings, unsaturation, formulas = [], [], []
    for x, t in split_molecules(molecules):
        counts = np.bincount(t, minlength=len(symbols))  # [K]
        atoms += counts
        by_symbol = dict(zip(symbols, counts.tolist(), strict=True))
        unsaturation.append(
            1 + by_symbol.get("C", 0) + by_symbol.get("N", 0) / 2 - (by_symbol.get("H", 0) + by_symbol.get("F", 0)) / 2
        )
        formulas.append(heavy_formula(t, symbols))
        orders = bond_orders(x, t, symbols)  # [n, n]
        bonds += np.bincount(orders[np.triu_indices(len(t), k=1)], minlength=4)[1:4]
        sizes = _ring_sizes(orders)
        per_rings.append(len(sizes))
        for s in sizes:
            rings[min(s, 7) - 3] += 1
    return {
        "atoms": atoms,
        "bonds": bonds,
        "rings": rings,
        "rings_per_molecule": np.asarray(per_rings, dtype=np.float64),
        "unsaturation": np.asarray(unsaturation, dtype=np.float64),
        "heavy_formulas": formulas,
    }


def bond_type_counts(molecules: Any, decoder: Any) -> np.ndarray:
    """[M, 3] each molecule's single, double and triple bonds under EDM's distance rules."""
    symbols = decoder_symbols(decoder)
    rows = []
    for x, t in split_molecules(molecules):
        upper = bond_orders(x, t, symbols)[np.triu_indices(len(t), k=1)]  # [n (n - 1) / 2]
        rows.append(np.bincount(upper, minlength=4)[1:4])
    return np.asarray(rows, dtype=np.int64).reshape(-1, len(BOND_LABELS))


def expected_distinct(frequencies: dict[str, float], n: int) -> float:
    """Expected number of distinct labels among ``n`` independent draws from ``frequencies`` (sum 1)."""
    p = np.asarray(list(frequencies.values()), dtype=np.float64)
    return float((1.0 - (1.0 - p) ** n).sum())


def composition_metrics(molecules: Any, decoder: Any, reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Composition guards of a set of molecules; with a QM9 ``reference`` (:func:`elign.data.reference.qm9_reference`)
    also the distances to it. Keys are stable (they are logged and plotted)."""
    symbols = decoder_symbols(decoder)
    c = composition_counts(molecules, decoder)
    m = len(c["heavy_formulas"])
    atom_p, bond_p, ring_p = _fractions(c["atoms"]), _fractions(c["bonds"]), _fractions(c["rings"])
    out: dict[str, Any] = {
        "n": m,
        "atom_fractions": dict(zip(symbols, atom_p.tolist(), strict=True)),
        "hydrogen_fraction": float(atom_p[symbols.index("H")]) if "H" in symbols else float("nan"),
        "unsaturation": float(c["unsaturation"].mean()) if m else float("nan"),
        "bond_fractions": dict(zip(BOND_LABELS, bond_p.tolist(), strict=True)),
        "ring_fractions": dict(zip(RING_LABELS, ring_p.tolist(), strict=True)),
        "rings_per_molecule": float(c["rings_per_molecule"].mean()) if m else float("nan"),
        "heavy_formulas_distinct": len(set(c["heavy_formulas"])),
    }
    if reference is None:
        return out
    ref_atoms = reference["atom_fractions"]
    if list(ref_atoms) != list(symbols):
        raise ValueError(f"reference elements {list(ref_atoms)} differ from the model's {list(symbols)}")
    out["atom_type_tv"] = total_variation(atom_p, list(ref_atoms.values()))
    out["bond_type_tv"] = total_variation(bond_p, [reference["bond_fractions"][k] for k in BOND_LABELS])
    out["ring_size_tv"] = total_variation(ring_p, [reference["ring_fractions"][k] for k in RING_LABELS])
    out["heavy_formulas_distinct_qm9"] = expected_distinct(reference["heavy_formula_frequencies"], m)
    out["reference"] = {k: reference[k] for k in REFERENCE_FIGURES}
    return out


def qm9_guards(molecules: Any, decoder: Any) -> dict[str, Any]:
    """:func:`composition_metrics` against QM9's reference when the elements are QM9's, else without distances."""
    from elign.data.reference import qm9_reference

    reference = qm9_reference()
    same = list(reference["atom_fractions"]) == list(decoder_symbols(decoder))
    return composition_metrics(molecules, decoder, reference if same else None)
