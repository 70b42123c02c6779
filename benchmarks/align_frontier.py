"""The alignment frontier: molecule stability against what alignment changes in the chemistry.

Each arm is an ``elign align`` run folder on the shipped backbone (or any aligned checkpoint). The backbone and
every arm sample the same sizes and seeds (default: 256 molecules, seed 4242, which no training run uses, at the
1000-step chain), and each is scored by EDM's stability rule, RDKit validity / uniqueness / novelty and the
composition guards against QM9 (atom-type, bond-type and ring-size distances; hydrogen fraction; distinct
heavy-atom formulas). The arm's command is rebuilt from its ``config.json`` (the fields it sets apart from the
``cpu`` preset) and its CPU minutes summed from its log. Writes a table to RESULTS.md, the figures to
``--out``/frontier.json and the frontier plot to ``--out``/frontier.png (and ``--plot``).

    python benchmarks/align_frontier.py --arm comp0.1=runs/arm-b --arm cpu=../shared/runs/align-cpu-300 \\
        --out runs/frontier --plot benchmarks/align_frontier.png

Sampled molecules are cached under ``--out``/samples_cache, so adding an arm samples only that arm.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import write_results  # noqa: E402

IGNORED_FIELDS = {"out_dir", "checkpoint", "device", "iterations", "eval_every", "eval_samples", "seed"}


def arm_command(run: Path) -> str:
    """``elign align`` as the run was configured: the cpu preset plus the fields it changes."""
    from elign.rl.config import AlignConfig

    config = json.loads((run / "config.json").read_text())
    preset = AlignConfig.preset("cpu").to_dict()
    changed = [f"{k}={v}" for k, v in config.items() if k not in IGNORED_FIELDS and preset.get(k) != v]
    sets = f" --set {' '.join(changed)}" if changed else ""
    return f"elign align --preset cpu --iterations {config['iterations']}{sets} --out {run}"


def arm_cost(run: Path) -> tuple[int, float]:
    """(iterations logged, CPU minutes of their iterations) from the run's metrics.jsonl."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return len(rows), sum(r.get("time_iteration", 0.0) for r in rows) / 60


def frontier_plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label, guard in (
        (axes[0], "atom_type_tv", "atom-type distance to QM9 (TV)", 0.04),
        (axes[1], "uniqueness", "uniqueness", 0.95),
    ):
        for r in rows:
            ax.scatter(r[key], r["molecule_stability"], s=40)
            ax.annotate(
                r["name"], (r[key], r["molecule_stability"]), fontsize=8, xytext=(4, 4), textcoords="offset points"
            )
        ax.axvline(guard, color="grey", linestyle=":", linewidth=1)
        ax.axhline(0.934, color="tab:red", linestyle="--", linewidth=1)
        ax.set_xlabel(label)
        ax.set_ylabel("molecule stability")
    axes[0].text(0.04, 0.934, " RLPF 0.934", color="tab:red", fontsize=8, va="bottom")
    fig.suptitle("Alignment frontier (guards dotted: TV <= 0.04, uniqueness >= 0.95)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arm", action="append", default=[], metavar="NAME=RUN_DIR", help="an elign align run folder")
    ap.add_argument("--backbone", default="backbone")
    ap.add_argument("--num", type=int, default=256)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--model", default="model.safetensors", help="file of each run to measure")
    ap.add_argument("--out", default="runs/frontier")
    ap.add_argument("--plot", help="also copy the frontier plot here")
    ap.add_argument("--sample-only", action="store_true", help="only sample into the cache (parallel processes)")
    args = ap.parse_args()

    import shutil

    from elign.evaluation.chemistry import evaluate_molecules, qm9_train_smiles
    from elign.evaluation.samples import collect_samples

    arms = dict(a.split("=", 1) for a in args.arm)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = [args.backbone, *(str(Path(run) / args.model) for run in arms.values())]
    samples = collect_samples(
        checkpoints,
        num=args.num,
        steps=args.steps,
        seed=args.seed,
        progress=True,
        cache_dir=out / "samples_cache",
    )
    if args.sample_only:
        return
    train = qm9_train_smiles()
    rows = []
    for name, run, s in zip(["backbone", *arms], [None, *arms.values()], samples, strict=True):
        chem = evaluate_molecules(s.molecules, s.info, train)
        guards = chem["composition"]
        iterations, minutes = arm_cost(Path(run)) if run else (0, 0.0)
        rows.append(
            {
                "name": name,
                "command": arm_command(Path(run)) if run else "the shipped backbone",
                "iterations": iterations,
                "cpu_minutes": minutes,
                **{k: chem[k] for k in ("molecule_stability", "atom_stability", "validity", "uniqueness", "novelty")},
                "vxu": chem["vxu"],
                **{k: guards[k] for k in ("atom_type_tv", "bond_type_tv", "ring_size_tv", "hydrogen_fraction")},
                "nitrogen_fraction": guards["atom_fractions"].get("N"),
                "heavy_formulas": guards["heavy_formulas_distinct"],
                "heavy_formulas_qm9": guards["heavy_formulas_distinct_qm9"],
                "novelty_qm9_sample": guards["reference"]["novelty_qm9_sample"],
            }
        )
    (out / "frontier.json").write_text(json.dumps(rows, indent=1))
    frontier_plot(rows, out / "frontier.png")
    if args.plot:
        shutil.copyfile(out / "frontier.png", args.plot)
    header = (
        "| arm | it. | CPU min | mol. stab. | valid | unique | V x U | novelty | atom TV | bond TV | ring TV | H | N | "
        "heavy formulas |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [
        f"{args.num} molecules per model, seed {args.seed}, {args.steps} steps; QM9: H 0.512, N 0.056; a QM9 sample's "
        f"novelty {rows[0]['novelty_qm9_sample']:.3f}; plot {args.plot or out / 'frontier.png'}",
        "\n" + header,
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['iterations']} | {r['cpu_minutes']:.0f} | {r['molecule_stability']:.3f} | "
            f"{r['validity']:.3f} | {r['uniqueness']:.3f} | {r['vxu']:.3f} | {r['novelty']:.3f} | "
            f"{r['atom_type_tv']:.3f} | {r['bond_type_tv']:.3f} | {r['ring_size_tv']:.3f} | "
            f"{r['hydrogen_fraction']:.3f} | {r['nitrogen_fraction']:.3f} | {r['heavy_formulas']} "
            f"({r['heavy_formulas_qm9']:.0f}) |"
        )
    lines.append("\nCommands:\n" + "\n".join(f"  - {r['name']}: `{r['command']}`" for r in rows))
    write_results("Alignment frontier (benchmarks/align_frontier.py)", lines, bullets=False)


if __name__ == "__main__":
    main()
