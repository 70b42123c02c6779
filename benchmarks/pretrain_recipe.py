"""Pretraining recipes at equal CPU minutes: which one buys the most molecule per minute on a CPU.

Each arm is a fresh ``elign pretrain`` run (same data, seed and thread count; the current shipped recipe is
the control) stopped by ``--max-minutes``, then sampled with the same sizes and seeds and scored with EDM's
chemistry: atom and molecule stability, the fraction of samples that are one connected molecule, the
fraction with an even electron count (the closed-shell ones a force field can score) and RDKit validity.
A finished arm is kept (``OUT/ARM/result.json``) and not run again, so an interrupted study resumes.

    python benchmarks/pretrain_recipe.py --data runs/qm9_dense.npz --minutes 12 --out runs/recipe
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_results  # noqa: E402

# The shipped backbone's recipe (assets/backbone/README.md) is the control; every other arm changes it.
CONTROL = [
    "--hidden",
    "64",
    "--n-layers",
    "4",
    "--batch-size",
    "64",
    "--lr",
    "5e-4",
    "--warmup-steps",
    "200",
    "--ema-decay",
    "0.999",
]
ARMS: dict[str, list[str]] = {
    "control": [],
    "size_buckets": ["--batching", "size_buckets"],
    "truncated_snr": ["--loss-weighting", "truncated_snr"],
    "beta_time": ["--time-sampling", "beta", "--beta-a", "1", "--beta-b", "2"],
    "buckets+snr+beta": [
        "--batching",
        "size_buckets",
        "--loss-weighting",
        "truncated_snr",
        "--time-sampling",
        "beta",
        "--beta-a",
        "1",
        "--beta-b",
        "2",
    ],
    "buckets_6x96": ["--batching", "size_buckets", "--hidden", "96", "--n-layers", "6"],
    "buckets_bs32": ["--batching", "size_buckets", "--batch-size", "32"],
}


def arm_command(name: str, data: str, out: Path, minutes: float, threads: int, seed: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "elign.cli",
        "pretrain",
        "--data",
        data,
        "--out",
        str(out),
        *CONTROL,
        *ARMS[name],
        "--max-minutes",
        str(minutes),
        "--threads",
        str(threads),
        "--seed",
        str(seed),
        "--log-every",
        "100",
        "--checkpoint-minutes",
        str(max(minutes, 5.0)),
        "--no-progress",
    ]


def train_arm(cmd: list[str], out: Path) -> dict:
    """Run one arm; its wall and CPU minutes (the child's user + system time)."""
    out.mkdir(parents=True, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    with (out / "train.log").open("w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_minutes": (time.monotonic() - start) / 60, "cpu_minutes": cpu / 60}


def sample_figures(checkpoint: Path, num: int, steps: int, seed: int) -> dict:
    """EDM chemistry of ``num`` samples at ``steps`` denoising steps (sizes and noise from ``seed``)."""
    from elign.checkpoints import load_checkpoint
    from elign.diffusion.sampler import sample_molecules
    from elign.evaluate import evaluate_molecules
    from elign.metrics.bonds import n_fragments

    model, config, meta = load_checkpoint(checkpoint, "cpu")
    info = config.dataset_info()
    mols = sample_molecules(
        model.eval(),
        num,
        info.size_probabilities(),
        steps=steps,
        seed=seed,
        batch_size=64,
        atomic_numbers=info.atomic_numbers,
    )
    report = evaluate_molecules(mols, info, train_smiles=None)
    masks = mols.node_mask[..., 0].bool()
    types = mols.one_hot.argmax(-1)
    z = np.asarray(info.atomic_numbers)
    connected, even = [], []
    for i in range(num):
        t = types[i][masks[i]].numpy()
        connected.append(n_fragments(mols.positions[i][masks[i]].numpy(), t, info.atom_decoder) == 1)
        even.append(int(z[t].sum()) % 2 == 0)
    return {
        "atom_stability": report["atom_stability"],
        "molecule_stability": report["molecule_stability"],
        "connected": float(np.mean(connected)),
        "even_electrons": float(np.mean(even)),
        "validity": report["validity"],
        "step": meta.get("step"),
        "epochs": meta.get("epochs"),
    }


def molecules_per_second(out: Path, step: int) -> float:
    """Training molecules per second over the whole run (steps x batch / training minutes)."""
    config = json.loads((out / "config.json").read_text())
    state = torch.load(out / "state.pt", map_location="cpu", weights_only=True)
    return step * config["batch_size"] / (60 * state["elapsed_minutes"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="runs/qm9_dense.npz", help="dense training file (elign data --dense)")
    p.add_argument("--out", default="runs/recipe", help="one folder per arm")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--minutes", type=float, default=12.0, help="training wall minutes per arm")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="training seed (data order, noise)")
    p.add_argument("--num", type=int, default=128, help="samples per arm")
    p.add_argument("--steps", type=int, default=100, help="denoising steps of the samples")
    p.add_argument("--sample-seed", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for name in args.arms:
        out = Path(args.out) / name
        result_path = out / "result.json"
        if result_path.exists():
            result = json.loads(result_path.read_text())
        else:
            cmd = arm_command(name, args.data, out, args.minutes, args.threads, args.seed)
            if (out / "state.pt").exists():
                raise SystemExit(f"{out} holds an unfinished arm; remove it to run the arm again")
            timing = train_arm(cmd, out)
            t0 = time.monotonic()
            figures = sample_figures(out / "model.safetensors", args.num, args.steps, args.sample_seed)
            speed = molecules_per_second(out, figures["step"])
            result = {
                "arm": name,
                "command": " ".join(["elign", *cmd[3:]]),
                **timing,
                "mol_per_s": speed,
                **figures,
                "sample_seconds": time.monotonic() - t0,
                "num": args.num,
                "sample_steps": args.steps,
                "sample_seed": args.sample_seed,
            }
            result_path.write_text(json.dumps(result, indent=2))
        rows.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "command"}))

    head = (
        f"{args.num} samples at {args.steps} steps (seed {args.sample_seed}) per arm, trained from scratch for "
        f"{args.minutes:g} wall minutes on {args.threads} thread(s), seed {args.seed}, data {args.data}"
    )
    table = [
        "| arm | CPU min | steps | epochs | mol/s | atom stab | mol stab | connected | even e- | valid |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        table.append(
            f"| {r['arm']} | {r['cpu_minutes']:.1f} | {r['step']:,} | {r['epochs']:.2f} | "
            f"{r['mol_per_s']:.0f} | {r['atom_stability']:.3f} | {r['molecule_stability']:.3f} | "
            f"{r['connected']:.3f} | {r['even_electrons']:.3f} | {r['validity']:.3f} |"
        )
    commands = [f"`{r['arm']}`: `{r['command']}`" for r in rows]
    append_results(
        "pretrain_recipe.py: recipes at equal CPU minutes", [head, "table:\n\n" + "\n".join(table) + "\n", *commands]
    )


if __name__ == "__main__":
    main()
