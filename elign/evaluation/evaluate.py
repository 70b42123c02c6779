"""Evaluation of generated molecules against independent physics (EVALUATION.md).

``evaluate_file`` / ``evaluate_molecules``: EDM's chemistry metrics of one set of molecules.
``evaluate_models``: the full report of several models sampled on the same sizes and seeds (or read
from .sdf / .npz files): chemistry, reward-model and independent-model physics, GFN2-xTB relaxation, DFT on
a random subsample of eligible molecules (cached per molecule), sampling throughput, and comparisons with
the first model as baseline. It writes ``report.json``, ``molecules.csv``, one SDF file per model, PNG
plots and ``report.html``. Molecules a referee cannot evaluate are counted by reason and left out of that
referee's statistics.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import re
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from elign.data.elements import ATOMIC_NUMBERS
from elign.data.info import DatasetInfo, qm9_info
from elign.evaluation.settings import EvaluationSettings
from elign.io.export import read_molecules
from elign.metrics.rdkit_metrics import chemistry_metrics_from_batch, molecule_smiles
from elign.metrics.stability import stability_metrics

__all__ = [
    "METRICS",
    "EvaluationSettings",
    "Metric",
    "ModelSamples",
    "collect_samples",
    "dft_draw",
    "evaluate_file",
    "evaluate_models",
    "evaluate_molecules",
    "file_molecules",
    "force_field_figures",
    "parse_guided",
    "qm9_train_smiles",
    "sample_checkpoint",
    "samples_from_file",
]

log = logging.getLogger(__name__)


Pair = tuple[np.ndarray, np.ndarray]  # (positions [n, 3] A, type indices [n])


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


def qm9_train_smiles(cache_dir: str | os.PathLike | None = None, progress: bool = True) -> set[str]:
    """SMILES of QM9's training split built from its 3D geometries with the metric's own bond rules.

    Built once (about a minute) and cached beside the QM9 cache, so that novelty compares like with like.
    """
    from elign.data.qm9 import default_cache_path, load_qm9

    folder = Path(cache_dir) if cache_dir else default_cache_path().parent
    path = folder / "qm9_train_smiles_3d.txt"
    if path.exists():
        return set(path.read_text().split())
    data = load_qm9(progress=progress)
    decoder = data.dataset_info().atom_decoder
    smiles = set()
    for i in tqdm(data.split("train"), desc="training SMILES", disable=not progress):
        s = molecule_smiles(*data.molecule(int(i)), decoder)
        if s:
            smiles.add(s)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sorted(smiles)) + "\n")
    return smiles


def evaluate_molecules(molecules: Any, info: DatasetInfo, train_smiles: set[str] | None) -> dict[str, Any]:
    """Stability, RDKit and composition figures (guards against QM9) of a MoleculeBatch or (positions, types)
    pairs, JSON-ready."""
    from elign.metrics.composition import qm9_guards

    stab = stability_metrics(molecules, info.atom_decoder)
    chem = chemistry_metrics_from_batch(molecules, info.atom_decoder, train_smiles)
    return {
        "n": stab["n"],
        "atom_stability": stab["atom_stability"],
        "molecule_stability": stab["molecule_stability"],
        "validity": chem["validity"],
        "uniqueness": chem["uniqueness"],
        "novelty": chem["novelty"],
        "vxu": chem["vxu"],
        "n_valid": chem["n_valid"],
        "n_unique": chem["n_unique"],
        "composition": qm9_guards(molecules, info.atom_decoder),
        "per_molecule": {
            "molecule_stable": stab["per_molecule"]["molecule_stable"].tolist(),
            "n_atoms": stab["per_molecule"]["n_atoms"].tolist(),
            "smiles": chem["smiles"],
        },
    }


def evaluate_file(
    path: str | os.PathLike, info: DatasetInfo | None = None, train_smiles: str | None = None, novelty: bool = True
) -> dict[str, Any]:
    """Chemistry report of an .sdf or .npz file of molecules.

    ``train_smiles``: a text file of training SMILES for novelty, else built from the QM9 cache."""
    molecules, info = file_molecules(path, info or qm9_info())
    if not molecules:
        raise ValueError(f"{path} holds no readable molecules")
    smiles = None
    if novelty:
        smiles = set(Path(train_smiles).read_text().split()) if train_smiles else qm9_train_smiles()
    report = evaluate_molecules(molecules, info, smiles)
    report["samples"] = str(path)
    return report


# =========================================================================== several models, full physics

QM9_DFT_FORMATION_ENERGY = {
    "mean": -4.466,
    "median": -4.443,
    "p10": -4.700,
    "p90": -4.262,
    "unit": "eV/atom",
    "level": "B3LYP/6-31G(2df,p)",
    "note": "QM9's own molecules (equilibrium geometries, RMS force ~ 0)",
}


@dataclass(frozen=True)
class Metric:
    """A per-molecule column that is summarised per model and compared between models."""

    column: str
    label: str
    unit: str
    better: str  # 'lower' or 'higher'
    group: str  # 'chemistry', 'reward', 'independent', 'xtb', 'dft'
    plot: bool = True


METRICS: tuple[Metric, ...] = (
    Metric("molecule_stable", "molecule stability", "fraction", "higher", "chemistry", plot=False),
    Metric("reward_rms_force", "RMS force (reward model)", "eV/A", "lower", "reward"),
    Metric("reward_formation_energy", "formation energy (reward model)", "eV/atom", "lower", "reward"),
    Metric("independent_rms_force", "RMS force (independent model)", "eV/A", "lower", "independent"),
    Metric("independent_formation_energy", "formation energy (independent model)", "eV/atom", "lower", "independent"),
    Metric("xtb_rms_force", "RMS force (GFN2-xTB)", "eV/A", "lower", "xtb"),
    Metric("xtb_delta_e_relax", "relaxation energy dE_relax (GFN2-xTB)", "kcal/mol", "lower", "xtb"),
    Metric("xtb_rmsd", "relaxation RMSD (GFN2-xTB)", "A", "lower", "xtb"),
    Metric("dft_formation_energy", "formation energy (DFT)", "eV/atom", "lower", "dft"),
    Metric("dft_rms_force", "RMS force (DFT)", "eV/A", "lower", "dft"),
)


@dataclass
class ModelSamples:
    """One row of the report: a model's molecules and where they came from."""

    name: str
    molecules: list[Pair]
    info: DatasetInfo
    source: dict[str, Any]
    throughput: dict[str, Any] | None = None


