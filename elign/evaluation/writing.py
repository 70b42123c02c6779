"""The files of a report: molecules.csv, one SDF per model, and JSON without NaN."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from elign.evaluation.samples import ModelSamples

__all__ = ["CSV_COLUMNS", "json_safe", "write_csv", "write_sdf"]


CSV_COLUMNS = (
    "model",
    "index",
    "n_atoms",
    "formula",
    "requested_formula",
    "smiles",
    "valid",
    "molecule_stable",
    "n_fragments",
    "reward_formation_energy",
    "reward_rms_force",
    "reward_reason",
    "independent_formation_energy",
    "independent_rms_force",
    "independent_reason",
    "xtb_rms_force",
    "xtb_delta_e_relax",
    "xtb_rmsd",
    "xtb_energy_above_minimum",
    "xtb_converged",
    "xtb_steps",
    "xtb_reason",
    "dft_selected",
    "dft_formation_energy",
    "dft_rms_force",
    "dft_reason",
)


def write_csv(path: Path, rows: list[list[dict]]) -> None:
    present = [c for c in CSV_COLUMNS if any(c in r for model in rows for r in model)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(present)
        for model in rows:
            for r in model:
                w.writerow([_csv_value(r.get(c)) for c in present])


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return str(v)


def write_sdf(path: Path, s: ModelSamples, rows: list[dict]) -> dict[str, int]:
    from elign.io.export import write_sdf

    keep = ("index", "molecule_stable", "reward_rms_force", "xtb_rms_force", "xtb_delta_e_relax")
    props = [
        {
            "name": f"{s.name}_{r['index']}",
            "model": s.name,
            **{k: _csv_value(r[k]) for k in keep if k in r and _csv_value(r[k]) != ""},
        }
        for r in rows
    ]
    return write_sdf(path, s.molecules, s.info.atom_decoder, props)


def json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj
