"""The benchmarks' one harness: candidates timed alternately in one run (a machine that slows down or speeds up
weighs on all alike), their medians and minima, the device, and the results writer.

    timings = alternate({"main": run_main, "today": run_today}, repeats=5)   # name -> Timing
    step = repeated(run_step, repeats=5, warmup=1)                           # one candidate -> Timing
    seconds, result = timed(run_once)
    write_results("Sampling cost (benchmarks/sampling_cost.py)", lines)

Spans that no single call encloses (a server's start up to an interactive page) take a :class:`Stopwatch`.

``RESULTS.md`` holds each benchmark's latest block (its heading's text before the date names it); every block
ever written is appended to ``history.md``.
"""

from __future__ import annotations

import datetime
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
HISTORY = HERE / "history.md"
RESULTS_HEADER = (
    "# Benchmark results\n\nThe latest block of each benchmark, written by the script its heading names; every "
    "earlier block is in [history.md](history.md).\n"
)
HISTORY_HEADER = "# Benchmark history\n\nEvery block the benchmarks wrote, oldest first.\n"


@dataclass
class Timing:
    """The seconds of each repeat of one candidate."""

    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def minimum(self) -> float:
        return min(self.seconds)

    @property
    def total(self) -> float:
        return sum(self.seconds)

    @property
    def mean(self) -> float:
        return self.total / len(self.seconds)


class Stopwatch:
    """Seconds since it was made: for spans that a single call does not enclose."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    clock = Stopwatch()
    result = fn()
    return clock.elapsed(), result


def alternate(
    candidates: dict[str, Callable[[], Any]], repeats: int, warmup: int = 0, report: bool = True
) -> dict[str, Timing]:
    """Time each candidate ``repeats`` times, their order reversed every other repeat, after ``warmup`` untimed
    rounds."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    out = {name: Timing() for name in candidates}
    for repeat in range(repeats):
        names = list(candidates) if repeat % 2 == 0 else list(reversed(candidates))
        for name in names:
            seconds, _ = timed(candidates[name])
            out[name].seconds.append(seconds)
            if report:
                print(f"{name}: {seconds:.3f} s", flush=True)
    return out


def repeated(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> Timing:
    """One candidate's Timing: ``repeats`` timed calls after ``warmup`` untimed ones."""
    return alternate({"": fn}, repeats, warmup, report=False)[""]


def repeated_for(fn: Callable[[], Any], budget_s: float, warmup: int = 0) -> Timing:
    """Timed calls of ``fn`` (after ``warmup`` untimed ones) until ``budget_s`` seconds have passed since the first;
    at least one."""
    for _ in range(warmup):
        fn()
    timing, clock = Timing(), Stopwatch()
    while not timing.seconds or clock.elapsed() <= budget_s:
        timing.seconds.append(timed(fn)[0])
    return timing


def paired_ratios(slow: Timing, fast: Timing) -> list[float]:
    """slow / fast repeat by repeat: two candidates alternated on the same inputs, paired by repeat."""
    return [s / f for s, f in zip(slow.seconds, fast.seconds, strict=True)]


def median_ratio(slow: Timing, fast: Timing) -> float:
    """The median of :func:`paired_ratios`."""
    return statistics.median(paired_ratios(slow, fast))


def medians(repeats: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over repeats that measured the same figures (a dict per repeat)."""
    return {key: statistics.median(r[key] for r in repeats) for key in repeats[0]}


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s))"


def _benchmark_key(heading: str) -> str:
    """'## Sampling cost (benchmarks/x.py) (2026-12-04 18:51, torch ...)' -> 'Sampling cost (benchmarks/x.py)'."""
    return re.sub(r"\s*\(\d{4}-\d{2}-\d{2}[^)]*\)\s*$", "", heading.removeprefix("## ").strip())


def split_blocks(text: str) -> tuple[str, list[str]]:
    """(the text before the first '## ' heading, the blocks each starting with one)."""
    parts = re.split(r"(?m)^(?=## )", text)
    return parts[0], [p for p in parts[1:] if p.strip()]


def latest_blocks(blocks: list[str]) -> list[str]:
    """The last block of each benchmark, in the order of their first appearance."""
    latest: dict[str, str] = {}
    for block in blocks:
        key = _benchmark_key(block.splitlines()[0])
        latest[key] = block
    return list(latest.values())


def write_results(section: str, lines: list[str], bullets: bool = True, write: bool = True) -> None:
    """A dated block under ``## section``, printed: appended to history.md, and in RESULTS.md in place of the
    benchmark's previous block (each line a bullet, or as written); only printed when not ``write``."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    heading = f"## {section} ({stamp}, torch {torch.__version__})\n"
    block = "\n".join([heading, *[f"- {x}" if bullets else x for x in lines]]) + "\n"
    print(block)
    if not write:
        return
    history = HISTORY.read_text() if HISTORY.exists() else HISTORY_HEADER
    HISTORY.write_text(history.rstrip("\n") + "\n\n" + block)
    _, blocks = split_blocks(RESULTS.read_text()) if RESULTS.exists() else ("", [])
    blocks = latest_blocks([*blocks, block])
    RESULTS.write_text(RESULTS_HEADER + "\n" + "\n".join(b.rstrip("\n") + "\n" for b in blocks))