# ------------------------------------------------------------------------------------------- inputs
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


def dft_draw(pool: Sequence[int], num: int, seed: int) -> list[int]:
    """``num`` indices drawn at random from ``pool``, in the order drawn: a prefix of one seeded permutation, so
    raising ``num`` keeps every molecule already drawn (and its cached DFT result) and only adds new ones."""
    order = np.random.default_rng(seed).permutation(len(pool))  # [len(pool)]
    return [int(pool[j]) for j in order[:num]]


def take_turns(draws: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """(model, index) pairs with the models taking turns in the order each drew its molecules: a run stopped part
    way has computed a prefix of every model's draw, which a rerun with a smaller budget reports as is."""
    longest = max(map(len, draws), default=0)
    return [(m, draw[rank]) for rank in range(longest) for m, draw in enumerate(draws) if rank < len(draw)]


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
) -> ModelSamples:
    """Sample ``num`` molecules of the given sizes [num] from a checkpoint, timing it (throughput).

    ``loaded``: the checkpoint already loaded on ``device``, as (model, config, resolved path).

    With ``cache_dir`` the molecules are kept there as soon as they are sampled, under a key of everything
    that decides them (checkpoint hash, sizes, seed, steps, batch size, device, guidance), and a later call
    with the same key reads them instead of sampling again: a report interrupted after sampling resumes.
    """
    from elign.diffusion.sampler import ForceGuidance, sample_molecules
    from elign.io.assets import resolve_checkpoint
    from elign.io.checkpoints import checkpoint_sha256, load_checkpoint
    from elign.metrics.bonds import split_molecules

    if loaded is None:
        path = resolve_checkpoint(checkpoint)
        model, config, _ = load_checkpoint(path, device)
    else:
        model, config, path = loaded
    info = config.dataset_info()
    # the checkpoint as named (a shipped name stays a name, not this machine's path) and its content hash
    source = {
        "kind": "guided" if guidance is not None else "checkpoint",
        "checkpoint": str(checkpoint),
        "sha256": checkpoint_sha256(path),
        "seed": seed,
        "steps": steps or model.T,
    }
    if guidance is not None:
        source |= {"guidance_mlff": guidance[0], "guidance_scale": guidance[1]}
    key = _samples_key(source, sizes, num, batch_size, device)
    cache = Path(cache_dir) / f"{key[:24]}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file() and (kept := _read_samples(cache, key)) is not None:
        molecules, throughput = kept
        return ModelSamples(name, molecules, info, source, {**throughput, "cached": str(cache)})
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
        sizes=sizes,
        guidance=guide,
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
    molecules = list(split_molecules(mols))
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
) -> list[ModelSamples]:
    """The report's rows: each checkpoint, then each guided baseline ('MODEL:MLFF:SCALE'), sampled on the same
    sizes (drawn from the first model's size prior) and seed; then each SDF file. Names are unique. With
    ``cache_dir``, sampled molecules are kept there and reused by a later call (:func:`sample_checkpoint`)."""
    import torch

    from elign.data.info import qm9_info
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
    )
    out = [sample_checkpoint(c, _unique(_checkpoint_name(c), taken), loaded=loaded[c], **common) for c in checkpoints]
    for spec, mlff, scale in parsed:
        name = _unique(f"{_checkpoint_name(spec)}+guided-{Path(mlff).stem}-{scale:g}", taken)
        out.append(sample_checkpoint(spec, name, guidance=(mlff, scale), loaded=loaded[spec], **common))
    out += [samples_from_file(p, _unique(Path(p).stem, taken), info) for p in sdf_files]
    return out


