"""Export of generated molecules: SDF (V2000, bonds from the distance tables, 3D coordinates), XYZ, and a
lossless NumPy archive (``.npz``: float32 coordinates as sampled, no RDKit needed to write or read it).

Every molecule is written as built from its geometry (bond orders 1/2/3 from
:mod:`elign.metrics.bonds`, no aromaticity, no charges), whether or not RDKit can sanitize it; the SD
tag ``elign_valid`` says which (1/0), and ``elign_smiles`` holds the canonical SMILES of valid ones.
With ``invalid='skip'`` molecules that do not sanitize are left out and counted instead.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from elign.io.files import atomic_write, write_file
from elign.metrics.bonds import decoder_symbols, split_molecules

__all__ = ["read_molecules", "read_npz", "read_sdf", "write_npz", "write_sdf", "write_xyz"]

log = logging.getLogger(__name__)

MAX_FILE_ATOMS = 500  # atoms per molecule in a file read: pair tables grow as n^2 (QM9's largest has 29)

VALID_TAG = "elign_valid"
SMILES_TAG = "elign_smiles"


def _check_properties(properties: Sequence[dict[str, Any]] | None, n: int) -> list[dict[str, Any]]:
    if properties is None:
        return [{} for _ in range(n)]
    if len(properties) != n:
        raise ValueError(f"{len(properties)} property dicts for {n} molecules")
    return [dict(p) for p in properties]


def _prepare(
    x: np.ndarray, t: np.ndarray, symbols: tuple[str, ...], props: dict[str, Any], name: str
) -> tuple[Any, bool]:
    """RDKit molecule ready for the writer, with its tags, and whether it sanitizes."""
    from rdkit import Chem

    from elign.metrics.rdkit_metrics import build_molecule, mol_to_smiles, quiet_rdkit

    if not np.isfinite(x).all():
        raise ValueError("non-finite coordinates")
    mol = build_molecule(x, t, symbols)  # [n atoms], unsanitized
    smiles = mol_to_smiles(mol)
    with quiet_rdkit():
        mol.UpdatePropertyCache(strict=False)
        Chem.FastFindRings(mol)
    mol.SetProp("_Name", str(props.pop("name", name)))
    for key, value in props.items():
        mol.SetProp(str(key), str(value))
    mol.SetProp(VALID_TAG, "1" if smiles is not None else "0")
    if smiles is not None:
        mol.SetProp(SMILES_TAG, smiles)
    return mol, smiles is not None


def write_sdf(
    path: str | os.PathLike,
    molecules: Any,
    decoder: Any,
    properties: Sequence[dict[str, Any]] | None = None,
    invalid: Literal["flag", "skip"] = "flag",
) -> dict[str, int]:
    """Write molecules (a MoleculeBatch or (positions [n,3], types [n]) pairs) to a V2000 SDF file.

    ``properties[i]`` becomes SD tags of molecule i (a ``name`` key becomes its title line).
    Returns counts: written, skipped (not written: invalid ones under ``invalid='skip'``, and any that
    cannot be written at all, e.g. non-finite coordinates), invalid (molecules RDKit cannot sanitize,
    written with ``elign_valid`` = 0 or skipped).
    """
    from rdkit import Chem

    from elign.metrics.rdkit_metrics import quiet_rdkit

    if invalid not in ("flag", "skip"):
        raise ValueError(f"invalid must be 'flag' or 'skip', got {invalid!r}")
    symbols = decoder_symbols(decoder)
    mols = list(split_molecules(molecules))
    props = _check_properties(properties, len(mols))
    counts = {"written": 0, "skipped": 0, "invalid": 0}

    def produce(tmp: Path) -> None:
        counts.update(written=0, skipped=0, invalid=0)
        with quiet_rdkit(), Chem.SDWriter(os.fspath(tmp)) as writer:
            writer.SetKekulize(False)
            for i, ((x, t), p) in enumerate(zip(mols, props, strict=True)):
                try:
                    mol, ok = _prepare(x, t, symbols, dict(p), name=f"mol_{i}")
                except Exception as err:  # a molecule that cannot be written is counted, never fatal
                    log.warning("write_sdf: molecule %d not written: %s", i, err)
                    counts["skipped"] += 1
                    counts["invalid"] += 1
                    continue
                counts["invalid"] += not ok
                if not ok and invalid == "skip":
                    counts["skipped"] += 1
                    continue
                writer.write(mol)
                counts["written"] += 1

    def verify(tmp: Path) -> None:  # RDKit's writer does not report a failed write (a full disk): count
        found = sum(line.rstrip() == "$$$$" for line in tmp.read_text(errors="replace").splitlines())
        if found != counts["written"]:
            raise OSError(f"{found} of {counts['written']} molecules reached the disk")

    write_file(path, produce, verify)
    return counts


def read_sdf(path: str | os.PathLike) -> list[tuple[np.ndarray, list[str], dict[str, Any]]]:
    """Read an SDF file without sanitizing: per molecule (positions [n,3] float32, symbols, props).

    Properties come back through RDKit's type conversion (numbers as int/float, the rest as str);
    the title line is under ``name``. Records RDKit cannot parse at all are skipped with a warning.
    """
    from rdkit import Chem

    from elign.metrics.rdkit_metrics import quiet_rdkit

    out: list[tuple[np.ndarray, list[str], dict[str, Any]]] = []
    with quiet_rdkit():
        try:
            supplier = Chem.SDMolSupplier(os.fspath(path), sanitize=False, removeHs=False)
        except OSError as e:  # RDKit's words for a missing, empty or unreadable file
            reason = "is empty" if Path(path).is_file() and Path(path).stat().st_size == 0 else f"cannot be read ({e})"
            raise ValueError(f"{path} {reason}: no molecules") from e
        for i, mol in enumerate(supplier):
            if mol is None:
                log.warning("read_sdf: record %d of %s could not be parsed", i, path)
                continue
            n = mol.GetNumAtoms()
            pos = mol.GetConformer().GetPositions().astype(np.float32) if mol.GetNumConformers() else None
            props = mol.GetPropsAsDict(includePrivate=False, includeComputed=False)
            if mol.HasProp("_Name"):
                props["name"] = mol.GetProp("_Name")
            out.append(
                (
                    pos if pos is not None else np.zeros((n, 3), np.float32),  # [n, 3]
                    [a.GetSymbol() for a in mol.GetAtoms()],
                    props,
                )
            )
    return out


def write_xyz(
    path: str | os.PathLike,
    molecules: Any,
    decoder: Any,
    comments: Sequence[str] | None = None,
    forces: Sequence[np.ndarray | None] | None = None,
) -> int:
    """Write molecules as a multi-frame XYZ file (Angstrom); returns the number of frames written.

    With ``forces`` (per frame [n, 3] eV/A, or None where not scored) the file is extended XYZ: each comment line
    declares ``Properties=species:S:1:pos:R:3:forces:R:3`` and every atom line carries its force (NaN where the
    frame was not scored), which ASE and OVITO read.
    """
    symbols = decoder_symbols(decoder)
    mols = list(split_molecules(molecules))
    if comments is not None and len(comments) != len(mols):
        raise ValueError(f"{len(comments)} comments for {len(mols)} molecules")
    if forces is not None and len(forces) != len(mols):
        raise ValueError(f"{len(forces)} force arrays for {len(mols)} molecules")
    lines: list[str] = []
    for i, (x, t) in enumerate(mols):
        comment = (comments[i] if comments is not None else f"mol_{i}").replace("\n", " ")
        f = None
        if forces is not None:
            f = np.full((len(t), 3), np.nan) if forces[i] is None else np.asarray(forces[i], dtype=np.float64)
            comment = f'Properties=species:S:1:pos:R:3:forces:R:3 comment="{comment.replace(chr(34), chr(39))}"'
        lines += [str(len(t)), comment]
        for k, (ti, (a, b, c)) in enumerate(zip(t, x, strict=True)):
            atom = f"{symbols[ti]:<2s} {a:14.8f} {b:14.8f} {c:14.8f}"
            lines.append(atom if f is None else atom + "".join(f" {v:14.8f}" for v in f[k]))
    atomic_write(path, ("\n".join(lines) + ("\n" if lines else "")).encode())
    return len(mols)


def read_xyz(
    path: str | os.PathLike, max_atoms: int = MAX_FILE_ATOMS
) -> list[tuple[np.ndarray, list[str], dict[str, Any]]]:
    """Read a (multi-frame, plain or extended) XYZ file: per frame (positions [n,3] float32, symbols, {comment}).
    Columns after x, y, z (forces of an extended XYZ) are ignored; a malformed frame is a ValueError naming it."""
    lines = Path(path).read_text(errors="replace").splitlines()
    out, i = [], 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            n = int(lines[i].split()[0])
        except ValueError:
            raise ValueError(f"{path}: line {i + 1} should hold an atom count, not {lines[i][:40]!r}") from None
        if not 1 <= n <= max_atoms:
            raise ValueError(f"{path}: frame {len(out)} has {n} atoms; this reads 1 to {max_atoms}")
        atoms = lines[i + 2 : i + 2 + n]
        if len(atoms) < n:
            raise ValueError(f"{path}: frame {len(out)} is cut short ({len(atoms)} of {n} atom lines)")
        try:
            symbols = [a.split()[0].capitalize() for a in atoms]
            xyz = np.array([[float(v) for v in a.split()[1:4]] for a in atoms], dtype=np.float32)  # [n, 3]
        except (IndexError, ValueError):
            raise ValueError(f"{path}: frame {len(out)} has an atom line that is not 'symbol x y z'") from None
        if xyz.shape != (n, 3):
            raise ValueError(f"{path}: frame {len(out)} has an atom line without three coordinates")
        out.append((xyz, symbols, {"comment": lines[i + 1].strip() if i + 1 < len(lines) else ""}))
        i += 2 + n
    return out


def write_npz(
    path: str | os.PathLike, molecules: Any, decoder: Any, properties: Sequence[dict[str, Any]] | None = None
) -> int:
    """Write molecules losslessly (coordinates as float32, as sampled) to ``path`` (.npz); returns the count.

    Arrays: ``positions`` [total atoms, 3], ``types`` [total atoms] (indices into ``decoder``), ``n_atoms`` [B],
    ``decoder`` [K] and ``properties`` (one JSON list of per-molecule dicts). Needs NumPy only.
    """
    symbols = decoder_symbols(decoder)
    mols = list(split_molecules(molecules))
    props = _check_properties(properties, len(mols))
    positions = (
        np.concatenate([np.asarray(x, np.float32).reshape(-1, 3) for x, _ in mols])
        if mols
        else np.zeros((0, 3), np.float32)
    )
    types = np.concatenate([np.asarray(t, np.int64) for _, t in mols]) if mols else np.zeros(0, np.int64)
    arrays = dict(
        positions=positions,
        types=types,
        n_atoms=np.array([len(t) for _, t in mols]),
        decoder=np.array(symbols),
        properties=np.array(json.dumps(props, default=str)),
    )

    def produce(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    def verify(tmp: Path) -> None:
        with np.load(tmp, allow_pickle=False) as f:
            if len(f["n_atoms"]) != len(mols) or len(f["positions"]) != len(positions):
                raise OSError("the file read back holds other arrays than were written")

    write_file(path, produce, verify)
    return len(mols)


def read_npz(path: str | os.PathLike) -> list[tuple[np.ndarray, list[str], dict[str, Any]]]:
    """Read a file of :func:`write_npz`: per molecule (positions [n,3] float32, symbols, props)."""
    try:
        archive = np.load(os.fspath(path), allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # empty, truncated, or not an npz at all (an SDF renamed)
        raise ValueError(f"{path} is not a readable .npz molecule archive ({type(e).__name__})") from None
    if not hasattr(archive, "files"):
        raise ValueError(f"{path} holds a single array, not a molecule archive of elign")
    with archive as f:
        missing = {"positions", "types", "n_atoms", "decoder"} - set(f.files)
        if missing:
            raise ValueError(f"{path} is not a molecule archive of elign (missing {sorted(missing)})")
        positions, types, n_atoms = f["positions"], f["types"], f["n_atoms"]
        decoder = [str(a) for a in f["decoder"]]
        props = json.loads(str(f["properties"])) if "properties" in f.files else [{} for _ in n_atoms]
    if int(n_atoms.sum()) != len(types) or len(types) != len(positions) or len(props) != len(n_atoms):
        raise ValueError(f"{path}: inconsistent array lengths")
    if len(types) and (types.min() < 0 or types.max() >= len(decoder)):
        first_bad = int(np.flatnonzero((types < 0) | (types >= len(decoder)))[0])
        k = int(np.searchsorted(np.cumsum(n_atoms), first_bad, side="right"))
        raise ValueError(f"{path}: molecule {k} has an element index outside its decoder {decoder}")
    ends = np.cumsum(n_atoms)
    return [
        (positions[e - n : e], [decoder[int(i)] for i in types[e - n : e]], p)
        for n, e, p in zip(n_atoms, ends, props, strict=True)
    ]


def read_molecules(
    path: str | os.PathLike, max_atoms: int = MAX_FILE_ATOMS
) -> list[tuple[np.ndarray, list[str], dict[str, Any]]]:
    """Molecules of an ``.sdf`` or ``.npz`` file: per molecule (positions [n,3] float32, symbols, props).

    A molecule of more than ``max_atoms`` atoms is refused before any pairwise table is built."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        records = read_npz(path)
    elif suffix in (".sdf", ".sd", ".mol"):
        records = read_sdf(path)
    else:
        raise ValueError(f"{path}: expected an .sdf or .npz file of molecules")
    big = [(i, len(symbols)) for i, (_, symbols, _) in enumerate(records) if len(symbols) > max_atoms]
    if big:
        i, n = big[0]
        raise ValueError(
            f"{path}: molecule {i} has {n} atoms, more than the {max_atoms} this reads (pairwise tables grow as "
            f"n^2){f'; {len(big) - 1} more like it' if len(big) > 1 else ''}"
        )
    return records


