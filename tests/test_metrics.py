"""Bond orders, EDM stability (against the original implementation's verdicts) and RDKit metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from elign.data.batch import MoleculeBatch
from elign.metrics.bonds import ALLOWED_VALENCE, BOND_LENGTHS, atom_stability, bond_order, bond_orders
from elign.metrics.rdkit_metrics import (
    build_molecule,
    canonical_smiles,
    chemistry_metrics,
    chemistry_metrics_from_batch,
    molecule_smiles,
    readable_smiles,
)
from elign.metrics.stability import stability_metrics

DECODER = ["H", "C", "N", "O", "F"]
Z = [1, 6, 7, 8, 9]
H, C, N, O, F = range(5)
FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "edm_reference"


# ----------------------------------------------------------------------------- hand-made molecules
def water() -> tuple[np.ndarray, list[int]]:
    a = np.deg2rad(104.5 / 2)
    x = np.array(
        [
            [0.0, 0.0, 0.0],
            [0.9572 * np.sin(a), 0.9572 * np.cos(a), 0.0],
            [-0.9572 * np.sin(a), 0.9572 * np.cos(a), 0.0],
        ]
    )
    return x, [O, H, H]


def methane() -> tuple[np.ndarray, list[int]]:
    d = 1.09 / np.sqrt(3)
    x = np.array([[0, 0, 0], [d, d, d], [d, -d, -d], [-d, d, -d], [-d, -d, d]], dtype=float)
    return x, [C, H, H, H, H]


def ethylene() -> tuple[np.ndarray, list[int]]:
    cc, ch, a = 1.33, 1.087, np.deg2rad(121.3)
    hx, hy = ch * np.cos(np.pi - a), ch * np.sin(np.pi - a)
    x = np.array(
        [
            [-cc / 2, 0, 0],
            [cc / 2, 0, 0],
            [-cc / 2 - hx, hy, 0],
            [-cc / 2 - hx, -hy, 0],
            [cc / 2 + hx, hy, 0],
            [cc / 2 + hx, -hy, 0],
        ]
    )
    return x, [C, C, H, H, H, H]


def pentavalent_carbon() -> tuple[np.ndarray, list[int]]:
    """CH5 (trigonal bipyramid): carbon with five single bonds; RDKit refuses it."""
    r = 1.09
    x = np.array(
        [
            [0, 0, 0],
            [0, 0, r],
            [0, 0, -r],
            [r, 0, 0],
            [-r / 2, r * np.sqrt(3) / 2, 0],
            [-r / 2, -r * np.sqrt(3) / 2, 0],
        ]
    )
    return x, [C, H, H, H, H, H]


def shifted(mol: tuple[np.ndarray, list[int]], by: float) -> tuple[np.ndarray, list[int]]:
    return mol[0] + by, mol[1]


# ----------------------------------------------------------------------------- bond tables and orders
def test_tables_are_symmetric_and_ordered() -> None:
    for k in (1, 2, 3):
        for (a, b), r in BOND_LENGTHS[k].items():
            assert BOND_LENGTHS[k][(b, a)] == r
    for pair, r2 in BOND_LENGTHS[2].items():
        assert r2 < BOND_LENGTHS[1][pair]
    for pair, r3 in BOND_LENGTHS[3].items():
        assert r3 < BOND_LENGTHS[2][pair]
    assert {s: ALLOWED_VALENCE[s] for s in DECODER} == {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1}


@pytest.mark.parametrize(
    ("a", "b", "d", "order"),
    [
        ("C", "C", 1.639, 1), ("C", "C", 1.641, 0), ("C", "C", 1.389, 2), ("C", "C", 1.391, 1),
        ("C", "C", 1.229, 3), ("C", "C", 1.231, 2), ("C", "H", 1.189, 1), ("C", "H", 1.191, 0),
        ("H", "H", 0.839, 1), ("H", "H", 0.841, 0), ("C", "N", 1.189, 3), ("N", "N", 1.129, 3),
        ("O", "O", 1.20, 2), ("C", "F", 1.10, 1), ("H", "O", 0.5, 1), ("N", "O", 1.12, 2),
    ],
)  # fmt: skip
def test_bond_order_thresholds(a: str, b: str, d: float, order: int) -> None:
    assert bond_order(a, b, d) == order
    assert bond_order(b, a, d) == order
    x = np.array([[0.0, 0.0, 0.0], [d, 0.0, 0.0]])
    orders = bond_orders(x, [DECODER.index(a), DECODER.index(b)], DECODER)
    assert orders.tolist() == [[0, order], [order, 0]]


def test_vectorised_orders_match_scalar_rule() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 12))
        x, t = rng.normal(size=(n, 3)) * 1.1, rng.integers(0, 5, n)
        orders = bond_orders(torch.as_tensor(x), torch.as_tensor(t), DECODER)
        for i in range(n):
            for j in range(n):
                ref = 0 if i == j else bond_order(DECODER[t[i]], DECODER[t[j]], float(np.linalg.norm(x[i] - x[j])))
                assert orders[i, j] == ref


def test_bond_orders_rejects_bad_types() -> None:
    with pytest.raises(ValueError, match="out of range"):
        bond_orders(np.zeros((2, 3)), [0, 7], DECODER)


# ----------------------------------------------------------------------------- stability
@pytest.mark.skipif(not FIXTURES.is_dir(), reason="EDM reference fixtures absent")
def test_stability_agrees_with_edm_reference() -> None:
    ref = json.loads((FIXTURES / "stability_reference.json").read_text())
    decoder, mols = ref["atom_decoder"], ref["molecules"]
    assert len(mols) == 900
    disagree = []
    for i, m in enumerate(mols):
        stable, ok = atom_stability(np.asarray(m["positions"]), np.asarray(m["atom_types"]), decoder)
        assert len(stable) == m["n_atoms"]
        if ok != m["molecule_stable"] or int(stable.sum()) != m["n_stable_atoms"]:
            disagree.append(i)
    assert disagree == []
    # and through the batch path, pooled
    batch = MoleculeBatch.from_lists(
        [torch.tensor(m["positions"]) for m in mols], [torch.tensor(m["atom_types"]) for m in mols], Z
    )
    res = stability_metrics(batch, decoder)
    expected_mol = np.mean([m["molecule_stable"] for m in mols])
    expected_atom = sum(m["n_stable_atoms"] for m in mols) / sum(m["n_atoms"] for m in mols)
    assert res["n"] == 900
    assert res["molecule_stability"] == pytest.approx(expected_mol, abs=1e-6)
    assert res["atom_stability"] == pytest.approx(expected_atom, abs=1e-6)
    assert res["per_molecule"]["n_stable_atoms"].tolist() == [m["n_stable_atoms"] for m in mols]


def test_stability_of_hand_made_molecules() -> None:
    mols = [water(), methane(), ethylene(), pentavalent_carbon()]
    batch = MoleculeBatch.from_lists([torch.tensor(x) for x, _ in mols], [torch.tensor(t) for _, t in mols], Z)
    res = stability_metrics(batch, DECODER)
    assert res["per_molecule"]["molecule_stable"].tolist() == [True, True, True, False]
    assert res["per_molecule"]["n_stable_atoms"].tolist() == [3, 5, 6, 5]
    assert res["n"] == 4
    assert res["molecule_stability"] == pytest.approx(0.75)
    assert res["atom_stability"] == pytest.approx(19 / 20)
    stable, ok = atom_stability(*ethylene(), DECODER)
    assert ok and stable.all()
    assert bond_orders(*ethylene(), DECODER)[0, 1] == 2


def test_stability_accepts_pairs_and_empty_sets() -> None:
    res = stability_metrics([water(), pentavalent_carbon()], DECODER)
    assert res["molecule_stability"] == 0.5
    empty = stability_metrics([], DECODER)
    assert empty["n"] == 0 and np.isnan(empty["molecule_stability"]) and np.isnan(empty["atom_stability"])


# ----------------------------------------------------------------------------- RDKit metrics
def test_smiles_of_hand_made_molecules() -> None:
    assert molecule_smiles(*water(), DECODER) == "[H]O[H]"
    assert molecule_smiles(*methane(), DECODER) == canonical_smiles("C")
    assert molecule_smiles(*ethylene(), DECODER) == canonical_smiles("C=C")
    assert molecule_smiles(*pentavalent_carbon(), DECODER) is None
    mol = build_molecule(*ethylene(), DECODER)
    assert mol.GetNumConformers() == 1 and mol.GetConformer().Is3D()
    assert mol.GetNumBonds() == 5


def test_largest_fragment_is_kept() -> None:
    x_w, t_w = water()
    x_e, t_e = shifted(ethylene(), 10.0)
    smiles = molecule_smiles(np.concatenate([x_w, x_e]), t_w + t_e, DECODER)
    assert smiles == canonical_smiles("C=C")


def test_readable_smiles_shows_every_fragment_without_explicit_hydrogens() -> None:
    assert readable_smiles(*ethylene(), DECODER) == ("C=C", 1)
    x_w, t_w = water()
    x_e, t_e = shifted(ethylene(), 10.0)
    smiles, fragments = readable_smiles(np.concatenate([x_w, x_e]), t_w + t_e, DECODER)
    assert fragments == 2 and sorted(smiles.split(".")) == ["C=C", "O"]
    assert readable_smiles(*pentavalent_carbon(), DECODER) == ("", 1)  # rejected by RDKit, still one piece


def test_readable_smiles_adds_no_hydrogen_so_it_matches_the_formula() -> None:
    x, t = methane()
    keep = [i for i in range(len(t)) if i != 1]  # one hydrogen short: a methyl radical, not methane
    assert readable_smiles(x[keep], [t[i] for i in keep], DECODER)[0] == "[CH3]"


def test_chemistry_metrics_definitions() -> None:
    mols = [water(), water(), methane(), ethylene(), pentavalent_carbon()]
    built = [build_molecule(x, t, DECODER) for x, t in mols]
    res = chemistry_metrics(built, train_smiles={canonical_smiles("O"), canonical_smiles("CCO")})
    assert res["n"] == 5 and res["n_valid"] == 4 and res["n_unique"] == 3
    assert res["validity"] == pytest.approx(4 / 5)
    assert res["uniqueness"] == pytest.approx(3 / 4)
    assert res["novelty"] == pytest.approx(2 / 3)  # methane and ethylene are new, water is not
    assert res["vxu"] == pytest.approx(0.8 * 0.75)
    assert res["smiles"][4] is None
    assert chemistry_metrics(built)["novelty"] is None
    # the batch path gives the same figures
    batch = MoleculeBatch.from_lists([torch.tensor(x) for x, _ in mols], [torch.tensor(t) for _, t in mols], Z)
    res_b = chemistry_metrics_from_batch(batch, DECODER, train_smiles={canonical_smiles("O")})
    assert (res_b["validity"], res_b["uniqueness"], res_b["novelty"]) == (
        res["validity"],
        res["uniqueness"],
        2 / 3,
    )


def test_chemistry_metrics_with_nothing_valid() -> None:
    res = chemistry_metrics([build_molecule(*pentavalent_carbon(), DECODER), None], train_smiles=set())
    assert res["validity"] == 0.0 and res["uniqueness"] == 0.0 and res["vxu"] == 0.0 and res["novelty"] == 0.0


def test_rdkit_is_silent(capfd: pytest.CaptureFixture[str]) -> None:
    chemistry_metrics([build_molecule(*pentavalent_carbon(), DECODER)])
    captured = capfd.readouterr()
    assert "valence" not in (captured.out + captured.err).lower()
