"""``elign evaluate``: evaluate models against independent physics (report, plots, HTML)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from elign.configs import add_config_arguments, config_overrides, positive_int
from elign.training.distributed import resolve_device

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
    e.add_argument("--seed", type=int, default=0, help="seed of sizes, sampling, DFT subsample and bootstrap")
    e.add_argument("--batch-size", type=positive_int, default=256)
    e.add_argument("--device", default="auto")
    e.add_argument("--out", help="report directory (report.json, molecules.csv, SDF files, plots, report.html)")
    e.add_argument("--json", help="also write the report here (alone with one --samples: chemistry only)")
    e.add_argument("--mlff", help="reward force field (default: the shipped one, else aimnet2; 'none' to skip)")
    e.add_argument("--independent", default="xtb", help="independent force field (default xtb; 'none' to skip)")
    e.add_argument(
        "--referee",
        action="append",
        default=[],
        choices=["xtb", "dft"],
        help="xtb: GFN2-xTB RMS force and relaxation (dE_relax, RMSD); dft: PySCF on a subsample",
    )
    e.add_argument("--dft-no-density-fit", action="store_true", help="PySCF without density fitting")
    e.add_argument("--no-progress", action="store_true")
    add_config_arguments(
        e,
        EvaluationSettings,
        skip=EVALUATE_OWN_FIELDS,
        group_title="EvaluationSettings fields",
        defaults=EVALUATE_DEFAULTS,
    )
    e.set_defaults(func=cmd_evaluate, output_files=("json",), output_dirs=("out",))


def _evaluate_one_file(args: argparse.Namespace) -> int:
    """The chemistry-only report of one file (``--samples FILE.sdf|.npz [--json REPORT.json]`` without --out)."""
    from elign.evaluation.evaluate import evaluate_file

    novelty = EVALUATE_DEFAULTS["novelty"] if args.novelty is None else args.novelty
    report = evaluate_file(args.samples[0], train_smiles=args.train_smiles, novelty=novelty)
    keys = ("n", "atom_stability", "molecule_stability", "validity", "uniqueness", "novelty", "vxu")
    for k in keys:
        v = report[k]
        print(f"{k:>20}: {v if v is None or isinstance(v, int) else f'{v:.4f}'}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"report written to {args.json}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.out is None:
        if args.checkpoint or args.guided or len(args.samples) != 1:
            raise ValueError("--out DIR is required unless a single --samples FILE is evaluated for chemistry")
        return _evaluate_one_file(args)
    if not (args.checkpoint or args.guided or args.samples):
        raise ValueError("nothing to evaluate: give --checkpoint, --guided or --samples")
    from elign.evaluation.evaluate import EvaluationSettings, collect_samples, evaluate_models
    from elign.io.assets import default_mlff

    device = resolve_device(args.device)
    mlff = args.mlff or default_mlff()
    given = config_overrides(EvaluationSettings, args, skip=EVALUATE_OWN_FIELDS)
    settings = EvaluationSettings(
        **{**EVALUATE_DEFAULTS, **given},
        mlff=None if mlff.lower() == "none" else mlff,
        independent=None if args.independent.lower() == "none" else args.independent,
        referees=tuple(dict.fromkeys(args.referee)),
        device=device,
        seed=args.seed,
        dft_density_fit=not args.dft_no_density_fit,
        progress=not args.no_progress,
    )
    samples = collect_samples(
        args.checkpoint,
        args.guided,
        args.samples,
        num=args.num,
        steps=args.steps,
        seed=args.seed,
        batch_size=args.batch_size,
        device=device,
        progress=not args.no_progress,
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
