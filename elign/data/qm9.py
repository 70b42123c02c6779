"""QM9 with hydrogens: reading, a compact cache, and EDM's train/validation/test split.

Sources
-------
``qm9pack`` (``pip install 'elign[qm9]'``)
    The PyPI wheel ``qm9pack`` ships QM9 as three CSV files (``qm9pack/data/qm9_part{1,2,3}.csv``):
    130,831 molecules, i.e. QM9 without its 3,054 "uncharacterized" molecules, which is EDM's set.
    The files are found with ``importlib.util.find_spec`` rather than ``importlib.resources``, because
    importing ``qm9pack`` itself needs ``pkg_resources`` (gone from recent setuptools) and pandas.
``archive``
    The original ``dsgdb9nsd.xyz.tar.bz2`` (one ``.xyz`` file per molecule, 133,885 molecules). The
    uncharacterized molecules are not listed inside it; pass their list as ``exclude_path`` (QM9's
    ``uncharacterized.txt`` works as is: every line whose first token is an integer names a QM9 index
    to drop). Without that list all molecules of the archive are kept, and the split below is then
    a different one from EDM's.

Cache
-----
Parsing the CSV files takes about a minute, so the result is stored once in a compressed ``.npz``
(about 27 MB for all of QM9, small enough to travel with a GPU run): positions (float32, Angstrom,
as in the source, not centred) and atom types (uint8 index into ``ATOM_DECODER``) of all molecules
concatenated, per-molecule sizes, QM9 indices and SMILES (as given, and RDKit-canonical). It is read
with ``allow_pickle=False``. Location: ``cache_path`` if given, else ``$ELIGN_CACHE`` (a file path if it
ends in ``.npz``, otherwise a directory holding ``qm9.npz``), else ``~/.cache/elign/qm9.npz``.

Split
-----
EDM (Hoogeboom et al. 2022, via Cormorant's QM9 preparation) orders the 130,831 molecules by QM9
index, draws ``np.random.seed(0); perm = np.random.permutation(130831)`` and takes the first 100,000
as train, the next 17,748 as validation and the last 13,083 (``int(0.1 * n)``) as test. ``edm_split``
reproduces this with a local ``np.random.RandomState(0)`` (the same stream, without touching global
state); see its docstring for how other sizes are handled.
"""

from __future__ import annotations

import os
import sys
import time
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch

from elign.data.batch import MoleculeBatch
from elign.data.elements import QM9_ATOMIC_NUMBERS, QM9_SYMBOLS
from elign.data.info import DatasetInfo
from elign.data.qm9_sources import (
    DataError,
    QM9Record,
    iter_archive,
    iter_qm9pack_csv,
    parse_xyz,
    qm9pack_csv_paths,
    read_exclude_list,
)

__all__ = [
    "ATOM_DECODER",
    "ATOMIC_NUMBERS",
    "CACHE_VERSION",
    "DataError",
    "QM9Data",
    "build_cache",
    "canonical_smiles",
    "default_cache_path",
    "edm_split",
    "load_cache",
    "load_qm9",
    "parse_xyz",
    "read_archive",
    "read_exclude_list",
    "read_qm9pack",
]

ATOM_DECODER: tuple[str, ...] = QM9_SYMBOLS
ATOMIC_NUMBERS: tuple[int, ...] = QM9_ATOMIC_NUMBERS
QM9_NUM_MOLECULES = 130_831  # QM9 without the 3,054 uncharacterized molecules
QM9_MAX_N_NODES = 29
EDM_NUM_TRAIN = 100_000
CACHE_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "valid", "test")
_SPLIT_ALIASES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}
_TYPE_OF_ELEMENT = {el: i for i, el in enumerate(ATOM_DECODER)}
_CACHE_KEYS = ("version", "source", "positions", "types", "sizes", "qm9_index", "smiles", "smiles_canonical")
_REBUILD_HINT = "delete it and rebuild it with `elign data qm9` (or load_qm9(..., rebuild=True))"

