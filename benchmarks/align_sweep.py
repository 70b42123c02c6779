"""FED-GRPO settings for two CPU cores: which arm buys the largest force gain per CPU-minute.

Each arm aligns the shipped backbone with ``elign align`` (the cpu-demo preset plus the arm's flags; same
seed, reward model and one thread each), then a single ``elign evaluate`` samples the backbone and every
arm's final policy on the same sizes and seeds, at the chain users sample with (the studio's 100 steps), and
reports against the backbone: the change in mean AIMNet2 RMS force with its bootstrap interval, molecule
stability, validity and the share of molecules the force field can score. An arm whose run already logged
its last iteration is not trained again, so an interrupted sweep resumes.

    python benchmarks/align_sweep.py --iterations 30 --num 500 --out runs/align_sweep
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import write_results  # noqa: E402

CHAIN_100 = ["--steps", "100", "--shared-steps", "40"]
ARMS: dict[str, list[str]] = {
    "cpu-demo": [],  # the preset: a 50-step chain branching after 20 steps
    "chain100": CHAIN_100,  # the chain users sample with, branching after 40 of 100
    "chain100_lr1e-4": [*CHAIN_100, "--lr", "1e-4"],
    "chain100_success2": [*CHAIN_100, "--w-success", "2"],
    "chain100_kl0.04": [*CHAIN_100, "--kl-beta", "0.04"],
}


def align_command(arm: str, args: argparse.Namespace) -> list[str]:
    return [
        "elign",
        "align",
        "--preset",
        "cpu-demo",
        "--checkpoint",
        args.backbone,
        "--mlff",
        args.mlff,
        "--device",
        "cpu",
        "--iterations",
        str(args.iterations),
        "--eval-every",
        "0",
        *ARMS[arm],
        "--out",
        str(Path(args.out) / arm),
    ]


def logged(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_logged(cmd: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    print("$", shlex.join(cmd), flush=True)
    with log.open("a") as f:
        subprocess.run(cmd, check=True, env=env, stdout=f, stderr=subprocess.STDOUT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="assets/backbone/model.safetensors")
    ap.add_argument("--mlff", default="aimnet2")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--num", type=int, default=500, help="molecules per model in the evaluation")
    ap.add_argument("--steps", type=int, default=100, help="chain of the evaluation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--out", default="runs/align_sweep")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    for arm in args.arms:
        if len(logged(out / arm)) < args.iterations:
            run_logged(align_command(arm, args), out / f"{arm}.log")

    evaluate = [
        "elign",
        "evaluate",
        "--checkpoint",
        args.backbone,
        *[x for arm in args.arms for x in ("--checkpoint", str(out / arm / "model.safetensors"))],
        "--num",
        str(args.num),
        "--steps",
        str(args.steps),
        "--seed",
        str(args.seed),
        "--batch-size",
        "125",
        "--device",
        "cpu",
        "--mlff",
        args.mlff,
        "--independent",
        "none",
        "--no-plots",
        "--no-novelty",
        "--n-boot",
        "1000",
        "--no-progress",
        "--out",
        str(out / "eval"),
    ]
    run_logged(evaluate, out / "eval.log")
    report = json.loads((out / "eval" / "report.json").read_text())
    models = {m["name"]: m for m in report["models"]}
    comparisons = {c["model"]: c["metrics"] for c in report["comparisons"]}
    base = report["models"][0]

    def row(name: str, minutes: float | None, iterations: int | None) -> str:
        m = models[name]
        chem, phys = m["chemistry"], m["physics"]["reward"]
        force, change, per_hour = f"{phys['rms_force']['mean']:.3f}", "", ""
        if name in comparisons:
            d = comparisons[name]["reward_rms_force"]
            change = f"{d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
            per_hour = f"{d['diff'] / minutes * 60:+.3f}"
        return (
            f"| {name} | {'' if minutes is None else f'{minutes:.1f}'} | {iterations or ''} | {force} | {change} "
            f"| {per_hour} | {chem['molecule_stability']:.3f} | {chem['validity']:.3f} "
            f"| {phys['n_evaluated'] / m['n']:.3f} |"
        )

    table = [
        "| model | minutes | iterations | AIMNet2 RMS force (eV/A) | aligned - backbone [95 %] | per hour "
        "| molecule stability | validity | scorable |",
        "|---|---|---|---|---|---|---|---|---|",
        row(base["name"], None, None),
    ]
    commands = []
    for arm in args.arms:
        log = logged(out / arm)[: args.iterations]
        table.append(row(arm, sum(r["time_iteration"] for r in log) / 60, len(log)))
        commands.append(f"`{arm}`: `{shlex.join(align_command(arm, args))}`")
    head = (
        f"backbone `{args.backbone}`, reward {args.mlff}; every arm is `elign align --preset cpu-demo` plus its "
        f"flags, on one thread (the other core busy), {args.iterations} iterations, its final policy evaluated; "
        f"{args.num} molecules per model at {args.steps} steps (seed {args.seed}), the same sizes and seeds "
        f"for every model: `{shlex.join(evaluate)}`"
    )
    write_results(
        "FED-GRPO settings on one CPU thread (benchmarks/align_sweep.py)",
        [head, "table:\n\n" + "\n".join(table) + "\n", *commands],
    )


if __name__ == "__main__":
    main()
