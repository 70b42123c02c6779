"""``elign mlff``: force-field tools (``elign mlff distill``: distil a teacher into a small MACE)."""

from __future__ import annotations

import argparse
from pathlib import Path

from elign.cli.common import stop_on_signals
from elign.configs import (
    add_config_arguments,
    describe_config,
    positive_int,
    read_config_file,
    read_saved_config,
    resolve,
)
from elign.training.distributed import resolve_device

DISTILL_OWN_FIELDS = ("out_dir", "device", "progress", "student")  # set from --out, --device, --no-progress, flags


def add_parser(sub: argparse._SubParsersAction) -> None:
    from elign.mlff.distill_config import DistillConfig, StudentConfig

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
    md.add_argument("--config", help="JSON file of DistillConfig fields, 'student' a JSON object (flags override it)")
    md.add_argument("--show-config", action="store_true", help="print every field with its value and help, and exit")
    add_config_arguments(md, DistillConfig, skip=DISTILL_OWN_FIELDS)
    add_config_arguments(md, StudentConfig, group_title="student architecture (StudentConfig)")
    md.set_defaults(func=cmd_mlff_distill, output_dirs=("out",))


def cmd_mlff_distill(args: argparse.Namespace) -> int:
    """``elign mlff distill``: label molecules with a teacher force field and fit a small MACE to it."""
    import torch

    from elign.mlff.distill import Distiller
    from elign.mlff.distill_config import QM9_ELEMENTS, DistillConfig, StudentConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    file_values = read_config_file(args.config, DistillConfig) if args.config else {}
    saved = None  # the architecture of a resumed run is the saved one
    if args.resume and (out / "state.pt").exists() and (out / "config.json").exists():
        saved = read_saved_config(out / "config.json", "an elign distillation run", ("student",))["student"]
        print(f"resuming {out}: student architecture from {out / 'config.json'}")
    student = resolve(StudentConfig, args, file=file_values.pop("student", {}), saved=saved, pinned=tuple(saved or ()))
    fixed = {"out_dir": str(out), "device": resolve_device(args.device), "progress": not args.no_progress}
    config = resolve(
        DistillConfig,
        args,
        file=file_values,
        defaults={"elements": QM9_ELEMENTS},
        skip=DISTILL_OWN_FIELDS,
        fixed={**fixed, "student": student},
    )
    if args.show_config:
        print(describe_config(config))
        print(describe_config(config.student))
        return 0
    with stop_on_signals() as stop:  # finish the batch, save the epoch, write the report
        Distiller(config).train(stop)
    print(f"student: {out / 'distilled.model'}; report: {out / 'report.json'}; per-epoch log: {out / 'log.jsonl'}")
    return 0
