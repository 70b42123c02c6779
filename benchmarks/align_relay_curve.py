"""The alignment relay's curve: its held-out evaluation against cumulative CPU minutes.

Reads the relay's ``metrics.jsonl`` (every iteration's time, and at every ``eval_every``-th iteration the
held-out evaluation: molecule stability, the atom-type distance to QM9, mean RMS force) and draws three panels
against the minutes its iterations took, summed over every session (the log is one continuous run).

    python benchmarks/align_relay_curve.py --run assets/align_relay --out assets/align_relay/curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="assets/align_relay")
    ap.add_argument("--out", default=None, help="PNG (default: RUN/curve.png)")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(args.run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    minutes, total = [], 0.0
    for r in rows:
        total += r.get("time_iteration", 0.0) / 60
        minutes.append(total)
    evals = [(m, r) for m, r in zip(minutes, rows, strict=True) if "eval_molecule_stability" in r]
    panels = (
        ("eval_molecule_stability", "molecule stability (held-out, 100 steps)", None),
        ("eval_atom_type_tv", "atom-type distance to QM9 (TV)", 0.04),
        ("eval_rms_force", "mean RMS force, AIMNet2 (eV/A)", None),
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (key, label, guard) in zip(axes, panels, strict=True):
        points = [(m, r[key]) for m, r in evals if key in r]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3)
        if guard is not None:
            ax.axhline(guard, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("CPU minutes of its iterations (one thread)")
        ax.set_title(label, fontsize=10)
    fig.suptitle(f"Alignment relay: {len(rows)} iterations, {total:.0f} CPU minutes")
    fig.tight_layout()
    out = Path(args.out) if args.out else run / "curve.png"
    fig.savefig(out, dpi=100)
    print(f"{len(rows)} iterations, {total:.1f} CPU minutes, {len(evals)} evaluations -> {out}")


if __name__ == "__main__":
    main()
