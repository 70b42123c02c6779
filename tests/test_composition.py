"""Composition guards: fractions, distances to QM9, rings, bonds, formula diversity; the QM9 reference."""

import math

import numpy as np
import pytest

from elign.data.reference import qm9_reference, size_fractions
from elign.metrics.composition import (
    composition_counts,
    composition_metrics,
    expected_distinct,
    heavy_formula,
    qm9_guards,
    total_variation,
)

QM9 = ["H", "C", "N", "O", "F"]


def ring(n: int, bond: float = 1.54) -> tuple[np.ndarray, np.ndarray]:
    """A planar carbon ring of n atoms, neighbours ``bond`` apart (no hydrogens)."""
    radius = bond / (2 * math.sin(math.pi / n))
    angles = 2 * math.pi * np.arange(n) / n
    x = np.stack([radius * np.cos(angles), radius * np.sin(angles), np.zeros(n)], axis=1)
    return x, np.full(n, 1)


def methane() -> tuple[np.ndarray, np.ndarray]:
    d = 1.09 / math.sqrt(3)
    x = np.array([[0, 0, 0], [d, d, d], [-d, -d, d], [-d, d, -d], [d, -d, -d]], dtype=float)
    return x, np.array([1, 0, 0, 0, 0])


def test_total_variation_is_half_the_l1_distance():
    assert total_variation([1, 0], [0, 1]) == 1.0
    assert total_variation([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert total_variation([0.6, 0.4], [0.5, 0.5]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="different labels"):
        total_variation([1.0], [0.5, 0.5])


def test_heavy_formulas_leave_hydrogen_out_in_hill_order():
    assert heavy_formula(np.array([1, 0, 0, 3, 2, 1]), QM9) == "C2NO"
    assert heavy_formula(np.array([0, 0]), QM9) == ""


def test_counts_see_the_rings_bonds_and_unsaturation_of_known_molecules():
    c = composition_counts([ring(6), ring(3), methane()], QM9)
    assert c["atoms"].tolist() == [4, 10, 0, 0, 0]
    assert c["rings"].tolist() == [1, 0, 0, 1, 0]  # one 3-ring, one 6-ring
    assert c["rings_per_molecule"].tolist() == [1, 1, 0]
    assert c["bonds"].tolist() == [6 + 3 + 4, 0, 0]
    assert c["unsaturation"].tolist() == [7, 4, 0]  # 1 + C - H/2 (bare rings count their open valences too)
    assert c["heavy_formulas"] == ["C6", "C3", "C"]


def test_a_large_ring_is_counted_as_seven_or_more():
    assert composition_counts([ring(9)], QM9)["rings"].tolist() == [0, 0, 0, 0, 1]


def test_expected_distinct_formulas():
    assert expected_distinct({"a": 0.5, "b": 0.5}, 1) == pytest.approx(1.0)
    assert expected_distinct({"a": 0.5, "b": 0.5}, 2) == pytest.approx(1.5)
    assert expected_distinct({"a": 1.0}, 100) == pytest.approx(1.0)


def test_guards_measure_a_hydrogen_rich_set_far_from_qm9():
    far = qm9_guards([methane()] * 4, QM9)
    assert far["hydrogen_fraction"] == pytest.approx(0.8)
    assert far["atom_type_tv"] == pytest.approx(0.8 - qm9_reference()["atom_fractions"]["H"])
    assert far["heavy_formulas_distinct"] == 1
    assert far["reference"]["novelty_qm9_sample"] < 0.5 < far["reference"]["novelty_held_out"]


def test_guards_without_qm9_elements_have_no_distances():
    out = qm9_guards([(np.zeros((1, 3)), np.array([0]))], ["C", "H"])
    assert "atom_type_tv" not in out and out["atom_fractions"] == {"C": 1.0, "H": 0.0}
    with pytest.raises(ValueError, match="differ"):
        composition_metrics([methane()], ["C", "H", "N", "O", "F"], qm9_reference())


def test_the_packaged_reference_is_qm9s():
    ref = qm9_reference()
    assert list(ref["atom_fractions"]) == QM9 and sum(ref["atom_fractions"].values()) == pytest.approx(1.0)
    assert ref["atom_fractions"]["H"] == pytest.approx(0.512, abs=0.002)  # QM9's known hydrogen share
    assert sum(ref["heavy_formula_frequencies"].values()) == pytest.approx(1.0)
    table = size_fractions(ref, 29)  # [30, 5]
    assert table.shape == (30, 5) and np.allclose(table.sum(1), 1.0)
    assert table[1].tolist() == list(ref["atom_fractions"].values())  # QM9 has no 1-atom molecule
    assert table[3].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0, 0])  # HCN, the training split.s 3-atom molecule
