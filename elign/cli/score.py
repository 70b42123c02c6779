"""``elign score``: energies and forces of the molecules of an SDF or .npz file."""

from __future__ import annotations

import argparse

from elign.training.distributed import resolve_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("score", help="energies and forces of the molecules of an SDF file")
    c.add_argument("sdf", help="SDF or .npz file of molecules")
    c.add_argument("--mlff", default=None, help="force field name or .model path (default: the shipped one)")
    c.add_argument("--out", help="per-molecule CSV (default: <sdf>.scores.csv)")
    c.add_argument("--atoms", help="also write a per-atom force table (CSV) here")
    c.add_argument("--device", default="auto")
    c.set_defaults(func=cmd_score, output_files=("out", "atoms"), derive_out=lambda a: a.out or f"{a.sdf}.scores.csv")


def cmd_score(args: argparse.Namespace) -> int:
    import csv

    import torch

    from elign.data.batch import MoleculeBatch
    from elign.data.info import ATOMIC_NUMBERS
    from elign.io.assets import default_mlff
    from elign.io.export import read_molecules
    from elign.mlff import formation_energy_per_atom, load_force_field, rms_force

    records = read_molecules(args.sdf)
    if not records:
        raise ValueError(f"{args.sdf} holds no readable molecules")
    symbols = sorted({s for _, syms, _ in records for s in syms}, key=lambda e: ATOMIC_NUMBERS.get(e, 999))
    unknown = [s for s in symbols if s not in ATOMIC_NUMBERS]
    if unknown:
        raise ValueError(f"{args.sdf}: elements {unknown} are not supported")
    index = {s: i for i, s in enumerate(symbols)}
    batch = MoleculeBatch.from_lists(
        [torch.as_tensor(p) for p, _, _ in records],
        [torch.tensor([index[s] for s in syms]) for _, syms, _ in records],
        [ATOMIC_NUMBERS[s] for s in symbols],
    )
    device = resolve_device(args.device)
    ff = load_force_field(args.mlff or default_mlff(), device=device)
    result = ff(batch.to(device))
    e_form = formation_energy_per_atom(batch.to(device), result, ff.reference_energies).cpu()
    rms = rms_force(batch.to(device), result).cpu()
    out = args.out
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["index", "n_atoms", "energy_eV", "formation_energy_per_atom_eV", "rms_force_eV_per_A", "valid", "reason"]
        )
        for b in range(batch.batch_size):
            w.writerow(
                [
                    b,
                    int(batch.num_atoms[b]),
                    f"{float(result.energy[b]):.6f}",
                    f"{float(e_form[b]):.6f}",
                    f"{float(rms[b]):.6f}",
                    int(result.valid[b]),
                    result.reason[b] or "",
                ]
            )
    if args.atoms:
        with open(args.atoms, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["molecule", "atom", "element", "fx", "fy", "fz", "force_norm"])
            for b, (_, syms, _) in enumerate(records):
                for i, sym in enumerate(syms):
                    fx, fy, fz = result.forces[b, i].tolist()
                    w.writerow(
                        [
                            b,
                            i,
                            sym,
                            f"{fx:.6f}",
                            f"{fy:.6f}",
                            f"{fz:.6f}",
                            f"{(fx * fx + fy * fy + fz * fz) ** 0.5:.6f}",
                        ]
                    )
    valid = result.valid.cpu()
    print(f"{ff!r}: {int(valid.sum())}/{len(valid)} molecules scored")
    if valid.any():
        print(
            f"formation energy per atom: mean {e_form[valid].mean():.4f} eV; RMS force: mean {rms[valid].mean():.4f} "
            f"eV/A, median {rms[valid].median():.4f} eV/A"
        )
    for b in torch.nonzero(~valid).flatten().tolist():
        print(f"molecule {b} not scored: {result.reason[b]}")
    print(f"per-molecule scores: {out}" + (f"; per-atom forces: {args.atoms}" if args.atoms else ""))
    return 0
