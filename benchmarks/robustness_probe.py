"""Hostile but fair probes of "nothing lost, ever": each prints one line, ``ok`` or ``FAIL``, and what it saw.

Every probe runs the project's own commands (in subprocesses, as a user would) or its library calls on small,
synthetic inputs in a temporary folder, and checks two things: no traceback reaches the user, and no silent
success (a bad input is refused in one line naming the file or value; a failed write keeps the previous file).

    python benchmarks/robustness_probe.py          # about a minute on one core
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

TINY = [
    "--hidden",
    "16",
    "--n-layers",
    "2",
    "--timesteps",
    "50",
    "--batch-size",
    "8",
    "--threads",
    "1",
    "--no-progress",
]
RESULTS: list[tuple[bool, str, str]] = []


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "elign.cli", *args], cwd=cwd, env=env, capture_output=True, text=True)


def one_line_refusal(done: subprocess.CompletedProcess, *needles: str) -> tuple[bool, str]:
    err = done.stderr.strip().splitlines()
    last = err[-1] if err else ""
    ok = done.returncode == 2 and "Traceback" not in done.stderr and all(n in last for n in needles)
    return ok, f"exit {done.returncode}: {last[:150]}"


def probe(name: str) -> Callable[[Callable[[Path], tuple[bool, str]]], None]:
    def register(fn: Callable[[Path], tuple[bool, str]]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                ok, seen = fn(Path(tmp))
            except Exception as e:  # a probe that raises is itself a failure, shown in one line
                ok, seen = False, f"raised {type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}"
        RESULTS.append((ok, name, seen))
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {seen}", flush=True)

    return register


def tiny_data(folder: Path) -> Path:
    from elign.data.dense import DenseDataset

    path = folder / "tiny.npz"
    DenseDataset.synthetic(32, seed=0).save(path)
    return path


def methane(scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    d = 1.09 / 3**0.5
    x = np.array([[0, 0, 0], [d, d, d], [-d, -d, d], [-d, d, -d], [d, -d, -d]]) * scale
    return x, np.array([1, 0, 0, 0, 0])


def run_probes() -> None:
    @probe("1 pretraining never saves NaN weights (lr 1e30, a checkpoint every step, no logged loss)")
    def _(tmp: Path):
        import torch

        data = tiny_data(tmp)
        done = cli("pretrain", "--data", str(data), "--out", "run", *TINY, "--lr", "1e30", "--log-every", "100000",
                   "--max-steps", "40", "--checkpoint-minutes", "0.00001", cwd=tmp)  # fmt: skip
        state = tmp / "run" / "state.pt"
        finite = True
        if state.exists():
            weights = torch.load(state, weights_only=True)["model"]
            finite = all(bool(torch.isfinite(v).all()) for v in weights.values())
        ok, seen = one_line_refusal(done, "non-finite")
        return ok and finite, f"{seen}; state.pt {'finite' if finite else 'NON-FINITE'}"

    @probe("2 a full disk never truncates an SDF silently (a writer that loses records)")
    def _(tmp: Path):
        from rdkit import Chem

        from elign.io.export import write_sdf
        from elign.io.files import FileWriteError

        path = tmp / "s.sdf"
        write_sdf(path, [methane()] * 8, ["H", "C"])
        before, real = path.read_bytes(), Chem.SDWriter

        class Losing:
            def __init__(self, name):
                self.inner, self.n = real(name), 0

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.inner.close()

            def SetKekulize(self, v):  # noqa: N802
                self.inner.SetKekulize(v)

            def write(self, mol):
                self.n += 1
                if self.n <= 2:
                    self.inner.write(mol)

        Chem.SDWriter = Losing
        try:
            write_sdf(path, [methane()] * 64, ["H", "C"])
            return False, "wrote 64 molecules without complaint"
        except FileWriteError as e:
            return path.read_bytes() == before and len(list(tmp.iterdir())) == 1, str(e)[:150]
        finally:
            Chem.SDWriter = real

    @probe("2 a full disk names the npz that failed and keeps the previous one")
    def _(tmp: Path):
        from elign.io.export import write_npz
        from elign.io.files import FileWriteError

        path = tmp / "m.npz"
        write_npz(path, [methane()], ["H", "C"])
        before, real = path.read_bytes(), np.savez_compressed

        def full(*a, **k):
            raise OSError(errno.ENOSPC, "No space left on device")

        np.savez_compressed = full
        try:
            write_npz(path, [methane()] * 3, ["H", "C"])
            return False, "no error"
        except FileWriteError as e:
            return path.read_bytes() == before and len(list(tmp.iterdir())) == 1, str(e)[:150]
        finally:
            np.savez_compressed = real

    @probe("3 a second writer on a run folder is refused")
    def _(tmp: Path):
        from elign.io.run_lock import RunLock

        data = tiny_data(tmp)
        with RunLock(tmp / "run"):
            done = cli("pretrain", "--data", str(data), "--out", "run", *TINY, "--max-steps", "2", cwd=tmp)
        ok, seen = one_line_refusal(done, "in use by process")
        return ok and not (tmp / "run" / "metrics.jsonl").exists(), seen

    @probe("4 a truncated samples cache and an empty DFT record are recomputed, the file named")
    def _(tmp: Path):
        import contextlib
        import io

        from elign.evaluation.referees import DFT_FIELDS, _cache_read
        from elign.evaluation.samples import _read_samples

        (tmp / "s.npz").write_bytes(b"PK\x03\x04 cut")
        (tmp / "k.json").write_text("[]")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            a, b = _read_samples(tmp / "s.npz", "key"), _cache_read(tmp, "k", DFT_FIELDS)
        lines = err.getvalue().strip().splitlines()
        return a is None and b is None and len(lines) == 2 and "damaged" in lines[1], " | ".join(lines)[:150]

    @probe("5 a size prior of 1e11 atoms is refused when the checkpoint loads")
    def _(tmp: Path):
        from safetensors.torch import load, save

        from elign.data.info import qm9_info
        from elign.io.checkpoints import save_checkpoint
        from elign.testing import tiny_model

        model, config = tiny_model()
        path = save_checkpoint(tmp / "m.safetensors", model, config)
        raw = path.read_bytes()
        meta = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
        cfg = json.loads(meta["config"])
        cfg["dataset"] = {**qm9_info().to_dict(), "max_n_nodes": 100_000_000_000}
        meta["config"] = json.dumps(cfg)
        path.write_bytes(save(load(raw), metadata=meta))
        done = cli("sample", "--checkpoint", str(path), "--num", "1", "--steps", "2", "--out", "x.npz", cwd=tmp)
        return one_line_refusal(done, "max_n_nodes=100000000000")

    @probe("5 a 10,000-atom molecule is refused before its pair tables")
    def _(tmp: Path):
        from elign.io.export import write_npz

        n = 10_000
        write_npz(tmp / "big.npz", [(np.random.default_rng(0).normal(size=(n, 3)) * 30, np.zeros(n, int))], ["C"])
        return one_line_refusal(cli("evaluate", "--samples", "big.npz", "--no-novelty", cwd=tmp), "10000 atoms")

    @probe("6 studio: an upload name with '/' keeps its uuid; a malformed upload is a banner")
    def _(tmp: Path):
        from elign.io.checkpoints import save_checkpoint
        from elign.testing import tiny_model
        from elign_studio.session import StudioSession
        from elign_studio.settings import StudioSettings

        model, config = tiny_model()
        good = save_checkpoint(tmp / "g.safetensors", model, config).read_bytes()
        s = StudioSession(StudioSettings(tmp / "data", force_field="synthetic"))
        try:
            label = s.add_upload("../../x/other.safetensors", good)
            names = [p.name for p in s.settings.folder("uploads").iterdir()]
            bad = s.add_upload("junk.safetensors", b"\x00" * 64)
            ok = label == "other" and len(names) == 1 and len(names[0]) > 20 and bad is None
            return ok and "junk.safetensors" in s.error, f"{names[0]}; banner: {s.error[:100]}"
        finally:
            s.close()

    @probe("7 score refuses H2 at 0.01 A and a CH4 scaled by 1e30; no 'nan' mean")
    def _(tmp: Path):
        from elign.io.export import write_npz

        x, t = methane()
        write_npz(tmp / "m.npz", [(x, t), (np.array([[0, 0, 0], [0.01, 0, 0]]), np.array([0, 0])),
                                  (x * 1e30, t)], ["H", "C"])  # fmt: skip
        done = cli("score", "m.npz", "--mlff", "synthetic", "--device", "cpu", cwd=tmp)
        rows = (tmp / "m.npz.scores.csv").read_text().splitlines()[1:]
        valid = [r.split(",")[5] for r in rows]
        ok = done.returncode == 0 and valid == ["1", "0", "0"] and "nan" not in done.stdout.lower()
        return ok, f"valid {valid}; " + done.stdout.strip().splitlines()[1][:100]

    @probe("8 --clip-grad -1, --epochs -1 and --guidance-scale nan are refused")
    def _(tmp: Path):
        data = tiny_data(tmp)
        a = one_line_refusal(cli("pretrain", "--data", str(data), "--out", "r", *TINY, "--clip-grad", "-1", cwd=tmp))
        b = one_line_refusal(cli("pretrain", "--data", str(data), "--out", "r", *TINY, "--epochs", "-1", cwd=tmp))
        c = one_line_refusal(
            cli(
                "sample",
                "--num",
                "1",
                "--steps",
                "2",
                "--guidance-mlff",
                "synthetic",
                "--guidance-scale",
                "nan",
                "--out",
                "g.sdf",
                cwd=tmp,
            )  # fmt: skip
        )
        return a[0] and b[0] and c[0], " | ".join(x[1][7:60] for x in (a, b, c))

    @probe("9 align --set lr=abc, a zero-byte npz and EDM args without nf are one line")
    def _(tmp: Path):
        (tmp / "empty.npz").write_bytes(b"")
        run = tmp / "edm"
        run.mkdir()
        (run / "args.pickle").write_bytes(pickle.dumps(argparse.Namespace(n_layers=2)))
        (run / "generative_model_ema.npy").write_bytes(b"x")
        a = one_line_refusal(cli("align", "--out", "a", "--set", "lr=abc", cwd=tmp), "lr='abc' must be float")
        b = one_line_refusal(cli("evaluate", "--samples", "empty.npz", cwd=tmp), "empty.npz")
        c = one_line_refusal(cli("sample", "--checkpoint", "edm", "--num", "1", "--out", "x.npz", cwd=tmp), "nf")
        return a[0] and b[0] and c[0], " | ".join(x[1][7:60] for x in (a, b, c))

    @probe("10 --device cpu under torchrun uses gloo on a CUDA machine")
    def _(tmp: Path):
        import torch

        from elign.training.distributed import process_group_backend

        real = torch.cuda.is_available
        torch.cuda.is_available = lambda: True
        try:
            backend = process_group_backend("cpu")
        finally:
            torch.cuda.is_available = real
        return backend == "gloo", f"backend {backend}"


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    run_probes()
    failed = [name for ok, name, _ in RESULTS if not ok]
    print(f"{len(RESULTS) - len(failed)} of {len(RESULTS)} probes hold" + (f"; failed: {failed}" if failed else ""))
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
