"""Process-wide CPU settings: the allocator, and how many threads a process uses.

Allocator: it makes the network faster without changing what it computes.

glibc returns large freed blocks to the system at once (blocks above its mmap threshold, and the heap's
top above its trim threshold), so a forward that allocates pair tensors of tens of MB pays page faults
for every one of them on every step. Keeping freed memory in the process removes that cost
(``benchmarks/cpu_speed.py --sections allocator`` measures it), at the price of holding the peak memory
until the process ends. ``ELIGN_MALLOC_TUNING=0`` leaves the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["set_threads", "tune_malloc"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters of glibc's malloc.h
_KEEP_BYTES = 1 << 30  # blocks below this come from the heap and stay there once freed


def tune_malloc() -> bool:
    """Keep freed memory of up to 1 GiB blocks in the process (glibc on Linux); True if applied."""
    if os.environ.get("ELIGN_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))


def set_threads(n: int) -> None:
    """Use n CPU threads: torch's intra-op threads and, unless TORCHINDUCTOR_COMPILE_THREADS says otherwise,
    torch.compile's compile workers (by default one per core, which would take the cores of other jobs)."""
    import torch

    torch.set_num_threads(n)
    if "TORCHINDUCTOR_COMPILE_THREADS" not in os.environ:
        os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = str(n)  # read when inductor's config is first imported
        inductor_config = sys.modules.get("torch._inductor.config")
        if inductor_config is not None:  # already imported: set it there too
            inductor_config.compile_threads = n
