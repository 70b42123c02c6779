"""CPU speed against main, as same-run ratios of whole processes, one thread, medians of alternated repeats.

"main" is a process as main ran it, with the frozen references of benchmarks/frozen/: the network before size
groups and the fused pair kernels, FED-GRPO's update and potentials, AIMNet2 calls of whole padded batches, and
the studio's Sample and ``elign evaluate`` run with those; glibc's malloc as is. "today" is a process as the CLI
runs it now: today's code with ``elign.runtime.tune_malloc``. Each repeat starts a fresh child process per mode,
their order reversed every other repeat (benchmarks/harness.py); on a shared machine only ratios measured in one
run are honest. Figures:

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
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from harness import Timing, alternate, repeated, timed

HERE = Path(__file__).resolve().parent
LONG_SECTIONS = ("sample1000", "evaluate")  # measured --long-repeats times


@dataclass(frozen=True)
class Mode:
    main: bool  # main's frozen references (benchmarks/frozen/), else today's code
    tuned_malloc: bool
    bf16: bool  # bfloat16 autocast
    threads: int


MODES = {
    "main": Mode(main=True, tuned_malloc=False, bf16=False, threads=1),
    "today": Mode(main=False, tuned_malloc=True, bf16=False, threads=1),
    "today-untuned": Mode(main=False, tuned_malloc=False, bf16=False, threads=1),
    "today-bf16": Mode(main=False, tuned_malloc=True, bf16=True, threads=1),
    "today-2threads": Mode(main=False, tuned_malloc=True, bf16=False, threads=2),
}
BF16_SECTIONS = ("sample", "sample1000", "edm19", "edmqm9", "pretrain")  # also timed with --bf16
THREADS_SECTIONS = ("sample", "edm19", "pretrain", "align", "studio")  # also timed on two threads with --two-threads


# ----------------------------------------------------------------------------- children: one measurement each
def _shipped(main: bool):
    """The shipped backbone (computing through main's frozen network for main) and its config."""
    from elign.io.assets import shipped_backbone
    from elign.io.checkpoints import load_checkpoint

    model, config, _ = load_checkpoint(shipped_backbone())
    if main:
        from frozen.egnn import frozen_model

        model = frozen_model(model)
    return model.eval(), config


def _sample(steps: int, data: str | None, mode: Mode) -> tuple[float, dict]:
    from elign.diffusion.sampler import sample_molecules

    model, config = _shipped(mode.main)
    info = config.dataset_info()
    prior = info.size_probabilities()

    def draw(n_steps: int):
        return sample_molecules(
            model, 64, prior, steps=n_steps, seed=0, batch_size=64, atomic_numbers=info.atomic_numbers, bf16=mode.bf16
        )

    draw(10)  # warm-up
    seconds, mols = timed(lambda: draw(steps))
    return seconds, {
        "positions": mols.positions.numpy(),
        "types": mols.one_hot.argmax(-1).numpy(),
        "mask": mols.node_mask[..., 0].numpy(),
    }


def _edm(sizes_of: str, data: str | None, mode: Mode) -> tuple[float, dict]:
    import torch

    from elign.diffusion.sampler import node_mask_from_sizes
    from elign.models.config import ModelConfig
    from elign.models.factory import build_model
    from elign.precision import bf16_autocast

    if sizes_of == "19":
        sizes = torch.full((64,), 19)
    else:
        prior = _shipped(main=False)[1].dataset_info().size_probabilities()
        sizes = torch.multinomial(prior.double(), 64, replacement=True, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=256, n_layers=9)).eval()
    if mode.main:
        from frozen.egnn import frozen_model

        model = frozen_model(model)
    mask = node_mask_from_sizes(sizes)
    z = model.scheduler.sample_noise(mask, torch.Generator().manual_seed(0))
    s, t = torch.full((64, 1), 0.499), torch.full((64, 1), 0.5)

    def step():
        model.scheduler.step(z, model.predict_eps(z, t, mask), s, t, mask, torch.Generator().manual_seed(1))

    with torch.inference_mode(), bf16_autocast("cpu", mode.bf16):
        return repeated(step, 3, warmup=1).median, {}


def _pretrain(data: str | None, mode: Mode) -> tuple[float, dict]:
    from frozen.egnn import FrozenForwardPretrainer

    from elign.data.dense import DenseDataset
    from elign.training.pretrain import PretrainConfig, Pretrainer

    dataset = DenseDataset.load(data) if data else DenseDataset.synthetic(2048, sizes=(9, 27))
    config = _shipped(main=False)[1]
    with tempfile.TemporaryDirectory() as out:
        cfg = PretrainConfig(
            out_dir=out, hidden=config.hidden, n_layers=config.n_layers, batch_size=64, cpu_bf16=mode.bf16
        )
        trainer = (FrozenForwardPretrainer if mode.main else Pretrainer)(cfg, dataset, device="cpu")
        trainer.train_step()  # warm-up
        seconds, _ = timed(lambda: [trainer.train_step() for _ in range(10)])
        return seconds, {}


