"""The molecules of a report: sampled from checkpoints on shared sizes and seeds (kept in a cache, so an
interrupted report does not sample again), with or without force-field guidance, or read from .sdf / .npz files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from elign.data.elements import ATOMIC_NUMBERS
from elign.data.info import DatasetInfo, qm9_info
from elign.diffusion.settings import TYPE_GUIDANCE
from elign.io.export import read_molecules

__all__ = [
    "ModelSamples",
    "collect_samples",
    "file_molecules",
    "parse_guided",
    "sample_checkpoint",
    "samples_from_file",
]


Pair = tuple[np.ndarray, np.ndarray]  # (positions [n, 3] A, type indices [n])


@dataclass
class ModelSamples:
    """One row of the report: a model's molecules and where they came from."""

    name: str
    molecules: list[Pair]
    info: DatasetInfo
    source: dict[str, Any]
    throughput: dict[str, Any] | None = None


def file_molecules(path: str | os.PathLike, info: DatasetInfo) -> tuple[list[Pair], DatasetInfo]:
    """(positions [n, 3], type indices [n]) per molecule of an .sdf or .npz file, and the decoder they index.

    Elements outside ``info``'s decoder (Sn in a QM9 report, say) extend it, so that such a molecule is
    flagged by every figure that cannot judge it (never stable; force fields and referees give a reason)
    rather than refusing the whole file; a symbol that is not an element is an error.
    """
    records = read_molecules(path)
    seen = {s for _, symbols, _ in records for s in symbols}
    not_elements = sorted(seen - set(ATOMIC_NUMBERS))
    if not_elements:
        raise ValueError(f"{path}: {not_elements} are not element symbols")
    extra = sorted(seen - set(info.atom_decoder), key=ATOMIC_NUMBERS.__getitem__)
    if extra:
        info = replace(info, atom_decoder=[*info.atom_decoder, *extra])
    index = {a: i for i, a in enumerate(info.atom_decoder)}
    return [(pos, np.array([index[s] for s in symbols], dtype=np.int64)) for pos, symbols, _ in records], info


def samples_from_file(path: str | os.PathLike, name: str, info: DatasetInfo) -> ModelSamples:
    molecules, info = file_molecules(path, info)
    if not molecules:
        raise ValueError(f"{path} holds no readable molecules")
    return ModelSamples(
        name,
        [(x.astype(np.float64), t) for x, t in molecules],
        info,
        {"kind": Path(path).suffix.lower().lstrip("."), "path": str(path)},
    )


def _checkpoint_name(spec: str) -> str:
    if spec in ("backbone", "aligned"):
        return spec
    p = Path(spec)
    return p.parent.name if p.stem in ("model", "model_ema") and p.parent.name else (p.stem or p.name)


def _unique(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.+=-]+", "_", name) or "model"
    out, k = base, 2
    while out in taken:
        out, k = f"{base}-{k}", k + 1
    taken.add(out)
    return out


def _sample(
    model: Any,
    info: DatasetInfo,
    num: int,
    sizes: Any,
    steps: int | None,
    seed: int,
    batch_size: int,
    device: str,
    guidance: tuple[str, float] | None,
    progress: bool,
    types: Any = None,
    type_guidance: float = 0.0,
) -> tuple[list[Pair], dict[str, Any]]:
    """Sample ``num`` molecules of sizes [num] (or of the atom types [num, N] of formulas); -> (molecules,
    throughput: seconds, molecules/s, settings and, with guidance, the force field's calls and time)."""
    from elign.diffusion.sampler import ForceGuidance, sample_molecules
    from elign.metrics.bonds import split_molecules

    guide = None
    if guidance is not None:
        from elign.mlff import load_force_field

        guide = ForceGuidance(load_force_field(guidance[0], device=device), guidance[1], 0.8, info.atomic_numbers)
    t0 = time.perf_counter()
    mols = sample_molecules(
        model,
        num,
        info.size_probabilities(),
        steps=steps,
        seed=seed,
        batch_size=batch_size,
        device=device,
        atomic_numbers=info.atomic_numbers,
        progress=progress,
        sizes=None if types is not None else sizes,
        guidance=guide,
        types=types,
        type_guidance=type_guidance,
    )
    seconds = time.perf_counter() - t0
    throughput = {
        "seconds": seconds,
        "molecules_per_second": num / seconds if seconds > 0 else None,
        "device": str(device),
        "batch_size": batch_size,
        "steps": steps or model.T,
        "num": num,
    }
    if guide is not None:
        throughput["guidance"] = {
            "force_field": guidance[0],
            "scale": guidance[1],
            "calls": guide.calls,
            "force_field_seconds": guide.seconds,
            "skipped": guide.skipped,
        }
    return list(split_molecules(mols)), throughput


