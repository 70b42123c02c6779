"""``elign evaluate`` of checkpoints scored by the reward force field alone (``cmd_evaluate``,
``evaluate_sources``, ``evaluate_models``) with the network and force field as objects: the evaluation of
cpu_speed.py's "main", which samples with the frozen network and scores with main's AIMNet2 calls.

A frozen copy, for benchmarks only (the library never imports it): the evaluation loads its checkpoints and force
fields by name, so main's process runs this copy, the same work, with main's objects in their place.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from elign.cli.evaluate import evaluation_settings
from elign.evaluation.chemistry import chemistry_rows, qm9_train_smiles
from elign.evaluation.comparison import METRICS, comparisons, model_physics
from elign.evaluation.physics import force_field_figures
from elign.evaluation.samples import _checkpoint_name, _unique, sample_checkpoint
from elign.evaluation.summary import report_lines
from elign.evaluation.writing import json_safe, write_csv, write_sdf
from elign.io.assets import resolve_checkpoint
from elign.io.checkpoints import load_checkpoint

from .align import force_field
from .egnn import frozen_model

__all__ = ["evaluate"]


def evaluate(args: argparse.Namespace) -> int:
    """What ``args.func(args)`` does for ``elign evaluate --checkpoint ... --out DIR --independent none`` (no
    formulas, guided baselines, sample files or referees)."""
    settings = evaluation_settings(args)
    if settings.independent or settings.referees or args.guided or args.samples or args.formula or not settings.mlff:
        raise ValueError("main's evaluation samples checkpoints by size, scored by the reward force field alone")
    samples = _samples(args, settings)
    run_info = {"num": args.num, "steps": args.steps, "batch_size": args.batch_size, "checkpoints": args.checkpoint}
    run_info |= {"guided": [], "samples": [], "formulas": []}
    report = _report(samples, settings, Path(args.out), run_info)
    print("\n".join(report_lines(report)))
    print(f"report written to {Path(args.out) / 'report.json'}" + (" and report.html" if settings.plots else ""))
    return 0


def _samples(args: argparse.Namespace, settings) -> list:
    """Every checkpoint sampled by the frozen network on the same sizes and seed (``collect_samples``)."""
    loaded = {}
    for spec in dict.fromkeys(args.checkpoint):
        path = resolve_checkpoint(spec)
        model, config, _ = load_checkpoint(path, settings.device)
        loaded[spec] = (frozen_model(model), config, path)
    info = loaded[args.checkpoint[0]][1].dataset_info()
    sizes = torch.multinomial(
        info.size_probabilities(), args.num, replacement=True, generator=torch.Generator().manual_seed(settings.seed)
    )  # [num]
    common = dict(
        num=args.num, sizes=sizes, steps=args.steps, seed=settings.seed, batch_size=args.batch_size,
        device=settings.device, progress=settings.progress, cache_dir=Path(args.out) / "samples_cache",
    )  # fmt: skip
    taken: set[str] = set()
    return [
        sample_checkpoint(c, _unique(_checkpoint_name(c), taken), loaded=loaded[c], **common) for c in args.checkpoint
    ]


def _report(samples: list, settings, out: Path, run_info: dict[str, Any]) -> dict[str, Any]:
    """Chemistry, the reward force field's figures and the report files (``evaluate_models``)."""
    out.mkdir(parents=True, exist_ok=True)
    train = None
    if settings.novelty:
        from_file = settings.train_smiles
        train = set(Path(from_file).read_text().split()) if from_file else qm9_train_smiles(progress=settings.progress)
    chemistry, rows = zip(*(chemistry_rows(s, train) for s in samples), strict=True)
    rows = list(rows)
    groups, physics_info = ["reward"], {"reward": _reward_columns(samples, rows, settings)}
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
        | run_info,
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


def _reward_columns(samples: list, rows: list[list[dict]], settings) -> dict[str, Any]:
    """The reward force field's columns, main's force field in place of the one named (``ff_columns``)."""
    spec = settings.mlff
    dtype = torch.float64 if spec.lower() in ("xtb", "gfn2-xtb", "dft") else torch.float32
    ff = force_field(spec, settings.device, dtype)
    t0 = time.perf_counter()
    for m, s in enumerate(samples):
        fig = force_field_figures(ff, s.molecules, s.info.atomic_numbers, settings.ff_batch_size, s.info.atom_decoder)
        for i, row in enumerate(rows[m]):
            row["reward_formation_energy"] = fig["formation_energy"][i]
            row["reward_rms_force"] = fig["rms_force"][i]
            row["reward_reason"] = fig["reason"][i]
    if hasattr(ff, "close"):
        ff.close()
    return {"force_field": spec, "name": getattr(ff, "name", spec), "seconds": time.perf_counter() - t0}