Source = Literal["auto", "qm9pack", "archive"]
_T = TypeVar("_T")


# ---------------------------------------------------------------------------------------------- split
def edm_split(n: int) -> dict[str, np.ndarray]:
    """EDM's split of ``n`` molecules ordered by QM9 index -> {"train", "valid", "test"}: index arrays.

    ``perm = np.random.RandomState(0).permutation(n)`` (the stream of ``np.random.seed(0)``), then
    ``n_train`` train, ``n_valid`` validation, ``n_test`` test indices in permutation order, with
    ``n_test = int(0.1 * n)``, ``n_train = round(n * 100000 / 130831)`` (Python's ``round``) and
    ``n_valid = n - n_train - n_test``. For ``n = 130831`` this is EDM's rule exactly
    (100,000 / 17,748 / 13,083); other sizes (tests, subsets) keep EDM's proportions.
    """
    if n < 1:
        raise ValueError(f"edm_split needs at least one molecule, got n={n}")
    n_test = int(0.1 * n)
    n_train = round(n * EDM_NUM_TRAIN / QM9_NUM_MOLECULES)  # exactly 100,000 for n = 130,831
    n_valid = n - n_train - n_test
    if n_valid < 0:
        raise ValueError(f"edm_split: n={n} leaves no room for validation ({n_train} train, {n_test} test)")
    perm = np.random.RandomState(0).permutation(n)  # [n]
    return {
        "train": perm[:n_train],
        "valid": perm[n_train : n_train + n_valid],
        "test": perm[n_train + n_valid :],
    }


def _split_name(name: str) -> str:
    try:
        return _SPLIT_ALIASES[name]
    except KeyError:
        raise ValueError(f"unknown split {name!r}; expected one of {list(SPLITS)}") from None


