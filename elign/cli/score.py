"""``elign score``: energies and forces of the molecules of an SDF or .npz file."""

from __future__ import annotations

import argparse

from elign.configs import add_config_arguments, describe_config, resolve
from elign.evaluation.settings import ScoringSettings
from elign.training.distributed import resolve_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("score", help="energies and forces of the molecules of an SDF file")
    c.add_argument("sdf", help="SDF or .npz file of molecules")
    c.add_argument("--out", help="per-molecule CSV (default: <sdf>.scores.csv)")
    c.add_argument("--atoms", help="also write a per-atom force table (CSV) here")
    c.add_argument("--config", help="JSON file of ScoringSettings fields (flags given override it)")
    c.add_argument("--show-config", action="store_true", help="print every field with its value and help, and exit")
    add_config_arguments(c, ScoringSettings, group_title="ScoringSettings fields")
    c.set_defaults(func=cmd_score, output_files=("out", "atoms"), derive_out=lambda a: a.out or f"{a.sdf}.scores.csv")


def cmd_score(args: argparse.Namespace) -> int:
    from elign.evaluation.scoring import score_file
    from elign.io.assets import default_mlff
    from elign.io.export import write_score_tables
    from elign.mlff import load_force_field

    settings = resolve(ScoringSettings, args, defaults={"mlff": default_mlff()})
    if args.show_config:
        print(describe_config(settings))
        return 0
    ff = load_force_field(settings.mlff, device=resolve_device(settings.device))
    scores = score_file(args.sdf, ff)
    write_score_tables(scores, args.out, args.atoms)
    print(f"{ff!r}: " + "\n".join(scores.summary()))
    print(f"per-molecule scores: {args.out}" + (f"; per-atom forces: {args.atoms}" if args.atoms else ""))
    return 0