# ------------------------------------------------------------------------------------- force fields
def force_field_figures(
    ff: Any,
    molecules: Sequence[Pair],
    atomic_numbers: Sequence[int],
    batch_size: int = 64,
    decoder: Sequence[str] | None = None,
) -> dict[str, list]:
    """Per molecule: formation_energy (eV/atom), rms_force (eV/A), reason (None where scored), in order.

    With ``decoder``, impossible geometries (overlapping atoms), lone atoms and molecules in several fragments
    (EDM's bond rules) are not scored, each with its reason: their figures would be artefacts (isolated atoms
    look perfect, overlapping ones poison every mean). The force field itself only refuses what it cannot
    compute, so an alignment reward still sees every finite molecule.
    """
    import torch

    from elign.data.batch import MoleculeBatch
    from elign.metrics.bonds import geometry_problem, n_fragments
    from elign.mlff import formation_energy_per_atom, rms_force

    n = len(molecules)
    out: dict[str, list] = {"formation_energy": [math.nan] * n, "rms_force": [math.nan] * n, "reason": [None] * n}
    todo = list(range(n))
    if decoder is not None:  # in the referees' order (referees.precheck): impossible geometry, then fragments
        for i in range(n):
            problem = geometry_problem(molecules[i][0])
            if problem is None and len(molecules[i][1]) == 1:
                problem = "a single atom (no bonds, forces or relaxation to score)"
            if problem is None and n_fragments(*molecules[i], decoder) > 1:
                problem = "disconnected fragments"
            out["reason"][i] = problem
        todo = [i for i in todo if out["reason"][i] is None]
    for start in range(0, len(todo), batch_size):
        idx = todo[start : start + batch_size]
        batch = MoleculeBatch.from_lists(
            [torch.as_tensor(molecules[i][0]) for i in idx],
            [torch.as_tensor(molecules[i][1]) for i in idx],
            list(atomic_numbers),
        )
        batch = batch.to(ff.device, ff.dtype)
        result = ff(batch)
        e_form = formation_energy_per_atom(batch, result, ff.reference_energies).cpu().tolist()  # [b]
        rms = rms_force(batch, result).cpu().tolist()  # [b]
        for b, i in enumerate(idx):
            reason = result.reason[b]
            if reason is None and not (math.isfinite(e_form[b]) and math.isfinite(rms[b])):
                reason = f"{ff.name}: no reference energy for an element of this molecule"
            out["reason"][i] = reason
            if reason is None:
                out["formation_energy"][i], out["rms_force"][i] = e_form[b], rms[b]
    return out


