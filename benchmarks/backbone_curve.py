"""The backbone's quality against cumulative training minutes (wall clock, CPU only): a plot and a table.

Two series: the validation samples the run logs itself (``metrics.jsonl``: 100 molecules at 100 steps,
seed 12345, every ``val_every`` steps) and the adoption measurements (``evaluations.jsonl``: 1,000
molecules at 1000 steps, seed 0). A least-squares line of molecule stability against log(minutes) through
the adoption measurements at the run's constant learning rate is drawn as a crude extrapolation and its
crossing of 0.50 printed; measurements of a branch whose learning rate was annealed (rows with an
``anneal`` field) are drawn apart and left out of the fit.

    python benchmarks/backbone_curve.py --log assets/relay/metrics.jsonl \\
        --evaluations assets/backbone/evaluations.jsonl --png assets/relay/curve.png
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def validation_curve(log: list[dict]) -> list[dict]:
    """Validation records with the cumulative training minutes of the loss record at the same step."""
    minutes = {r["step"]: r["train_minutes"] for r in log if "train_minutes" in r}
    return [
        {**r, "train_minutes": minutes[r["step"]]}
        for r in log
        if "val_molecule_stability" in r and r["step"] in minutes
    ]


def log_fit(evals: list[dict]) -> tuple[float, float] | None:
    """(slope, intercept) of molecule stability against ln(minutes), or None with fewer than two points."""
    if len(evals) < 2:
        return None
    x = np.log([e["train_minutes"] for e in evals])
    y = np.array([e["molecule_stability"] for e in evals])
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log", default="assets/relay/metrics.jsonl")
    p.add_argument("--evaluations", default="assets/backbone/evaluations.jsonl")
    p.add_argument("--png", default="assets/relay/curve.png")
    args = p.parse_args()

    val = validation_curve(read_jsonl(args.log))
    evals = sorted(read_jsonl(args.evaluations), key=lambda e: e["train_minutes"])
    print("| step | training minutes | val atom stab (100 x 100 steps) | val mol stab |")
    print("|---|---|---|---|")
    for r in val:
        print(
            f"| {r['step']:,} | {r['train_minutes']:.1f} | {r['val_atom_stability']:.3f} | "
            f"{r['val_molecule_stability']:.2f} |"
        )
    print("\n| step | training minutes | atom stab (1000 x 1000 steps) | mol stab | validity | annealed |")
    print("|---|---|---|---|---|---|")
    for e in evals:
        print(
            f"| {e['step']:,} | {e['train_minutes']:.1f} | {e['atom_stability']:.3f} | "
            f"{e['molecule_stability']:.3f} | {e['validity']:.3f} | {e.get('anneal', '')} |"
        )
    annealed = [e for e in evals if "anneal" in e]
    evals = [e for e in evals if "anneal" not in e]  # the constant-rate lineage
    fit = log_fit(evals)
    crossing = math.exp((0.5 - fit[1]) / fit[0]) if fit and fit[0] > 0 else None  # minutes at 0.50
    if crossing is not None:
        print(
            f"\nlog-linear fit through the 1000-step points: molecule stability = {fit[0]:.3f} ln(min) "
            f"{fit[1]:+.3f}; reaches 0.50 at about {crossing:,.0f} training minutes ({crossing / 60:.1f} h)"
        )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(10, 4.2))
    m = [r["train_minutes"] for r in val]
    em = [e["train_minutes"] for e in evals]
    series = (  # x, points, marker, size, colour, opacity, label
        (m, [r["val_molecule_stability"] for r in val], "o-", 3, "tab:blue", 1.0,
         "molecule stability, 100 samples x 100 steps (training log)"),
        (m, [r["val_atom_stability"] for r in val], "o-", 3, "tab:blue", 0.35, "atom stability, same samples"),
        (em, [e["molecule_stability"] for e in evals], "s", 7, "tab:red", 1.0,
         "molecule stability, 1,000 samples x 1000 steps (seed 0)"),
        (em, [e["atom_stability"] for e in evals], "s", 7, "tab:red", 0.35, "atom stability, same samples"),
    )  # fmt: skip
    for xs, ys, marker, size, colour, alpha, label in series:
        ax.plot(xs, ys, marker, ms=size, color=colour, alpha=alpha, label=label)
    if annealed:
        ax.plot(
            [e["train_minutes"] for e in annealed],
            [e["molecule_stability"] for e in annealed],
            "*",
            ms=12,
            color="tab:purple",
            label="molecule stability, same measurement, after a learning-rate anneal",
        )
    if crossing is not None:
        xs = np.geomspace(min(em), 1.1 * max(max(em), crossing), 50)
        ax.plot(xs, fit[0] * np.log(xs) + fit[1], "--", color="tab:red", lw=1, label="log-linear extrapolation")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.set_xlabel("cumulative training minutes on CPU (wall clock, log scale)")
    ax.set_ylabel("fraction stable")
    ax.set_title("Shipped-backbone lineage (4 x 64 EDM, QM9), CPU only")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    fig.tight_layout()
    fig.savefig(args.png, dpi=120)
    print(f"\nwrote {args.png}")


if __name__ == "__main__":
    main()
