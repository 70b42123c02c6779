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
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import write_results  # noqa: E402

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
BUCKETS = ["--batching", "size_buckets"]
SNR = ["--loss-weighting", "truncated_snr"]
BETA = ["--time-sampling", "beta", "--beta-a", "1", "--beta-b", "2"]
BATCH_32 = ["--batch-size", "32"]
ARMS: dict[str, list[str]] = {
    "control": [],
    "size_buckets": BUCKETS,
    "truncated_snr": SNR,
    "beta_time": BETA,
    "buckets+snr+beta": [*BUCKETS, *SNR, *BETA],
    "buckets_6x96": [*BUCKETS, "--hidden", "96", "--n-layers", "6"],
    "buckets_bs32": [*BUCKETS, *BATCH_32],
}
# Arms that continue a run (``--from DIR``: its state.pt, config.json and log) instead of starting afresh;
# "{step}" is replaced by the step the run resumes at.
CONTINUED_ARMS: dict[str, list[str]] = {
    "continued": [],
    "continued_cosine": ["--lr-decay-start", "{step}", "--lr-decay-steps", "2000", "--lr-min", "5e-5"],
    "continued_buckets_bs32": [*BUCKETS, *BATCH_32],
    "continued_buckets_bs32+beta": [*BUCKETS, *BATCH_32, *BETA],
    "continued_cpu_bf16": ["--cpu-bf16"],
}
RUN_FILES = ("state.pt", "config.json", "metrics.jsonl", "model.safetensors")


def _flags(*groups: list[str]) -> list[str]:
    """Flag lists (``--flag value`` or a bare ``--switch``) merged left to right, each flag once (a later
    group overrides an earlier one)."""
    merged: dict[str, list[str]] = {}
    for group in groups:
        for i, item in enumerate(group):
            if item.startswith("--"):
                value = group[i + 1 : i + 2]
                merged[item] = value if value and not value[0].startswith("--") else []
    return [item for flag, value in merged.items() for item in (flag, *value)]


def arm_command(
    name: str, data: str, out: Path, minutes: float, threads: int, seed: int, resume_step: int | None = None
) -> list[str]:
    if resume_step is None:
        resume, arm = [], ARMS[name]
    else:
        resume = ["--resume"]
        arm = ["--val-every", "0", *(a.replace("{step}", str(resume_step)) for a in CONTINUED_ARMS[name])]
    budget = ["--max-minutes", str(minutes), "--threads", str(threads), "--seed", str(seed), "--log-every", "100",
              "--checkpoint-minutes", str(max(minutes, 5.0))]  # fmt: skip
    return [sys.executable, "-m", "elign.cli", "pretrain", "--data", data, "--out", str(out), *resume,
            *_flags(CONTROL, arm, budget), "--no-progress"]  # fmt: skip


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
    from elign.diffusion.sampler import sample_molecules
    from elign.evaluation.chemistry import evaluate_molecules
    from elign.io.checkpoints import load_checkpoint
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


def molecules_per_second(out: Path, step: int, since: tuple[int, float] = (0, 0.0)) -> float:
    """Training molecules per second of this arm (steps x batch / training minutes since ``since``)."""
    config = json.loads((out / "config.json").read_text())
    state = torch.load(out / "state.pt", map_location="cpu", weights_only=True)
    return (step - since[0]) * config["batch_size"] / (60 * (state["elapsed_minutes"] - since[1]))


