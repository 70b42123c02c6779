"""``elign align``: align a backbone to a force field with FED-GRPO (torchrun for several GPUs)."""

from __future__ import annotations

import argparse
import json

from elign.cli.common import stop_on_signals
from elign.configs import add_config_arguments, describe_config, resolve
from elign.training.distributed import resolve_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    from elign.rl.config import PRESETS, AlignConfig

    a = sub.add_parser("align", help="align a backbone to a force field with FED-GRPO (torchrun for several GPUs)")
    a.add_argument("--out", required=True, help="run directory (resumed when it holds a state.pt)")
    a.add_argument("--preset", choices=sorted(PRESETS), default="cpu-demo", help="defaults of the fields below")
    a.add_argument("--config", help="JSON file of AlignConfig fields (may name a preset); flags given override it")
    a.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override any AlignConfig field")
    a.add_argument("--show-config", action="store_true", help="print every field with its value and help, and exit")
    a.add_argument("--no-progress", action="store_true", help="no progress bar (for a log file)")
    add_config_arguments(
        a,
        AlignConfig,
        skip=("out_dir",),
        group_title="AlignConfig fields (defaults: the preset's)",
        show_defaults=False,
    )
    a.set_defaults(func=cmd_align, output_dirs=("out",))


def cmd_align(args: argparse.Namespace) -> int:
    from elign.rl.config import PRESETS, AlignConfig

    if args.device:
        resolve_device(args.device)  # a clear error now rather than at the first tensor moved
    config = resolve(AlignConfig, args, presets=PRESETS, fixed={"out_dir": args.out})
    if args.show_config:
        print(describe_config(config))
        return 0
    from elign.rl.trainer import FedGrpoTrainer

    trainer = FedGrpoTrainer(config)
    print(
        f"aligning {config.checkpoint or 'the shipped backbone'} to {trainer.ff!r}: {config.prompts} x "
        f"{config.group_size} rollouts, {config.steps} steps ({config.trained_steps} trained), "
        f"device {trainer.device}"
    )
    with stop_on_signals() as stop:  # finish the iteration, checkpoint, exit
        print(json.dumps(trainer.train(stop, progress=not args.no_progress)))
    from elign.training.distributed import finish

    finish()
    return 0
