"""Formula-conditioned sampling on held-out QM9 formulas, against unconditional sampling of the same sizes.

Draws ``--formulas`` distinct formulas of QM9's test split (seeded; formulas of at least ``--min-atoms`` atoms),
samples ``--per-formula`` molecules of each with the atom types fixed (``elign sample --formula``; once per
``--type-guidance`` step, 0 for replacement alone), and the same number of molecules of the same sizes
unconditionally, from each checkpoint. Reports the share with exactly the
requested formula, molecule stability, validity and isomer uniqueness (distinct valid SMILES per formula over
valid molecules), and writes them to RESULTS.md. A composition-conditioned checkpoint (``--context composition``)
is sampled with the formula given and with only its counts given (it picks the types itself) instead.
``--own N`` also samples N molecules of each checkpoint freely and then N more with those molecules' own formulas
fixed: the cost of fixing the types apart from how hard the formulas are.

    python benchmarks/formula_sampling.py --checkpoint backbone --formulas 20 --per-formula 10 --steps 100 \
        --type-guidance 0 0.5
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import timed, write_results  # noqa: E402


def held_out_formulas(num: int, min_atoms: int, seed: int) -> list[str]:
    from elign.data.formula import hill_formula
    from elign.data.qm9 import load_qm9

    data = load_qm9(progress=False)
    decoder = data.dataset_info().atom_decoder
    formulas = set()
    for i in data.split("test"):
        _, t = data.molecule(int(i))
        if len(t) >= min_atoms:
            formulas.add(hill_formula(dict(Counter(decoder[k] for k in t))))
    return [str(f) for f in np.random.default_rng(seed).choice(sorted(formulas), size=num, replace=False)]


def figures(mols, formulas: list[str], per: int, decoder: list[str]) -> dict[str, float]:
    from elign.data.formula import parse_formula
    from elign.metrics.bonds import split_molecules
    from elign.metrics.rdkit_metrics import chemistry_metrics_from_batch
    from elign.metrics.stability import stability_metrics

    pairs = list(split_molecules(mols))
    wanted = [Counter(parse_formula(f)) for f in formulas for _ in range(per)]
    exact = np.mean([Counter(decoder[k] for k in t) == w for (_, t), w in zip(pairs, wanted, strict=True)])
    chem = chemistry_metrics_from_batch(pairs, decoder)
    isomers = []
    for k in range(len(formulas)):
        smiles = [s for s in chem["smiles"][k * per : (k + 1) * per] if s is not None]
        if smiles:
            isomers.append(len(set(smiles)) / len(smiles))
    return {
        "exact_formula": float(exact),
        "molecule_stability": stability_metrics(pairs, decoder)["molecule_stability"],
        "validity": chem["validity"],
        "isomer_uniqueness": float(np.mean(isomers)) if isomers else float("nan"),
    }


def own_formula_rows(name: str, model, info, num: int, guidances: list[float], common: dict) -> list[str]:
    """Rows of ``num`` molecules sampled freely, then with their own formulas fixed (each guidance step)."""
    from elign.diffusion.sampler import sample_molecules
    from elign.metrics.stability import stability_metrics

    free = sample_molecules(model, num, info.size_probabilities(), **common)
    types = free.atom_types  # [num, N], -1 on padding
    rows = [
        f"| {name} | {num} sampled freely | {stability_metrics(free, info.atom_decoder)['molecule_stability']:.3f} |"
    ]
    for g in guidances:
        mols = sample_molecules(model, num, info.size_probabilities(), **common, types=types, type_guidance=g)
        stable = stability_metrics(mols, info.atom_decoder)["molecule_stability"]
        rows.append(f"| {name} | their own formulas fixed, guidance {g:g} | {stable:.3f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", action="append", default=[])
    ap.add_argument("--formulas", type=int, default=20)
    ap.add_argument("--per-formula", type=int, default=10)
    ap.add_argument("--min-atoms", type=int, default=12)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--type-guidance", type=float, nargs="+", default=[0.0, 0.5], help="guidance steps to sample")
    ap.add_argument("--own", type=int, default=0, metavar="N", help="also N molecules' own formulas fixed")
    ap.add_argument("--write-formulas", metavar="PATH", help="only write the drawn formulas to PATH, one a line")
    args = ap.parse_args()
    if args.write_formulas:
        formulas = held_out_formulas(args.formulas, args.min_atoms, args.seed)
        header = f"# {args.formulas} formulas of QM9's test split, >= {args.min_atoms} atoms, seed {args.seed}\n"
        Path(args.write_formulas).write_text(header + "\n".join(formulas) + "\n")
        print(f"wrote {len(formulas)} formulas to {args.write_formulas}")
        return

    from elign.data.formula import formula_batch
    from elign.diffusion.sampler import sample_molecules
    from elign.io.assets import resolve_checkpoint
    from elign.io.checkpoints import load_checkpoint

    formulas = held_out_formulas(args.formulas, args.min_atoms, args.seed)
    lines = [
        f"{args.formulas} formulas of QM9's test split (seed {args.seed}, >= {args.min_atoms} atoms: "
        f"{', '.join(formulas)}), {args.per_formula} molecules each, {args.steps} steps, seed {args.seed}",
        "",
        "| model | sampling | exact formula | mol. stab. | valid | isomer uniqueness | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    own: list[str] = []
    for name in args.checkpoint or ["backbone"]:
        model, config, _ = load_checkpoint(resolve_checkpoint(name))
        info = config.dataset_info()
        types = torch.from_numpy(formula_batch(formulas, args.per_formula, info.atom_decoder, info.max_n_nodes))
        sizes = (types >= 0).sum(dim=1)
        common = dict(steps=args.steps, seed=args.seed, atomic_numbers=info.atomic_numbers, progress=True)
        modes = [(f"formula given, guidance {g:g}", {"types": types, "type_guidance": g}) for g in args.type_guidance]
        if model.context_dim:  # a composition-conditioned model: told the counts, it may pick the types itself
            modes.append(("counts given, types free", {"types": types, "fix_types": False}))
        else:
            modes.append(("unconditional, same sizes", {"sizes": sizes}))
        for how, extra in modes:
            draw = partial(sample_molecules, model, len(types), info.size_probabilities(), **common, **extra)
            seconds, mols = timed(draw)
            f = figures(mols, formulas, args.per_formula, info.atom_decoder)
            lines.append(
                f"| {name} | {how} | {f['exact_formula']:.3f} | {f['molecule_stability']:.3f} | {f['validity']:.3f} | "
                f"{f['isomer_uniqueness']:.3f} | {seconds:.0f} |"
            )
            print(lines[-1], flush=True)
        if args.own and not model.context_dim:
            own += own_formula_rows(name, model, info, args.own, args.type_guidance, common)
    if own:
        lines += ["", f"Own formulas ({args.steps} steps, seed {args.seed}):", "", "| model | sampling | mol. stab. |"]
        lines += ["|---|---|---|", *own]
    write_results("Formula-conditioned sampling (benchmarks/formula_sampling.py)", lines, bullets=False)


if __name__ == "__main__":
    main()
