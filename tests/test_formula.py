"""Molecules of a given formula: parsing, the types a model samples with, and sampling with them fixed."""

from collections import Counter

import numpy as np
import pytest
import torch

from elign.data.formula import formula_batch, formula_types, hill_formula, parse_formula, read_formulas
from elign.diffusion.sampler import sample_molecules
from elign.metrics.bonds import split_molecules
from elign.testing import QM9_Z, tiny_model

QM9 = ["H", "C", "N", "O", "F"]


def test_formulas_parse_and_print_in_hill_order():
    assert parse_formula("C7H10O2") == {"C": 7, "H": 10, "O": 2}
    assert parse_formula("OH2") == {"O": 1, "H": 2}
    assert hill_formula({"O": 2, "H": 10, "C": 7}) == "C7H10O2" and hill_formula({"N": 1, "H": 3}) == "H3N"


@pytest.mark.parametrize(
    ("text", "message"),
    [("C7 H", "not a molecular formula"), ("", "not a molecular formula"), ("CQ2", "'Q' is not an element"),
     ("CHC", "C appears twice"), ("C0H4", "a count of 0 C")],
)  # fmt: skip
def test_bad_formulas_are_named(text, message):
    with pytest.raises(ValueError, match=message):
        parse_formula(text)


def test_formula_types_follow_the_models_elements_and_size_prior():
    assert formula_types("C2H6O", QM9).tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 3]
    with pytest.raises(ValueError, match="the model has no Cl"):
        formula_types("CH3Cl", QM9)
    with pytest.raises(ValueError, match="has 92 atoms; the model's size prior reaches 29"):
        formula_types("C30H62", QM9, max_atoms=29)
    batch = formula_batch(["CH4", "C2H6O"], 2, QM9, 29)  # [4, 9]
    assert batch.shape == (4, 9) and (batch[:2] >= 0).sum(1).tolist() == [5, 5] and (batch[2:] >= 0).all()


def test_formulas_come_from_the_command_line_or_files(tmp_path):
    listing = tmp_path / "formulas.txt"
    listing.write_text("# held-out formulas\nC7H10O2\n\nC3H7NO  # an amide\n")
    assert read_formulas(["CH4", str(listing)]) == ["CH4", "C7H10O2", "C3H7NO"]


def test_sampling_given_formulas_returns_exactly_them():
    model, config = tiny_model(seed=1)
    info = config.dataset_info()
    formulas = ["CH4", "CH2O", "H3N"]
    types = torch.from_numpy(formula_batch(formulas, 2, config.atom_decoder, info.max_n_nodes))
    mols = sample_molecules(
        model, len(types), info.size_probabilities(), steps=6, seed=3, atomic_numbers=QM9_Z, types=types
    )
    got = [Counter(config.atom_decoder[k] for k in t) for _, t in split_molecules(mols)]
    want = [Counter(parse_formula(f)) for f in formulas for _ in range(2)]
    assert got == want
    x = [x for x, _ in split_molecules(mols)]
    assert not np.allclose(x[0], x[1])  # two isomers, not one copy
    again = sample_molecules(
        model, len(types), info.size_probabilities(), steps=6, seed=3, atomic_numbers=QM9_Z, types=types
    )
    assert torch.equal(again.positions, mols.positions)  # seeded


def test_sample_formula_on_the_command_line(tmp_path, capsys):
    from elign.cli import main
    from elign.io.checkpoints import save_checkpoint
    from elign.io.export import read_molecules

    model, config = tiny_model(seed=2)
    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", model, config)
    out = tmp_path / "iso.sdf"
    argv = ["sample", "--checkpoint", str(ckpt), "--formula", "CH4O", "--num", "3", "--steps", "4", "--out", str(out)]
    assert main(argv) == 0
    records = read_molecules(out)
    assert len(records) == 3 and all(Counter(s) == Counter(C=1, H=4, O=1) for _, s, _ in records)
    assert all(p["formula"] == "CH4O" for _, _, p in records)
    assert main([*argv[:5], "CH3Cl", *argv[6:]]) == 2
    assert "the model has no Cl" in capsys.readouterr().err


def _type_distance(model, fixed, z, t, mask) -> float:
    """How far the x0 prediction's type features at z are from the formula's current assignment."""
    with torch.no_grad():
        x0 = model.scheduler.x0_from_eps(z, model.predict_eps(z, t, mask), t)
    return float(((x0[..., 3:] - fixed.h0) ** 2 * mask).sum())


def test_type_guidance_moves_positions_down_the_type_distance():
    from elign.data.geometry import remove_mean_with_mask
    from elign.diffusion.conditioning import FixedTypes
    from elign.diffusion.sampler import node_mask_from_sizes

    model, config = tiny_model(seed=4)
    info = config.dataset_info()
    types = torch.from_numpy(formula_batch(["CH4O", "CH2O"], 1, config.atom_decoder, info.max_n_nodes))
    mask = node_mask_from_sizes((types >= 0).sum(1))  # [2, N, 1]
    fixed = FixedTypes(types[:, : mask.shape[1]], QM9_Z, guidance=0.05)
    t, s = torch.full((2, 1), 0.3), torch.full((2, 1), 0.29)
    z = fixed.noised(model, model.scheduler.sample_noise(mask, torch.Generator().manual_seed(0)), t, mask)
    eps, grad = fixed.eps_and_gradient(model, z, t, mask)
    assert grad.shape == (2, mask.shape[1], 3) and float(grad.abs().sum()) > 0
    guided = fixed.guide(model, z, grad, s, t, mask)
    assert torch.equal(guided[..., 3:], z[..., 3:])  # only positions move
    assert torch.allclose(remove_mean_with_mask(guided[..., :3], mask), guided[..., :3], atol=1e-6)  # centred
    assert _type_distance(model, fixed, guided, t, mask) < _type_distance(model, fixed, z, t, mask)
    unguided = FixedTypes(fixed.types, QM9_Z)
    eps0, none = unguided.eps_and_gradient(model, z, t, mask)
    assert none is None and torch.allclose(eps0, eps, atol=1e-6)  # the same prediction, without the gradient
    with pytest.raises(ValueError, match="type guidance"):
        FixedTypes(fixed.types, QM9_Z, guidance=-1.0)


def test_guided_formula_sampling_keeps_the_formula_and_moves_the_atoms():
    model, config = tiny_model(seed=1)
    info = config.dataset_info()
    types = torch.from_numpy(formula_batch(["CH4O", "C2H3N"], 2, config.atom_decoder, info.max_n_nodes))
    common = dict(steps=6, seed=3, atomic_numbers=QM9_Z, types=types)
    plain = sample_molecules(model, len(types), info.size_probabilities(), type_guidance=0.0, **common)
    guided = sample_molecules(model, len(types), info.size_probabilities(), type_guidance=0.5, **common)
    counts = [sorted(Counter(t.tolist()).items()) for _, t in split_molecules(guided)]
    assert counts == [sorted(Counter(t.tolist()).items()) for _, t in split_molecules(plain)]
    assert not torch.allclose(guided.positions, plain.positions)