# ------------------------------------------------------------------------------------------- dataset
@dataclass(eq=False)
class QM9Data:
    """All molecules, ordered by QM9 index, with EDM's split.

    Molecule ``i`` (0-based, in QM9-index order) owns rows ``offsets[i]:offsets[i + 1]`` of
    ``positions`` and ``types``; split indices refer to this ``i``.
    """

    positions: np.ndarray  # [n_atoms_total, 3] float32, Angstrom
    types: np.ndarray  # [n_atoms_total] uint8, index into ATOM_DECODER
    sizes: np.ndarray  # [n_molecules] int, atoms per molecule
    qm9_index: np.ndarray  # [n_molecules] int32, QM9 (GDB) index, increasing
    smiles_raw: np.ndarray  # [n_molecules] str, as given by the source
    smiles_canonical: np.ndarray  # [n_molecules] str, RDKit-canonical, "" where RDKit failed
    source: str = "unknown"
    offsets: np.ndarray = field(init=False, repr=False)  # [n_molecules + 1] int64
    splits: dict[str, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_arrays(self)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes, dtype=np.int64)])
        self.splits = edm_split(len(self.sizes))

    def __len__(self) -> int:
        return len(self.sizes)

    def __repr__(self) -> str:
        return f"QM9Data({len(self)} molecules, {len(self.types)} atoms, source={self.source!r})"

    # ------------------------------------------------------------------ access
    def split(self, name: str) -> np.ndarray:  # [n_split] int64
        """Molecule indices of a split ("train", "valid" or "test"), in EDM's permutation order."""
        return self.splits[_split_name(name)].copy()

    def _indices(self, split: str | None) -> np.ndarray:
        return np.arange(len(self)) if split is None else self.splits[_split_name(split)]

    def molecule(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions [n, 3] float32 (Angstrom, as stored) and type indices [n] int64 of molecule i."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"molecule {i} out of range for {len(self)} molecules")
        i = int(i) % len(self)
        start, stop = self.offsets[i], self.offsets[i + 1]
        return self.positions[start:stop].copy(), self.types[start:stop].astype(np.int64)

    def batch(self, indices: Sequence[int] | np.ndarray, max_atoms: int | None = None) -> MoleculeBatch:
        """A padded MoleculeBatch of the given molecules, each centred to zero mean position."""
        xs, ts = [], []
        for i in np.asarray(indices, dtype=np.int64).reshape(-1):
            x, t = self.molecule(int(i))  # [n, 3], [n]
            x = (x - x.mean(axis=0, dtype=np.float64)).astype(np.float32)
            xs.append(torch.from_numpy(x))
            ts.append(torch.from_numpy(t))
        return MoleculeBatch.from_lists(xs, ts, list(ATOMIC_NUMBERS), max_atoms=max_atoms)

    # -------------------------------------------------------------- statistics
    def smiles(self, split: str | None = None) -> set[str]:
        """Canonical SMILES of a split (all molecules if None), without RDKit failures."""
        return {s for s in self.smiles_canonical[self._indices(split)].tolist() if s}

    def size_histogram(self, split: str | None = None) -> dict[int, int]:
        """Number of atoms -> number of molecules in a split (all molecules if None)."""
        values, counts = np.unique(self.sizes[self._indices(split)], return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts, strict=True)}

    def atom_counts(self, split: str | None = None) -> dict[str, int]:
        """Element -> number of atoms in a split (all molecules if None)."""
        mask = np.repeat(np.isin(np.arange(len(self)), self._indices(split)), self.sizes)  # [n_atoms_total]
        counts = np.bincount(self.types[mask], minlength=len(ATOM_DECODER))
        return {el: int(c) for el, c in zip(ATOM_DECODER, counts, strict=True)}

    def dataset_info(self) -> DatasetInfo:
        """DatasetInfo for QM9: decoder H C N O F, size histogram and atom counts of the train split."""
        return DatasetInfo(
            name="qm9",
            atom_decoder=list(ATOM_DECODER),
            n_nodes=self.size_histogram("train"),
            max_n_nodes=max(QM9_MAX_N_NODES, int(self.sizes.max())),
            atom_counts=self.atom_counts("train"),
        )

    # ------------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike) -> Path:
        """Write the compressed cache atomically (a temporary file, then a rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **self._arrays())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "version": np.array(CACHE_VERSION, dtype=np.int64),
            "source": np.array(self.source),
            "positions": self.positions.astype(np.float32),
            "types": self.types.astype(np.uint8),
            "sizes": self.sizes.astype(np.min_scalar_type(int(self.sizes.max()))),  # uint8 for QM9
            "qm9_index": self.qm9_index.astype(np.int32),
            "smiles": self.smiles_raw.astype(str),
            "smiles_canonical": self.smiles_canonical.astype(str),
        }


def _check_arrays(data: QM9Data) -> None:
    """Raise DataError unless the arrays describe a consistent set of molecules."""
    positions, types, sizes = data.positions, data.types, data.sizes
    n_mol = len(sizes)
    if n_mol == 0:
        raise DataError("no molecules")
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise DataError(f"positions have shape {positions.shape}, expected [n_atoms, 3]")
    if types.shape != (len(positions),):
        raise DataError(f"{len(types)} atom types for {len(positions)} positions")
    total = int(np.sum(sizes, dtype=np.int64))
    if total != len(types) or sizes.min() < 1:
        raise DataError(f"molecule sizes (sum {total}, min {int(sizes.min())}) != {len(types)} atoms")
    for name in ("qm9_index", "smiles_raw", "smiles_canonical"):
        arr = getattr(data, name)
        if arr.shape != (n_mol,):
            raise DataError(f"{name} has shape {arr.shape}, expected ({n_mol},)")
    if len(types) and types.max() >= len(ATOM_DECODER):
        raise DataError(f"atom type {int(types.max())} out of range for decoder {list(ATOM_DECODER)}")
    if np.any(np.diff(data.qm9_index) <= 0):
        raise DataError("QM9 indices are not strictly increasing")
    if not np.all(np.isfinite(positions)):
        raise DataError("non-finite positions")


# -------------------------------------------------------------------------------------------- cache
def default_cache_path() -> Path:
    """``$ELIGN_CACHE`` (file if it ends in .npz, else directory/qm9.npz) or ``~/.cache/elign/qm9.npz``."""
    env = os.environ.get("ELIGN_CACHE")
    if env:
        p = Path(env).expanduser()
        return p if p.suffix == ".npz" else p / "qm9.npz"
    return Path.home() / ".cache" / "elign" / "qm9.npz"


def load_cache(path: str | os.PathLike) -> QM9Data:
    """Read a cache written by QM9Data.save; DataError if it is missing, truncated or inconsistent."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"QM9 cache {path} does not exist; build it with `elign data qm9`")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _CACHE_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"QM9 cache {path} lacks {missing}; {_REBUILD_HINT}")
            arrays = {k: npz[k] for k in _CACHE_KEYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        reason = f"{type(e).__name__}: {e}"
        raise DataError(f"QM9 cache {path} is corrupt or truncated ({reason}); {_REBUILD_HINT}") from e
    version = arrays["version"]
    if version.shape != () or version.dtype.kind not in "iu" or int(version) != CACHE_VERSION:
        raise DataError(f"QM9 cache {path} has format {version}, expected {CACHE_VERSION}; {_REBUILD_HINT}")
    try:
        return QM9Data(
            positions=arrays["positions"],
            types=arrays["types"],
            sizes=arrays["sizes"].astype(np.int64),
            qm9_index=arrays["qm9_index"],
            smiles_raw=arrays["smiles"],
            smiles_canonical=arrays["smiles_canonical"],
            source=str(arrays["source"]),
        )
    except (DataError, TypeError, ValueError) as e:
        raise DataError(f"QM9 cache {path} is inconsistent ({e}); {_REBUILD_HINT}") from e


# ------------------------------------------------------------------------------------------ sources
def read_qm9pack(
    paths: Sequence[str | os.PathLike] | None = None,
    exclude: Iterable[int] = (),
    progress: bool = True,
) -> QM9Data:
    """Parse qm9pack's CSV files (the installed wheel's by default) into a QM9Data (about 80 s)."""
    csv_paths = [Path(p) for p in paths] if paths is not None else qm9pack_csv_paths()
    records = (r for p in csv_paths for r in iter_qm9pack_csv(p))
    records = _progress(records, progress, "QM9 (qm9pack)", QM9_NUM_MOLECULES)
    return _assemble(records, "qm9pack", exclude, progress)


def read_archive(archive_path: str | os.PathLike, exclude: Iterable[int] = (), progress: bool = True) -> QM9Data:
    """Parse the original ``dsgdb9nsd.xyz.tar.bz2`` into a QM9Data, dropping the ``exclude`` indices."""
    path = Path(archive_path)
    if not path.is_file():
        raise DataError(f"QM9 archive {path} does not exist")
    records = _progress(iter_archive(path), progress, "QM9 (archive)", None)
    return _assemble(records, "archive", exclude, progress)


# ----------------------------------------------------------------------------------------- assembly
def _progress(items: Iterable[_T], enabled: bool, desc: str, total: int | None) -> Iterable[_T]:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, unit="mol", file=sys.stderr)