def reason_category(reason: str) -> str:
    """A short, countable category of a failure reason."""
    r = reason.lower()
    for key, cat in (
        ("disconnected", "disconnected fragments"),
        ("element", "unsupported element"),
        ("odd electron", "odd electron count (open shell)"),
        ("converge", "SCF not converged"),
        ("time limit", "time limit exceeded"),
        ("overlapping", "overlapping atoms"),
        ("single atom", "a single atom"),
        ("non-finite input", "non-finite positions"),
        ("non-finite positions", "non-finite positions"),
        ("non-finite", "non-finite output"),
        ("reference energy", "no atom reference energy"),
        ("empty", "empty molecule"),
    ):
        if key in r:
            return cat
    return reason.splitlines()[0][:80]


def _ff_columns(
    spec: str, prefix: str, samples: Sequence[ModelSamples], rows: list[list[dict]], settings: EvaluationSettings
) -> dict[str, Any]:
    import torch

    from elign.mlff import load_force_field

    kwargs = {"dtype": torch.float64} if spec.lower() in ("xtb", "gfn2-xtb", "dft") else {}
    ff = load_force_field(spec, device=settings.device, **kwargs)
    t0 = time.perf_counter()
    for m, s in enumerate(samples):
        fig = force_field_figures(ff, s.molecules, s.info.atomic_numbers, settings.ff_batch_size, s.info.atom_decoder)
        for i, row in enumerate(rows[m]):
            row[f"{prefix}_formation_energy"] = fig["formation_energy"][i]
            row[f"{prefix}_rms_force"] = fig["rms_force"][i]
            row[f"{prefix}_reason"] = fig["reason"][i]
    if hasattr(ff, "close"):
        ff.close()
    return {"force_field": spec, "name": getattr(ff, "name", spec), "seconds": time.perf_counter() - t0}


def _xtb_columns(
    samples: Sequence[ModelSamples], rows: list[list[dict]], settings: EvaluationSettings, out_dir: Path
) -> dict[str, Any]:
    from elign.evaluation.referees import xtb_relax_all

    t0 = time.perf_counter()
    for m, s in enumerate(samples):
        res = xtb_relax_all(
            s.molecules,
            s.info.atom_decoder,
            s.info.atomic_numbers,
            settings.xtb_workers,
            settings.xtb_time_limit,
            settings.relax_fmax,
            settings.relax_steps,
            settings.relax_max_step,
            settings.rmsd_atoms,
            settings.progress,
            desc=f"GFN2-xTB relaxation [{s.name}]",
            cache_dir=out_dir / "xtb_cache",
        )
        for row, r in zip(rows[m], res, strict=True):
            ok = r["reason"] is None
            for key in ("energy", "rms_force", "delta_e_relax", "rmsd"):
                row[f"xtb_{key}"] = r[key] if ok else math.nan
            row["xtb_converged"] = r.get("converged") if ok else None
            row["xtb_steps"] = r.get("steps") if ok else None
            row["xtb_reason"] = r["reason"]
    return {
        "method": "GFN2-xTB (tblite, ASE BFGS)",
        "fmax": settings.relax_fmax,
        "max_steps": settings.relax_steps,
        "max_step": settings.relax_max_step,
        "rmsd_atoms": settings.rmsd_atoms,
        "time_limit": settings.xtb_time_limit,
        "seconds": time.perf_counter() - t0,
        "cache": str(out_dir / "xtb_cache"),
    }


def _independent_from_xtb(samples: Sequence[ModelSamples], rows: list[list[dict]]) -> dict[str, Any]:
    """Independent-model figures from the xTB referee's single point at the sampled geometry (no second run)."""
    from elign.mlff.xtb import XTBForceField

    refs = XTBForceField().reference_energies  # eV, by atomic number
    for s, model_rows in zip(samples, rows, strict=True):
        for (_, t), row in zip(s.molecules, model_rows, strict=True):
            z = [int(s.info.atomic_numbers[k]) for k in t]
            row["independent_reason"] = row["xtb_reason"]
            row["independent_rms_force"] = row["xtb_rms_force"]
            e = row.pop("xtb_energy", math.nan)
            ok = row["xtb_reason"] is None and all(a in refs for a in z)
            row["independent_formation_energy"] = (e - sum(refs[a] for a in z)) / len(z) if ok else math.nan
    return {"force_field": "xtb", "name": "gfn2-xtb", "note": "single point of the xTB referee, reused"}


