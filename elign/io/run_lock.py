"""One writer per run folder: an advisory lock held while a trainer writes there.

The lock is ``run.lock`` in the folder, locked with ``flock`` for as long as the process holds it and holding
who (pid, host, start time) for the message a second writer gets. The kernel drops the lock when its process
dies however it dies, so a lock left by a killed run is taken over by the next one without asking. The file
stays behind (unlinking it would let two processes lock two different files of the same name).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

__all__ = ["RunFolderLocked", "RunLock"]

LOCK_NAME = "run.lock"


class RunFolderLocked(OSError):
    """Another process is writing to this run folder."""


class RunLock:
    """``with RunLock(folder):`` -> the folder is this process's until the block ends (or the process does)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if self._fd is not None:  # already ours
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunFolderLocked(
                f"{self.folder} is in use by {holder}; stop that run first (two writers would interleave its "
                "checkpoints and log)"
            ) from None
        os.ftruncate(fd, 0)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"process {info['pid']} on {info['host']} (since {info['started']})"
    except (OSError, ValueError, KeyError):
        return "another process"
