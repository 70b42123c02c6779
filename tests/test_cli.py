"""The command line end to end on a tiny checkpoint: sample -> evaluate -> score, and guided sampling."""

import json
import subprocess
import sys

import pytest
import torch
from rdkit import Chem

from elign.cli import main
from elign.data.batch import MoleculeBatch
from elign.diffusion.sampler import ForceGuidance, node_mask_from_sizes, sample_chain
from elign.io.checkpoints import save_checkpoint
from elign.mlff import load_force_field
from elign.testing import QM9_Z, tiny_model


@pytest.fixture
def tiny_ckpt(tmp_path):
    model, config = tiny_model(seed=2)
    return save_checkpoint(tmp_path / "tiny.safetensors", model, config)


def test_sample_evaluate_score(tmp_path, tiny_ckpt, capsys):
    sdf = tmp_path / "s.sdf"
    assert (
        main(
            ["sample", "--checkpoint", str(tiny_ckpt), "--num", "6", "--steps", "10", "--seed", "1", "--out", str(sdf)]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "molecules/s" in out and "wrote 6 molecules" in out
    mols = [m for m in Chem.SDMolSupplier(str(sdf), sanitize=False, removeHs=False)]
    assert len(mols) == 6 and all(m.HasProp("molecule_stable") for m in mols)
    report = tmp_path / "r.json"
    assert main(["evaluate", "--samples", str(sdf), "--json", str(report), "--no-novelty"]) == 0
    r = json.loads(report.read_text())
    for key in ("atom_stability", "molecule_stability", "validity", "uniqueness", "novelty", "vxu", "n"):
        assert key in r
    assert r["n"] == 6 and 0 <= r["validity"] <= 1 and r["vxu"] == pytest.approx(r["validity"] * r["uniqueness"])
    scores, atoms = tmp_path / "scores.csv", tmp_path / "atoms.csv"
    assert (
        main(["score", str(sdf), "--mlff", "synthetic", "--out", str(scores), "--atoms", str(atoms), "--device", "cpu"])
        == 0
    )
    assert len(scores.read_text().splitlines()) == 7
    n_atoms = sum(m.GetNumAtoms() for m in mols)
    assert len(atoms.read_text().splitlines()) == n_atoms + 1


def test_sample_to_npz_without_rdkit_then_evaluate(tmp_path, tiny_ckpt):
    """A GPU machine without RDKit samples to .npz; the same molecules evaluate as from the SDF."""
    npz, sdf = tmp_path / "s.npz", tmp_path / "s.sdf"
    code = (
        "import sys; sys.modules['rdkit'] = None; from elign.cli import main; "
        f"raise SystemExit(main(['sample', '--checkpoint', {str(tiny_ckpt)!r}, '--num', '5', '--steps', '5', "
        f"'--seed', '2', '--device', 'cpu', '--out', {str(npz)!r}]))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "wrote 5 molecules" in run.stdout
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(tiny_ckpt),
                "--num",
                "5",
                "--steps",
                "5",
                "--seed",
                "2",
                "--device",
                "cpu",
                "--out",
                str(sdf),
            ]
        )
        == 0
    )
    reports = []
    for path in (npz, sdf):
        out = tmp_path / f"{path.suffix[1:]}.json"
        assert main(["evaluate", "--samples", str(path), "--json", str(out), "--no-novelty"]) == 0
        reports.append(json.loads(out.read_text()))
    assert reports[0]["n"] == reports[1]["n"] == 5
    assert reports[0]["atom_stability"] == pytest.approx(reports[1]["atom_stability"], abs=0.05)


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "x.sdf")]) == 2
    assert "not found" in capsys.readouterr().err


def test_force_guidance_moves_atoms_downhill_and_counts_calls():
    model, _ = tiny_model(seed=0)
    ff = load_force_field("synthetic")
    # a stretched water molecule as the latent: positions (Angstrom, norm factor 1) and O, H, H features
    x = torch.tensor([[[0.0, 0.0, 0.0], [1.3, 0.0, 0.0], [-0.3, 1.2, 0.0]]])
    mask = torch.ones(1, 3, 1)
    batch = MoleculeBatch.from_lists([x[0]], [torch.tensor([3, 0, 0])], QM9_Z)
    z = model.normalize(MoleculeBatch(x - x.mean(1, keepdim=True), batch.one_hot, batch.charges, mask))
    guide = ForceGuidance(ff, scale=0.01, sigma_threshold=0.8, atomic_numbers=QM9_Z)
    early = guide(model, z, torch.tensor([[0.9]]), mask)  # sigma above the threshold: untouched
    assert torch.equal(early, z) and guide.calls == 0
    late = guide(model, z, torch.tensor([[0.01]]), mask)
    assert guide.calls == 1 and not torch.equal(late, z)
    energy = lambda z_: ff(model.to_batch(z_, mask, QM9_Z)).energy.item()  # noqa: E731
    assert energy(late) < energy(z)
    assert torch.equal(late[..., 3:], z[..., 3:])  # only positions move
    # in a chain, every step below the threshold costs one call per molecule
    guide = ForceGuidance(ff, 0.01, sigma_threshold=1.01, atomic_numbers=QM9_Z)
    sample_chain(
        model,
        node_mask_from_sizes(torch.tensor([4, 5])),
        steps=10,
        generator=torch.Generator().manual_seed(0),
        atomic_numbers=QM9_Z,
        guidance=guide,
    )
    assert guide.calls == 2 * 10


def test_distill_flags_map_onto_its_configs(tmp_path, distill_configs):
    seen = distill_configs
    argv = ["mlff", "distill", "--out", str(tmp_path / "a"), "--train", "5", "--val", "3", "--channels", "8"]
    assert main([*argv, "--elements", "1", "6", "--radial-mlp", "16", "16", "--no-progress"]) == 0
    assert main(["mlff", "distill", "--out", str(tmp_path / "b")]) == 0
    given, default = seen
    assert (given.n_train, given.n_val, given.student.channels, given.elements) == (5, 3, 8, (1, 6))
    assert given.student.radial_mlp == (16, 16) and not given.progress and given.device == "cpu"
    assert default.elements == (1, 6, 7, 8, 9) and default.n_train == 300 and default.student.channels == 32
