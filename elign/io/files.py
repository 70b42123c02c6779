"""The one writer of every file the project produces: nothing half-written, nothing silently short.

:func:`write_file` writes to a temporary file in the target's folder, flushes and fsyncs it, verifies it (its
size, and for formats with records a re-read count), and only then renames it into place. On any failure (a
full disk included: some writers, RDKit's among them, do not report failed writes, which the verification
catches) the temporary is removed, the previous file stays, and the error names the file and what was kept.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["FileWriteError", "atomic_write", "write_file"]

TEMP_SUFFIX = ".tmp"  # temporaries are ".<name>.<random>.tmp" beside their target


class FileWriteError(OSError):
    """A file could not be written whole; the previous file (if any) is unchanged."""


def write_file(
    path: str | os.PathLike,
    produce: Callable[[Path], None],
    verify: Callable[[Path], None] | None = None,
) -> Path:
    """``produce(tmp)`` writes the content to ``tmp``; ``verify(tmp)`` raises when it is not what was meant;
    then ``tmp`` replaces ``path``. -> ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        produce(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, Exception):
            kept = "the previous file is kept" if path.exists() else "nothing was written"
            raise FileWriteError(f"could not write {path} ({_reason(e)}); {kept}") from e
        raise
    return path


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`write_file`, verified by its size."""

    def produce(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    def verify(tmp: Path) -> None:
        if tmp.stat().st_size != len(data):
            raise OSError(f"wrote {tmp.stat().st_size} of {len(data)} bytes")

    write_file(path, produce, verify)


def _reason(e: Exception) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror  # "No space left on device", without the temporary's name
    return str(e) or type(e).__name__
