"""CPU speed against main, as same-run ratios of whole processes, one thread, medians of alternated repeats.

"main" is a process as main ran it: the frozen forward (benchmarks/frozen_egnn.py), FED-GRPO update and
potentials and AIMNet2 calls of whole padded batches (benchmarks/frozen_align.py), with glibc's malloc as is.
"today" is a process as the CLI runs it now: today's code with ``elign.runtime.tune_malloc``. Each repeat starts
a fresh child process per mode, main first; on a shared machine only ratios measured in one run are honest.
Figures:

- ``sample``, ``sample1000``: the shipped backbone sampling 64 molecules (sizes from its prior, seed 0) at 100
  and 1000 steps, molecules/s; and how far apart the two modes' molecules are for the same seed.
- with ``--bf16``, a third mode "today-bf16" for sampling, the EDM-size step and pretraining: today's code with
  bfloat16 autocast (``elign sample --bf16``, ``elign pretrain --cpu-bf16``; CPUs with AVX512-BF16 or AMX),
  and how far its molecules are from float32's for the same seed.
- ``edm19``, ``edmqm9``: one reverse step of the EDM-size network (9 x 256, random weights) for 64 molecules
  of 19 atoms, and for 64 of QM9 sizes; ``edm19`` also times today's forward without the malloc tuning.
- ``pretrain``: 10 `elign pretrain` steps at the shipped size (batch 64, QM9 with --data, else synthetic).
- ``align``: cpu-demo FED-GRPO iterations 1-4 on the shipped backbone (after iteration 0 as a warm-up), their
  mean and each alone (each has its own two prompt sizes): rollout / reward / update.
- ``studio``: the studio's Sample without the browser: one molecule, 100 steps, every frame scored by the
  default force field (``elign_studio.sampling.sample_set``).
- ``evaluate``: ``elign evaluate`` of the shipped backbone, 1,000 molecules at 100 steps, AIMNet2 forces, no
  independent field (``EVALUATE_ARGS``); with ``--long-repeats`` pairs.
- with ``--two-threads``, a mode "today-2threads" for the sections that can use a second core: today's code on
  two threads (with the second core otherwise idle, else the figure measures the contention).

    python benchmarks/cpu_speed.py [--sections ...] [--repeats 5] [--long-repeats 3] [--data runs/qm9_dense.npz]
        [--bf16] [--two-threads]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LONG_SECTIONS = ("sample1000", "evaluate")  # measured --long-repeats times
MODES = {  # frozen?, malloc tuned?, bf16 autocast?, threads
    "main": (True, False, False, 1),
    "today": (False, True, False, 1),
    "today-untuned": (False, False, False, 1),
    "today-bf16": (False, True, True, 1),
    "today-2threads": (False, True, False, 2),
}
BF16_SECTIONS = ("sample", "sample1000", "edm19", "edmqm9", "pretrain")  # also timed with --bf16
THREADS_SECTIONS = ("sample", "edm19", "pretrain", "align", "studio")  # also timed on two threads with --two-threads


# ----------------------------------------------------------------------------- children: one measurement each
def _shipped():
    from elign.io.assets import shipped_backbone
    from elign.io.checkpoints import load_checkpoint

    model, config, _ = load_checkpoint(shipped_backbone())
    return model.eval(), config


def _sample(steps: int, data: str | None, bf16: bool) -> tuple[float, dict]:
    from elign.diffusion.sampler import sample_molecules

    model, config = _shipped()
    info = config.dataset_info()
    prior = info.size_probabilities()

    def draw(n_steps: int):
        return sample_molecules(
            model, 64, prior, steps=n_steps, seed=0, batch_size=64, atomic_numbers=info.atomic_numbers, bf16=bf16
        )

    draw(10)  # warm-up
    t0 = time.perf_counter()
    mols = draw(steps)
    seconds = time.perf_counter() - t0
    return seconds, {
        "positions": mols.positions.numpy(),
        "types": mols.one_hot.argmax(-1).numpy(),
        "mask": mols.node_mask[..., 0].numpy(),
    }


def _edm(sizes_of: str, data: str | None, bf16: bool) -> tuple[float, dict]:
    import torch

    from elign.diffusion.sampler import node_mask_from_sizes
    from elign.models.config import ModelConfig
    from elign.models.factory import build_model
    from elign.precision import bf16_autocast

    if sizes_of == "19":
        sizes = torch.full((64,), 19)
    else:
        prior = _shipped()[1].dataset_info().size_probabilities()
        sizes = torch.multinomial(prior.double(), 64, replacement=True, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=256, n_layers=9)).eval()
    mask = node_mask_from_sizes(sizes)
    z = model.scheduler.sample_noise(mask, torch.Generator().manual_seed(0))
    s, t = torch.full((64, 1), 0.499), torch.full((64, 1), 0.5)
    times = []
    with torch.inference_mode(), bf16_autocast("cpu", bf16):
        for _ in range(4):  # a warm-up, then the median of three
            t0 = time.perf_counter()
            model.scheduler.step(z, model.predict_eps(z, t, mask), s, t, mask, torch.Generator().manual_seed(1))
            times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]), {}


def _pretrain(data: str | None, bf16: bool) -> tuple[float, dict]:
    from elign.data.dense import DenseDataset
    from elign.training.pretrain import PretrainConfig, Pretrainer

    dataset = DenseDataset.load(data) if data else DenseDataset.synthetic(2048, sizes=(9, 27))
    config = _shipped()[1]
    with tempfile.TemporaryDirectory() as out:
        cfg = PretrainConfig(out_dir=out, hidden=config.hidden, n_layers=config.n_layers, batch_size=64, cpu_bf16=bf16)
        trainer = Pretrainer(cfg, dataset, device="cpu")
        trainer.train_step()  # warm-up
        t0 = time.perf_counter()
        for _ in range(10):
            trainer.train_step()
        return time.perf_counter() - t0, {}


ALIGN_ITERATIONS = 4  # timed after a warm-up; each draws its own two prompt sizes from the QM9 prior


def _align(data: str | None, bf16: bool) -> tuple[float, dict]:
    from elign.rl.config import AlignConfig
    from elign.rl.trainer import FedGrpoTrainer

    with tempfile.TemporaryDirectory() as out:
        cfg = AlignConfig.preset("cpu-demo", out_dir=out, device="cpu", iterations=ALIGN_ITERATIONS + 1, eval_every=0)
        trainer = FedGrpoTrainer(cfg)
        trainer.run_iteration()  # warm-up (the force field's first call)
        rows = [trainer.run_iteration() for _ in range(ALIGN_ITERATIONS)]
        sizes = [trainer.prompts(i)[0].tolist() for i in range(1, ALIGN_ITERATIONS + 1)]
    split = {k: sum(row[f"time_{k}"] for row in rows) / len(rows) for k in ("rollout", "reward", "update")}
    return sum(row["time_iteration"] for row in rows) / len(rows), {
        "split": split,
        "per_iteration": [row["time_iteration"] for row in rows],
        "sizes": sizes,
        "shape": f"{cfg.prompts} x {cfg.group_size} rollouts, {cfg.steps} steps, reward {trainer.ff!r}",
    }


def _studio(data: str | None, bf16: bool) -> tuple[float, dict]:
    from elign.io.assets import default_mlff
    from elign_studio.sampling import sample_set, score_frames

    model, config = _shipped()
    mlff = default_mlff()
    score_frames(sample_set(model, config, "backbone", seed=0, num=1, steps=10, force_field_name=mlff))  # warm-up
    t0 = time.perf_counter()
    score_frames(sample_set(model, config, "backbone", seed=1, num=1, steps=100, force_field_name=mlff))
    return time.perf_counter() - t0, {"mlff": mlff}


EVALUATE_ARGS = (
    "--checkpoint backbone --num 1000 --steps 100 --seed 0 --batch-size 125 --device cpu --mlff aimnet2"
    " --independent none --no-progress"
)


def _evaluate(data: str | None, bf16: bool) -> tuple[float, dict]:
    from elign.cli import build_parser

    with tempfile.TemporaryDirectory() as out:
        args = build_parser().parse_args(["evaluate", *EVALUATE_ARGS.split(), "--out", f"{out}/report"])
        t0 = time.perf_counter()
        args.func(args)  # not elign.cli.main, which would tune malloc in main's process too
        return time.perf_counter() - t0, {}


MEASURE = {
    "sample": lambda data, bf16: _sample(100, data, bf16),
    "sample1000": lambda data, bf16: _sample(1000, data, bf16),
    "edm19": lambda data, bf16: _edm("19", data, bf16),
    "edmqm9": lambda data, bf16: _edm("qm9", data, bf16),
    "pretrain": _pretrain,
    "align": _align,
    "studio": _studio,
    "evaluate": _evaluate,
}


def child_main(section: str, mode: str, data: str | None, out: str) -> None:
    frozen, tuned, bf16, threads = MODES[mode]
    if tuned:
        from elign.runtime import tune_malloc

        tune_malloc()
    import torch

    torch.set_num_threads(threads)
    from frozen_align import use_frozen_alignment, use_whole_batch_aimnet2
    from frozen_egnn import use_frozen_forward

    with contextlib.ExitStack() as frozen_code:
        if frozen:
            frozen_code.enter_context(use_frozen_forward())
            frozen_code.enter_context(use_frozen_alignment())
            frozen_code.enter_context(use_whole_batch_aimnet2())
        seconds, extra = MEASURE[section](data, bf16)
    arrays = {k: v for k, v in extra.items() if isinstance(v, np.ndarray)}
    if arrays:
        np.savez(out + ".npz", **arrays)
    Path(out).write_text(json.dumps({"seconds": seconds, **{k: v for k, v in extra.items() if k not in arrays}}))


# ----------------------------------------------------------------------------- parent: alternate, report
def run_child(section: str, mode: str, data: str | None, tmp: Path, tag: str) -> dict:
    out = tmp / f"{section}-{mode}-{tag}.json"
    env = {**os.environ, "ELIGN_MALLOC_TUNING": "1", "OMP_NUM_THREADS": str(MODES[mode][3])}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", section, mode, "--out", str(out)]
    subprocess.run(cmd + (["--data", data] if data else []), env=env, check=True, cwd=HERE)
    result = json.loads(out.read_text())
    npz = Path(str(out) + ".npz")
    if npz.exists():
        result["arrays"] = dict(np.load(npz))
    return result


def ratio(before: list[float], after: list[float]) -> str:
    b, a = statistics.median(before), statistics.median(after)
    return f"{b:.3f} s -> {a:.3f} s, ratio {b / a:.2f}x"


def _difference(first: dict, second: dict) -> str:
    """How far apart two modes' molecules of the same seed are (arrays of one child each)."""
    real = first["mask"] > 0
    dx = np.linalg.norm(first["positions"] - second["positions"], axis=-1)[real]
    differ = int((first["types"] != second["types"])[real].sum())
    return (
        f"largest atom displacement {dx.max():.2e} A (median {np.median(dx):.1e} A), atom types differing "
        f"{differ} of {int(real.sum())}"
    )