def _source(checkpoint: str, path: Path, seed: int, steps: int, guidance: tuple[str, float] | None) -> dict[str, Any]:
    """What decides a checkpoint's samples: the checkpoint as named (a shipped name stays a name, not this
    machine's path), its content hash, seed, steps and force guidance."""
    from elign.io.checkpoints import checkpoint_sha256

    source = {
        "kind": "guided" if guidance is not None else "checkpoint",
        "checkpoint": str(checkpoint),
        "sha256": checkpoint_sha256(path),
        "seed": seed,
        "steps": steps,
    }
    if guidance is not None:
        source |= {"guidance_mlff": guidance[0], "guidance_scale": guidance[1]}
    return source


def sample_checkpoint(
    checkpoint: str,
    name: str,
    num: int,
    sizes: Any,
    steps: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "cpu",
    guidance: tuple[str, float] | None = None,
    progress: bool = False,
    cache_dir: str | os.PathLike | None = None,
    loaded: tuple[Any, Any, Path] | None = None,
    formulas: Sequence[str] = (),
    type_guidance: float = TYPE_GUIDANCE,
) -> ModelSamples:
    """Sample ``num`` molecules of the given sizes [num] from a checkpoint, timing it (throughput).

    ``loaded``: the checkpoint already loaded on ``device``, as (model, config, resolved path). ``formulas``:
    sample ``num`` isomers of each instead (the atom types fixed, the positions guided by them with step
    ``type_guidance``, :mod:`elign.diffusion.conditioning`).

    With ``cache_dir`` the molecules are kept there as soon as they are sampled, under a key of everything
    that decides them (checkpoint hash, sizes, seed, steps, batch size, device, guidance), and a later call
    with the same key reads them instead of sampling again: a report interrupted after sampling resumes.
    """
    from elign.io.assets import resolve_checkpoint
    from elign.io.checkpoints import load_checkpoint

    if loaded is None:
        path = resolve_checkpoint(checkpoint)
        model, config, _ = load_checkpoint(path, device)
    else:
        model, config, path = loaded
    info = config.dataset_info()
    source = _source(checkpoint, path, seed, steps or model.T, guidance)
    types = None
    if formulas:
        from elign.data.formula import formula_batch

        source |= {"formulas": list(formulas), "per_formula": num, "type_guidance": type_guidance}
        types = formula_batch(formulas, num, info.atom_decoder, info.max_n_nodes)  # [F * num, N]
        sizes, num = (types >= 0).sum(1), len(types)
    key = _samples_key(source, sizes, num, batch_size, device)
    cache = Path(cache_dir) / f"{key[:24]}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file() and (kept := _read_samples(cache, key)) is not None:
        molecules, throughput = kept
        return ModelSamples(name, molecules, info, source, {**throughput, "cached": str(cache)})
    molecules, throughput = _sample(
        model, info, num, sizes, steps, seed, batch_size, device, guidance, progress, types, type_guidance
    )
    if cache is not None:
        _write_samples(cache, key, molecules, throughput)
    return ModelSamples(name, molecules, info, source, throughput)


def _samples_key(source: dict[str, Any], sizes: Any, num: int, batch_size: int, device: str) -> str:
    """sha256 of everything that decides a checkpoint's samples."""
    sizes_list = [int(n) for n in sizes] if sizes is not None else None
    spec = {**source, "checkpoint": None, "sizes": sizes_list, "num": num, "batch_size": batch_size, "device": device}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _write_samples(path: Path, key: str, molecules: list[Pair], throughput: dict[str, Any]) -> None:
    from elign.io.files import atomic_write

    buffer = io.BytesIO()
    np.savez(
        buffer,
        key=np.array(key),
        throughput=np.array(json.dumps(throughput)),
        counts=np.array([len(t) for _, t in molecules], dtype=np.int64),  # [M]
        positions=np.concatenate([x for x, _ in molecules]).astype(np.float64),  # [sum n, 3]
        types=np.concatenate([t for _, t in molecules]).astype(np.int64),  # [sum n]
    )
    atomic_write(path, buffer.getvalue())


