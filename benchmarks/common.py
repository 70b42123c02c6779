"""Shared helpers for benchmark scripts: device description and appending to RESULTS.md."""

from __future__ import annotations

import datetime
import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s))"


def append_results(section: str, lines: list[str], bullets: bool = True) -> None:
    """Append a dated block under ``## section`` to benchmarks/RESULTS.md (each line a bullet, or as written)."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    block = [
        f"\n## {section} ({stamp}, torch {torch.__version__})\n",
        *[f"- {line}" if bullets else line for line in lines],
    ]
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEach block is appended by the script named in its heading.\n")
    with RESULTS.open("a") as f:
        f.write("\n".join(block) + "\n")
    print("\n".join(block))