def _dft_columns(
    samples: Sequence[ModelSamples], rows: list[list[dict]], settings: EvaluationSettings, out_dir: Path
) -> dict[str, Any]:
    from elign.evaluation.referees import DFT_ELEMENTS, dft_cached, dft_rms_force, precheck
    from elign.evaluation.stats import count_reasons
    from elign.mlff.base import GROUND_STATE_UNPAIRED
    from elign.mlff.dft import DFTLevel

    level = DFTLevel(
        xc=settings.dft_xc,
        basis=settings.dft_basis,
        density_fit=settings.dft_density_fit,
        grid_level=settings.dft_grid_level,
        conv_tol=settings.dft_conv_tol,
    )
    n = min(len(s.molecules) for s in samples)
    subsamples, eligibility, draws, numbers_of, reasons_of = [], [], [], [], []
    for m, s in enumerate(samples):
        numbers = [[int(s.info.atomic_numbers[j]) for j in t] for _, t in s.molecules[:n]]
        reasons = [
            precheck(z, x, t, s.info.atom_decoder, DFT_ELEMENTS)
            for z, (x, t) in zip(numbers, s.molecules[:n], strict=True)
        ]
        # 'eligible': each model's subsample is drawn from the molecules DFT can evaluate, so the budget is not
        # spent on exclusions; 'all': the same random indices for every model, exclusions counted among them
        pool = [i for i in range(n) if reasons[i] is None] if settings.dft_pool == "eligible" else list(range(n))
        draw = dft_draw(pool, settings.dft_num, settings.seed)
        draws.append(draw)
        subsamples.append(sorted(draw))
        numbers_of.append(numbers)
        reasons_of.append(reasons)
        eligibility.append(
            {
                "n_eligible": reasons.count(None),
                "n": n,
                "excluded": count_reasons([reason_category(r) for r in reasons if r is not None]),
            }
        )
        chosen = set(draw)
        for i in range(len(rows[m])):
            rows[m][i]["dft_selected"] = i in chosen
        for i in draw:
            rows[m][i]["dft_reason"] = reasons[i]
    jobs, owners, elements = [], [], set()
    for m, i in take_turns(draws):
        if reasons_of[m][i] is None:
            jobs.append((numbers_of[m][i], np.asarray(samples[m].molecules[i][0], dtype=np.float64), 0, True))
            owners.append((m, i, numbers_of[m][i]))
            elements.update(numbers_of[m][i])
    atom_jobs = [([z], np.zeros((1, 3)), GROUND_STATE_UNPAIRED[z], False) for z in sorted(elements)]
    threads = settings.dft_threads or max(1, (os.cpu_count() or 1) // max(1, settings.dft_workers))
    t0 = time.perf_counter()
    records, n_cached = dft_cached(
        atom_jobs + jobs,
        level,
        out_dir / "dft_cache",
        settings.dft_workers,
        threads,
        settings.dft_time_limit,
        settings.progress,
        desc=f"DFT {level.xc}/{level.basis}",
    )
    atom_e = {z: r["energy"] for z, r in zip(sorted(elements), records[: len(atom_jobs)], strict=True)}
    for (m, i, z), rec in zip(owners, records[len(atom_jobs) :], strict=True):
        row = rows[m][i]
        missing = sorted({a for a in z if atom_e.get(a) is None})
        if rec["reason"] is not None:
            row["dft_reason"] = rec["reason"]
        elif missing:
            row["dft_reason"] = f"no DFT atom reference energy for Z={missing}"
        else:
            row["dft_formation_energy"] = (rec["energy"] - sum(atom_e[a] for a in z)) / len(z)
            row["dft_rms_force"] = dft_rms_force(rec["forces"])
    return {
        "level": asdict(level),
        "pool": settings.dft_pool,
        "subsample": {s.name: sub for s, sub in zip(samples, subsamples, strict=True)},
        "eligibility": {s.name: e for s, e in zip(samples, eligibility, strict=True)},
        "n_jobs": len(atom_jobs) + len(jobs),
        "n_cached": n_cached,
        "atom_energies_eV": {str(z): e for z, e in atom_e.items()},
        "time_limit": settings.dft_time_limit,
        "seconds": time.perf_counter() - t0,
        "cache": str(out_dir / "dft_cache"),
        "reference_qm9": QM9_DFT_FORMATION_ENERGY,
    }


# ---------------------------------------------------------------------------------------- statistics
def _group_summary(
    rows: list[dict], group: str, metrics: Sequence[Metric], selected: str | None = None
) -> dict[str, Any]:
    from elign.evaluation.stats import count_reasons, summarize

    considered = [r for r in rows if selected is None or r.get(selected)]
    reasons = [r.get(f"{group}_reason") for r in considered]
    failed = [reason_category(x) for x in reasons if x is not None]
    out: dict[str, Any] = {
        "n_considered": len(considered),
        "n_evaluated": len(considered) - len(failed),
        "n_failed": len(failed),
        "failures": count_reasons(failed),
    }
    for metric in metrics:
        out[metric.column.removeprefix(f"{group}_")] = summarize([r.get(metric.column, math.nan) for r in considered])
    return out


def _model_physics(rows: list[dict], groups: Sequence[str]) -> dict[str, Any]:
    out = {}
    for g in groups:
        metrics = [m for m in METRICS if m.group == g]
        out[g] = _group_summary(rows, g, metrics, "dft_selected" if g == "dft" else None)
        if g == "xtb":
            conv = [r.get("xtb_converged") for r in rows if r.get("xtb_reason") is None]
            out[g]["n_not_converged"] = sum(c is False for c in conv)
    return out


def _column(rows: list[dict], col: str) -> list[float]:
    return [float(r[col]) if r.get(col) is not None else math.nan for r in rows]


def _comparisons(
    samples: Sequence[ModelSamples], rows: list[list[dict]], groups: Sequence[str], settings: EvaluationSettings
) -> list[dict[str, Any]]:
    from elign.evaluation.stats import compare

    metrics = [m for m in METRICS if m.group in ("chemistry", *groups)]
    out = []
    for m in range(1, len(samples)):
        entry: dict[str, Any] = {"baseline": samples[0].name, "model": samples[m].name, "metrics": {}}
        seeds_shared = shared_seeds(samples[0], samples[m])
        for k, metric in enumerate(metrics):
            # each model's DFT subsample is drawn from its own eligible molecules unless the pool is 'all'
            same_indices = metric.group != "dft" or settings.dft_pool == "all"
            entry["metrics"][metric.column] = compare(
                _column(rows[0], metric.column),
                _column(rows[m], metric.column),
                metric.better,
                settings.n_boot,
                settings.confidence,
                seed=settings.seed + 1000 * m + k,
                paired=seeds_shared and same_indices,
            )
        out.append(entry)
    return out


def shared_seeds(a: ModelSamples, b: ModelSamples) -> bool:
    """True when molecule i of both was sampled by this evaluation from the same seed and size, so the
    comparison's bootstrap resamples seeds jointly (molecules read from files are never paired)."""
    sampled = ("checkpoint", "guided")
    if a.source.get("kind") not in sampled or b.source.get("kind") not in sampled:
        return False
    if a.source.get("seed") != b.source.get("seed") or len(a.molecules) != len(b.molecules):
        return False
    return all(len(ta) == len(tb) for (_, ta), (_, tb) in zip(a.molecules, b.molecules, strict=True))


# ------------------------------------------------------------------------------------------- outputs
def _chemistry_rows(s: ModelSamples, train: set[str] | None) -> tuple[dict[str, Any], list[dict]]:
    from elign.metrics.bonds import n_fragments

    chem = evaluate_molecules(s.molecules, s.info, train)
    per = chem.pop("per_molecule")
    rows = []
    for i, (x, t) in enumerate(s.molecules):
        rows.append(
            {
                "model": s.name,
                "index": i,
                "n_atoms": int(per["n_atoms"][i]),
                "formula": _formula(t, s.info.atom_decoder),
                "smiles": per["smiles"][i] or "",
                "valid": per["smiles"][i] is not None,
                "molecule_stable": float(per["molecule_stable"][i]),
                "n_fragments": n_fragments(x, t, s.info.atom_decoder),
            }
        )
    return chem, rows


def _formula(types: np.ndarray, decoder: Sequence[str]) -> str:
    counts = {a: int((np.asarray(types) == k).sum()) for k, a in enumerate(decoder)}
    order = sorted(counts, key=lambda a: (a != "C", a != "H", a))
    return "".join(f"{a}{c if c > 1 else ''}" for a in order if (c := counts[a]))


CSV_COLUMNS = (
    "model",
    "index",
    "n_atoms",
    "formula",
    "smiles",
    "valid",
    "molecule_stable",
    "n_fragments",
    "reward_formation_energy",
    "reward_rms_force",
    "reward_reason",
    "independent_formation_energy",
    "independent_rms_force",
    "independent_reason",
    "xtb_rms_force",
    "xtb_delta_e_relax",
    "xtb_rmsd",
    "xtb_converged",
    "xtb_steps",
    "xtb_reason",
    "dft_selected",
    "dft_formation_energy",
    "dft_rms_force",
    "dft_reason",
)


def _write_csv(path: Path, rows: list[list[dict]]) -> None:
    present = [c for c in CSV_COLUMNS if any(c in r for model in rows for r in model)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(present)
        for model in rows:
            for r in model:
                w.writerow([_csv_value(r.get(c)) for c in present])


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return str(v)


def _write_sdf(path: Path, s: ModelSamples, rows: list[dict]) -> dict[str, int]:
    from elign.io.export import write_sdf

    keep = ("index", "molecule_stable", "reward_rms_force", "xtb_rms_force", "xtb_delta_e_relax")
    props = [
        {
            "name": f"{s.name}_{r['index']}",
            "model": s.name,
            **{k: _csv_value(r[k]) for k in keep if k in r and _csv_value(r[k]) != ""},
        }
        for r in rows
    ]
    return write_sdf(path, s.molecules, s.info.atom_decoder, props)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def evaluate_models(
    samples: Sequence[ModelSamples],
    settings: EvaluationSettings,
    out_dir: str | os.PathLike,
    run_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Chemistry, physics and comparisons of several models; writes the report files into ``out_dir``.

    The first entry of ``samples`` is the baseline of every comparison.
    """
    if not samples:
        raise ValueError("evaluate_models needs at least one set of molecules")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = None
    if settings.novelty:
        train = (
            set(Path(settings.train_smiles).read_text().split())
            if settings.train_smiles
            else qm9_train_smiles(progress=settings.progress)
        )
    chemistry, rows = [], []
    for s in samples:
        chem, model_rows = _chemistry_rows(s, train)
        chemistry.append(chem)
        rows.append(model_rows)
    groups, physics_info = [], {}
    if settings.mlff:
        physics_info["reward"] = _ff_columns(settings.mlff, "reward", samples, rows, settings)
        groups.append("reward")
    if "xtb" in settings.referees:
        physics_info["xtb"] = _xtb_columns(samples, rows, settings, out)
    if settings.independent and settings.independent.lower() in ("xtb", "gfn2-xtb") and "xtb" in settings.referees:
        physics_info["independent"] = _independent_from_xtb(samples, rows)
    elif settings.independent:
        physics_info["independent"] = _ff_columns(settings.independent, "independent", samples, rows, settings)
    groups += [g for g in ("independent", "xtb") if g in physics_info]
    if "dft" in settings.referees and settings.dft_num > 0:
        physics_info["dft"] = _dft_columns(samples, rows, settings, out)
        groups.append("dft")
    models = []
    for s, chem, model_rows in zip(samples, chemistry, rows, strict=True):
        sdf = out / f"{s.name}.sdf"
        _write_sdf(sdf, s, model_rows)
        models.append(
            {
                "name": s.name,
                "source": s.source,
                "sdf": sdf.name,
                "n": len(s.molecules),
                "throughput": s.throughput,
                "chemistry": chem,
                "physics": _model_physics(model_rows, groups),
            }
        )
    report = {
        "settings": {k: v for k, v in vars(settings).items() if k not in ("extra", "progress")}
        | settings.extra
        | (run_info or {}),
        "physics": physics_info,
        "models": models,
        "comparisons": _comparisons(samples, rows, groups, settings),
        "metrics": [vars(m) for m in METRICS if m.group in ("chemistry", *groups)],
        "files": {"report": "report.json", "molecules": "molecules.csv", "sdf": [m["sdf"] for m in models]},
    }
    _write_csv(out / "molecules.csv", rows)
    report = _json_safe(report)
    if settings.plots:
        from elign.evaluation.report import write_html, write_plots

        report["files"]["plots"] = write_plots(report, rows, out)
        report["files"]["html"] = write_html(report, out).name
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report
