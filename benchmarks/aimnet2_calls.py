"""What an AIMNet2 call costs on one CPU thread: the figures behind ``elign/mlff/aimnet2.py``'s size groups.

- a call's cost against molecules x atoms, energies only and with forces, fitted as overhead + per atom, which
  gives the overhead in atoms that ``CALL_OVERHEAD_ATOMS`` stands for;
- a batch padded to a multiple of 8 atoms (as the force field once did) against no padding, alternated, with
  the largest energy difference between the two;
- the first call of a new molecule size against a repeat (a new shape must not be slower: the model runs
  without TorchScript's shape specialisation).

    python benchmarks/aimnet2_calls.py [--repeats 5] [--no-results]
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from harness import alternate, device_name, repeated, timed, write_results

from elign.mlff.aimnet2 import AIMNet2ForceField

ELEMENTS = [6, 6, 6, 8, 7, 1, 1, 1, 1, 1, 1, 1, 1, 6, 6, 1, 1, 1, 1, 1, 1, 1, 1, 6, 6, 6, 1, 1, 1]  # a CHNO mix


def molecules(count: int, atoms: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random geometries: positions [count, atoms, 3], numbers [count, atoms], mask [count, atoms]."""
    g = torch.Generator().manual_seed(atoms)
    positions = torch.randn(count, atoms, 3, generator=g) * 1.5
    numbers = torch.tensor(ELEMENTS[:atoms]).repeat(count, 1)
    return positions, numbers, torch.ones(count, atoms, dtype=torch.bool)


def padded(positions, numbers, mask, multiple: int):
    """The same molecules with padding atoms (number 0) up to a multiple of ``multiple`` atoms."""
    n = positions.shape[1]
    extra = -n % multiple
    pad = torch.nn.functional.pad
    return pad(positions, (0, 0, 0, extra)), pad(numbers, (0, extra)), pad(mask, (0, extra))


def call_cost(ff: AIMNet2ForceField, repeats: int) -> list[str]:
    lines = []
    for kind, call in (("energies", ff._compute_energy_padded), ("energies and forces", ff._compute_padded)):
        rows = []  # (molecules x atoms, seconds)
        table = []
        for atoms in (9, 17, 25):
            cells = []
            for count in (1, 4, 16, 64):
                seconds = repeated(partial(call, *molecules(count, atoms)), repeats, warmup=1).median
                rows.append((count * atoms, seconds))
                cells.append(f"{count} x {atoms}: {seconds * 1e3:.1f} ms")
            table.append(", ".join(cells))
        x = torch.tensor([r[0] for r in rows], dtype=torch.float64)
        y = torch.tensor([r[1] for r in rows], dtype=torch.float64)
        design = torch.stack([torch.ones_like(x), x], 1)
        overhead, per_atom = torch.linalg.lstsq(design, y[:, None]).solution[:, 0].tolist()
        lines.append(
            f"{kind}: a call costs {overhead * 1e3:.1f} ms + {per_atom * 1e3:.3f} ms an atom (least squares over "
            f"the calls below), an overhead of {overhead / per_atom:.0f} atoms"
        )
        lines += [f"  {row}" for row in table]
    return lines


def padding_cost(ff: AIMNet2ForceField, repeats: int) -> list[str]:
    lines = []
    for atoms in (13, 17, 19):
        args = molecules(32, atoms)
        args8 = padded(*args, 8)
        for kind, call in (("energies", ff._compute_energy_padded), ("forces", ff._compute_padded)):
            timings = alternate({"exact": partial(call, *args), "eight": partial(call, *args8)}, repeats, report=False)
            difference = (call(*args).energy - call(*args8).energy).abs().max().item()
            a, b = timings["eight"].median, timings["exact"].median
            lines.append(
                f"32 molecules of {atoms} atoms, {kind}: padded to {args8[0].shape[1]} {a * 1e3:.0f} ms -> unpadded "
                f"{b * 1e3:.0f} ms, ratio {a / b:.2f}x; largest energy difference {difference:.1e} eV"
            )
    return lines


def new_shapes(ff: AIMNet2ForceField) -> list[str]:
    cells = []
    for atoms in (21, 22, 23, 26):
        call = partial(ff._compute_energy_padded, *molecules(8, atoms))
        first, second = timed(call)[0], timed(call)[0]
        cells.append(f"{atoms} atoms {first * 1e3:.1f} / {second * 1e3:.1f} ms")
    return ["first / second call of a new size (8 molecules, energies): " + ", ".join(cells)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-results", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ff = AIMNet2ForceField(device="cpu")
    lines = [f"device: {device_name('cpu')}, the wB97M-D3 ensemble (4 members), float32"]
    lines += new_shapes(ff) + call_cost(ff, args.repeats) + padding_cost(ff, args.repeats)
    write_results("AIMNet2 calls (benchmarks/aimnet2_calls.py)", lines, write=not args.no_results)


if __name__ == "__main__":
    main()
