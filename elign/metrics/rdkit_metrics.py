"""RDKit molecules from 3D geometries, and EDM's validity / uniqueness / novelty.

A molecule is built with one RDKit atom per atom (hydrogens explicit, implicit hydrogens left to
RDKit as in EDM), bonds from the distance tables of :mod:`elign.metrics.bonds` and a 3D conformer.
It is *valid* when ``Chem.SanitizeMol`` accepts it; its SMILES is the canonical SMILES of its largest
fragment (explicit hydrogens appear as ``[H]``; no stereochemistry is perceived from 3D). Training
SMILES compared for novelty must be made the same way: build them from the training geometries with
:func:`molecule_smiles`, or convert SMILES strings with :func:`canonical_smiles`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Geometry import Point3D

from elign.metrics.bonds import bond_orders, chemically_judgeable, decoder_symbols, split_molecules

__all__ = [
    "build_molecule",
    "canonical_smiles",
    "chemistry_metrics",
    "chemistry_metrics_from_batch",
    "largest_fragment",
    "mol_to_smiles",
    "molecule_smiles",
    "quiet_rdkit",
    "sanitized",
]

_BOND_TYPES = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}


def quiet_rdkit() -> rdBase.BlockLogs:
    """Context manager that silences RDKit's log while it is open (and restores it after)."""
    return rdBase.BlockLogs()


def build_molecule(positions: Any, types: Any, decoder: Any, orders: np.ndarray | None = None) -> Chem.Mol:
    """Unsanitized RDKit molecule with a 3D conformer.

    positions: [n, 3] Angstrom; types: [n] indices into ``decoder``; orders: [n, n] bond orders
    (computed from the distance tables when None).
    """
    symbols = decoder_symbols(decoder)
    x = np.asarray(positions.detach().cpu() if hasattr(positions, "detach") else positions, dtype=np.float64)
    t = np.asarray(types.detach().cpu() if hasattr(types, "detach") else types, dtype=np.int64).reshape(-1)
    x = x.reshape(-1, 3)  # [n, 3]
    if orders is None:
        orders = bond_orders(x, t, symbols)  # [n, n]
    mol = Chem.RWMol()
    for ti in t:
        mol.AddAtom(Chem.Atom(symbols[ti]))
    for i, j in zip(*np.nonzero(np.triu(orders, k=1)), strict=True):
        mol.AddBond(int(i), int(j), _BOND_TYPES[int(orders[i, j])])
    conf = Chem.Conformer(len(t))
    conf.Set3D(True)
    for i, (a, b, c) in enumerate(x):
        conf.SetAtomPosition(i, Point3D(float(a), float(b), float(c)))
    mol.AddConformer(conf, assignId=True)
    return mol.GetMol()


def sanitized(mol: Chem.Mol | None) -> Chem.Mol | None:
    """A sanitized copy of ``mol``, or None when RDKit rejects it (bad valence, kekulisation, ...)."""
    if mol is None:
        return None
    out = Chem.Mol(mol)
    with quiet_rdkit():
        try:
            Chem.SanitizeMol(out)
        except (ValueError, RuntimeError):
            return None
    return out


def largest_fragment(mol: Chem.Mol) -> Chem.Mol:
    """The connected fragment with the most atoms (the molecule itself when connected)."""
    with quiet_rdkit():
        frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    return max(frags, default=mol, key=lambda m: m.GetNumAtoms())


def mol_to_smiles(mol: Chem.Mol | None) -> str | None:
    """Canonical SMILES of the largest fragment of the sanitized molecule; None when invalid."""
    clean = sanitized(mol)
    if clean is None:
        return None
    with quiet_rdkit():
        return Chem.MolToSmiles(largest_fragment(clean))


def molecule_smiles(positions: Any, types: Any, decoder: Any) -> str | None:
    """SMILES of a 3D molecule (positions [n, 3], types [n]) under the metric's rules; None when invalid
    (so is a molecule that is not :func:`elign.metrics.bonds.chemically_judgeable`)."""
    if not chemically_judgeable(positions):
        return None
    return mol_to_smiles(build_molecule(positions, types, decoder))


def readable_smiles(positions: Any, types: Any, decoder: Any) -> tuple[str, int]:
    """For people, not the metrics: the SMILES of the whole 3D molecule (every fragment) with exactly its own
    atoms: no hydrogen is added, so it matches the formula and an atom short of hydrogens shows as a radical
    ([CH2]); "" when RDKit rejects it. Also its number of connected fragments under the metric's bonds (0 for a
    geometry the metrics do not judge)."""
    if not chemically_judgeable(positions):
        return "", 0
    mol = Chem.RWMol(build_molecule(positions, types, decoder))
    for atom in mol.GetAtoms():
        atom.SetNoImplicit(True)  # the hydrogens are the molecule's own atoms, never invented
    with quiet_rdkit():
        fragments = len(Chem.GetMolFrags(mol))
        clean = sanitized(mol.GetMol())
        return ("" if clean is None else Chem.MolToSmiles(Chem.RemoveHs(clean))), fragments


def canonical_smiles(smiles: str) -> str | None:
    """A SMILES string in the metric's form (explicit hydrogens, no stereo); None if RDKit rejects it."""
    with quiet_rdkit():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            return None
        Chem.RemoveStereochemistry(mol)
        return Chem.MolToSmiles(largest_fragment(Chem.AddHs(mol)))


def chemistry_metrics(mols: Sequence[Chem.Mol | None], train_smiles: set[str] | None = None) -> dict[str, Any]:
    """EDM's RDKit figures of unsanitized molecules (None counts as invalid).

    validity = valid / n; uniqueness = distinct SMILES / valid (0 when none is valid);
    novelty = distinct SMILES not in ``train_smiles`` / distinct (None without a training set);
    vxu = validity * uniqueness. Also returns the counts and the SMILES list (None where invalid).
    """
    smiles = [mol_to_smiles(m) for m in mols]
    return _figures(smiles, train_smiles)


def chemistry_metrics_from_batch(batch: Any, decoder: Any, train_smiles: set[str] | None = None) -> dict[str, Any]:
    """:func:`chemistry_metrics` of a MoleculeBatch or a sequence of (positions, types) pairs."""
    symbols = decoder_symbols(decoder)
    mols = [build_molecule(x, t, symbols) if chemically_judgeable(x) else None for x, t in split_molecules(batch)]
    return chemistry_metrics(mols, train_smiles)


def _figures(smiles: list[str | None], train_smiles: Iterable[str] | None) -> dict[str, Any]:
    n = len(smiles)
    valid = [s for s in smiles if s is not None]
    unique = set(valid)
    validity = len(valid) / n if n else float("nan")
    uniqueness = len(unique) / len(valid) if valid else 0.0
    novelty: float | None = None
    n_novel: int | None = None
    if train_smiles is not None:
        train = train_smiles if isinstance(train_smiles, set | frozenset) else set(train_smiles)
        n_novel = sum(s not in train for s in unique)
        novelty = n_novel / len(unique) if unique else 0.0
    return {
        "validity": validity,
        "uniqueness": uniqueness,
        "novelty": novelty,
        "vxu": validity * uniqueness,
        "n": n,
        "n_valid": len(valid),
        "n_unique": len(unique),
        "n_novel": n_novel,
        "smiles": smiles,
    }
