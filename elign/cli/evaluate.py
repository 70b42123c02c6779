"""``elign evaluate``: evaluate models against independent physics (report, plots, HTML)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from elign.configs import add_config_arguments, describe_config, positive_int, resolve
from elign.training.distributed import resolve_device

if TYPE_CHECKING:
    from elign.evaluation.settings import EvaluationSettings

# seeds sampling), and its defaults where they differ from EvaluationSettings' (novelty on, two xTB workers)
EVALUATE_OWN_FIELDS = ("mlff", "independent", "referees", "device", "seed", "dft_density_fit", "progress", "extra")
EVALUATE_DEFAULTS = {"novelty": True, "xtb_workers": 2}


def add_parser(sub: argparse._SubParsersAction) -> None:
    from elign.evaluation.settings import EvaluationSettings

    e = sub.add_parser("evaluate", help="evaluate models against independent physics (report, plots, HTML)")
    e.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="model to sample (repeatable; the first is "
        "the baseline): a .safetensors path, an EDM run directory, 'backbone' or 'aligned'",
    )
    e.add_argument(
        "--samples", action="append", default=[], help="SDF or .npz file of generated molecules (repeatable)"
    )
    e.add_argument(
        "--guided",
        action="append",
        default=[],
        metavar="MODEL:MLFF:SCALE",
        help="baseline row: MODEL sampled with force guidance by MLFF at SCALE (repeatable)",
    )
    e.add_argument("--num", type=positive_int, default=100, help="molecules per model")
    e.add_argument("--steps", type=positive_int, default=None, help="denoising steps (default: the model's T)")
    e.add_argument("--seed", type=int, help="seed of sizes, sampling, DFT subsample and bootstrap (default 0)")
    e.add_argument("--batch-size", type=positive_int, default=256)
    e.add_argument("--device", default="auto")
    e.add_argument("--out", help="report directory (report.json, molecules.csv, SDF files, plots, report.html)")
    e.add_argument("--json", help="also write the report here (alone with one --samples: chemistry only)")
    e.add_argument("--mlff", help="reward force field (default: the shipped one, else aimnet2; 'none' to skip)")
    e.add_argument("--independent", help="independent force field (default xtb; 'none' to skip)")
    e.add_argument(
        "--referee",
        action="append",
        default=[],
        choices=["xtb", "dft"],
        help="xtb: GFN2-xTB RMS force and relaxation (dE_relax, RMSD); dft: PySCF on a subsample",
    )
    e.add_argument("--dft-no-density-fit", action="store_true", help="PySCF without density fitting")
    e.add_argument("--no-progress", action="store_true")
    e.add_argument("--config", help="JSON file of EvaluationSettings fields (flags given override it)")
    e.add_argument("--show-config", action="store_true", help="print every field with its value and help, and exit")
    add_config_arguments(
        e,
        EvaluationSettings,
        skip=EVALUATE_OWN_FIELDS,
        group_title="EvaluationSettings fields",
        defaults=EVALUATE_DEFAULTS,
    )
    e.set_defaults(func=cmd_evaluate, output_files=("json",), output_dirs=("out",))


def _evaluate_one_file(args: argparse.Namespace, settings: EvaluationSettings) -> int:
    """The chemistry-only report of one file (``--samples FILE.sdf|.npz [--json REPORT.json]`` without --out)."""
    from elign.evaluation.chemistry import evaluate_file

    report = evaluate_file(args.samples[0], train_smiles=settings.train_smiles, novelty=settings.novelty)
    keys = ("n", "atom_stability", "molecule_stability", "validity", "uniqueness", "novelty", "vxu")
    for k in keys:
        v = report[k]
        print(f"{k:>20}: {v if v is None or isinstance(v, int) else f'{v:.4f}'}")
    if line := guards_line(report.get("composition")):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"report written to {args.json}")
    return 0


def guards_line(guards: dict | None) -> str | None:
    """One line of composition guards against QM9 (None without QM9's elements)."""
    if not guards or guards.get("atom_type_tv") is None:
        return None
    return (
        f"composition: H fraction {guards['hydrogen_fraction']:.3f}, atom-type TV {guards['atom_type_tv']:.3f}, "
        f"bond-type TV {guards['bond_type_tv']:.3f}, ring-size TV {guards['ring_size_tv']:.3f}, heavy formulas "
        f"{guards['heavy_formulas_distinct']} (a QM9 sample: {guards['heavy_formulas_distinct_qm9']:.0f}); "
        f"novelty of a QM9 sample {guards['reference']['novelty_qm9_sample']:.3f}"
    )


def evaluation_settings(args: argparse.Namespace) -> EvaluationSettings:
    """The settings of ``elign evaluate``: the command's defaults, then ``--config FILE``, then the flags given."""
    from elign.evaluation.settings import EvaluationSettings
    from elign.io.assets import default_mlff

    own = {
        "mlff": args.mlff,
        "independent": args.independent,
        "referees": tuple(dict.fromkeys(args.referee)) or None,
        "seed": args.seed,
        "dft_density_fit": False if args.dft_no_density_fit else None,
        "progress": False if args.no_progress else None,
        "device": resolve_device(args.device),
    }
    defaults = {**EVALUATE_DEFAULTS, "mlff": default_mlff()}
    return resolve(EvaluationSettings, args, defaults=defaults, skip=EVALUATE_OWN_FIELDS, fixed=own)


def cmd_evaluate(args: argparse.Namespace) -> int:
    settings = evaluation_settings(args)
    if args.show_config:
        print(describe_config(settings))
        return 0
    if args.out is None:
        if args.checkpoint or args.guided or len(args.samples) != 1:
            raise ValueError("--out DIR is required unless a single --samples FILE is evaluated for chemistry")
        return _evaluate_one_file(args, settings)
    if not (args.checkpoint or args.guided or args.samples):
        raise ValueError("nothing to evaluate: give --checkpoint, --guided or --samples")
    from elign.evaluation.evaluate import evaluate_models
    from elign.evaluation.samples import collect_samples

    device = settings.device
    samples = collect_samples(
        args.checkpoint,
        args.guided,
        args.samples,
        num=args.num,
        steps=args.steps,
        seed=settings.seed,
        batch_size=args.batch_size,
        device=device,
        progress=settings.progress,
        cache_dir=Path(args.out) / "samples_cache",  # a rerun of an interrupted report does not sample again
    )
    run_info = {
        "num": args.num,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "checkpoints": args.checkpoint,
        "guided": args.guided,
        "samples": args.samples,
    }
    report = evaluate_models(samples, settings, args.out, run_info)
    for m in report["models"]:
        c, tp = m["chemistry"], m["throughput"] or {}
        rate = f", {tp['molecules_per_second']:.2f} molecules/s" if tp.get("molecules_per_second") else ""
        fig = {
            k: "n/a" if c.get(k) is None else f"{c[k]:.3f}"
            for k in ("atom_stability", "molecule_stability", "validity")
        }
        print(
            f"{m['name']}: n {m['n']}, atom stability {fig['atom_stability']}, molecule stability "
            f"{fig['molecule_stability']}, validity {fig['validity']}{rate}"
        )
        if line := guards_line(c.get("composition")):
            print(f"  {line}")
        for group, g in m["physics"].items():
            figures = ", ".join(
                f"{k} median {v['median']:.4g}"
                for k, v in g.items()
                if isinstance(v, dict) and "median" in v and v["median"] is not None
            )
            print(f"  {group}: {g['n_evaluated']} evaluated, {g['n_failed']} failed {g['failures'] or ''} {figures}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"report written to {Path(args.out) / 'report.json'}" + (" and report.html" if settings.plots else ""))
    return 0
