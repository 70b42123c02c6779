"""benchmarks/harness.py: alternated timing and the results writer (latest block per benchmark, history kept)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _harness():
    spec = importlib.util.spec_from_file_location("harness", ROOT / "benchmarks" / "harness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["harness"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_candidates_alternate_and_are_summarised() -> None:
    harness = _harness()
    calls: list[str] = []
    timings = harness.alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, report=False)
    assert calls == ["a", "b", "b", "a", "a", "b"]  # the order reversed every other repeat
    assert len(timings["a"].seconds) == 3 and timings["a"].minimum <= timings["a"].median


def test_results_keep_the_latest_block_of_each_benchmark_and_the_history_every_one(tmp_path, monkeypatch) -> None:
    harness = _harness()
    monkeypatch.setattr(harness, "RESULTS", tmp_path / "RESULTS.md")
    monkeypatch.setattr(harness, "HISTORY", tmp_path / "history.md")
    harness.write_results("Speed (benchmarks/a.py)", ["first"])
    harness.write_results("Cost (benchmarks/b.py)", ["only"])
    harness.write_results("Speed (benchmarks/a.py)", ["second"])
    results = (tmp_path / "RESULTS.md").read_text()
    assert "- second" in results and "- first" not in results and "- only" in results
    assert results.index("Speed") < results.index("Cost")  # a benchmark keeps its place
    history = (tmp_path / "history.md").read_text()
    assert history.index("- first") < history.index("- only") < history.index("- second")
