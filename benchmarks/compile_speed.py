"""torch.compile (inductor, CPU) of the pretraining step at the shipped size, against eager, one thread.

Two ways to compile, each in a fresh process with an empty inductor cache:

- ``loss``: ``torch.compile`` of the whole loss (shapes specialised, dynamic after a recompile; what
  ``elign pretrain --compile`` did before it compiled the forward);
- ``forward``: ``elign pretrain --compile``: the network's padded forward (``EGNNDynamics.compile_padded_forward``)
  compiled with dynamic shapes, so that one graph serves every size group.

Each process trains the same QM9 batches of 64 (or synthetic ones) from the same seed. It first runs
``--first`` compiled steps from step 0 and reports their total time and the steps that took over a second
(compilations), then alternates blocks of 10 steps, compiled and eager, on the same batches (batches it has not
seen, so recompilations there count) and reports the medians. With ``--main``, the ``forward`` mode also
alternates a trainer of main's into those blocks, on the same batches (``benchmarks/frozen/egnn.py``: today's
trainer whose loss runs main's frozen forward), for a same-run ratio against main; that arm runs with today's
malloc tuning (one process), which ``cpu_speed.py``'s main has not, so its ratio understates the gain from main.

    python benchmarks/compile_speed.py [--modes loss forward] [--data runs/qm9_dense.npz] [--first 30]
        [--blocks 5] [--main]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import Timing, alternate, timed

HERE = Path(__file__).resolve().parent
SLOW_STEP_S = 1.0  # a step this long compiled something (an eager step at the shipped size takes about 0.2 s)
BLOCK = 10  # steps per timed block


def _trainer(out: str, data, compile_forward: bool, main: bool = False):
    """A trainer at the shipped size (4 x 64, batch 64); main's computes through main's frozen forward."""
    from frozen.egnn import FrozenForwardPretrainer

    from elign.training.pretrain import PretrainConfig, Pretrainer

    cfg = PretrainConfig(out_dir=out, hidden=64, n_layers=4, batch_size=64, compile=compile_forward)
    return (FrozenForwardPretrainer if main else Pretrainer)(cfg, data, device="cpu")


def _compiled_and_eager(trainer, mode: str):
    """(compiled, eager, use): the two versions of what ``mode`` compiles, and ``use(fn)`` to run the trainer with
    one of them."""
    import torch

    if mode == "loss":
        eager = trainer.loss_fn

        def use(fn):
            trainer.loss_fn = fn

        return torch.compile(eager), eager, use
    dynamics = trainer.model.dynamics
    compiled = dynamics._forward_padded  # the instance's compiled function; the class's is eager

    def use(fn):
        dynamics._forward_padded = fn

    return compiled, type(dynamics)._forward_padded.__get__(dynamics), use


def _first_steps(trainer, first: int) -> tuple[float, list[tuple[int, float]]]:
    """Seconds of the first ``first`` steps, and the steps over SLOW_STEP_S (compilations) with their seconds."""
    slow = []

    def run():
        for step in range(first):
            seconds, _ = timed(trainer.train_step)
            if seconds > SLOW_STEP_S:
                slow.append((step, round(seconds, 1)))

    first_s, _ = timed(run)
    return first_s, slow


def _block(trainer, first: int, install=lambda: None):
    """An arm: its k-th call runs BLOCK steps from step ``first + k * BLOCK`` (every arm the same batches)."""
    calls = itertools.count()

    def run():
        install()
        trainer.step = first + next(calls) * BLOCK
        for _ in range(BLOCK):
            trainer.train_step()

    return run


def child(mode: str, data: str | None, first: int, blocks: int, with_main: bool) -> dict:
    import torch

    from elign.data.dense import DenseDataset
    from elign.runtime import tune_malloc

    tune_malloc()
    torch.set_num_threads(1)
    dataset = DenseDataset.load(data) if data else DenseDataset.synthetic(2048, sizes=(9, 27))
    with tempfile.TemporaryDirectory() as out:
        trainer = _trainer(f"{out}/today", dataset, compile_forward=mode == "forward")
        compiled, eager, use = _compiled_and_eager(trainer, mode)
        use(compiled)
        first_s, slow = _first_steps(trainer, first)
        arms = {
            "compiled": _block(trainer, first, lambda: use(compiled)),
            "eager": _block(trainer, first, lambda: use(eager)),
        }
        if with_main and mode == "forward":
            main_trainer = _trainer(f"{out}/main", dataset, compile_forward=False, main=True)
            main_trainer.train_step()  # its first step's one-off costs, which the others paid in the first steps
            arms["main"] = _block(main_trainer, first)
        timings = alternate(arms, blocks, report=False)
    return {"first_s": first_s, "slow": slow, "times": {name: t.seconds for name, t in timings.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", nargs="+", choices=["loss", "forward"], default=["loss", "forward"])
    p.add_argument("--data", help="dense QM9 file from `elign data --dense` (else synthetic molecules)")
    p.add_argument("--first", type=int, default=30, help="compiled steps from the start, compilations included")
    p.add_argument("--blocks", type=int, default=5, help=f"alternated blocks of {BLOCK} steps after those")
    p.add_argument("--main", action="store_true", help="also alternate a trainer of main's (forward mode)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        result = child(args.child, args.data, args.first, args.blocks, args.main)
        Path(args.out).write_text(json.dumps(result))
        return
    from harness import write_results

    data = str(Path(args.data).resolve()) if args.data else None
    lines = [
        f"shipped size (4 x 64), batches of 64 from {'QM9' if data else 'synthetic molecules'}, one thread, each "
        "mode a fresh process with an empty inductor cache"
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes:
            out = Path(tmp) / f"{mode}.json"
            env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHINDUCTOR_CACHE_DIR": str(Path(tmp) / f"cache-{mode}")}
            cmd = [sys.executable, __file__, "--child", mode, "--out", str(out), "--first", str(args.first)]
            cmd += ["--blocks", str(args.blocks)] + (["--data", data] if data else [])
            cmd += ["--main"] if args.main else []
            subprocess.run(cmd, env=env, check=True, cwd=HERE)
            r = json.loads(out.read_text())
            c, e = (Timing(r["times"][k]).median for k in ("compiled", "eager"))
            slow = ", ".join(f"step {s}: {t} s" for s, t in r["slow"]) or "none"
            lines.append(
                f"`{mode}`: first {args.first} compiled steps {r['first_s']:.1f} s (steps over {SLOW_STEP_S:.0f} s: "
                f"{slow}); then {BLOCK} steps compiled {c:.3f} s against eager {e:.3f} s, {e / c:.2f}x (medians of "
                f"{args.blocks} alternated blocks; compiled "
                + ", ".join(f"{x:.2f}" for x in r["times"]["compiled"])
                + "; eager "
                + ", ".join(f"{x:.2f}" for x in r["times"]["eager"])
                + ")"
            )
            if "main" in r["times"]:
                m = Timing(r["times"]["main"]).median
                lines.append(
                    f"  main's forward in the same blocks: {m:.3f} s; main -> eager {m / e:.2f}x, main -> compiled "
                    f"{m / c:.2f}x ({BLOCK * 64 / m:.0f} -> {BLOCK * 64 / e:.0f} -> {BLOCK * 64 / c:.0f} molecules/s; "
                    "main " + ", ".join(f"{x:.2f}" for x in r["times"]["main"]) + ")"
                )
            print("\n".join(lines[-2:]), flush=True)
    write_results("torch.compile of the pretraining step (benchmarks/compile_speed.py)", lines)


if __name__ == "__main__":
    main()
