"""Pretraining throughput (molecules/s) at EDM size (9 x 256, batch 128) and at the shipped size.

Uses the QM9 dense file when given (--data), else synthetic molecules of QM9-like sizes.
On CUDA: float32+TF32 and bf16 autocast.

    python benchmarks/train_speed.py [--data runs/qm9_dense.npz] [--steps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from harness import device_name, timed, write_results

from elign.data.dense import DenseDataset
from elign.io.assets import shipped_backbone
from elign.io.checkpoints import load_checkpoint
from elign.training.pretrain import PretrainConfig, Pretrainer


def throughput(data, device: str, hidden: int, layers: int, batch: int, steps: int, bf16: bool) -> float:
    with tempfile.TemporaryDirectory() as out:
        cfg = PretrainConfig(out_dir=out, hidden=hidden, n_layers=layers, batch_size=batch, bf16=bf16)
        trainer = Pretrainer(cfg, data, device=device)
        trainer.train_step()  # warm-up

        def run_steps():
            for _ in range(steps):
                trainer.train_step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds, _ = timed(run_steps)
        return steps * batch / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="dense QM9 file from `elign data --dense`")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = DenseDataset.load(args.data) if args.data else DenseDataset.synthetic(2048, sizes=(9, 27))
    source = "QM9" if args.data else "synthetic QM9-size molecules"
    sizes = {"EDM size": (256, 9)}
    if shipped_backbone().exists():
        cfg = load_checkpoint(shipped_backbone())[1]
        sizes["shipped size"] = (cfg.hidden, cfg.n_layers)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    lines = []
    for device in devices:
        for label, (hidden, layers) in sizes.items():
            for bf16 in [False, True] if device == "cuda" else [False]:
                rate = throughput(data, device, hidden, layers, 128, args.steps, bf16)
                line = (
                    f"{label} ({layers} x {hidden}), batch 128, {source}, {device_name(device)}"
                    f"{', bf16 autocast' if bf16 else ''}: {rate:.1f} molecules/s"
                )
                print(line)
                lines.append(line)
    if not torch.cuda.is_available():
        lines.append("CUDA: not available on this machine (target on an H100: >= 6,300 molecules/s at EDM size)")
    write_results("Training speed (benchmarks/train_speed.py)", lines)


if __name__ == "__main__":
    main()
