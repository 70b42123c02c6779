"""Time per FED-GRPO iteration and its breakdown (rollout / reward / update).

CPU: the cpu-demo preset on the shipped backbone (or --checkpoint) with the given force field.
CUDA (when present): the paper preset (4 x 24 rollouts, 1000 steps, branch at 400, energy every step).

    python benchmarks/align_speed.py [--checkpoint PATH] [--mlff NAME] [--iterations 2] [--skip-cpu]

``--compare-compile`` (CPU) also builds a second trainer whose policy and reference networks run through
``torch.compile`` (``EGNNDynamics.compile_padded_forward``, as ``elign pretrain`` compiles), lets it compile over
its first two iterations, then alternates the two trainers' iterations 2..N (the same prompts for both; the
order reversed every other iteration, benchmarks/harness.py):

    python benchmarks/align_speed.py --threads 1 --iterations 12 --compare-compile

``--mlff mace-off-small-like`` times a MACE of MACE-OFF23-small's shape with random weights (the size the
paper-preset target refers to; MACE-OFF weights cannot be downloaded here), built as in mlff_speed.py.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from harness import alternate, device_name, median_ratio, paired_ratios, timed, write_results

from elign.rl.config import AlignConfig
from elign.rl.trainer import FedGrpoTrainer


def _trainer(preset: str, out: str, device: str, args, mlff: str | None) -> FedGrpoTrainer:
    cfg = AlignConfig.preset(
        preset,
        out_dir=out,
        checkpoint=args.checkpoint,
        mlff=mlff,
        device=device,
        iterations=args.iterations,
        eval_every=0,
    )
    return FedGrpoTrainer(cfg)


def measure(preset: str, device: str, args, mlff: str | None) -> str:
    with tempfile.TemporaryDirectory() as out:
        trainer = _trainer(preset, out, device, args, mlff)
        cfg = trainer.cfg
        rows = [trainer.run_iteration() for _ in range(args.iterations)]
    last = rows[-1]  # the first iteration includes warm-up of the force field
    line = (
        f"{preset} preset ({cfg.prompts} x {cfg.group_size} rollouts, {cfg.steps} steps, "
        f"{cfg.trained_steps} trained, energy every {cfg.energy_every}), reward {trainer.ff!r}, "
        f"{device_name(device)}: "
        f"{last['time_iteration']:.1f} s per iteration = rollout {last['time_rollout']:.1f} s + reward "
        f"{last['time_reward']:.1f} s + update {last['time_update']:.1f} s (iteration {len(rows)} of {len(rows)})"
    )
    print(line)
    return line


def compare_compile(args, mlff: str | None) -> str:
    with tempfile.TemporaryDirectory() as out:
        trainers = {
            name: _trainer("cpu-demo", str(Path(out) / name), "cpu", args, mlff) for name in ("eager", "compiled")
        }
        compiled = trainers["compiled"]
        compiled.policy.dynamics.compile_padded_forward()
        compiled.reference.dynamics.compile_padded_forward()
        # iterations 0 and 1: the force field's warm-up and the compilations
        first_s, _ = timed(lambda: [trainer.run_iteration() for trainer in trainers.values() for _ in range(2)])
        iterations = {name: trainer.run_iteration for name, trainer in trainers.items()}
        timings = alternate(iterations, args.iterations - 2, report=False)
    eager, compiled = timings["eager"], timings["compiled"]
    line = (
        f"cpu-demo iterations 2-{args.iterations - 1}, one process, {torch.get_num_threads()} thread(s), networks "
        f"compiled against eager: mean {compiled.mean:.2f} s against {eager.mean:.2f} s, eager/compiled median "
        f"{median_ratio(eager, compiled):.2f}x (per iteration: "
        f"{', '.join(f'{r:.2f}' for r in paired_ratios(eager, compiled))}); iterations 0-1 of both took "
        f"{first_s:.0f} s (compilations included)"
    )
    print(line)
    return line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="backbone (default: the shipped one)")
    p.add_argument(
        "--mlff",
        default=None,
        help="reward force field (default: the shipped one); mace-off-small-like: a random MACE of "
        "MACE-OFF23-small's size",
    )
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-cpu", action="store_true", help="time only the paper preset on CUDA")
    p.add_argument("--compare-compile", action="store_true", help="cpu-demo with compiled networks against eager")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        mlff = args.mlff
        if mlff == "mace-off-small-like":
            from mlff_speed import build_mace_off_small_like

            mlff = str(build_mace_off_small_like(Path(tmp) / "mace_off_small_like.model"))
        if args.compare_compile:
            line = compare_compile(args, mlff)
            write_results("Alignment speed (benchmarks/align_speed.py --compare-compile)", [line])
            return
        lines = [] if args.skip_cpu else [measure("cpu-demo", "cpu", args, mlff)]
        if torch.cuda.is_available():
            lines.append(measure("paper", "cuda", args, mlff))
        else:
            lines.append("CUDA: not available on this machine; the paper preset was not timed")
    write_results("Alignment speed (benchmarks/align_speed.py)", lines)


if __name__ == "__main__":
    main()
