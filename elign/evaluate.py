"""Evaluation of generated molecules: EDM's chemistry metrics from an SDF file or a MoleculeBatch."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from elign.data.info import DatasetInfo, qm9_info
from elign.export import read_sdf
from elign.metrics.rdkit_metrics import chemistry_metrics_from_batch, molecule_smiles
from elign.metrics.stability import stability_metrics

__all__ = ["evaluate_molecules", "evaluate_sdf", "qm9_train_smiles", "sdf_molecules"]

log = logging.getLogger(__name__)


def sdf_molecules(path: str | os.PathLike, info: DatasetInfo) -> list[tuple[np.ndarray, np.ndarray]]:
    """(positions [n, 3], type indices [n]) per SDF record; an element outside the decoder is an error."""
    index = {a: i for i, a in enumerate(info.atom_decoder)}
    out = []
    for k, (pos, symbols, _) in enumerate(read_sdf(path)):
        unknown = sorted(set(symbols) - set(index))
        if unknown:
            raise ValueError(f"{path}: molecule {k} has elements {unknown} outside {info.atom_decoder}")
        out.append((pos, np.array([index[s] for s in symbols], dtype=np.int64)))
    return out


def qm9_train_smiles(cache_dir: str | os.PathLike | None = None, progress: bool = True) -> set[str]:
    """SMILES of QM9's training split built from its 3D geometries with the metric's own bond rules.

    Built once (about a minute) and cached beside the QM9 cache, so that novelty compares like with like.
    """
    from elign.data.qm9 import default_cache_path, load_qm9

    folder = Path(cache_dir) if cache_dir else default_cache_path().parent
    path = folder / "qm9_train_smiles_3d.txt"
    if path.exists():
        return set(path.read_text().split())
    data = load_qm9(progress=progress)
    decoder = data.dataset_info().atom_decoder
    smiles = set()
    for i in tqdm(data.split("train"), desc="training SMILES", disable=not progress):
        s = molecule_smiles(*data.molecule(int(i)), decoder)
        if s:
            smiles.add(s)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sorted(smiles)) + "\n")
    return smiles


def evaluate_molecules(molecules: Any, info: DatasetInfo, train_smiles: set[str] | None) -> dict[str, Any]:
    """Stability and RDKit figures of a MoleculeBatch or (positions, types) pairs, JSON-ready."""
    stab = stability_metrics(molecules, info.atom_decoder)
    chem = chemistry_metrics_from_batch(molecules, info.atom_decoder, train_smiles)
    return {
        "n": stab["n"],
        "atom_stability": stab["atom_stability"],
        "molecule_stability": stab["molecule_stability"],
        "validity": chem["validity"],
        "uniqueness": chem["uniqueness"],
        "novelty": chem["novelty"],
        "vxu": chem["vxu"],
        "n_valid": chem["n_valid"],
        "n_unique": chem["n_unique"],
        "per_molecule": {
            "molecule_stable": stab["per_molecule"]["molecule_stable"].tolist(),
            "n_atoms": stab["per_molecule"]["n_atoms"].tolist(),
            "smiles": chem["smiles"],
        },
    }


def evaluate_sdf(path: str | os.PathLike, info: DatasetInfo | None = None, train_smiles: str | None = None,
                 novelty: bool = True) -> dict[str, Any]:
    """Chemistry report of an SDF file; ``train_smiles``: a text file, else built from the QM9 cache."""
    info = info or qm9_info()
    molecules = sdf_molecules(path, info)
    if not molecules:
        raise ValueError(f"{path} holds no readable molecules")
    smiles = None
    if novelty:
        smiles = set(Path(train_smiles).read_text().split()) if train_smiles else qm9_train_smiles()
    report = evaluate_molecules(molecules, info, smiles)
    report["samples"] = str(path)
    return report