ALIGN_ITERATIONS = 4  # timed after a warm-up; each draws its own two prompt sizes from the QM9 prior


def _align(data: str | None, mode: Mode) -> tuple[float, dict]:
    from frozen.align import FrozenFedGrpoTrainer

    from elign.rl.config import AlignConfig
    from elign.rl.trainer import FedGrpoTrainer

    with tempfile.TemporaryDirectory() as out:
        cfg = AlignConfig.preset("cpu-demo", out_dir=out, device="cpu", iterations=ALIGN_ITERATIONS + 1, eval_every=0)
        trainer = (FrozenFedGrpoTrainer if mode.main else FedGrpoTrainer)(cfg)
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


def _studio_sampler(model, config, mlff: str, main: bool):
    """sample(seed, steps): the studio's Sample of one molecule with every frame scored; main's through a copy
    that takes main's force field (the studio loads its own by name)."""
    from frozen.align import force_field
    from frozen.studio import sample_and_score

    from elign_studio.sampling import sample_set, score_frames

    if main:
        ff = force_field(mlff)
        return lambda seed, steps: sample_and_score(model, config, ff, "backbone", seed=seed, num=1, steps=steps)
    return lambda seed, steps: score_frames(
        sample_set(model, config, "backbone", seed=seed, num=1, steps=steps, force_field_name=mlff)
    )


def _studio(data: str | None, mode: Mode) -> tuple[float, dict]:
    from elign.io.assets import default_mlff

    model, config = _shipped(mode.main)
    mlff = default_mlff()
    sample = _studio_sampler(model, config, mlff, mode.main)
    sample(0, 10)  # warm-up
    seconds, _ = timed(lambda: sample(1, 100))
    return seconds, {"mlff": mlff}


EVALUATE_ARGS = (
    "--checkpoint backbone --num 1000 --steps 100 --seed 0 --batch-size 125 --device cpu --mlff aimnet2"
    " --independent none --no-progress"
)


def _evaluate(data: str | None, mode: Mode) -> tuple[float, dict]:
    from frozen.evaluate import evaluate as main_evaluate

    from elign.cli import build_parser

    with tempfile.TemporaryDirectory() as out:
        args = build_parser().parse_args(["evaluate", *EVALUATE_ARGS.split(), "--out", f"{out}/report"])
        # today's: not elign.cli.main, which would tune malloc in main's process too; main's: a copy that takes
        # main's network and force field (the evaluation loads both by name)
        run = main_evaluate if mode.main else args.func
        seconds, _ = timed(lambda: run(args))
        return seconds, {}


MEASURE = {
    "sample": lambda data, mode: _sample(100, data, mode),
    "sample1000": lambda data, mode: _sample(1000, data, mode),
    "edm19": lambda data, mode: _edm("19", data, mode),
    "edmqm9": lambda data, mode: _edm("qm9", data, mode),
    "pretrain": _pretrain,
    "align": _align,
    "studio": _studio,
    "evaluate": _evaluate,
}


def child_main(section: str, mode_name: str, data: str | None, out: str) -> None:
    mode = MODES[mode_name]
    if mode.tuned_malloc:
        from elign.runtime import tune_malloc

        tune_malloc()
    import torch

    torch.set_num_threads(mode.threads)
    seconds, extra = MEASURE[section](data, mode)
    arrays = {k: v for k, v in extra.items() if isinstance(v, np.ndarray)}
    if arrays:
        np.savez(out + ".npz", **arrays)
    Path(out).write_text(json.dumps({"seconds": seconds, **{k: v for k, v in extra.items() if k not in arrays}}))


# ----------------------------------------------------------------------------- parent: alternate, report
def run_child(section: str, mode: str, data: str | None, tmp: Path, tag: str) -> dict:
    out = tmp / f"{section}-{mode}-{tag}.json"
    env = {**os.environ, "ELIGN_MALLOC_TUNING": "1", "OMP_NUM_THREADS": str(MODES[mode].threads)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", section, mode, "--out", str(out)]
    subprocess.run(cmd + (["--data", data] if data else []), env=env, check=True, cwd=HERE)
    result = json.loads(out.read_text())
    npz = Path(str(out) + ".npz")
    if npz.exists():
        result["arrays"] = dict(np.load(npz))
    return result


def alternated_children(section: str, modes: list[str], repeats: int, data: str | None, tmp: Path) -> dict:
    """mode -> each repeat's child result, a fresh process per mode and repeat, alternated."""
    runs: dict[str, list[dict]] = {m: [] for m in modes}

    def child(mode: str):
        return lambda: runs[mode].append(run_child(section, mode, data, tmp, str(len(runs[mode]))))

    alternate({m: child(m) for m in modes}, repeats, report=False)
    return runs


def ratio(before: Timing, after: Timing) -> str:
    b, a = before.median, after.median
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


def threads_line(sec: dict[str, Timing]) -> list[str]:
    if "today-2threads" not in sec:
        return []
    return [f"  today on two threads: one thread -> two {ratio(sec['today'], sec['today-2threads'])}"]


def _sample_lines(section: str, runs: dict[str, list[dict]], sec: dict[str, Timing], tail: str) -> list[str]:
    steps = 1000 if section == "sample1000" else 100
    b, a = sec["main"].median, sec["today"].median
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
            f"({64 / sec['today-bf16'].median:.1f} molecules/s)",
            f"  same seed, {steps} steps, today vs today --bf16: {_difference(first_today, first_bf16)}",
        ]
    return lines


