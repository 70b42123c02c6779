"""Where the studio may read and write: folders fixed at start-up, and a guard for every user path.

``ELIGN_STUDIO_DATA`` (default ``./studio-data``) holds ``runs/``, ``exports/`` and ``uploads/``; the
studio writes only there. It reads checkpoints from that folder, the shipped assets folder
(:func:`elign.io.assets.assets_dir`) and any folder listed in ``ELIGN_STUDIO_READ`` (``os.pathsep``
separated). ``ELIGN_STUDIO_FORCE_FIELD`` names the default force field; ``ELIGN_STUDIO_TRAINER`` and
``ELIGN_STUDIO_CONFIG`` may replace the trainer and its config builder (tests, other trainers).
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PathNotAllowed", "StudioSettings"]

DEFAULT_FORCE_FIELDS = ("aimnet2", "mace-off-small", "synthetic")


class PathNotAllowed(ValueError):
    """A user-supplied path points outside the folders the studio is configured with."""


def _safe_name(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name).strip("._")
    return stem or "file"


def _default_force_field() -> str:
    """The library's one default (:func:`elign.io.assets.default_mlff`)."""
    from elign.io.assets import default_mlff

    return default_mlff()


@dataclass
class StudioSettings:
    data_dir: Path
    read_dirs: list[Path] = field(default_factory=list)
    force_field: str = field(default_factory=lambda: _default_force_field())
    trainer: str = ""  # "module:callable" replacing FedGrpoTrainer (ELIGN_STUDIO_TRAINER)
    config_builder: str = ""  # "module:callable(preset, overrides)" replacing AlignConfig.preset

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        self.read_dirs = [Path(p).expanduser().resolve() for p in self.read_dirs]

    @classmethod
    def from_env(cls) -> StudioSettings:
        from elign.io.assets import assets_dir

        data = Path(os.environ.get("ELIGN_STUDIO_DATA", "studio-data"))
        extra = [Path(p) for p in os.environ.get("ELIGN_STUDIO_READ", "").split(os.pathsep) if p]
        ff = os.environ.get("ELIGN_STUDIO_FORCE_FIELD") or _default_force_field()
        return cls(
            data_dir=data,
            read_dirs=[assets_dir(), *extra],
            force_field=ff,
            trainer=os.environ.get("ELIGN_STUDIO_TRAINER", ""),
            config_builder=os.environ.get("ELIGN_STUDIO_CONFIG", ""),
        )

    @staticmethod
    def load_object(spec: str) -> Any:
        """``"package.module:name"`` -> the object (an operator's plug-in, set through the environment)."""
        module, _, name = spec.partition(":")
        if not module or not name:
            raise ValueError(f"expected 'module:name', got {spec!r}")
        return getattr(importlib.import_module(module), name)

    # ------------------------------------------------------------------ folders
    def folder(self, name: str) -> Path:
        """``runs``, ``exports`` or ``uploads`` under the data folder (created on demand)."""
        if name not in ("runs", "exports", "uploads"):
            raise ValueError(f"unknown studio folder {name!r}")
        path = self.data_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def readable_roots(self) -> list[Path]:
        return [self.data_dir, *self.read_dirs]

    # ------------------------------------------------------------------ guards
    def readable(self, user_path: str | os.PathLike) -> Path:
        """Resolve a path typed by a user; PathNotAllowed unless it lies in a readable folder.

        Relative paths are taken relative to the data folder. Symlinks are resolved first.
        """
        raw = Path(str(user_path).strip()).expanduser()
        path = (raw if raw.is_absolute() else self.data_dir / raw).resolve()
        if not any(path == root or path.is_relative_to(root) for root in self.readable_roots):
            roots = ", ".join(str(r) for r in self.readable_roots)
            raise PathNotAllowed(f"{user_path} is outside the folders this studio may read ({roots})")
        return path

    def writable(self, folder: str, name: str) -> Path:
        """A file ``name`` (sanitised to a bare file name) inside one of the data sub-folders."""
        path = (self.folder(folder) / _safe_name(name)).resolve()
        if not path.is_relative_to(self.data_dir):
            raise PathNotAllowed(f"{name} would be written outside {self.data_dir}")
        return path
