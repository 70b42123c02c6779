"""The metrics a report summarises per model and compares between models (bootstrap intervals, paired on
shared seeds)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from elign.evaluation.physics import reason_category
from elign.evaluation.samples import ModelSamples
from elign.evaluation.settings import EvaluationSettings

__all__ = ["METRICS", "Metric", "comparisons", "model_physics", "shared_seeds"]


@dataclass(frozen=True)
class Metric:
    """A per-molecule column that is summarised per model and compared between models."""

    column: str
    label: str
    unit: str
    better: str  # 'lower' or 'higher'
    group: str  # 'chemistry', 'reward', 'independent', 'xtb', 'dft'
    plot: bool = True


METRICS: tuple[Metric, ...] = (
    Metric("molecule_stable", "molecule stability", "fraction", "higher", "chemistry", plot=False),
    Metric("reward_rms_force", "RMS force (reward model)", "eV/A", "lower", "reward"),
    Metric("reward_formation_energy", "formation energy (reward model)", "eV/atom", "lower", "reward"),
    Metric("independent_rms_force", "RMS force (independent model)", "eV/A", "lower", "independent"),
    Metric("independent_formation_energy", "formation energy (independent model)", "eV/atom", "lower", "independent"),
    Metric("xtb_rms_force", "RMS force (GFN2-xTB)", "eV/A", "lower", "xtb"),
    Metric("xtb_delta_e_relax", "relaxation energy dE_relax (GFN2-xTB)", "kcal/mol", "lower", "xtb"),
    Metric("xtb_rmsd", "relaxation RMSD (GFN2-xTB)", "A", "lower", "xtb"),
    # molecules sampled as isomers of formulas only: the sampled geometry's energy above the formula's lowest
    # relaxed isomer of any model
    Metric(
        "xtb_energy_above_minimum",
        "energy above the formula's best relaxed isomer (GFN2-xTB)",
        "kcal/mol",
        "lower",
        "xtb",
        plot=False,
    ),  # fmt: skip
    Metric("dft_formation_energy", "formation energy (DFT)", "eV/atom", "lower", "dft"),
    Metric("dft_rms_force", "RMS force (DFT)", "eV/A", "lower", "dft"),
)


def _group_summary(
    rows: list[dict], group: str, metrics: Sequence[Metric], selected: str | None = None
) -> dict[str, Any]:
    from elign.evaluation.stats import count_reasons, summarize

    considered = [r for r in rows if selected is None or r.get(selected)]
    reasons = [r.get(f"{group}_reason") for r in considered]
    failed = [reason_category(x) for x in reasons if x is not None]
    out: dict[str, Any] = {
        "n_considered": len(considered),
        "n_evaluated": len(considered) - len(failed),
        "n_failed": len(failed),
        "failures": count_reasons(failed),
    }
    for metric in metrics:
        out[metric.column.removeprefix(f"{group}_")] = summarize([r.get(metric.column, math.nan) for r in considered])
    return out


def model_physics(rows: list[dict], groups: Sequence[str]) -> dict[str, Any]:
    out = {}
    for g in groups:
        metrics = [m for m in METRICS if m.group == g]
        out[g] = _group_summary(rows, g, metrics, "dft_selected" if g == "dft" else None)
        if g == "xtb":
            conv = [r.get("xtb_converged") for r in rows if r.get("xtb_reason") is None]
            out[g]["n_not_converged"] = sum(c is False for c in conv)
    return out


def _column(rows: list[dict], col: str) -> list[float]:
    return [float(r[col]) if r.get(col) is not None else math.nan for r in rows]


def comparisons(
    samples: Sequence[ModelSamples], rows: list[list[dict]], groups: Sequence[str], settings: EvaluationSettings
) -> list[dict[str, Any]]:
    from elign.evaluation.stats import compare

    metrics = [m for m in METRICS if m.group in ("chemistry", *groups)]
    out = []
    for m in range(1, len(samples)):
        entry: dict[str, Any] = {"baseline": samples[0].name, "model": samples[m].name, "metrics": {}}
        seeds_shared = shared_seeds(samples[0], samples[m])
        for k, metric in enumerate(metrics):
            # each model's DFT subsample is drawn from its own eligible molecules unless the pool is 'all'
            same_indices = metric.group != "dft" or settings.dft_pool == "all"
            entry["metrics"][metric.column] = compare(
                _column(rows[0], metric.column),
                _column(rows[m], metric.column),
                metric.better,
                settings.n_boot,
                settings.confidence,
                seed=settings.seed + 1000 * m + k,
                paired=seeds_shared and same_indices,
            )
        out.append(entry)
    return out


def shared_seeds(a: ModelSamples, b: ModelSamples) -> bool:
    """True when molecule i of both was sampled by this evaluation from the same seed and size, so the
    comparison's bootstrap resamples seeds jointly (molecules read from files are never paired)."""
    sampled = ("checkpoint", "guided")
    if a.source.get("kind") not in sampled or b.source.get("kind") not in sampled:
        return False
    if a.source.get("seed") != b.source.get("seed") or len(a.molecules) != len(b.molecules):
        return False
    return all(len(ta) == len(tb) for (_, ta), (_, tb) in zip(a.molecules, b.molecules, strict=True))