def _read_samples(path: Path, key: str) -> tuple[list[Pair], dict[str, Any]] | None:
    """The cached molecules, or None when the file is damaged or holds others (they are sampled again)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            counts, positions, types = f["counts"], f["positions"], f["types"]  # [M], [sum n, 3], [sum n]
            if str(f["key"]) != key:
                raise ValueError("other samples than its name says")
            if counts.sum() != len(positions) or len(types) != len(positions) or not np.isfinite(positions).all():
                raise ValueError("inconsistent arrays")
            bounds = np.cumsum(counts)[:-1]
            molecules = list(zip(np.split(positions, bounds), np.split(types, bounds), strict=True))
            return molecules, json.loads(str(f["throughput"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        print(f"warning: {path} is damaged ({e}); sampling it again", file=sys.stderr)
        return None


def parse_guided(spec: str) -> tuple[str, str, float]:
    """'MODEL:MLFF:SCALE' -> (model, mlff, scale); MODEL may itself hold colons."""
    parts = spec.rsplit(":", 2)
    if len(parts) != 3:
        raise ValueError(f"--guided expects MODEL:MLFF:SCALE, got {spec!r}")
    try:
        scale = float(parts[2])
    except ValueError as err:
        raise ValueError(f"--guided {spec!r}: SCALE {parts[2]!r} is not a number") from err
    return parts[0], parts[1], scale


def collect_samples(
    checkpoints: Sequence[str] = (),
    guided: Sequence[str] = (),
    sdf_files: Sequence[str] = (),
    num: int = 100,
    steps: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = False,
    cache_dir: str | os.PathLike | None = None,
    formulas: Sequence[str] = (),
    type_guidance: float = TYPE_GUIDANCE,
) -> list[ModelSamples]:
    """The report's rows: each checkpoint, then each guided baseline ('MODEL:MLFF:SCALE'), sampled on the same
    sizes (drawn from the first model's size prior; with ``formulas``, ``num`` isomers of each) and seed; then
    each SDF file. Names are unique. With ``cache_dir``, sampled molecules are kept there and reused by a later
    call (:func:`sample_checkpoint`)."""
    import torch

    from elign.io.assets import resolve_checkpoint
    from elign.io.checkpoints import load_checkpoint

    parsed = [parse_guided(g) for g in guided]
    specs = list(checkpoints) + [g[0] for g in parsed]
    missing = [p for p in sdf_files if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"SDF file(s) not found: {', '.join(map(str, missing))}")
    # every checkpoint loads (once) before the first is sampled: a wrong path fails now, not after an hour
    loaded = {}
    for spec in dict.fromkeys(specs):
        path = resolve_checkpoint(spec)
        model, config, _ = load_checkpoint(path, device)
        loaded[spec] = (model, config, path)
    info = loaded[specs[0]][1].dataset_info() if specs else qm9_info()
    sizes = None
    if specs:
        sizes = torch.multinomial(
            info.size_probabilities(), num, replacement=True, generator=torch.Generator().manual_seed(seed)
        )  # [num]
    taken: set[str] = set()
    common = dict(
        num=num,
        sizes=sizes,
        steps=steps,
        seed=seed,
        batch_size=batch_size,
        device=device,
        progress=progress,
        cache_dir=cache_dir,
        formulas=formulas,
        type_guidance=type_guidance,
    )
    out = [sample_checkpoint(c, _unique(_checkpoint_name(c), taken), loaded=loaded[c], **common) for c in checkpoints]
    for spec, mlff, scale in parsed:
        name = _unique(f"{_checkpoint_name(spec)}+guided-{Path(mlff).stem}-{scale:g}", taken)
        out.append(sample_checkpoint(spec, name, guidance=(mlff, scale), loaded=loaded[spec], **common))
    out += [samples_from_file(p, _unique(Path(p).stem, taken), info) for p in sdf_files]
    return out
