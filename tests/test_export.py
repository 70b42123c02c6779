"""SDF / XYZ / NPZ export: round trip of coordinates, elements, bonds and properties; invalid molecules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem
from test_metrics import DECODER, Z, ethylene, methane, pentavalent_carbon, water

from elign.data.batch import MoleculeBatch
from elign.io.export import read_molecules, read_npz, read_sdf, write_npz, write_sdf, write_xyz
from elign.metrics.bonds import bond_orders

MOLS = [water(), methane(), ethylene(), pentavalent_carbon()]
PROPS = [
    {"energy": -1.5, "label": "water"},
    {"energy": -2.25, "label": "methane"},
    {"energy": 3, "label": "x y"},
    {},
]


def make_batch() -> MoleculeBatch:
    rng = np.random.default_rng(1)
    # arbitrary decimals so the round trip is checked beyond the tables' neat numbers
    mols = [(x + rng.normal(scale=1e-3, size=x.shape), t) for x, t in MOLS]
    return MoleculeBatch.from_lists([torch.tensor(x) for x, _ in mols], [torch.tensor(t) for _, t in mols], Z)


def test_sdf_round_trip(tmp_path: Path) -> None:
    batch = make_batch()
    path = tmp_path / "out.sdf"
    counts = write_sdf(path, batch, DECODER, properties=PROPS)
    assert counts == {"written": 4, "skipped": 0, "invalid": 1}
    text = path.read_text()
    assert "V2000" in text and "V3000" not in text and "<energy>" in text
    records = read_sdf(path)
    assert len(records) == 4
    for b, (pos, symbols, props) in enumerate(records):
        x, t = batch.molecule(b)
        assert pos.dtype == np.float32 and pos.shape == (len(t), 3)
        np.testing.assert_allclose(pos, x.numpy(), atol=1e-4)
        assert symbols == [DECODER[i] for i in t.tolist()]
        for key, value in PROPS[b].items():
            assert props[key] == value
        assert props["elign_valid"] == (0 if b == 3 else 1)
        assert props["name"] == f"mol_{b}"
    assert records[2][2]["elign_smiles"] == "[H]C([H])=C([H])[H]"
    # bond count (and orders) as from the tables
    suppl = Chem.SDMolSupplier(str(path), sanitize=False, removeHs=False)
    for b, mol in enumerate(suppl):
        orders = bond_orders(*batch.molecule(b), DECODER)
        assert mol.GetNumBonds() == int((np.triu(orders) > 0).sum())
        assert sorted(int(bd.GetBondTypeAsDouble()) for bd in mol.GetBonds()) == sorted(orders[np.triu(orders) > 0])


def test_rdkit_reads_file_and_rejects_only_the_flagged(tmp_path: Path) -> None:
    path = tmp_path / "out.sdf"
    write_sdf(path, make_batch(), DECODER)
    mols = list(Chem.SDMolSupplier(str(path), removeHs=False))  # sanitizing reader
    assert [m is not None for m in mols] == [True, True, True, False]
    assert Chem.MolToSmiles(Chem.RemoveHs(mols[2])) == "C=C"
    assert mols[0].GetConformer().Is3D()


def test_skip_mode_counts_invalid(tmp_path: Path) -> None:
    path = tmp_path / "valid.sdf"
    counts = write_sdf(path, make_batch(), DECODER, properties=PROPS, invalid="skip")
    assert counts == {"written": 3, "skipped": 1, "invalid": 1}
    records = read_sdf(path)
    assert [r[2]["label"] for r in records] == ["water", "methane", "x y"]


def test_unwritable_molecule_is_counted_not_fatal(tmp_path: Path) -> None:
    x, t = water()
    bad = (np.full_like(x, np.nan), t)
    path = tmp_path / "nan.sdf"
    counts = write_sdf(path, [water(), bad, methane()], DECODER)
    assert counts == {"written": 2, "skipped": 1, "invalid": 1}
    assert len(read_sdf(path)) == 2


def test_write_sdf_validates_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="property dicts"):
        write_sdf(tmp_path / "a.sdf", [water()], DECODER, properties=[{}, {}])
    with pytest.raises(ValueError, match="'flag' or 'skip'"):
        write_sdf(tmp_path / "a.sdf", [water()], DECODER, invalid="drop")  # type: ignore[arg-type]


def test_write_xyz(tmp_path: Path) -> None:
    path = tmp_path / "out.xyz"
    assert write_xyz(path, [water(), methane()], DECODER, comments=["w", "m"]) == 2
    lines = path.read_text().splitlines()
    assert lines[0] == "3" and lines[1] == "w" and lines[2].split()[0] == "O"
    assert lines[5] == "5" and lines[6] == "m"
    np.testing.assert_allclose([float(v) for v in lines[3].split()[1:]], water()[0][1], atol=1e-7)


def test_npz_round_trip_is_lossless_and_needs_no_rdkit(tmp_path: Path) -> None:
    batch = make_batch()
    path = tmp_path / "out.npz"
    assert write_npz(path, batch, DECODER, properties=PROPS) == 4
    records = read_molecules(path)
    assert len(records) == 4
    for b, (pos, symbols, props) in enumerate(records):
        x, t = batch.molecule(b)
        assert pos.dtype == np.float32
        np.testing.assert_array_equal(pos, x.numpy().astype(np.float32))  # exact, unlike SDF's four decimals
        assert symbols == [DECODER[i] for i in t.tolist()]
        assert props == PROPS[b]
    # a file that is not a molecule archive, and an unknown suffix, are clear errors
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a molecule archive"):
        read_npz(tmp_path / "other.npz")
    with pytest.raises(ValueError, match=r"\.sdf or \.npz"):
        read_molecules(tmp_path / "out.pdb")


def _pairs(n):
    d = 1.09 / 3**0.5
    methane = np.array([[0, 0, 0], [d, d, d], [-d, -d, d], [-d, d, -d], [d, -d, -d]])
    return [(methane + k, np.array([1, 0, 0, 0, 0])) for k in range(n)]


def test_an_sdf_the_disk_took_only_part_of_is_never_renamed_into_place(tmp_path, monkeypatch):
    """RDKit's writer does not report a failed write (a full disk): the re-read count catches it."""
    from elign.io.files import FileWriteError

    path = tmp_path / "s.sdf"
    assert write_sdf(path, _pairs(8), ["H", "C"])["written"] == 8
    before = path.read_bytes()

    real = Chem.SDWriter

    class LosingWriter:  # what a full disk does to it: records after the second silently vanish
        def __init__(self, name):
            self.inner, self.seen = real(name), 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.inner.close()

        def SetKekulize(self, value):  # noqa: N802 (RDKit's name)
            self.inner.SetKekulize(value)

        def write(self, mol):
            self.seen += 1
            if self.seen <= 2:
                self.inner.write(mol)

    monkeypatch.setattr(Chem, "SDWriter", LosingWriter)
    with pytest.raises(FileWriteError, match=r"could not write .*s\.sdf \(2 of 64 molecules reached the disk\); "
                       r"the previous file is kept"):  # fmt: skip
        write_sdf(path, _pairs(64), ["H", "C"])
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["s.sdf"]


