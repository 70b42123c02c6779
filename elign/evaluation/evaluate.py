"""Evaluation of generated molecules against independent physics (EVALUATION.md).

:func:`evaluate_models` is the full report of several models sampled on the same sizes and seeds (or read from
.sdf / .npz files), in stages:

- the molecules (:mod:`elign.evaluation.samples`: ``collect_samples``);
- chemistry (:mod:`elign.evaluation.chemistry`): EDM's stability, RDKit validity, uniqueness, novelty,
  composition against QM9 (``evaluate_file`` does this for one file);
- physics (:mod:`elign.evaluation.physics`, :mod:`elign.evaluation.dft_subsample`): reward-model and
  independent-model figures, GFN2-xTB relaxation, DFT on a random subsample of eligible molecules (cached per
  molecule);
- statistics (:mod:`elign.evaluation.comparison`): summaries per model, comparisons with the first model as
  baseline;
- files (:mod:`elign.evaluation.writing`, :mod:`elign.evaluation.report`): ``report.json``, ``molecules.csv``,
  one SDF file per model, PNG plots and ``report.html``.

Molecules a referee cannot evaluate are counted by reason and left out of that referee's statistics.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from elign.evaluation.chemistry import chemistry_rows, qm9_train_smiles
from elign.evaluation.comparison import METRICS, comparisons, model_physics
from elign.evaluation.samples import ModelSamples
from elign.evaluation.settings import EvaluationSettings
from elign.evaluation.writing import json_safe, write_csv, write_sdf

__all__ = ["evaluate_models", "evaluate_sources"]


def _physics_columns(
    samples: Sequence[ModelSamples], rows: list[list[dict]], settings: EvaluationSettings, out: Path
) -> tuple[list[str], dict[str, Any]]:
    """Fill each model's rows with the figures of every force field and referee asked for; -> (the groups
    computed, what each group ran)."""
    from elign.evaluation.dft_subsample import dft_columns
    from elign.evaluation.physics import ff_columns, independent_from_xtb, isomer_energy_columns, xtb_columns

    groups, info = [], {}
    if settings.mlff:
        info["reward"] = ff_columns(settings.mlff, "reward", samples, rows, settings)
        groups.append("reward")
    if "xtb" in settings.referees:
        info["xtb"] = xtb_columns(samples, rows, settings, out)
        info["xtb"]["isomer_minimum"] = isomer_energy_columns(rows)
    if settings.independent and settings.independent.lower() in ("xtb", "gfn2-xtb") and "xtb" in settings.referees:
        info["independent"] = independent_from_xtb(samples, rows)
    elif settings.independent:
        info["independent"] = ff_columns(settings.independent, "independent", samples, rows, settings)
    groups += [g for g in ("independent", "xtb") if g in info]
    if "dft" in settings.referees and settings.dft_num > 0:
        info["dft"] = dft_columns(samples, rows, settings, out)
        groups.append("dft")
    return groups, info


def evaluate_models(
    samples: Sequence[ModelSamples],
    settings: EvaluationSettings,
    out_dir: str | os.PathLike,
    run_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Chemistry, physics and comparisons of several models; writes the report files into ``out_dir``.

    The first entry of ``samples`` is the baseline of every comparison.
    """
    if not samples:
        raise ValueError("evaluate_models needs at least one set of molecules")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = None
    if settings.novelty:
        from_file = settings.train_smiles
        train = set(Path(from_file).read_text().split()) if from_file else qm9_train_smiles(progress=settings.progress)
    chemistry, rows = zip(*(chemistry_rows(s, train) for s in samples), strict=True)
    rows = list(rows)
    groups, physics_info = _physics_columns(samples, rows, settings, out)
    models = []
    for s, chem, model_rows in zip(samples, chemistry, rows, strict=True):
        write_sdf(out / f"{s.name}.sdf", s, model_rows)
        physics = model_physics(model_rows, groups)
        models.append(
            {"name": s.name, "source": s.source, "sdf": f"{s.name}.sdf", "n": len(s.molecules)}
            | {"throughput": s.throughput, "chemistry": chem, "physics": physics}
        )
    report = {
        "settings": {k: v for k, v in vars(settings).items() if k not in ("extra", "progress")}
        | settings.extra
        | (run_info or {}),
        "physics": physics_info,
        "models": models,
        "comparisons": comparisons(samples, rows, groups, settings),
        "metrics": [vars(m) for m in METRICS if m.group in ("chemistry", *groups)],
        "files": {"report": "report.json", "molecules": "molecules.csv", "sdf": [m["sdf"] for m in models]},
    }
    write_csv(out / "molecules.csv", rows)
    report = json_safe(report)
    if settings.plots:
        from elign.evaluation.report import write_html, write_plots

        report["files"]["plots"] = write_plots(report, rows, out)
        report["files"]["html"] = write_html(report, out).name
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


def evaluate_sources(
    checkpoints: Sequence[str],
    guided: Sequence[str],
    sample_files: Sequence[str],
    settings: EvaluationSettings,
    out_dir: str | os.PathLike,
    num: int = 100,
    steps: int | None = None,
    batch_size: int = 256,
    formulas: Sequence[str] = (),
) -> dict[str, Any]:
    """The report of checkpoints, guided baselines ('MODEL:MLFF:SCALE') and sample files: the checkpoints are
    sampled on the same sizes and seed (``num`` isomers of each of ``formulas`` when given; kept in
    ``out_dir``/samples_cache, so a rerun of an interrupted report does not sample again), then
    :func:`evaluate_models`."""
    if not (checkpoints or guided or sample_files):
        raise ValueError("nothing to evaluate: give --checkpoint, --guided or --samples")
    from elign.data.formula import read_formulas
    from elign.evaluation.samples import collect_samples

    samples = collect_samples(
        checkpoints, guided, sample_files, num=num, steps=steps, seed=settings.seed, batch_size=batch_size,
        device=settings.device, progress=settings.progress, cache_dir=Path(out_dir) / "samples_cache",
        formulas=read_formulas(formulas) if formulas else (), type_guidance=settings.type_guidance,
    )  # fmt: skip
    run_info = {"num": num, "steps": steps, "batch_size": batch_size, "checkpoints": list(checkpoints)}
    run_info |= {"guided": list(guided), "samples": list(sample_files), "formulas": list(formulas)}
    return evaluate_models(samples, settings, out_dir, run_info)
