"""The force-field columns of a report: the reward model, an independent model and the GFN2-xTB referee
(single point and relaxation), per molecule, with the reason where a molecule is not scored."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from elign.evaluation.samples import ModelSamples, Pair
from elign.evaluation.settings import EvaluationSettings

__all__ = ["ff_columns", "force_field_figures", "independent_from_xtb", "reason_category", "xtb_columns"]


def force_field_figures(
    ff: Any,
    molecules: Sequence[Pair],
    atomic_numbers: Sequence[int],
    batch_size: int = 64,
    decoder: Sequence[str] | None = None,
) -> dict[str, list]:
    """Per molecule: formation_energy (eV/atom), rms_force (eV/A), reason (None where scored), in order.

    With ``decoder``, impossible geometries (overlapping atoms), lone atoms and molecules in several fragments
    (EDM's bond rules) are not scored, each with its reason: their figures would be artefacts (isolated atoms
    look perfect, overlapping ones poison every mean). The force field itself only refuses what it cannot
    compute, so an alignment reward still sees every finite molecule.
    """
    import torch

    from elign.data.batch import MoleculeBatch
    from elign.metrics.bonds import geometry_problem, n_fragments
    from elign.mlff import formation_energy_per_atom, rms_force

    n = len(molecules)
    out: dict[str, list] = {"formation_energy": [math.nan] * n, "rms_force": [math.nan] * n, "reason": [None] * n}
    todo = list(range(n))
    if decoder is not None:  # in the referees' order (referees.precheck): impossible geometry, then fragments
        for i in range(n):
            problem = geometry_problem(molecules[i][0])
            if problem is None and len(molecules[i][1]) == 1:
                problem = "a single atom (no bonds, forces or relaxation to score)"
            if problem is None and n_fragments(*molecules[i], decoder) > 1:
                problem = "disconnected fragments"
            out["reason"][i] = problem
        todo = [i for i in todo if out["reason"][i] is None]
    for start in range(0, len(todo), batch_size):
        idx = todo[start : start + batch_size]
        batch = MoleculeBatch.from_lists(
            [torch.as_tensor(molecules[i][0]) for i in idx],
            [torch.as_tensor(molecules[i][1]) for i in idx],
            list(atomic_numbers),
        )
        batch = batch.to(ff.device, ff.dtype)
        result = ff(batch)
        e_form = formation_energy_per_atom(batch, result, ff.reference_energies).cpu().tolist()  # [b]
        rms = rms_force(batch, result).cpu().tolist()  # [b]
        for b, i in enumerate(idx):
            reason = result.reason[b]
            if reason is None and not (math.isfinite(e_form[b]) and math.isfinite(rms[b])):
                reason = f"{ff.name}: no reference energy for an element of this molecule"
            out["reason"][i] = reason
            if reason is None:
                out["formation_energy"][i], out["rms_force"][i] = e_form[b], rms[b]
    return out


def reason_category(reason: str) -> str:
    """A short, countable category of a failure reason."""
    r = reason.lower()
    for key, cat in (
        ("disconnected", "disconnected fragments"),
        ("element", "unsupported element"),
        ("odd electron", "odd electron count (open shell)"),
        ("converge", "SCF not converged"),
        ("time limit", "time limit exceeded"),
        ("overlapping", "overlapping atoms"),
        ("single atom", "a single atom"),
        ("non-finite input", "non-finite positions"),
        ("non-finite positions", "non-finite positions"),
        ("non-finite", "non-finite output"),
        ("reference energy", "no atom reference energy"),
        ("empty", "empty molecule"),
    ):
        if key in r:
            return cat
    return reason.splitlines()[0][:80]


def ff_columns(
    spec: str, prefix: str, samples: Sequence[ModelSamples], rows: list[list[dict]], settings: EvaluationSettings
) -> dict[str, Any]:
    import torch

    from elign.mlff import load_force_field

    kwargs = {"dtype": torch.float64} if spec.lower() in ("xtb", "gfn2-xtb", "dft") else {}
    ff = load_force_field(spec, device=settings.device, **kwargs)
    t0 = time.perf_counter()
    for m, s in enumerate(samples):
        fig = force_field_figures(ff, s.molecules, s.info.atomic_numbers, settings.ff_batch_size, s.info.atom_decoder)
        for i, row in enumerate(rows[m]):
            row[f"{prefix}_formation_energy"] = fig["formation_energy"][i]
            row[f"{prefix}_rms_force"] = fig["rms_force"][i]
            row[f"{prefix}_reason"] = fig["reason"][i]
    if hasattr(ff, "close"):
        ff.close()
    return {"force_field": spec, "name": getattr(ff, "name", spec), "seconds": time.perf_counter() - t0}


def xtb_columns(
    samples: Sequence[ModelSamples], rows: list[list[dict]], settings: EvaluationSettings, out_dir: Path
) -> dict[str, Any]:
    from elign.evaluation.referees import xtb_relax_all

    t0 = time.perf_counter()
    for m, s in enumerate(samples):
        res = xtb_relax_all(
            s.molecules,
            s.info.atom_decoder,
            s.info.atomic_numbers,
            settings.xtb_workers,
            settings.xtb_time_limit,
            settings.relax_fmax,
            settings.relax_steps,
            settings.relax_max_step,
            settings.rmsd_atoms,
            settings.progress,
            desc=f"GFN2-xTB relaxation [{s.name}]",
            cache_dir=out_dir / "xtb_cache",
        )
        for row, r in zip(rows[m], res, strict=True):
            ok = r["reason"] is None
            for key in ("energy", "rms_force", "delta_e_relax", "rmsd"):
                row[f"xtb_{key}"] = r[key] if ok else math.nan
            row["xtb_converged"] = r.get("converged") if ok else None
            row["xtb_steps"] = r.get("steps") if ok else None
            row["xtb_reason"] = r["reason"]
    return {
        "method": "GFN2-xTB (tblite, ASE BFGS)",
        "fmax": settings.relax_fmax,
        "max_steps": settings.relax_steps,
        "max_step": settings.relax_max_step,
        "rmsd_atoms": settings.rmsd_atoms,
        "time_limit": settings.xtb_time_limit,
        "seconds": time.perf_counter() - t0,
        "cache": str(out_dir / "xtb_cache"),
    }


def isomer_energy_columns(rows: list[list[dict]]) -> bool:
    """Molecules sampled as isomers of formulas (``requested_formula``) get ``xtb_energy_above_minimum``: their
    xTB energy at the sampled geometry above the lowest xTB-relaxed energy any model's molecule of that formula
    reached (kcal/mol), how far each isomer sits from the best minimum found. -> whether any row got it."""
    from elign.evaluation.referees import EV_TO_KCAL_MOL

    def scored(r: dict) -> bool:
        return r.get("requested_formula") == r["formula"] and r.get("xtb_reason") is None

    lowest: dict[str, float] = {}
    for r in (r for model_rows in rows for r in model_rows if scored(r)):
        relaxed = r["xtb_energy"] - r["xtb_delta_e_relax"] / EV_TO_KCAL_MOL  # eV
        lowest[r["formula"]] = min(lowest.get(r["formula"], math.inf), relaxed)
    for r in (r for model_rows in rows for r in model_rows if r.get("requested_formula")):
        above = (r["xtb_energy"] - lowest[r["formula"]]) * EV_TO_KCAL_MOL if scored(r) else math.nan
        r["xtb_energy_above_minimum"] = above
    return bool(lowest)


def independent_from_xtb(samples: Sequence[ModelSamples], rows: list[list[dict]]) -> dict[str, Any]:
    """Independent-model figures from the xTB referee's single point at the sampled geometry (no second run)."""
    from elign.mlff.xtb import XTBForceField

    refs = XTBForceField().reference_energies  # eV, by atomic number
    for s, model_rows in zip(samples, rows, strict=True):
        for (_, t), row in zip(s.molecules, model_rows, strict=True):
            z = [int(s.info.atomic_numbers[k]) for k in t]
            row["independent_reason"] = row["xtb_reason"]
            row["independent_rms_force"] = row["xtb_rms_force"]
            e = row.pop("xtb_energy", math.nan)
            ok = row["xtb_reason"] is None and all(a in refs for a in z)
            row["independent_formation_energy"] = (e - sum(refs[a] for a in z)) / len(z) if ok else math.nan
    return {"force_field": "xtb", "name": "gfn2-xtb", "note": "single point of the xTB referee, reused"}
