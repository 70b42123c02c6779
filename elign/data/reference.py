"""QM9's own composition figures: the reference of every composition guard and of the composition channel.

``elign/data/qm9_reference.json`` is built by :func:`build_qm9_reference` from the QM9 cache
(``python -m elign.data.reference``, about a minute) and read by :func:`qm9_reference`; it holds

- ``atom_fractions`` of the training split and ``size_fractions``: the atom-type fractions of the training
  split's molecules of each size (the target of the composition channel, whose prompts are sizes);
- ``bond_fractions``, ``ring_fractions``, ``hydrogen_fraction``, ``unsaturation`` and ``rings_per_molecule`` of
  a seeded sample of the training split, under the metrics' own bond rules;
- ``heavy_formula_frequencies`` of the training split (for the distinct formulas a sample of n would hold);
- ``formula_frequencies``: the whole (Hill) formulas of the training split, the prompts of conditional alignment;
- ``novelty_held_out``: the novelty a sample of QM9's test split scores against the training split (near 1 by
  construction: QM9 lists each molecule once), and ``novelty_qm9_sample``: that of a sample of all of QM9, the
  rate a model that reproduced QM9's distribution exactly would get (QM9 holds nearly every small molecule its
  rules allow, so matching it means low novelty).
"""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["build_qm9_reference", "qm9_formulas", "qm9_reference", "size_fractions"]

REFERENCE_FILE = "qm9_reference.json"


@lru_cache(maxsize=1)
def _packaged() -> str:
    return resources.files("elign.data").joinpath(REFERENCE_FILE).read_text()


def qm9_reference() -> dict[str, Any]:
    """The packaged QM9 reference (a fresh copy each call)."""
    return json.loads(_packaged())


def size_fractions(reference: dict[str, Any], max_n_nodes: int) -> np.ndarray:
    """[max_n_nodes + 1, K] atom-type fractions of QM9's molecules of each size; sizes QM9 lacks get the
    overall fractions."""
    overall = np.asarray(list(reference["atom_fractions"].values()), dtype=np.float64)
    table = np.tile(overall, (max_n_nodes + 1, 1))
    for n, fractions in reference["size_fractions"].items():
        if int(n) <= max_n_nodes:
            table[int(n)] = fractions
    return table


def qm9_formulas(decoder: list[str], max_atoms: int) -> tuple[list[str], np.ndarray]:
    """QM9's training formulas that a model of elements ``decoder`` and at most ``max_atoms`` atoms can make, and
    their frequencies [F] renormalised over them; a ValueError when it can make none."""
    from elign.data.formula import parse_formula

    formulas, weights = [], []
    for formula, frequency in qm9_reference()["formula_frequencies"].items():
        counts = parse_formula(formula)
        if set(counts) <= set(decoder) and sum(counts.values()) <= max_atoms:
            formulas.append(formula)
            weights.append(frequency)
    if not formulas:
        raise ValueError(f"no QM9 formula fits a model of {', '.join(decoder)} and at most {max_atoms} atoms")
    weights = np.asarray(weights, dtype=np.float64)
    return formulas, weights / weights.sum()


def build_qm9_reference(data: Any, sample: int = 5000, held_out: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The reference of a :class:`elign.data.qm9.QM9Data` (EDM's split)."""
    from elign.data.formula import hill_formula
    from elign.evaluation.chemistry import qm9_train_smiles
    from elign.metrics.composition import composition_metrics, heavy_formula
    from elign.metrics.rdkit_metrics import molecule_smiles

    decoder = data.dataset_info().atom_decoder
    train = data.split("train")
    atoms = data.atom_counts("train")
    total = sum(atoms.values())
    by_size: dict[int, np.ndarray] = {}
    formulas: Counter[str] = Counter()
    whole_formulas: Counter[str] = Counter()
    for i in train:
        _, t = data.molecule(int(i))
        by_size.setdefault(len(t), np.zeros(len(decoder)))[:] += np.bincount(t, minlength=len(decoder))
        formulas[heavy_formula(t, decoder)] += 1
        whole_formulas[hill_formula(Counter(decoder[k] for k in t))] += 1
    rng = np.random.default_rng(seed)
    picked = rng.choice(train, size=min(sample, len(train)), replace=False)
    guards = composition_metrics([data.molecule(int(i)) for i in picked], decoder)
    train_smiles = qm9_train_smiles(progress=False)

    def novelty(indices: np.ndarray) -> float:
        smiles = {s for i in indices if (s := molecule_smiles(*data.molecule(int(i)), decoder))}
        return sum(s not in train_smiles for s in smiles) / len(smiles)

    test = rng.choice(data.split("test"), size=min(held_out, len(data.split("test"))), replace=False)
    everything = rng.choice(len(data), size=min(held_out, len(data)), replace=False)
    return {
        "source": f"QM9 (EDM's split), training split; guards on {len(picked)} training molecules (seed {seed}); "
        f"novelty of {len(test)} test molecules and of {len(everything)} of all QM9",
        "atom_fractions": {a: atoms[a] / total for a in decoder},
        "size_fractions": {str(n): (c / c.sum()).tolist() for n, c in sorted(by_size.items())},
        "bond_fractions": guards["bond_fractions"],
        "ring_fractions": guards["ring_fractions"],
        "hydrogen_fraction": atoms["H"] / total,
        "unsaturation": guards["unsaturation"],
        "rings_per_molecule": guards["rings_per_molecule"],
        "heavy_formula_frequencies": {f: c / len(train) for f, c in formulas.most_common()},
        "formula_frequencies": {f: c / len(train) for f, c in whole_formulas.most_common()},
        "novelty_held_out": novelty(test),
        "novelty_qm9_sample": novelty(everything),
    }


def main() -> None:
    from elign.data.qm9 import load_qm9

    reference = build_qm9_reference(load_qm9(progress=True))
    path = Path(__file__).with_name(REFERENCE_FILE)
    path.write_text(json.dumps(reference, indent=1) + "\n")
    print(
        f"wrote {path}: novelty of held-out QM9 {reference['novelty_held_out']:.3f}, "
        f"of a sample of all QM9 {reference['novelty_qm9_sample']:.3f}"
    )


if __name__ == "__main__":
    main()
