"""QM9 reading, cache and EDM split, on tiny files the tests write themselves (offline, seconds)."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from elign.data import qm9
from elign.data.info import DatasetInfo, qm9_info
from elign.data.qm9 import DataError, QM9Data, edm_split, load_cache, load_qm9

# Tiny molecules: QM9 index, elements, positions [n, 3] (Angstrom), GDB SMILES, relaxed SMILES.
# Index 3 holds 1.2e-6 and 0.0, written as Mathematica-style "1.2*^-6" and "0." in the files.
MOLECULES = [
    (
        10,
        ["O", "C", "H", "H", "H", "H"],
        [
            [0.0, 0.0, 0.0],
            [1.4, 0.1, 0.0],
            [-0.3, 0.9, 0.0],
            [1.8, -0.9, 0.2],
            [1.7, 0.6, 0.9],
            [1.8, 0.6, -0.8],
        ],
        "OC",
        "OC",
    ),
    (
        1,
        ["C", "H", "H", "H", "H"],
        [
            [-0.0127, 1.0858, 0.0080],
            [0.0022, -0.0060, 0.0020],
            [1.0117, 1.4638, 0.0003],
            [-0.5408, 1.4475, -0.8766],
            [-0.5238, 1.4379, 0.9064],
        ],
        "C",
        "C",
    ),
    (3, ["O", "H", "H"], [[-0.0344, 0.9775, 1.2e-6], [0.0, 0.0, 0.0], [0.9, 1.3, 0.0]], "O", "O"),
    (
        4,
        ["C", "F", "H", "H", "H"],
        [[0.0, 0.0, 0.0], [1.38, 0.0, 0.0], [-0.36, 1.03, 0.0], [-0.36, -0.51, 0.89], [-0.36, -0.51, -0.89]],
        "CF",
        "FC",
    ),
]
ORDER = [1, 3, 4, 10]  # QM9 indices, sorted
CANONICAL = {1: "C", 3: "O", 4: "CF", 10: "CO"}


def _num(x: float, mathematica: bool = True) -> str:
    if x == 0.0:
        return "0."
    text = repr(float(x))
    return text.replace("e", "*^") if mathematica else text


def _write_qm9pack(tmp_path: Path, molecules=MOLECULES) -> list[Path]:
    """qm9pack-style CSV files (two parts), with extra columns like the real ones."""
    columns = ["XYZ_file", "Index", "SMILES", "InChi", "N_atoms", "Elements", "XYZ_Ang", "HOMO_au"]
    paths = []
    for part, chunk in enumerate((molecules[:2], molecules[2:]), start=1):
        path = tmp_path / f"qm9_part{part}.csv"
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh, quoting=csv.QUOTE_NONNUMERIC)
            writer.writerow(columns)
            for index, elements, pos, _gdb, relaxed in chunk:
                xyz = "[" + ",".join("[" + ",".join(_num(v) for v in row) + "]" for row in pos) + "]"
                els = "[" + ",".join(f"'{e}'" for e in elements) + "]"
                writer.writerow(
                    [
                        f"dsgdb9nsd_{index:06d}.xyz",
                        index,
                        relaxed,
                        "InChI=1S/x",
                        len(elements),
                        els,
                        xyz,
                        -0.3,
                    ]
                )
        paths.append(path)
    return paths


def _xyz_text(index: int, elements: list[str], pos: list[list[float]], gdb: str, relaxed: str) -> str:
    lines = [str(len(elements)), f"gdb {index}\t157.7\t157.7\t157.7\t0.\t13.21\t-0.3877\t0.1171"]
    for el, row in zip(elements, pos, strict=True):
        lines.append(f"{el}\t" + "\t".join(_num(v) for v in row) + "\t-0.1")
    lines += ["1341.3\t1562.6", f"{gdb}\t{relaxed}", "InChI=1S/x\tInChI=1S/x"]
    return "\n".join(lines) + "\n"


def _write_archive(path: Path, texts: dict[str, str]) -> Path:
    with tarfile.open(path, "w:bz2") as tar:
        for name, text in texts.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _archive(tmp_path: Path, extra: dict[str, str] | None = None) -> Path:
    texts = {f"dsgdb9nsd_{m[0]:06d}.xyz": _xyz_text(*m) for m in MOLECULES}
    return _write_archive(tmp_path / "dsgdb9nsd.xyz.tar.bz2", {**texts, **(extra or {})})


@pytest.fixture
def fake_qm9pack(tmp_path, monkeypatch) -> list[Path]:
    paths = _write_qm9pack(tmp_path)
    monkeypatch.setattr(qm9, "qm9pack_csv_paths", lambda: paths)
    return paths


@pytest.fixture
def data(fake_qm9pack, tmp_path) -> QM9Data:
    return load_qm9(tmp_path / "cache" / "qm9.npz", source="qm9pack", progress=False)


# ------------------------------------------------------------------------------------------- split
def test_edm_split_full_qm9_sizes_and_partition():
    s = edm_split(130_831)
    assert {k: len(v) for k, v in s.items()} == {"train": 100_000, "valid": 17_748, "test": 13_083}
    assert np.array_equal(np.sort(np.concatenate([s["train"], s["valid"], s["test"]])), np.arange(130_831))


def test_edm_split_is_the_global_seed_0_stream_and_leaves_global_state_alone():
    state = np.random.get_state()
    try:
        np.random.seed(0)
        expected = np.random.permutation(130_831)
        np.random.seed(123)
        before = np.random.get_state()[1].copy()
        s = edm_split(130_831)
        assert np.array_equal(np.random.get_state()[1], before)
    finally:
        np.random.set_state(state)
    assert np.array_equal(s["train"], expected[:100_000])
    assert np.array_equal(s["valid"], expected[100_000:117_748])
    assert np.array_equal(s["test"], expected[117_748:])


@pytest.mark.parametrize("n, sizes", [(10, (8, 1, 1)), (15, (11, 3, 1)), (1000, (764, 136, 100)), (1, (1, 0, 0))])
def test_edm_split_small_n_keeps_proportions(n, sizes):
    s = edm_split(n)
    assert (len(s["train"]), len(s["valid"]), len(s["test"])) == sizes
    assert sorted(np.concatenate(list(s.values())).tolist()) == list(range(n))


def test_edm_split_rejects_empty():
    with pytest.raises(ValueError, match="at least one"):
        edm_split(0)


# ------------------------------------------------------------------------------------------ qm9pack
def test_qm9pack_source_is_ordered_parsed_and_canonicalised(data, tmp_path):
    assert data.source == "qm9pack"
    assert data.qm9_index.tolist() == ORDER
    assert data.sizes.tolist() == [5, 3, 5, 6]
    x, t = data.molecule(1)  # water: "1.2*^-6" and "0." parsed
    assert x.dtype == np.float32 and x.shape == (3, 3)
    np.testing.assert_allclose(x, [[-0.0344, 0.9775, 1.2e-6], [0, 0, 0], [0.9, 1.3, 0]], rtol=1e-6)
    assert t.tolist() == [3, 0, 0]
    assert data.molecule(2)[1].tolist() == [1, 4, 0, 0, 0]  # C F H H H
    assert data.smiles_raw.tolist() == ["C", "O", "FC", "OC"]
    assert data.smiles() == set(CANONICAL.values())
    assert (tmp_path / "cache" / "qm9.npz").is_file()


def test_cache_round_trip_does_not_touch_the_source(data, tmp_path, monkeypatch):
    def gone():
        raise AssertionError("the source was read although a cache exists")

    monkeypatch.setattr(qm9, "qm9pack_csv_paths", gone)
    again = load_qm9(tmp_path / "cache" / "qm9.npz", progress=False)
    for name in ("positions", "types", "sizes", "qm9_index", "smiles_raw", "smiles_canonical"):
        assert np.array_equal(getattr(again, name), getattr(data, name)), name
    assert again.source == "qm9pack"
    assert again.types.dtype == np.uint8 and again.positions.dtype == np.float32


def test_rebuild_rereads_the_source(data, tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    paths = _write_qm9pack(other, MOLECULES[:2])
    monkeypatch.setattr(qm9, "qm9pack_csv_paths", lambda: paths)
    rebuilt = load_qm9(tmp_path / "cache" / "qm9.npz", source="qm9pack", progress=False, rebuild=True)
    assert rebuilt.qm9_index.tolist() == [1, 10]


def test_exclude_list_drops_indices(fake_qm9pack, tmp_path):
    exclude = tmp_path / "uncharacterized.txt"
    exclude.write_text("  Index   DE/kcal\n ------\n     3   -1.2\n    10   5.0\n\n")
    assert qm9.read_exclude_list(exclude) == {3, 10}
    d = load_qm9(tmp_path / "c.npz", source="qm9pack", progress=False, exclude_path=exclude)
    assert d.qm9_index.tolist() == [1, 4]


def test_bad_csv_row_names_the_molecule(tmp_path, monkeypatch):
    bad = [(7, ["C", "H"], [[0.0, 0.0, 0.0]], "C", "C")]  # two elements, one position
    paths = _write_qm9pack(tmp_path, bad + MOLECULES[:1])
    monkeypatch.setattr(qm9, "qm9pack_csv_paths", lambda: paths)
    with pytest.raises(DataError, match="dsgdb9nsd_000007.xyz"):
        load_qm9(tmp_path / "c.npz", source="qm9pack", progress=False)
    assert not (tmp_path / "c.npz").exists()


def test_unknown_element_and_duplicate_index_are_errors(tmp_path, monkeypatch):
    paths = _write_qm9pack(tmp_path, [(7, ["S", "H"], [[0.0, 0.0, 0.0], [1.3, 0.0, 0.0]], "S", "S")])
    monkeypatch.setattr(qm9, "qm9pack_csv_paths", lambda: paths)
    with pytest.raises(DataError, match="'S'"):
        load_qm9(tmp_path / "a.npz", source="qm9pack", progress=False)
    paths = _write_qm9pack(tmp_path, MOLECULES[:2] + MOLECULES[:1])
    with pytest.raises(DataError, match="appears twice"):
        load_qm9(tmp_path / "b.npz", source="qm9pack", progress=False)


def test_csv_without_the_columns_is_an_error(tmp_path, monkeypatch):
    path = tmp_path / "qm9_part1.csv"
    path.write_text("a,b\n1,2\n")
    monkeypatch.setattr(qm9, "qm9pack_csv_paths", lambda: [path])
    with pytest.raises(DataError, match="lacks the columns"):
        load_qm9(tmp_path / "c.npz", source="qm9pack", progress=False)


def test_missing_qm9pack_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"elign\[qm9\]"):
        load_qm9(tmp_path / "c.npz", progress=False)


def test_qm9pack_lookup_does_not_import_the_package():
    if importlib.util.find_spec("qm9pack") is None:
        pytest.skip("qm9pack is not installed")
    paths = qm9.qm9pack_csv_paths()
    assert [p.name for p in paths] == ["qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv"]
    assert all(p.is_file() for p in paths)


# ------------------------------------------------------------------------------------------ archive
def test_archive_matches_qm9pack(data, tmp_path):
    arch = load_qm9(tmp_path / "arch.npz", source="archive", archive_path=_archive(tmp_path), progress=False)
    assert arch.source == "archive"
    for name in ("positions", "types", "sizes", "qm9_index", "smiles_raw", "smiles_canonical"):
        assert np.array_equal(getattr(arch, name), getattr(data, name)), name


def test_archive_keeps_the_relaxed_smiles_and_honours_exclusions(tmp_path):
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("4\n")
    archive = _archive(tmp_path, {"README": "not a molecule"})
    d = load_qm9(tmp_path / "c.npz", "auto", archive, progress=False, exclude_path=exclude)
    assert d.qm9_index.tolist() == [1, 3, 10]
    assert d.smiles_raw.tolist() == ["C", "O", "OC"]


def test_parse_xyz_reads_mathematica_numbers():
    r = qm9.parse_xyz(_xyz_text(*MOLECULES[2]))
    assert r.index == 3 and r.elements == ["O", "H", "H"]
    assert r.positions[0, 2] == pytest.approx(1.2e-6)


@pytest.mark.parametrize("make", ["garbage", "truncated"])
def test_corrupt_archive_is_a_data_error(tmp_path, make):
    good = _archive(tmp_path).read_bytes()
    bad = tmp_path / "bad.tar.bz2"
    bad.write_bytes(b"this is not bzip2 at all" * 10 if make == "garbage" else good[: len(good) // 2])
    with pytest.raises(DataError, match="download dsgdb9nsd.xyz.tar.bz2 again"):
        load_qm9(tmp_path / "c.npz", source="archive", archive_path=bad, progress=False)
    assert not (tmp_path / "c.npz").exists()


def test_malformed_xyz_member_is_named(tmp_path):
    archive = _archive(tmp_path, {"dsgdb9nsd_000099.xyz": "3\nnot gdb\n"})
    with pytest.raises(DataError, match="dsgdb9nsd_000099.xyz"):
        load_qm9(tmp_path / "c.npz", source="archive", archive_path=archive, progress=False)


def test_archive_source_needs_a_path(tmp_path):
    with pytest.raises(DataError, match="archive_path"):
        load_qm9(tmp_path / "c.npz", source="archive", progress=False)
    with pytest.raises(DataError, match="does not exist"):
        load_qm9(tmp_path / "c.npz", source="archive", archive_path=tmp_path / "nope.tar.bz2", progress=False)
    with pytest.raises(ValueError, match="source must be"):
        load_qm9(tmp_path / "c.npz", source="figshare", progress=False)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------------- cache
def test_truncated_cache_says_delete_and_rebuild(data, tmp_path):
    path = tmp_path / "cache" / "qm9.npz"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="corrupt or truncated.*delete it"):
        load_qm9(path, progress=False)


def test_garbage_and_flipped_byte_caches_are_data_errors(data, tmp_path):
    path = tmp_path / "cache" / "qm9.npz"
    blob = bytearray(path.read_bytes())
    bad = tmp_path / "garbage.npz"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_cache(bad)
    with zipfile.ZipFile(path) as z:
        member = z.getinfo("positions.npy")
    n_name, n_extra = struct.unpack("<HH", blob[member.header_offset + 26 : member.header_offset + 30])
    start = member.header_offset + 30 + n_name + n_extra  # compressed positions begin here
    blob[start + member.compress_size // 2] ^= 0xFF
    bad.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="QM9 cache"):
        load_cache(bad)


def test_inconsistent_or_foreign_npz_is_a_data_error(data, tmp_path):
    arrays = data._arrays()
    bad = tmp_path / "bad.npz"
    np.savez_compressed(bad, **{**arrays, "sizes": arrays["sizes"][:-1]})
    with pytest.raises(DataError, match="inconsistent"):
        load_cache(bad)
    np.savez_compressed(bad, **{**arrays, "version": np.array(99)})
    with pytest.raises(DataError, match="format"):
        load_cache(bad)
    np.savez_compressed(bad, positions=arrays["positions"])
    with pytest.raises(DataError, match="lacks"):
        load_cache(bad)
    with pytest.raises(DataError, match="does not exist"):
        load_cache(tmp_path / "missing.npz")


def test_default_cache_path_follows_elign_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ELIGN_CACHE", str(tmp_path / "dir"))
    assert qm9.default_cache_path() == tmp_path / "dir" / "qm9.npz"
    monkeypatch.setenv("ELIGN_CACHE", str(tmp_path / "mine.npz"))
    assert qm9.default_cache_path() == tmp_path / "mine.npz"
    monkeypatch.delenv("ELIGN_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert qm9.default_cache_path() == tmp_path / ".cache" / "elign" / "qm9.npz"


def test_load_qm9_without_path_writes_to_elign_cache(fake_qm9pack, monkeypatch, tmp_path):
    monkeypatch.setenv("ELIGN_CACHE", str(tmp_path / "env"))
    load_qm9(progress=False)
    assert (tmp_path / "env" / "qm9.npz").is_file()


# ----------------------------------------------------------------------------------------- dataset
def test_splits_partition_the_molecules(data):
    parts = [data.split(s) for s in ("train", "valid", "test")]
    assert [len(p) for p in parts] == [3, 1, 0]  # EDM proportions for n = 4
    assert sorted(np.concatenate(parts).tolist()) == [0, 1, 2, 3]
    assert np.array_equal(data.split("val"), data.split("valid"))
    with pytest.raises(ValueError, match="unknown split"):
        data.split("training")


def test_batch_is_centred_padded_and_typed(data):
    b = data.batch([3, 1])
    assert b.positions.shape == (2, 6, 3) and b.num_atoms.tolist() == [6, 3]
    mask = b.node_mask
    centre = (b.positions * mask).sum(dim=1) / mask.sum(dim=1)
    assert centre.abs().max() < 1e-6
    assert b.positions[1, 3:].abs().max() == 0 and mask[1, 3:].sum() == 0
    assert b.charges[0, :, 0].tolist() == [8, 6, 1, 1, 1, 1]
    assert b.atom_types[1].tolist() == [3, 0, 0, -1, -1, -1]
    x, _ = data.molecule(3)
    torch.testing.assert_close(b.positions[0], torch.from_numpy(x - x.mean(0)), atol=1e-6, rtol=0)
    assert data.batch(np.array([0]), max_atoms=29).positions.shape == (1, 29, 3)


def test_molecule_index_errors(data):
    with pytest.raises(IndexError):
        data.molecule(4)
    assert np.array_equal(data.molecule(-1)[1], data.molecule(3)[1])


def test_histograms_counts_and_dataset_info(data):
    assert data.size_histogram() == {3: 1, 5: 2, 6: 1}
    train = data.split("train")
    expected = {}
    for i in train:
        expected[int(data.sizes[i])] = expected.get(int(data.sizes[i]), 0) + 1
    assert data.size_histogram("train") == expected
    assert data.atom_counts() == {"H": 13, "C": 3, "N": 0, "O": 2, "F": 1}
    assert sum(data.atom_counts("train").values()) == int(data.sizes[train].sum())
    info = data.dataset_info()
    assert info.name == "qm9" and info.atom_decoder == ["H", "C", "N", "O", "F"]
    assert info.n_nodes == expected and info.max_n_nodes == 29
    assert info.atomic_numbers == [1, 6, 7, 8, 9]
    assert DatasetInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


def test_smiles_of_a_split(data):
    seen = data.smiles("train") | data.smiles("valid")
    assert seen == set(CANONICAL.values())
    assert len(data.smiles("train")) == 3


def test_build_cache_writes_cache_and_info(fake_qm9pack, tmp_path):
    info_path = tmp_path / "info.json"
    summary = qm9.build_cache(tmp_path / "q.npz", source="qm9pack", info_path=info_path, progress=False)
    assert summary["molecules"] == 4 and summary["splits"] == {"train": 3, "valid": 1, "test": 0}
    assert summary["cache_bytes"] == (tmp_path / "q.npz").stat().st_size > 0
    assert summary["smiles_failures"] == 0
    info = DatasetInfo.from_dict(json.loads(info_path.read_text()))
    assert sum(info.n_nodes.values()) == 3


# ------------------------------------------------------------------------------------- shipped info
# EDM's published statistics of its QM9 training split (configs/datasets_config.py, ``qm9_with_h``).
EDM_TRAIN_N_NODES = {
    3: 1, 4: 4, 5: 5, 6: 9, 7: 16, 8: 49, 9: 124, 10: 362, 11: 807, 12: 1689, 13: 3060, 14: 5136, 15: 7796,
    16: 10644, 17: 13025, 18: 13364, 19: 13832, 20: 9482, 21: 9970, 22: 3393, 23: 4848, 24: 539, 25: 1506,
    26: 48, 27: 266, 29: 25,
}  # fmt: skip
EDM_TRAIN_ATOM_TYPES = {"H": 923537, "C": 635559, "N": 101476, "O": 140202, "F": 2323}


def test_shipped_qm9_info_equals_edm_published_training_statistics():
    info = qm9_info()
    assert info.name == "qm9" and info.atom_decoder == ["H", "C", "N", "O", "F"]
    assert info.max_n_nodes == 29
    assert info.n_nodes == EDM_TRAIN_N_NODES
    assert info.atom_counts == EDM_TRAIN_ATOM_TYPES


@pytest.mark.slow
def test_real_qm9pack_reproduces_the_shipped_info(tmp_path):
    if importlib.util.find_spec("qm9pack") is None:
        pytest.skip("qm9pack is not installed")
    d = load_qm9(tmp_path / "qm9.npz", source="qm9pack", progress=False)
    assert len(d) == 130_831 and int(d.sizes.max()) == 29
    assert [len(d.split(s)) for s in ("train", "valid", "test")] == [100_000, 17_748, 13_083]
    assert d.dataset_info().to_dict() == qm9_info().to_dict()
    assert d.size_histogram("train") == EDM_TRAIN_N_NODES