def canonical_smiles(smiles: Iterable[str], progress: bool = False) -> list[str]:
    """RDKit-canonical SMILES of each input; "" where RDKit cannot parse it."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    try:
        out = []
        for s in _progress(smiles, progress, "canonical SMILES", None):
            mol = Chem.MolFromSmiles(s) if s else None
            out.append(Chem.MolToSmiles(mol) if mol is not None else "")
        return out
    finally:
        RDLogger.EnableLog("rdApp.*")


def _element_types(record: QM9Record) -> np.ndarray:  # [n] uint8
    try:
        return np.array([_TYPE_OF_ELEMENT[el] for el in record.elements], dtype=np.uint8)
    except KeyError as e:
        raise DataError(f"{record.where}: element {e.args[0]!r} is not one of {list(ATOM_DECODER)}") from None


def _assemble(records: Iterable[QM9Record], source: str, exclude: Iterable[int], progress: bool) -> QM9Data:
    """Order by QM9 index, drop excluded indices, encode types and canonicalise SMILES."""
    excluded = set(exclude)
    by_index: dict[int, QM9Record] = {}
    for r in records:
        if r.index in excluded:
            continue
        if r.index in by_index:
            raise DataError(f"QM9 index {r.index} appears twice: {by_index[r.index].where} and {r.where}")
        by_index[r.index] = r
    if not by_index:
        raise DataError(f"no molecules found in the {source} source")
    ordered = [by_index[i] for i in sorted(by_index)]
    raw = [r.smiles for r in ordered]
    return QM9Data(
        positions=np.concatenate([r.positions for r in ordered]).astype(np.float32),  # [n_atoms_total, 3]
        types=np.concatenate([_element_types(r) for r in ordered]),  # [n_atoms_total]
        sizes=np.array([len(r.elements) for r in ordered], dtype=np.int64),
        qm9_index=np.array([r.index for r in ordered], dtype=np.int32),
        smiles_raw=np.array(raw, dtype=str),
        smiles_canonical=np.array(canonical_smiles(raw, progress), dtype=str),
        source=source,
    )


# ------------------------------------------------------------------------------------------ loading
def _read_source(
    source: Source,
    archive_path: str | os.PathLike | None,
    exclude_path: str | os.PathLike | None,
    progress: bool,
) -> QM9Data:
    if source not in ("auto", "qm9pack", "archive"):
        raise ValueError(f"source must be 'auto', 'qm9pack' or 'archive', got {source!r}")
    exclude = read_exclude_list(exclude_path) if exclude_path is not None else set()
    if source == "archive" or (source == "auto" and archive_path is not None):
        if archive_path is None:
            raise DataError("source='archive' needs archive_path (the file dsgdb9nsd.xyz.tar.bz2)")
        return read_archive(archive_path, exclude, progress)
    return read_qm9pack(None, exclude, progress)


def load_qm9(
    cache_path: str | os.PathLike | None = None,
    source: Source = "auto",
    archive_path: str | os.PathLike | None = None,
    progress: bool = True,
    *,
    exclude_path: str | os.PathLike | None = None,
    rebuild: bool = False,
) -> QM9Data:
    """QM9 from the cache; where there is none (or ``rebuild``), parse the source and write the cache.

    ``source``: "qm9pack" (the installed wheel), "archive" (``archive_path``, the original
    dsgdb9nsd.xyz.tar.bz2, minus the QM9 indices listed in ``exclude_path``), or "auto": the archive
    if ``archive_path`` is given, else qm9pack. An existing cache is used whatever ``source`` says; a
    corrupt one raises DataError rather than being silently replaced.
    """
    path = Path(cache_path) if cache_path is not None else default_cache_path()
    if path.exists() and not rebuild:
        return load_cache(path)
    data = _read_source(source, archive_path, exclude_path, progress)
    data.save(path)
    return data


def build_cache(
    cache_path: str | os.PathLike | None = None,
    source: Source = "auto",
    archive_path: str | os.PathLike | None = None,
    exclude_path: str | os.PathLike | None = None,
    info_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, object]:
    """``elign data qm9``: (re)build the cache, optionally write the DatasetInfo JSON; returns a summary."""
    import json

    start = time.perf_counter()
    path = Path(cache_path) if cache_path is not None else default_cache_path()
    data = load_qm9(path, source, archive_path, progress, exclude_path=exclude_path, rebuild=True)
    seconds = time.perf_counter() - start
    if info_path is not None:
        Path(info_path).write_text(json.dumps(data.dataset_info().to_dict(), indent=1) + "\n")
    return {
        "cache_path": str(path),
        "cache_bytes": path.stat().st_size,
        "seconds": round(seconds, 1),
        "source": data.source,
        "molecules": len(data),
        "atoms": len(data.types),
        "splits": {name: len(data.splits[name]) for name in SPLITS},
        "smiles_failures": int(np.sum(data.smiles_canonical == "")),
        "info_path": str(info_path) if info_path is not None else None,
    }