SCORE_COLUMNS = (
    "index",
    "n_atoms",
    "energy_eV",
    "formation_energy_per_atom_eV",
    "rms_force_eV_per_A",
    "valid",
    "reason",
)


def write_score_tables(scores: Any, out: str | os.PathLike, atoms: str | os.PathLike | None = None) -> None:
    """The per-molecule CSV of :class:`elign.evaluation.scoring.FileScores` at ``out`` and, with ``atoms``, the
    per-atom force table (unscored molecules: empty values and their reason)."""
    import csv

    def num(v: float) -> str:
        return f"{v:.6f}" if np.isfinite(v) else ""

    buffer = io.StringIO()
    w = csv.writer(buffer)
    w.writerow(SCORE_COLUMNS)
    for b, syms in enumerate(scores.symbols):
        w.writerow(
            [
                b,
                len(syms),
                num(scores.energy[b]),
                num(scores.formation_energy[b]),
                num(scores.rms_force[b]),
                int(scores.valid[b]),
                scores.reason[b],
            ]
        )
    atomic_write(out, buffer.getvalue().encode())
    if atoms is None:
        return
    buffer = io.StringIO()
    w = csv.writer(buffer)
    w.writerow(["molecule", "atom", "element", "fx", "fy", "fz", "force_norm"])
    for b, syms in enumerate(scores.symbols):
        for i, sym in enumerate(syms):
            f = scores.forces[b][i]
            w.writerow([b, i, sym, *(num(v) for v in f), num(float(np.sqrt((f**2).sum())))])
    atomic_write(atoms, buffer.getvalue().encode())
