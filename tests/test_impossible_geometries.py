"""Impossible geometries (non-finite or overlapping atoms, a lone atom) are never stable, valid or scored."""

import math

import numpy as np
import pytest
import torch

from elign.data.batch import MoleculeBatch
from elign.evaluation.physics import force_field_figures, reason_category
from elign.evaluation.referees import DFT_ELEMENTS, XTB_ELEMENTS, precheck
from elign.metrics.bonds import atom_stability, geometry_problem
from elign.metrics.rdkit_metrics import chemistry_metrics_from_batch, molecule_smiles
from elign.metrics.stability import stability_metrics
from elign.mlff import load_force_field

DECODER = ["H", "C", "N", "O", "F"]
H2_COINCIDENT = (np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.01]]), np.array([0, 0]))
H2 = (np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]]), np.array([0, 0]))
WATER_NAN = (np.array([[0.0, 0.0, 0.12], [0.0, 0.76, -0.47], [np.nan, -0.76, -0.47]]), np.array([3, 0, 0]))
LONE_C = (np.zeros((1, 3)), np.array([1]))


def test_geometry_problem_names_the_impossible():
    assert geometry_problem(H2[0]) is None
    assert "closer than 0.5 A" in geometry_problem(H2_COINCIDENT[0])
    assert geometry_problem(WATER_NAN[0]) == "non-finite positions"
    assert geometry_problem(LONE_C[0]) is None


def test_chemistry_metrics_never_count_non_finite_molecules():
    stable, ok = atom_stability(*WATER_NAN, DECODER)
    assert not ok and not stable.any()
    assert molecule_smiles(*WATER_NAN, DECODER) is None
    chem = chemistry_metrics_from_batch([H2, WATER_NAN], DECODER)
    assert chem["smiles"][0] is not None and chem["smiles"][1] is None
    assert stability_metrics([H2, WATER_NAN], DECODER)["molecule_stability"] == pytest.approx(1 / 2)


def test_coincident_atoms_are_no_molecule_but_overlapping_ones_keep_edms_verdict():
    stable, ok = atom_stability(*H2_COINCIDENT, DECODER)  # 0.01 A: one point, not H2
    assert not ok and not stable.any()
    assert molecule_smiles(*H2_COINCIDENT, DECODER) is None
    # EDM's own reference samples hold atoms 0.39-0.48 A apart, judged by the distance rule alone
    # (tests/test_metrics.py checks all 900 verdicts): such molecules keep that verdict; the physics
    # figures refuse them instead (below)
    h2_close = (np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.4]]), np.array([0, 0]))
    assert atom_stability(*h2_close, DECODER)[1]
    assert "overlapping" in geometry_problem(h2_close[0])


@pytest.mark.parametrize("supported", [XTB_ELEMENTS, DFT_ELEMENTS])
def test_referees_refuse_impossible_geometries(supported):
    def reason(mol):
        x, t = mol
        z = [[1, 6, 7, 8, 9][i] for i in t]
        return precheck(z, x, t, DECODER, supported)

    assert reason(H2) is None
    assert "overlapping" in reason(H2_COINCIDENT)
    assert reason(WATER_NAN) == "non-finite positions"
    assert "single atom" in reason(LONE_C)


def test_report_figures_flag_impossible_geometries_with_a_reason():
    ff = load_force_field("synthetic")
    mols = [H2, H2_COINCIDENT, WATER_NAN, LONE_C]
    batch = MoleculeBatch.from_lists(
        [torch.as_tensor(x) for x, _ in mols], [torch.as_tensor(t) for _, t in mols], [1, 6, 7, 8, 9]
    )
    result = ff(batch)
    # the force field refuses only what it cannot compute (an isolated atom is its own reference energy);
    # the report's figures refuse the impossible geometries
    assert result.valid.tolist() == [True, True, False, True] and "non-finite" in result.reason[2]
    figures = force_field_figures(ff, mols, [1, 6, 7, 8, 9], decoder=DECODER)
    assert math.isfinite(figures["rms_force"][0])
    assert all(math.isnan(v) for v in figures["rms_force"][1:])
    categories = [reason_category(r) for r in figures["reason"][1:]]
    assert categories == ["overlapping atoms", "non-finite positions", "a single atom"]
