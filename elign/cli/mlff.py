"""``elign mlff``: force-field tools (``elign mlff distill``: distil a teacher into a small MACE)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from elign.configs import add_config_arguments, config_overrides, positive_int
from elign.training.distributed import resolve_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    from elign.mlff.distill import DistillConfig, StudentConfig

    m = sub.add_parser("mlff", help="force-field tools: distil a teacher into a small MACE")
    msub = m.add_subparsers(dest="mlff_command", required=True)
    md = msub.add_parser(
        "distill",
        help="label QM9 (+ perturbed, + backbone samples) with a teacher force field "
        "and train a small MACE on it (resumable); writes distilled.model and report.json",
    )
    md.add_argument(
        "--out", required=True, help="run directory (labels.pt, state.pt, distilled.model, log.jsonl, report.json)"
    )
    md.add_argument("--device", default="auto")
    md.add_argument("--threads", type=positive_int, help="CPU threads (torch.set_num_threads)")
    md.add_argument("--no-progress", action="store_true")
    add_config_arguments(md, DistillConfig, skip=("out_dir", "device", "progress", "student"))  # as cmd_mlff_distill
    add_config_arguments(md, StudentConfig, group_title="student architecture (StudentConfig)")
    md.set_defaults(func=cmd_mlff_distill, output_dirs=("out",))


def cmd_mlff_distill(args: argparse.Namespace) -> int:
    """``elign mlff distill``: label molecules with a teacher force field and fit a small MACE to it."""
    import torch

    from elign.mlff.distill import QM9_ELEMENTS, DistillConfig, StudentConfig, distill

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    student = StudentConfig(**config_overrides(StudentConfig, args))
    saved = out / "config.json"
    if args.resume and (out / "state.pt").exists() and saved.exists():
        base = json.loads(saved.read_text())  # the architecture of a resumed run is the saved one
        student = StudentConfig(**{**base["student"], "radial_mlp": tuple(base["student"]["radial_mlp"])})
        print(f"resuming {out}: student architecture from {saved}")
    own = ("out_dir", "device", "progress", "student")  # set below from --out, --device, --no-progress
    given = config_overrides(DistillConfig, args, skip=own)
    config = DistillConfig(
        **{"elements": QM9_ELEMENTS, **given},
        out_dir=str(out),
        device=resolve_device(args.device),
        progress=not args.no_progress,
        student=student,
    )
    distill(config)
    print(f"student: {out / 'distilled.model'}; report: {out / 'report.json'}; per-epoch log: {out / 'log.jsonl'}")
    return 0