def _edm_lines(section: str, sec: dict[str, Timing], tail: str) -> list[str]:
    label = "64 molecules of 19 atoms" if section == "edm19" else "64 molecules of QM9 sizes"
    lines = [f"one reverse step, EDM size (9 x 256), {label}: main {ratio(sec['main'], sec['today'])} {tail}"]
    if "today-bf16" in sec:
        lines.append(f"  with bf16 autocast: main {ratio(sec['main'], sec['today-bf16'])}")
    if "today-untuned" in sec:
        untuned = ratio(sec["today-untuned"], sec["today"])
        lines.append(f"  of which the malloc tuning: today's forward untuned -> tuned {untuned}")
    return lines


def _pretrain_lines(sec: dict[str, Timing], tail: str) -> list[str]:
    b, a = sec["main"].median, sec["today"].median
    lines = [
        f"pretraining, 10 steps of 64 molecules at the shipped size: main {ratio(sec['main'], sec['today'])} "
        f"({640 / b:.0f} -> {640 / a:.0f} molecules/s) {tail}"
    ]
    if "today-bf16" in sec:
        lines.append(
            f"  with --cpu-bf16: main {ratio(sec['main'], sec['today-bf16'])} "
            f"({640 / sec['today-bf16'].median:.0f} molecules/s)"
        )
    return lines


def _align_lines(runs: dict[str, list[dict]], sec: dict[str, Timing], tail: str) -> list[str]:
    def part(mode: str, figure) -> float:
        return Timing([figure(r) for r in runs[mode]]).median

    parts = []
    for k in ("rollout", "reward", "update"):
        b, a = (part(m, lambda r, k=k: r["split"][k]) for m in ("main", "today"))
        parts.append(f"{k} {b:.2f} -> {a:.2f} s ({b / a:.2f}x)")
    each = []
    for i, sizes in enumerate(runs["today"][0]["sizes"]):
        b, a = (part(m, lambda r, i=i: r["per_iteration"][i]) for m in ("main", "today"))
        each.append(f"{i + 1} (sizes {sizes[0]}, {sizes[1]}) {b:.2f} -> {a:.2f} s ({b / a:.2f}x)")
    return [
        f"cpu-demo FED-GRPO iteration ({runs['today'][0]['shape']}), mean of iterations 1-{len(each)}: "
        f"main {ratio(sec['main'], sec['today'])}; {', '.join(parts)} {tail}",
        f"  by iteration: {'; '.join(each)}",
    ]


def report(section: str, runs: dict[str, list[dict]], repeats: int) -> list[str]:
    sec = {m: Timing([r["seconds"] for r in rs]) for m, rs in runs.items()}
    tail = f"(medians of {repeats} alternated whole processes)"
    if section.startswith("sample"):
        lines = _sample_lines(section, runs, sec, tail)
    elif section.startswith("edm"):
        lines = _edm_lines(section, sec, tail)
    elif section == "pretrain":
        lines = _pretrain_lines(sec, tail)
    elif section == "align":
        lines = _align_lines(runs, sec, tail)
    elif section == "evaluate":
        lines = [f"elign evaluate {EVALUATE_ARGS}: main {ratio(sec['main'], sec['today'])} {tail}"]
    elif section == "studio":
        lines = [
            f"studio Sample (one molecule, 100 steps, 101 frames scored by {runs['today'][0]['mlff']}): "
            f"main {ratio(sec['main'], sec['today'])} {tail}"
        ]
    else:
        raise ValueError(section)
    return lines + threads_line(sec)


def section_modes(section: str, args: argparse.Namespace) -> list[str]:
    modes = ["main", "today", "today-untuned"] if section == "edm19" else ["main", "today"]
    modes += ["today-bf16"] if args.bf16 and section in BF16_SECTIONS else []
    modes += ["today-2threads"] if args.two_threads and section in THREADS_SECTIONS else []
    return modes


def parse_args() -> argparse.Namespace:
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
    return p.parse_args()


def main() -> None:
    args = parse_args()
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
            runs = alternated_children(section, section_modes(section, args), repeats, args.data, Path(tmp))
            for line in report(section, runs, repeats):
                print(line, flush=True)
                lines.append(line)
    write_results("CPU speed against main (benchmarks/cpu_speed.py)", lines)


if __name__ == "__main__":
    main()
