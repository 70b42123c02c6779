"""``elign pretrain``: pretrain an EDM on QM9 (resumable; torchrun for several GPUs)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from elign.cli.common import stop_on_signals
from elign.configs import add_config_arguments, describe_config, positive_int, read_saved_config, resolve
from elign.training.distributed import resolve_device

RESUMED_ARCHITECTURE = ("hidden", "n_layers", "timesteps", "seed")  # what a resumed run keeps from its config.json


def add_parser(sub: argparse._SubParsersAction) -> None:
    from elign.training.pretrain_config import PretrainConfig

    t = sub.add_parser("pretrain", help="pretrain an EDM on QM9 (resumable; torchrun for several GPUs)")
    t.add_argument("--out", required=True, help="run directory (state.pt, model.safetensors, metrics.jsonl)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    t.add_argument("--config", help="JSON file of PretrainConfig fields (flags given override it)")
    t.add_argument("--show-config", action="store_true", help="print every field with its value and help, and exit")
    add_config_arguments(t, PretrainConfig, skip=("out_dir",))
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=positive_int, help="CPU threads (torch's, and torch.compile's workers)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_pretrain, output_dirs=("out",))


def cmd_pretrain(args: argparse.Namespace) -> int:
    from elign.runtime import set_threads
    from elign.training.pretrain import PretrainConfig, Pretrainer

    if args.threads:
        set_threads(args.threads)
    out = Path(args.out)
    saved = None
    if args.resume and (out / "config.json").exists():
        saved = read_saved_config(out / "config.json", "an elign pretraining run", RESUMED_ARCHITECTURE)
    config = resolve(PretrainConfig, args, fixed={"out_dir": str(out)}, saved=saved, pinned=RESUMED_ARCHITECTURE)
    if args.show_config:
        print(describe_config(config))
        return 0
    trainer = Pretrainer(config, device=resolve_device(args.device))
    if args.resume:
        trainer.resume()
        print(f"resumed {out} at step {trainer.step} ({trainer.elapsed_minutes:.1f} training minutes so far)")
    n_params = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    n_train = len(trainer.data.splits["train"])
    arch = trainer.model_config
    context = "" if arch.context == "none" else f", reading the {arch.context}"
    print(
        f"pretraining {arch.n_layers}x{arch.hidden} EDM ({n_params:,} parameters{context}) on {n_train:,} "
        f"molecules, device {trainer.device}, world size {trainer.world}"
    )
    with stop_on_signals() as stop:
        result = trainer.train(stop, progress=not args.no_progress)
    print(json.dumps(result))
    from elign.training.distributed import finish

    finish()
    return 0