def threads_line(runs: dict[str, list[dict]]) -> list[str]:
    if "today-2threads" not in runs:
        return []
    one, two = ([r["seconds"] for r in runs[m]] for m in ("today", "today-2threads"))
    return [f"  today on two threads: one thread -> two {ratio(one, two)}"]


def report(section: str, runs: dict[str, list[dict]], repeats: int) -> list[str]:
    sec = {m: [r["seconds"] for r in rs] for m, rs in runs.items()}
    tail = f"(medians of {repeats} alternated whole processes)"
    if section.startswith("sample"):
        steps = 1000 if section == "sample1000" else 100
        b, a = statistics.median(sec["main"]), statistics.median(sec["today"])
        first_main, first_today = runs["main"][0]["arrays"], runs["today"][0]["arrays"]
        lines = [
            f"sampling 64 molecules, {steps} steps, shipped backbone: main {ratio(sec['main'], sec['today'])} "
            f"({64 / b:.1f} -> {64 / a:.1f} molecules/s) {tail}",
            f"same seed, {steps} steps, main vs today: {_difference(first_main, first_today)}",
        ]
        if "today-bf16" in sec:
            first_bf16 = runs["today-bf16"][0]["arrays"]
            lines += [
                f"  with --bf16: main {ratio(sec['main'], sec['today-bf16'])} "
                f"({64 / statistics.median(sec['today-bf16']):.1f} molecules/s)",
                f"  same seed, {steps} steps, today vs today --bf16: {_difference(first_today, first_bf16)}",
            ]
        return lines
    if section.startswith("edm"):
        label = "64 molecules of 19 atoms" if section == "edm19" else "64 molecules of QM9 sizes"
        lines = [f"one reverse step, EDM size (9 x 256), {label}: main {ratio(sec['main'], sec['today'])} {tail}"]
        if "today-bf16" in sec:
            lines.append(f"  with bf16 autocast: main {ratio(sec['main'], sec['today-bf16'])}")
        if "today-untuned" in sec:
            lines.append(
                f"  of which the malloc tuning: today's forward untuned -> tuned "
                f"{ratio(sec['today-untuned'], sec['today'])}"
            )
        return lines
    if section == "pretrain":
        b, a = statistics.median(sec["main"]), statistics.median(sec["today"])
        lines = [
            f"pretraining, 10 steps of 64 molecules at the shipped size: main {ratio(sec['main'], sec['today'])} "
            f"({640 / b:.0f} -> {640 / a:.0f} molecules/s) {tail}"
        ]
        if "today-bf16" in sec:
            lines.append(
                f"  with --cpu-bf16: main {ratio(sec['main'], sec['today-bf16'])} "
                f"({640 / statistics.median(sec['today-bf16']):.0f} molecules/s)"
            )
        return lines
    if section == "align":
        parts = []
        for k in ("rollout", "reward", "update"):
            b = statistics.median(r["split"][k] for r in runs["main"])
            a = statistics.median(r["split"][k] for r in runs["today"])
            parts.append(f"{k} {b:.2f} -> {a:.2f} s ({b / a:.2f}x)")
        each = []
        for i, sizes in enumerate(runs["today"][0]["sizes"]):
            b = statistics.median(r["per_iteration"][i] for r in runs["main"])
            a = statistics.median(r["per_iteration"][i] for r in runs["today"])
            each.append(f"{i + 1} (sizes {sizes[0]}, {sizes[1]}) {b:.2f} -> {a:.2f} s ({b / a:.2f}x)")
        return [
            f"cpu-demo FED-GRPO iteration ({runs['today'][0]['shape']}), mean of iterations 1-{len(each)}: "
            f"main {ratio(sec['main'], sec['today'])}; {', '.join(parts)} {tail}",
            f"  by iteration: {'; '.join(each)}",
        ]
    if section == "evaluate":
        return [f"elign evaluate {EVALUATE_ARGS}: main {ratio(sec['main'], sec['today'])} {tail}"]
    if section == "studio":
        return [
            f"studio Sample (one molecule, 100 steps, 101 frames scored by {runs['today'][0]['mlff']}): "
            f"main {ratio(sec['main'], sec['today'])} {tail}"
        ]
    raise ValueError(section)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", nargs="+", choices=list(MEASURE), default=list(MEASURE))
    p.add_argument("--repeats", type=int, default=5, help="alternated process pairs per figure (medians)")
    p.add_argument("--long-repeats", type=int, default=3, help="pairs for sample1000 and evaluate")
    p.add_argument("--data", help="dense QM9 file from `elign data --dense` for the pretraining figure")
    p.add_argument("--bf16", action="store_true", help=f"also time {', '.join(BF16_SECTIONS)} with bf16 autocast")
    p.add_argument(
        "--two-threads",
        action="store_true",
        help=f"also time today's code on two threads ({', '.join(THREADS_SECTIONS)}); needs both cores free",
    )
    p.add_argument("--child", nargs=2, metavar=("SECTION", "MODE"), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child_main(*args.child, args.data, args.out)
        return
    import platform

    from harness import write_results

    if args.data:  # the children run in benchmarks/
        args.data = str(Path(args.data).resolve())

    lines = [f"device: CPU ({platform.processor() or platform.machine()}), one thread per child process"]
    with tempfile.TemporaryDirectory() as tmp:
        for section in args.sections:
            repeats = args.long_repeats if section in LONG_SECTIONS else args.repeats
            modes = ["main", "today", "today-untuned"] if section == "edm19" else ["main", "today"]
            modes += ["today-bf16"] if args.bf16 and section in BF16_SECTIONS else []
            modes += ["today-2threads"] if args.two_threads and section in THREADS_SECTIONS else []
            runs: dict[str, list[dict]] = {m: [] for m in modes}
            for r in range(repeats):
                for mode in modes:
                    runs[mode].append(run_child(section, mode, args.data, Path(tmp), str(r)))
            for line in report(section, runs, repeats) + threads_line(runs):
                print(line, flush=True)
                lines.append(line)
    write_results("CPU speed against main (benchmarks/cpu_speed.py)", lines)


if __name__ == "__main__":
    main()
