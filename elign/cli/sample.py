"""``elign sample``: sample molecules from a checkpoint into an SDF or .npz file."""

from __future__ import annotations

import argparse

from elign.configs import add_config_arguments, describe_config, resolve
from elign.diffusion.settings import SamplingSettings
from elign.training.distributed import resolve_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sample", help="sample molecules from a checkpoint into an SDF file")
    s.add_argument(
        "--out", required=True, help="output file: .sdf (bonds, validity tags) or .npz (lossless coordinates, no RDKit)"
    )
    s.add_argument("--config", help="JSON file of SamplingSettings fields (flags given override it)")
    s.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override any SamplingSettings field")
    s.add_argument("--show-config", action="store_true", help="print every field with its value and help, and exit")
    add_config_arguments(s, SamplingSettings, group_title="SamplingSettings fields")
    s.set_defaults(func=cmd_sample, output_files=("out",))


def cmd_sample(args: argparse.Namespace) -> int:
    from elign.sample_job import sample_to_file

    settings = resolve(SamplingSettings, args)
    if args.show_config:
        print(describe_config(settings))
        return 0
    print("\n".join(sample_to_file(settings, args.out, resolve_device(settings.device))))
    return 0