def held_out_loss(checkpoint: Path, data_path: str, num: int = 2000, seed: int = 0) -> float:
    """EDM's eps loss (uniform t, unweighted) of the EMA weights on the first ``num`` validation molecules,
    with the same times and noise for every arm: a low-noise proxy that needs no sampling."""
    from elign.data.dense import DenseDataset
    from elign.io.checkpoints import load_checkpoint

    model, _, _ = load_checkpoint(checkpoint, "cpu")
    data = DenseDataset.load(data_path)
    idx = data.splits["valid"][:num]
    losses = []
    with torch.no_grad():
        for k, chunk in enumerate(idx.split(100)):
            gen = torch.Generator().manual_seed(seed * 1_000 + k)
            losses.append(model.eval().training_loss(data.batch(chunk), gen))
    return float(torch.cat(losses).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="runs/qm9_dense.npz", help="dense training file (elign data --dense)")
    p.add_argument("--out", default="runs/recipe", help="one folder per arm")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=[*ARMS, *CONTINUED_ARMS])
    p.add_argument("--from", dest="from_dir", help="run folder the continued arms start from (elign pretrain --out)")
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
            if (out / "state.pt").exists():
                raise SystemExit(f"{out} holds an unfinished arm; remove it to run the arm again")
            since = (0, 0.0)
            if name in CONTINUED_ARMS:
                if not args.from_dir:
                    raise SystemExit(f"arm {name} continues a run: give --from DIR")
                out.mkdir(parents=True, exist_ok=True)
                for f in RUN_FILES:
                    if (Path(args.from_dir) / f).exists():
                        shutil.copy2(Path(args.from_dir) / f, out / f)
                start = torch.load(out / "state.pt", map_location="cpu", weights_only=True)
                since = (int(start["step"]), float(start["elapsed_minutes"]))
                cmd = arm_command(name, args.data, out, args.minutes, args.threads, args.seed, since[0])
            else:
                cmd = arm_command(name, args.data, out, args.minutes, args.threads, args.seed)
            timing = train_arm(cmd, out)
            t0 = time.monotonic()
            figures = sample_figures(out / "model.safetensors", args.num, args.steps, args.sample_seed)
            result = {
                "arm": name,
                "command": " ".join(["elign", *cmd[3:]]),
                "from": {"dir": args.from_dir, "step": since[0], "train_minutes": since[1]} if since[0] else None,
                **timing,
                "mol_per_s": molecules_per_second(out, figures["step"], since),
                **figures,
                "sample_seconds": time.monotonic() - t0,
                "num": args.num,
                "sample_steps": args.steps,
                "sample_seed": args.sample_seed,
            }
        if "held_out_loss" not in result:
            result["held_out_loss"] = held_out_loss(out / "model.safetensors", args.data)
        result_path.write_text(json.dumps(result, indent=2))
        rows.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "command"}))

    head = (
        f"{args.num} samples at {args.steps} steps (seed {args.sample_seed}) per arm, trained for {args.minutes:g} "
        f"wall minutes on {args.threads} thread(s) (from scratch, or continuing --from {args.from_dir}), seed "
        f"{args.seed}, data {args.data}; held-out loss: EDM's eps loss of the EMA weights on 2,000 validation "
        "molecules with the same times and noise for every arm"
    )
    table = [
        "| arm | CPU min | steps | epochs | mol/s | held-out loss | atom stab | mol stab | connected | even e- "
        "| valid |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        table.append(
            f"| {r['arm']} | {r['cpu_minutes']:.1f} | {r['step']:,} | {r['epochs']:.2f} | "
            f"{r['mol_per_s']:.0f} | {r['held_out_loss']:.4f} | {r['atom_stability']:.3f} | "
            f"{r['molecule_stability']:.3f} | "
            f"{r['connected']:.3f} | {r['even_electrons']:.3f} | {r['validity']:.3f} |"
        )
    commands = []
    for r in rows:  # rebuilt from the arm definitions (each flag once), as the arm ran
        out = Path(args.out) / r["arm"]
        step = r["from"]["step"] if r.get("from") else None
        cmd = arm_command(r["arm"], args.data, out, args.minutes, args.threads, args.seed, step)
        commands.append(f"`{r['arm']}`: `{' '.join(['elign', *cmd[3:]])}`")
    write_results(
        "Pretraining recipes at equal CPU minutes (benchmarks/pretrain_recipe.py)",
        [head, "table:\n\n" + "\n".join(table) + "\n", *commands],
    )


if __name__ == "__main__":
    main()
