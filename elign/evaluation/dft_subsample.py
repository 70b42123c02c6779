"""The DFT columns of a report: a seeded random subsample of each model's eligible molecules, run through the
cached PySCF oracle, the models taking turns so that a stopped run holds a prefix of every model's draw."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from elign.evaluation.physics import reason_category
from elign.evaluation.samples import ModelSamples
from elign.evaluation.settings import EvaluationSettings

__all__ = ["QM9_DFT_FORMATION_ENERGY", "dft_columns", "dft_draw", "take_turns"]


QM9_DFT_FORMATION_ENERGY = {
    "mean": -4.466,
    "median": -4.443,
    "p10": -4.700,
    "p90": -4.262,
    "unit": "eV/atom",
    "level": "B3LYP/6-31G(2df,p)",
    "note": "QM9's own molecules (equilibrium geometries, RMS force ~ 0)",
}


def dft_draw(pool: Sequence[int], num: int, seed: int) -> list[int]:
    """``num`` indices drawn at random from ``pool``, in the order drawn: a prefix of one seeded permutation, so
    raising ``num`` keeps every molecule already drawn (and its cached DFT result) and only adds new ones."""
    order = np.random.default_rng(seed).permutation(len(pool))  # [len(pool)]
    return [int(pool[j]) for j in order[:num]]


def take_turns(draws: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """(model, index) pairs with the models taking turns in the order each drew its molecules: a run stopped part
    way has computed a prefix of every model's draw, which a rerun with a smaller budget reports as is."""
    longest = max(map(len, draws), default=0)
    return [(m, draw[rank]) for rank in range(longest) for m, draw in enumerate(draws) if rank < len(draw)]


@dataclass
class _Draw:
    """One model's DFT subsample: the indices drawn (in order), and per molecule its atomic numbers and the
    reason DFT cannot evaluate it (None when eligible)."""

    indices: list[int]
    numbers: list[list[int]]
    reasons: list[str | None]
    eligibility: dict[str, Any]


def _draw_model(s: ModelSamples, n: int, settings: EvaluationSettings) -> _Draw:
    from elign.evaluation.referees import DFT_ELEMENTS, precheck
    from elign.evaluation.stats import count_reasons

    numbers = [[int(s.info.atomic_numbers[j]) for j in t] for _, t in s.molecules[:n]]
    reasons = [
        precheck(z, x, t, s.info.atom_decoder, DFT_ELEMENTS) for z, (x, t) in zip(numbers, s.molecules[:n], strict=True)
    ]
    # 'eligible': each model's subsample is drawn from the molecules DFT can evaluate, so the budget is not
    # spent on exclusions; 'all': the same random indices for every model, exclusions counted among them
    pool = [i for i in range(n) if reasons[i] is None] if settings.dft_pool == "eligible" else list(range(n))
    eligibility = {
        "n_eligible": reasons.count(None),
        "n": n,
        "excluded": count_reasons([reason_category(r) for r in reasons if r is not None]),
    }
    return _Draw(dft_draw(pool, settings.dft_num, settings.seed), numbers, reasons, eligibility)


def _fill_rows(rows: list[dict], owners: list[tuple[int, list[int]]], records: list[dict], atom_e: dict) -> None:
    """Formation energy per atom (eV/atom, against the isolated atoms) and RMS force of each molecule computed."""
    from elign.evaluation.referees import dft_rms_force

    for (i, z), rec in zip(owners, records, strict=True):
        row = rows[i]
        missing = sorted({a for a in z if atom_e.get(a) is None})
        if rec["reason"] is not None:
            row["dft_reason"] = rec["reason"]
        elif missing:
            row["dft_reason"] = f"no DFT atom reference energy for Z={missing}"
        else:
            row["dft_formation_energy"] = (rec["energy"] - sum(atom_e[a] for a in z)) / len(z)
            row["dft_rms_force"] = dft_rms_force(rec["forces"])


def dft_columns(
    samples: Sequence[ModelSamples], rows: list[list[dict]], settings: EvaluationSettings, out_dir: Path
) -> dict[str, Any]:
    """Fill the rows' DFT columns (dft_selected, dft_formation_energy, dft_rms_force, dft_reason); -> what ran."""
    from elign.evaluation.referees import dft_cached
    from elign.mlff.base import GROUND_STATE_UNPAIRED
    from elign.mlff.dft import DFTLevel

    level = DFTLevel(
        xc=settings.dft_xc,
        basis=settings.dft_basis,
        density_fit=settings.dft_density_fit,
        grid_level=settings.dft_grid_level,
        conv_tol=settings.dft_conv_tol,
    )
    n = min(len(s.molecules) for s in samples)
    draws = [_draw_model(s, n, settings) for s in samples]
    for d, model_rows in zip(draws, rows, strict=True):
        chosen = set(d.indices)
        for i, row in enumerate(model_rows):
            row["dft_selected"] = i in chosen
        for i in d.indices:
            model_rows[i]["dft_reason"] = d.reasons[i]
    turns = [(m, i) for m, i in take_turns([d.indices for d in draws]) if draws[m].reasons[i] is None]
    jobs = [(draws[m].numbers[i], np.asarray(samples[m].molecules[i][0], dtype=np.float64), 0, True) for m, i in turns]
    elements = sorted({z for job in jobs for z in job[0]})
    atom_jobs = [([z], np.zeros((1, 3)), GROUND_STATE_UNPAIRED[z], False) for z in elements]
    threads = settings.dft_threads or max(1, (os.cpu_count() or 1) // max(1, settings.dft_workers))
    t0 = time.perf_counter()
    records, n_cached = dft_cached(
        atom_jobs + jobs,
        level,
        out_dir / "dft_cache",
        settings.dft_workers,
        threads,
        settings.dft_time_limit,
        settings.progress,
        desc=f"DFT {level.xc}/{level.basis}",
    )
    atom_e = {z: r["energy"] for z, r in zip(elements, records[: len(atom_jobs)], strict=True)}
    for m, model_rows in enumerate(rows):
        mine = [(k, i) for k, (owner, i) in enumerate(turns) if owner == m]
        owners = [(i, draws[m].numbers[i]) for _, i in mine]
        _fill_rows(model_rows, owners, [records[len(atom_jobs) + k] for k, _ in mine], atom_e)
    return {
        "level": asdict(level),
        "pool": settings.dft_pool,
        "subsample": {s.name: sorted(d.indices) for s, d in zip(samples, draws, strict=True)},
        "eligibility": {s.name: d.eligibility for s, d in zip(samples, draws, strict=True)},
        "n_jobs": len(atom_jobs) + len(jobs),
        "n_cached": n_cached,
        "atom_energies_eV": {str(z): e for z, e in atom_e.items()},
        "time_limit": settings.dft_time_limit,
        "seconds": time.perf_counter() - t0,
        "cache": str(out_dir / "dft_cache"),
        "reference_qm9": QM9_DFT_FORMATION_ENERGY,
    }
