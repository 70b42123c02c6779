"""The benchmarks' one harness: candidates timed alternately in one run (a machine that slows down or speeds up
weighs on all alike), their medians and minima, the device, and the results writer.

    timings = alternate({"main": run_main, "today": run_today}, repeats=5)   # name -> Timing
    write_results("Sampling cost (benchmarks/sampling_cost.py)", lines)

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


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


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


def write_results(section: str, lines: list[str], bullets: bool = True) -> None:
    """A dated block under ``## section``: appended to history.md, and in RESULTS.md in place of the benchmark's
    previous block (each line a bullet, or as written)."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    heading = f"## {section} ({stamp}, torch {torch.__version__})\n"
    block = "\n".join([heading, *[f"- {x}" if bullets else x for x in lines]]) + "\n"
    history = HISTORY.read_text() if HISTORY.exists() else HISTORY_HEADER
    HISTORY.write_text(history.rstrip("\n") + "\n\n" + block)
    _, blocks = split_blocks(RESULTS.read_text()) if RESULTS.exists() else ("", [])
    blocks = latest_blocks([*blocks, block])
    RESULTS.write_text(RESULTS_HEADER + "\n" + "\n".join(b.rstrip("\n") + "\n" for b in blocks))
    print(block)
