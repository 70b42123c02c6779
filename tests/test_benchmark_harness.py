"""benchmarks/harness.py: alternated timing and the results writer (latest block per benchmark, history kept)."""

from __future__ import annotations

import importlib.util
import sys
import time
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
    harness.write_results("Speed (benchmarks/a.py)", ["printed only"], write=False)
    results = (tmp_path / "RESULTS.md").read_text()
    assert "- second" in results and "- first" not in results and "- only" in results
    assert results.index("Speed") < results.index("Cost")  # a benchmark keeps its place
    history = (tmp_path / "history.md").read_text()
    assert history.index("- first") < history.index("- only") < history.index("- second")
    assert "printed only" not in results + history


def test_one_candidate_is_repeated_after_its_warm_up_and_a_budget_ends_the_calls() -> None:
    harness = _harness()
    calls: list[int] = []
    timing = harness.repeated(lambda: calls.append(1), 3, warmup=2)
    assert len(calls) == 5 and len(timing.seconds) == 3 and timing.total == sum(timing.seconds)
    assert len(harness.repeated_for(lambda: calls.append(1), 0.0).seconds) == 1  # at least one call
    timing = harness.repeated_for(lambda: time.sleep(0.005), 0.025)
    assert timing.total > 0.02 and timing.minimum <= timing.mean


def test_ratios_pair_the_repeats_and_medians_take_each_figure() -> None:
    harness = _harness()
    slow, fast = harness.Timing([2.0, 4.0, 9.0]), harness.Timing([1.0, 2.0, 3.0])
    assert harness.paired_ratios(slow, fast) == [2.0, 2.0, 3.0] and harness.median_ratio(slow, fast) == 2.0
    assert harness.medians([{"a": 1.0, "b": 5.0}, {"a": 3.0, "b": 1.0}, {"a": 2.0, "b": 2.0}]) == {"a": 2.0, "b": 2.0}
