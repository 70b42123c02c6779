"""Independent physics referees of generated molecules: GFN2-xTB relaxation and a cached DFT oracle.

Both run in :class:`DeadlinePool`, long-lived spawned workers with a hard per-molecule time limit (a worker
past it is killed and replaced), and yield results as molecules finish, so progress bars move and each
result can be cached on disk at once (``xtb_relax_all(cache_dir=...)``, ``dft_cached``): an interrupted run
resumes from what is there.
A molecule a referee cannot evaluate comes back with a reason (unsupported element, odd electron count,
disconnected fragments, SCF failure, time limit), never with a number.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import numpy as np

from elign.metrics.bonds import geometry_problem, n_fragments

__all__ = [
    "EV_TO_KCAL_MOL",
    "DeadlinePool",
    "dft_cache_key",
    "dft_cached",
    "dft_rms_force",
    "geometry_key",
    "kabsch_rmsd",
    "precheck",
    "xtb_relax",
    "xtb_relax_all",
]

EV_TO_KCAL_MOL = 23.060547830619  # 1 eV in kcal/mol
XTB_ELEMENTS = frozenset(range(1, 87))
DFT_ELEMENTS = frozenset(range(1, 37))


# ------------------------------------------------------------------------------------ checks
def precheck(
    numbers: Sequence[int],
    positions: np.ndarray,
    types: np.ndarray,
    decoder: Sequence[str],
    supported: frozenset[int],
    require_connected: bool = True,
) -> str | None:
    """Why a referee cannot evaluate this molecule (None if it can).

    Fragments are named before the element and electron checks, in the order the force-field figures use
    (``physics.force_field_figures``), so every referee of a report counts a molecule under the same reason.
    """
    if len(numbers) == 0:
        return "empty molecule"
    problem = geometry_problem(positions)
    if problem is not None:
        return problem
    if len(numbers) == 1:
        return "a single atom (no bonds, forces or relaxation to score)"
    if require_connected and n_fragments(positions, types, decoder) > 1:
        return "disconnected fragments"
    bad = sorted(set(numbers) - supported)
    if bad:
        return f"unsupported element (Z={bad})"
    if sum(numbers) % 2 == 1:
        return "odd electron count (open shell)"
    return None


def kabsch_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """RMSD (A) between a [n, 3] and b [n, 3] after optimal superposition (translation + proper rotation)."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    u, _, vt = np.linalg.svd(a.T @ b)  # [3, 3]
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt  # a @ rot ~ b
    return float(np.sqrt(((a @ rot - b) ** 2).sum(axis=1).mean()))


# ------------------------------------------------------------------------------------- pool
def _worker(fn: Callable[[Any], Any], conn: Any) -> None:
    conn.send("ready")  # imports done: a task's time limit starts when it is handed to a ready worker
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        k, task = msg
        try:
            conn.send((k, fn(task), None))
        except Exception as err:  # reported per molecule, by design
            conn.send((k, None, f"{type(err).__name__}: {err}".splitlines()[0]))


class DeadlinePool:
    """``n_workers`` spawned processes running ``fn``; a task past ``time_limit`` s kills its worker.

    ``imap(tasks)`` yields (index, value, error) in completion order; error is None on success.
    """

    def __init__(self, fn: Callable[[Any], Any], n_workers: int = 1, time_limit: float | None = None) -> None:
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        self.fn, self.n_workers, self.time_limit = fn, n_workers, time_limit
        self._ctx = mp.get_context("spawn")
        self._workers: list[tuple[Any, Any]] = []  # (process, connection)

    def _start(self) -> tuple[Any, Any]:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker, args=(self.fn, child), daemon=True)
        proc.start()
        child.close()
        try:
            ready = parent.recv()  # waits out the spawn and imports, which a loaded machine can make slow
        except EOFError:
            ready = None
        if ready != "ready":
            proc.join(timeout=5)
            raise RuntimeError(f"a referee worker failed to start (exit code {proc.exitcode})")
        return proc, parent

    def imap(self, tasks: Sequence[Any]) -> Iterator[tuple[int, Any, str | None]]:
        pending = list(range(len(tasks)))
        while len(self._workers) < min(self.n_workers, len(tasks)):
            self._workers.append(self._start())
        busy: dict[int, tuple[int, float]] = {}  # worker slot -> (task index, start time)
        while pending or busy:
            for slot in range(len(self._workers)):
                if slot not in busy and pending:
                    k = pending.pop(0)
                    self._workers[slot][1].send((k, tasks[k]))
                    busy[slot] = (k, time.monotonic())
            conns = {self._workers[s][1]: s for s in busy}
            for conn in wait(list(conns), timeout=0.05):
                slot = conns[conn]
                try:
                    k, value, err = conn.recv()
                except (EOFError, OSError):
                    k, value, err = busy[slot][0], None, f"worker died (exit code {self._workers[slot][0].exitcode})"
                    self._restart(slot)
                del busy[slot]
                yield k, value, err
            for slot, (k, start) in list(busy.items()):
                if self.time_limit is not None and time.monotonic() - start > self.time_limit:
                    self._restart(slot)
                    del busy[slot]
                    yield k, None, f"time limit exceeded ({self.time_limit:g} s)"

    def _restart(self, slot: int) -> None:
        proc, conn = self._workers[slot]
        proc.kill()
        proc.join()
        conn.close()
        self._workers[slot] = self._start()

    def close(self) -> None:
        for proc, conn in self._workers:
            try:
                conn.send(None)
            except OSError:
                pass
            proc.join(timeout=2)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()
        self._workers = []

    def __enter__(self) -> DeadlinePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------ per-molecule cache
