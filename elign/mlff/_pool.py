"""Process pools for CPU reference methods: per-task failures come back as strings, never raised."""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

__all__ = ["TaskResult", "run_pool", "run_with_deadline"]

TaskResult = tuple[Any, str | None]  # (value, error message)


def _safe_call(fn: Callable[[Any], Any], task: Any) -> TaskResult:
    try:
        return fn(task), None
    except Exception as err:  # reported per molecule, by design
        return None, f"{type(err).__name__}: {err}"


def run_pool(fn: Callable[[Any], Any], tasks: Sequence[Any], executor: ProcessPoolExecutor | None) -> list[TaskResult]:
    """Run ``fn`` over tasks in ``executor`` (in this process when it is None)."""
    if executor is None or len(tasks) <= 1:
        return [_safe_call(fn, t) for t in tasks]
    futures = [executor.submit(_safe_call, fn, t) for t in tasks]
    results: list[TaskResult] = []
    for fut in futures:
        try:
            results.append(fut.result())
        except Exception as err:  # a worker died (segfault in a native library, ...)
            results.append((None, f"worker failed: {type(err).__name__}: {err}"))
    return results


def _child(fn: Callable[[Any], Any], task: Any, conn: Any) -> None:
    try:
        conn.send((fn(task), None))
    except Exception as err:
        conn.send((None, f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"))
    finally:
        conn.close()


def run_with_deadline(
    fn: Callable[[Any], Any], tasks: Sequence[Any], n_workers: int, time_limit: float | None
) -> list[TaskResult]:
    """One spawned process per task, ``n_workers`` at a time; a task past ``time_limit`` s is killed."""
    ctx = mp.get_context("spawn")
    results: list[TaskResult | None] = [None] * len(tasks)
    pending = list(range(len(tasks)))
    running: dict[int, tuple[Any, Any, float]] = {}
    while pending or running:
        while pending and len(running) < max(1, n_workers):
            k = pending.pop(0)
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(fn, tasks[k], child), daemon=True)
            proc.start()
            child.close()
            running[k] = (proc, parent, time.monotonic())
        for k, (proc, conn, start) in list(running.items()):
            if conn.poll():
                try:
                    results[k] = conn.recv()
                except EOFError:
                    results[k] = (None, f"worker exited with code {proc.exitcode}")
                proc.join(timeout=5)
                del running[k]
            elif not proc.is_alive():
                results[k] = (None, f"worker exited with code {proc.exitcode} and no result")
                del running[k]
            elif time_limit is not None and time.monotonic() - start > time_limit:
                proc.kill()
                proc.join()
                results[k] = (None, f"time limit exceeded ({time_limit:g} s)")
                del running[k]
        time.sleep(0.02)
    return [r if r is not None else (None, "no result") for r in results]
