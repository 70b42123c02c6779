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

# The fields whose flags the command declares itself (a list for --referee, 'none' to skip a force field, one seed
# for sizes, sampling, the DFT draw and the bootstrap), and its defaults where they differ from EvaluationSettings'
# (novelty on, two xTB workers)
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
    e.add_argument(
        "--formula",
        action="append",
        default=[],
        help="sample isomers of this formula (or of each formula in a file; repeatable): --num of each, the atom "
        "types fixed",
    )
    e.add_argument("--num", type=positive_int, default=100, help="molecules per model (per formula with --formula)")
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
        from elign.evaluation.chemistry import evaluate_file
        from elign.evaluation.summary import chemistry_lines

        report = evaluate_file(args.samples[0], train_smiles=settings.train_smiles, novelty=settings.novelty)
        print("\n".join(chemistry_lines(report)))
    else:
        from elign.evaluation.evaluate import evaluate_sources
        from elign.evaluation.summary import report_lines

        report = evaluate_sources(
            args.checkpoint, args.guided, args.samples, settings, args.out, args.num, args.steps, args.batch_size,
            formulas=args.formula,
        )  # fmt: skip
        print("\n".join(report_lines(report)))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1 if args.out else 2))
    if written := Path(args.out) / "report.json" if args.out else args.json:
        print(f"report written to {written}" + (" and report.html" if args.out and settings.plots else ""))
    return 0