def geometry_key(
    kind: str, numbers: Sequence[int], positions: np.ndarray, settings: dict[str, Any], settings_name: str = "settings"
) -> str:
    """sha256 of what a result depends on: kind, elements, geometry (rounded to 1e-5 A) and settings."""
    payload = json.dumps(
        {
            "kind": kind,
            "z": [int(z) for z in numbers],
            "x": np.round(np.asarray(positions, dtype=np.float64), 5).tolist(),
            settings_name: settings,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


XTB_FIELDS = ("energy", "rms_force", "delta_e_relax", "rmsd")  # what a successful xTB record holds
DFT_FIELDS = ("energy", "forces")


def _cache_read(folder: Path, key: str, fields: Sequence[str]) -> dict[str, Any] | None:
    """The cached record of ``key``, or None when there is none or it is damaged (then it is computed again
    and the file named): a failure record has a ``reason``; a success holds every field, each finite."""
    path = folder / f"{key}.json"
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):  # cut short by an interruption, or damaged
        record = None
    if _valid_record(record, fields):
        return record
    print(f"warning: {path} is damaged; computing it again", file=sys.stderr)
    return None


def _valid_record(record: Any, fields: Sequence[str]) -> bool:
    if not isinstance(record, dict):
        return False
    if isinstance(record.get("reason"), str) and record.get("energy") is None:
        return True  # a deterministic failure, cached as such
    try:
        return all(np.isfinite(np.asarray(record[k], dtype=np.float64)).all() for k in fields)
    except (KeyError, TypeError, ValueError):
        return False


def _cache_write(folder: Path, key: str, record: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{key}.tmp"
    tmp.write_text(json.dumps(record))
    tmp.replace(folder / f"{key}.json")


def _retryable(reason: str) -> bool:
    return "time limit" in reason or "worker died" in reason


# -------------------------------------------------------------------------------------- xTB
def xtb_relax(task: tuple[list[int], np.ndarray, float, int, float, str]) -> dict[str, Any]:
    """GFN2-xTB single point and BFGS relaxation through ASE (runs in a worker).

    task: (numbers, positions [n, 3] A, fmax eV/A, max_steps, max_step A, rmsd atoms 'heavy'|'all').
    Returns energy (eV), rms_force (eV/A) at the input geometry, delta_e_relax (kcal/mol, >= 0 when the
    relaxation lowers the energy), rmsd (A, Kabsch-aligned), steps, converged.
    """
    import warnings

    from ase import Atoms
    from ase.optimize import BFGS
    from tblite.ase import TBLite

    numbers, positions, fmax, max_steps, max_step, rmsd_atoms = task
    atoms = Atoms(numbers=numbers, positions=np.asarray(positions, dtype=np.float64))
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e0 = float(atoms.get_potential_energy())
        f0 = atoms.get_forces()  # [n, 3] eV/A
        opt = BFGS(atoms, logfile=None, maxstep=max_step)
        converged = bool(opt.run(fmax=fmax, steps=max_steps))
        e1 = float(atoms.get_potential_energy())
    x0, x1 = np.asarray(positions, dtype=np.float64), atoms.get_positions()
    heavy = np.asarray(numbers) > 1
    sel = heavy if rmsd_atoms == "heavy" and heavy.sum() >= 3 else np.ones(len(numbers), dtype=bool)
    return {
        "energy": e0,
        "rms_force": float(np.sqrt((f0**2).sum(axis=1).mean())),
        "delta_e_relax": (e0 - e1) * EV_TO_KCAL_MOL,
        "rmsd": kabsch_rmsd(x0[sel], x1[sel]),
        "steps": int(opt.nsteps),
        "converged": converged,
    }


def xtb_relax_all(
    molecules: Sequence[tuple[np.ndarray, np.ndarray]],
    decoder: Sequence[str],
    atomic_numbers: Sequence[int],
    n_workers: int = 1,
    time_limit: float | None = 120.0,
    fmax: float = 0.05,
    max_steps: int = 500,
    max_step: float = 0.2,
    rmsd_atoms: str = "heavy",
    progress: bool = False,
    desc: str = "GFN2-xTB relaxation",
    cache_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Relax every molecule (positions [n, 3], type indices [n]); one dict per molecule, 'reason' None if done.

    With ``cache_dir`` every finished molecule is written there at once, so an interrupted run resumes.
    """
    from tqdm.auto import tqdm

    settings = {"fmax": fmax, "max_steps": max_steps, "max_step": max_step, "rmsd_atoms": rmsd_atoms}
    folder = Path(cache_dir) if cache_dir is not None else None
    out: list[dict[str, Any]] = [{"reason": None} for _ in molecules]
    tasks, where, keys = [], [], []
    for i, (x, t) in enumerate(molecules):
        z = [int(atomic_numbers[k]) for k in t]
        reason = precheck(z, x, t, decoder, XTB_ELEMENTS)
        if reason is not None:
            out[i]["reason"] = reason
            continue
        key = geometry_key("xtb-relax", z, x, settings)
        cached = _cache_read(folder, key, XTB_FIELDS) if folder is not None else None
        if cached is not None:
            out[i] = cached
            continue
        tasks.append((z, np.asarray(x, dtype=np.float64), fmax, max_steps, max_step, rmsd_atoms))
        where.append(i)
        keys.append(key)
    if tasks:
        with (
            DeadlinePool(xtb_relax, n_workers, time_limit) as pool,
            tqdm(total=len(tasks), desc=desc, unit="mol", disable=not progress) as bar,
        ):
            for k, value, err in pool.imap(tasks):
                rec = value | {"reason": None} if err is None else {"reason": f"xTB failed: {err}"}
                if folder is not None and (err is None or not _retryable(err)):
                    _cache_write(folder, keys[k], rec)
                out[where[k]] = rec
                bar.update(1)
    return out


# -------------------------------------------------------------------------------------- DFT
def dft_cache_key(numbers: Sequence[int], positions: np.ndarray, level: Any, kind: str = "molecule") -> str:
    """sha256 of the geometry (rounded to 1e-5 A) and the level of theory."""
    return geometry_key(kind, numbers, positions, asdict(level), settings_name="level")


def dft_cached(
    jobs: Sequence[tuple[list[int], np.ndarray, int, bool]],
    level: Any,
    cache_dir: str | Path,
    n_workers: int = 1,
    threads: int = 1,
    time_limit: float | None = 600.0,
    progress: bool = False,
    desc: str = "DFT",
) -> tuple[list[dict[str, Any]], int]:
    """Run PySCF single points (numbers, positions [n, 3] A, spin, forces?) with a per-job cache on disk.

    Returns (one record per job: energy eV, forces [n][3] eV/A or None, reason; number of jobs read from the
    cache). Deterministic failures (SCF not converged) are cached too; time limits and crashed workers are
    tried again on the next run.
    """
    from tqdm.auto import tqdm

    from elign.mlff.dft import dft_single_point

    folder = Path(cache_dir)
    level_d = asdict(level)
    records: list[dict[str, Any] | None] = [None] * len(jobs)
    keys = [dft_cache_key(z, x, level, "molecule" if f else f"atom-spin{s}") for z, x, s, f in jobs]
    for i, key in enumerate(keys):
        records[i] = _cache_read(folder, key, DFT_FIELDS)
    n_cached = sum(r is not None for r in records)
    todo = [i for i, r in enumerate(records) if r is None]
    if todo:
        tasks = [(jobs[i][0], jobs[i][1], jobs[i][2], level_d, threads, jobs[i][3]) for i in todo]
        with (
            DeadlinePool(dft_single_point, n_workers, time_limit) as pool,
            tqdm(total=len(jobs), initial=n_cached, desc=desc, unit="mol", disable=not progress) as bar,
        ):
            for k, value, err in pool.imap(tasks):
                i = todo[k]
                if err is None:
                    rec = {"energy": float(value[0]), "forces": np.asarray(value[1]).tolist(), "reason": None}
                else:
                    reason = f"DFT failed: {err}"
                    if "converge" in err:
                        reason = f"SCF not converged: {err}"
                    rec = {"energy": None, "forces": None, "reason": reason}
                if rec["reason"] is None or not _retryable(rec["reason"]):
                    _cache_write(folder, keys[i], rec)
                records[i] = rec
                bar.update(1)
    return [r if r is not None else {"energy": None, "forces": None, "reason": "no result"} for r in records], n_cached


def dft_rms_force(forces: Any) -> float:
    f = np.asarray(forces, dtype=np.float64)  # [n, 3]
    return float(np.sqrt((f**2).sum(axis=1).mean())) if f.size else math.nan
