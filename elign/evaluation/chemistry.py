"""EDM's chemistry figures of a set of molecules (stability, RDKit validity, uniqueness, novelty against QM9's
training SMILES, composition against QM9) and the per-molecule rows of a report."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from elign.data.formula import hill_formula
from elign.data.info import DatasetInfo, qm9_info
from elign.evaluation.samples import ModelSamples, file_molecules
from elign.metrics.rdkit_metrics import chemistry_metrics_from_batch, molecule_smiles
from elign.metrics.stability import stability_metrics

__all__ = ["chemistry_rows", "evaluate_file", "evaluate_molecules", "qm9_train_smiles"]


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
    """Stability, RDKit and composition figures (guards against QM9) of a MoleculeBatch or (positions, types)
    pairs, JSON-ready."""
    from elign.metrics.composition import qm9_guards

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
        "composition": qm9_guards(molecules, info.atom_decoder),
        "per_molecule": {
            "molecule_stable": stab["per_molecule"]["molecule_stable"].tolist(),
            "n_atoms": stab["per_molecule"]["n_atoms"].tolist(),
            "smiles": chem["smiles"],
        },
    }


def evaluate_file(
    path: str | os.PathLike, info: DatasetInfo | None = None, train_smiles: str | None = None, novelty: bool = True
) -> dict[str, Any]:
    """Chemistry report of an .sdf or .npz file of molecules.

    ``train_smiles``: a text file of training SMILES for novelty, else built from the QM9 cache."""
    molecules, info = file_molecules(path, info or qm9_info())
    if not molecules:
        raise ValueError(f"{path} holds no readable molecules")
    smiles = None
    if novelty:
        smiles = set(Path(train_smiles).read_text().split()) if train_smiles else qm9_train_smiles()
    report = evaluate_molecules(molecules, info, smiles)
    report["samples"] = str(path)
    return report


def chemistry_rows(s: ModelSamples, train: set[str] | None) -> tuple[dict[str, Any], list[dict]]:
    from elign.metrics.bonds import n_fragments

    chem = evaluate_molecules(s.molecules, s.info, train)
    per = chem.pop("per_molecule")
    rows = []
    for i, (x, t) in enumerate(s.molecules):
        rows.append(
            {
                "model": s.name,
                "index": i,
                "n_atoms": int(per["n_atoms"][i]),
                "formula": hill_formula(Counter(s.info.atom_decoder[int(k)] for k in t)),
                "smiles": per["smiles"][i] or "",
                "valid": per["smiles"][i] is not None,
                "molecule_stable": float(per["molecule_stable"][i]),
                "n_fragments": n_fragments(x, t, s.info.atom_decoder),
            }
        )
    if s.source.get("formulas"):
        chem |= formula_figures(rows, s.source["formulas"], s.source["per_formula"])
    return chem, rows


def formula_figures(rows: list[dict], formulas: list[str], per_formula: int) -> dict[str, Any]:
    """Molecules sampled as isomers of formulas (``per_formula`` of each, in order): the share with exactly the
    requested formula, and isomer uniqueness (distinct valid SMILES of a formula over its valid molecules,
    pooled over the formulas). Each row gets its ``requested_formula``."""
    from elign.data.formula import parse_formula

    exact, valid, distinct = 0, 0, 0
    for k, formula in enumerate(formulas):
        wanted = hill_formula(parse_formula(formula))
        block = rows[k * per_formula : (k + 1) * per_formula]
        for row in block:
            row["requested_formula"] = wanted
        exact += sum(row["formula"] == wanted for row in block)
        smiles = [row["smiles"] for row in block if row["valid"]]
        valid, distinct = valid + len(smiles), distinct + len(set(smiles))
    return {
        "formulas": len(formulas),
        "exact_formula": exact / max(1, len(rows)),
        "isomer_uniqueness": distinct / valid if valid else None,
    }
