"""Quality per sampling cost: molecule stability and the composition guards against the number of sampling steps.

Every model samples the same sizes and seeds at each chain length (the chain is the trained one, strided), so a
row compares what a user buys with each step budget. Writes a table to RESULTS.md, the figures to
``--out``/quality_per_step.json and the plot to ``--out``/quality_per_step.png (and ``--plot``).

    python benchmarks/quality_per_step.py --checkpoint backbone --checkpoint aligned \\
        --steps 10 25 50 100 250 1000 --num 256 --seed 4242 --out runs/quality_per_step
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import write_results  # noqa: E402

FIGURES = ("molecule_stability", "validity", "uniqueness", "atom_type_tv")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(FIGURES), figsize=(4 * len(FIGURES), 3.4))
    for ax, key in zip(axes, FIGURES, strict=True):
        for model in dict.fromkeys(r["model"] for r in rows):
            mine = [r for r in rows if r["model"] == model]
            ax.plot([r["steps"] for r in mine], [r[key] for r in mine], marker="o", label=model)
        ax.set_xscale("log")
        ax.set_xlabel("sampling steps")
        ax.set_title(key.replace("_", " "))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", action="append", default=[], help="a model (shipped name or path); repeat")
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50, 100, 250, 1000])
    ap.add_argument("--num", type=int, default=256)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--out", default="runs/quality_per_step")
    ap.add_argument("--plot", help="also copy the plot here")
    args = ap.parse_args()

    from elign.evaluation.chemistry import evaluate_molecules
    from elign.evaluation.samples import collect_samples

    checkpoints = args.checkpoint or ["backbone", "aligned"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for steps in args.steps:
        sets = collect_samples(
            checkpoints, num=args.num, steps=steps, seed=args.seed, progress=True, cache_dir=out / "samples_cache"
        )
        for s in sets:
            chem = evaluate_molecules(s.molecules, s.info, None)
            guards = chem["composition"]
            rows.append(
                {
                    "model": s.name,
                    "steps": steps,
                    **{k: chem[k] for k in ("molecule_stability", "atom_stability", "validity", "uniqueness")},
                    "atom_type_tv": guards["atom_type_tv"],
                    "hydrogen_fraction": guards["hydrogen_fraction"],
                    "seconds": None if "cached" in (s.throughput or {}) else (s.throughput or {}).get("seconds"),
                }
            )
    (out / "quality_per_step.json").write_text(json.dumps(rows, indent=1))
    plot(rows, out / "quality_per_step.png")
    if args.plot:
        shutil.copyfile(out / "quality_per_step.png", args.plot)
    lines = [
        f"{args.num} molecules per model and chain, seed {args.seed}, one CPU thread beside the alignment relay "
        f"(sampling seconds of sets sampled by this run; '(cached)': sampled earlier); plot "
        f"{args.plot or out / 'quality_per_step.png'}",
        "",
        "| model | steps | mol. stab. | atom stab. | valid | unique | atom TV | H | sampling s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        secs = f"{r['seconds']:.0f}" if r["seconds"] is not None else "(cached)"
        lines.append(
            f"| {r['model']} | {r['steps']} | {r['molecule_stability']:.3f} | {r['atom_stability']:.3f} | "
            f"{r['validity']:.3f} | {r['uniqueness']:.3f} | {r['atom_type_tv']:.3f} | {r['hydrogen_fraction']:.3f} | "
            f"{secs} |"
        )
    write_results("Quality per sampling step (benchmarks/quality_per_step.py)", lines, bullets=False)


if __name__ == "__main__":
    main()