def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno

    from elign.io.files import FileWriteError

    path = tmp_path / "m.npz"
    write_npz(path, _pairs(3), ["H", "C"])
    before = path.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", full)
    with pytest.raises(FileWriteError, match=r"could not write .*m\.npz \(No space left on device\); the previous"):
        write_npz(path, _pairs(5), ["H", "C"])
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.npz"]
    with pytest.raises(FileWriteError, match="nothing was written"):
        write_npz(tmp_path / "new.npz", _pairs(1), ["H", "C"])


def test_xyz_with_forces_is_extended_xyz_that_ase_reads(tmp_path: Path) -> None:
    ase_io = pytest.importorskip("ase.io")
    path = tmp_path / "f.xyz"
    f_water = np.arange(9, dtype=float).reshape(3, 3) / 10
    write_xyz(path, [water(), water()], DECODER, comments=['scored "a"', "not scored"], forces=[f_water, None])
    frames = ase_io.read(str(path), index=":")
    assert len(frames) == 2
    np.testing.assert_allclose(frames[0].get_forces(), f_water)
    assert np.isnan(frames[1].get_forces()).all()
    np.testing.assert_allclose(frames[0].positions, water()[0], atol=1e-6)
    with pytest.raises(ValueError, match="1 force arrays for 2 molecules"):
        write_xyz(path, [water(), water()], DECODER, forces=[f_water])
