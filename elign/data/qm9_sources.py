"""Reading QM9's sources one molecule at a time: the CSV files of the ``qm9pack`` wheel and the original
``dsgdb9nsd.xyz.tar.bz2`` archive (with QM9's list of uncharacterized molecules to exclude).
:mod:`elign.data.qm9` assembles the records into arrays, caches them and splits them."""

from __future__ import annotations

import ast
import csv
import importlib.util
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DataError",
    "QM9Record",
    "iter_archive",
    "iter_qm9pack_csv",
    "parse_xyz",
    "qm9pack_csv_paths",
    "read_exclude_list",
]

QM9PACK_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
QM9PACK_COLUMNS = ("XYZ_file", "Index", "SMILES", "N_atoms", "Elements", "XYZ_Ang")


class DataError(ValueError):
    """A data file (QM9 cache, CSV or archive) is missing, unreadable or inconsistent."""


@dataclass
class QM9Record:
    """One molecule as read from a source, before it joins the arrays."""

    index: int  # QM9 (GDB) index, 1-based
    elements: list[str]
    positions: np.ndarray  # [n, 3] float64, Angstrom
    smiles: str
    where: str  # file / row, for error messages


# ------------------------------------------------------------------------------------------ qm9pack
def qm9pack_csv_paths() -> list[Path]:
    """The three CSV files inside the installed qm9pack wheel (found without importing qm9pack)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the QM9 source package qm9pack is not installed: `pip install 'elign[qm9]'` "
            "(or pass the original archive dsgdb9nsd.xyz.tar.bz2 with source='archive')"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "data"
    paths = [root / name for name in QM9PACK_FILES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"qm9pack is installed but lacks its data files {missing}; reinstall qm9pack==1.0.3")
    return paths


def _literal(text: str) -> object:
    """A Python literal from qm9pack, whose numbers may read like Mathematica's ``1.2*^-6``."""
    return ast.literal_eval(text.replace("*^", "e"))


def _parse_qm9pack_row(row: dict[str, str], where: str) -> QM9Record:
    try:
        n = int(row["N_atoms"])
        elements = _literal(row["Elements"])
        positions = np.asarray(_literal(row["XYZ_Ang"]), dtype=np.float64)  # [n, 3]
        record = QM9Record(int(row["Index"]), list(elements), positions, row["SMILES"].strip(), where)
    except (ValueError, SyntaxError, TypeError, AttributeError, MemoryError, RecursionError) as e:
        name = row.get("XYZ_file")
        raise DataError(f"{where}: cannot parse molecule {name!r} ({type(e).__name__}: {e})") from e
    if positions.shape != (n, 3) or len(record.elements) != n:
        raise DataError(
            f"{where}: molecule {row.get('XYZ_file')!r} has N_atoms={n} but {len(record.elements)} elements "
            f"and positions of shape {positions.shape}"
        )
    return record


def iter_qm9pack_csv(path: Path) -> Iterator[QM9Record]:
    csv.field_size_limit(2**31 - 1)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in QM9PACK_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path} lacks the columns {missing}; is it a qm9pack CSV file?")
            for row in reader:
                yield _parse_qm9pack_row(row, f"{path}:{reader.line_num}")
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path} ({type(e).__name__}: {e})") from e


# ------------------------------------------------------------------------------------------ archive
def _float(text: str) -> float:
    return float(text.replace("*^", "e"))


def parse_xyz(text: str, where: str = "<xyz>") -> QM9Record:
    """One QM9 ``.xyz`` file: n_atoms, "gdb <index> ...", n lines "El x y z q", frequencies, SMILES, InChI.

    The SMILES line holds the GDB-17 SMILES and the SMILES of the relaxed (B3LYP) geometry, tab
    separated; the relaxed one is kept, as it describes the stored coordinates.
    """
    lines = text.splitlines()
    try:
        n = int(lines[0].split()[0])
        header = lines[1].split()
        if header[0] != "gdb":
            raise ValueError(f"second line starts with {header[0]!r}, expected 'gdb'")
        index = int(header[1])
        atoms = [line.split() for line in lines[2 : 2 + n]]
        if len(atoms) != n or any(len(a) < 4 for a in atoms):
            raise ValueError(f"expected {n} atom lines 'El x y z charge'")
        elements = [a[0] for a in atoms]
        positions = np.array([[_float(v) for v in a[1:4]] for a in atoms], dtype=np.float64)  # [n, 3]
        smiles_fields = lines[3 + n].split()
        smiles = smiles_fields[1] if len(smiles_fields) > 1 else smiles_fields[0]
    except (IndexError, ValueError) as e:
        raise DataError(f"{where}: not a QM9 xyz file ({type(e).__name__}: {e})") from e
    return QM9Record(index, elements, positions, smiles, where)


def iter_archive(path: Path) -> Iterator[QM9Record]:
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if not (member.isfile() and member.name.endswith(".xyz")):
                    continue
                fh = tar.extractfile(member)
                if fh is None:
                    continue
                yield parse_xyz(fh.read().decode("utf-8"), f"{path}:{member.name}")
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError, zlib.error) as e:
        raise DataError(
            f"QM9 archive {path} is corrupt or not a tar archive ({type(e).__name__}: {e}); "
            "download dsgdb9nsd.xyz.tar.bz2 again"
        ) from e


def read_exclude_list(path: str | os.PathLike) -> set[int]:
    """QM9 indices to drop: every line whose first token is an integer (fits ``uncharacterized.txt``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the exclude list {path} ({type(e).__name__}: {e})") from e
    return {int(tok[0]) for tok in (line.split() for line in text.splitlines()) if tok and tok[0].isdigit()}
