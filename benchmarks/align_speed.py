"""Time per FED-GRPO iteration and its breakdown (rollout / reward / update).

CPU: the cpu-demo preset on the shipped backbone (or --checkpoint) with the given force field.
CUDA (when present): the paper preset (4 x 24 rollouts, 1000 steps, branch at 400, energy every step).

    python benchmarks/align_speed.py [--checkpoint PATH] [--mlff NAME] [--iterations 2]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from common import append_results, device_name

from elign.rl.config import AlignConfig
from elign.rl.trainer import FedGrpoTrainer


def measure(preset: str, device: str, args) -> str:
    with tempfile.TemporaryDirectory() as out:
        cfg = AlignConfig.preset(preset, out_dir=out, checkpoint=args.checkpoint, mlff=args.mlff, device=device,
                                 iterations=args.iterations, eval_every=0)
        trainer = FedGrpoTrainer(cfg)
        rows = [trainer.run_iteration() for _ in range(args.iterations)]
    last = rows[-1]  # the first iteration includes warm-up of the force field
    line = (f"{preset} preset ({cfg.prompts} x {cfg.group_size} rollouts, {cfg.steps} steps, "
            f"{cfg.trained_steps} trained, energy every {cfg.energy_every}), reward {trainer.ff!r}, "
            f"{device_name(device)}: "
            f"{last['time_iteration']:.1f} s per iteration = rollout {last['time_rollout']:.1f} s + reward "
            f"{last['time_reward']:.1f} s + update {last['time_update']:.1f} s (iteration {len(rows)} of {len(rows)})")
    print(line)
    return line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="backbone (default: the shipped one)")
    p.add_argument("--mlff", default=None, help="reward force field (default: the shipped one)")
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    lines = [measure("cpu-demo", "cpu", args)]
    if torch.cuda.is_available():
        lines.append(measure("paper", "cuda", args))
    else:
        lines.append("CUDA: not available on this machine; the paper preset was not timed")
    append_results("Alignment speed (benchmarks/align_speed.py)", lines)


if __name__ == "__main__":
    main()
