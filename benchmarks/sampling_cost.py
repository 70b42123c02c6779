"""Sampling cost of two checkpoints, timed alternately in one process: does alignment make sampling dearer?

Both checkpoints sample the same sizes and seeds on one thread; the order alternates every repeat so that
a machine that slows down or speeds up weighs on both alike. Medians are printed and written to
benchmarks/RESULTS.md (the harness).

    python benchmarks/sampling_cost.py --checkpoint backbone --checkpoint assets/aligned/model.safetensors
"""

from __future__ import annotations

import argparse

import torch
from harness import alternate, write_results

from elign.diffusion.sampler import sample_molecules
from elign.io.assets import resolve_checkpoint
from elign.io.checkpoints import load_checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", action="append", required=True, help="repeatable; the first is the baseline")
    p.add_argument("--num", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    models = {}
    for name in args.checkpoint:
        model, config, _ = load_checkpoint(resolve_checkpoint(name), "cpu")
        models[name] = (model.eval(), config.dataset_info())
    sizes = torch.multinomial(
        models[args.checkpoint[0]][1].size_probabilities(),
        args.num,
        replacement=True,
        generator=torch.Generator().manual_seed(args.seed),
    )

    def run(model, info):
        return lambda: sample_molecules(
            model, args.num, info.size_probabilities(), steps=args.steps, seed=args.seed, sizes=sizes
        )

    timings = alternate({name: run(*models[name]) for name in models}, args.repeats)
    base = timings[args.checkpoint[0]].median
    lines = [
        f"{args.num} molecules, {args.steps} steps, seed {args.seed}, one thread, {args.repeats} alternated repeats"
    ]
    for name, timing in timings.items():
        median = timing.median
        lines.append(
            f"`{name}`: median {median:.2f} s ({args.num / median:.2f} molecules/s), "
            f"{median / base:.3f}x the first; all: {', '.join(f'{t:.2f}' for t in timing.seconds)}"
        )
    write_results("Sampling cost, alternated (benchmarks/sampling_cost.py)", lines)


if __name__ == "__main__":
    main()
