"""The models a session can sample from or align: shipped checkpoints, runs in the data folder, checkpoints
loaded by path or uploaded; and the model choices that offer them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import param

from elign_studio.sampling import ModelCache
from elign_studio.serving import MAX_UPLOAD_MB
from elign_studio.settings import PathNotAllowed
from elign_studio.state.base import SessionBase, fmt_error

__all__ = ["SHIPPED", "CheckpointState", "ModelChoice"]

SHIPPED = {"backbone (shipped)": "shipped_backbone", "aligned (shipped)": "shipped_aligned"}


class ModelChoice(param.Selector):
    """The name of one of the session's models, or "" while none is chosen. Its ``objects`` are the session's
    ``model_names`` (:meth:`CheckpointState._offer_models`), so a widget made with ``from_param`` lists them."""

    def __init__(self, default: str = "", *, objects: list | None = None, check_on_set: bool = True, **params: Any):
        super().__init__(default=default, objects=objects or [], check_on_set=check_on_set, **params)

    def _validate_value(self, value: Any, allow_None: bool | None = None) -> None:
        if value != "":
            super()._validate_value(value, allow_None)


class CheckpointState(SessionBase):
    """``models`` (name -> checkpoint path) and their names in ``model_names``, which the model choices
    (:class:`ModelChoice` params of the other parts) follow."""

    model_names = param.List(default=[], doc="models this session can sample from or align")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.models: dict[str, Path] = {}

    def refresh_models(self) -> None:
        """Shipped models that exist, user checkpoints, and the latest checkpoint of every run in the data
        folder (earlier browser sessions' runs included)."""
        from elign.io import assets

        missing = []
        for name, fn in SHIPPED.items():
            path = getattr(assets, fn)()
            if path.exists():
                self.models[name] = path
            else:
                missing.append(str(path))
        runs = self.settings.data_dir / "runs"
        for run in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
            ckpts = self._run_checkpoints(run)
            if ckpts:
                self.models.setdefault(run.name, ckpts[-1])
        self._list_models()
        if missing and not self.model_names:
            self.status = (
                "No shipped checkpoint found (" + "; ".join(missing) + "). Load one by path or "
                "upload a .safetensors file."
            )

    def _list_models(self) -> None:
        """Announce ``models`` as ``model_names`` (announced again when the names are the same: a path changed)."""
        names = list(self.models)
        if names == self.model_names:
            self.param.trigger("model_names")
        else:
            self.model_names = names

    def _offer_models(self, choice: str, pick: int = 0) -> None:
        """Offer ``model_names`` as the choices of the :class:`ModelChoice` ``choice``; while it is empty it
        takes the ``pick``-th name, when there is one."""
        names = list(self.model_names)
        self.param[choice].objects = names
        if not getattr(self, choice) and len(names) > pick:
            setattr(self, choice, names[pick])

    def _register(self, name: str, path: Path) -> str:
        self.models[name] = path
        self._list_models()
        return name

    def add_checkpoint(self, user_path: str, name: str | None = None) -> str | None:
        """Validate and register a native checkpoint or an original EDM run folder. None on error."""
        self.error = ""
        try:
            path = self.settings.readable(user_path)
            if path.is_dir():  # an EDM run folder: every file it is loaded from must lie in a readable folder too
                for name_in_run in ("args.pickle", "generative_model_ema.npy", "generative_model.npy"):
                    if (path / name_in_run).is_symlink() or (path / name_in_run).exists():
                        self.settings.readable(path / name_in_run)
            model, config, _ = ModelCache.load(path)
        except (PathNotAllowed, ValueError, OSError) as e:
            self.error = f"Cannot load {user_path}: {fmt_error(e)}"
            return None
        known = [n for n, p in self.models.items() if p.resolve() == path.resolve()]
        if known and name is None:  # the same file again (e.g. the shipped backbone by its path)
            self.status = f"{user_path} is already loaded as {known[0]}"
            return known[0]
        label = name or (path.name if path.is_dir() else path.stem if path.stem != "model" else path.parent.name)
        label = self._register(f"{label} ({path.parent.name})" if label in self.models else label, path)
        self.status = f"Loaded {label}: {config.dataset_info().name}, T={model.T}"
        return label

    def add_upload(self, filename: str, data: bytes) -> str | None:
        """Save an uploaded .safetensors file into the uploads folder and register it."""
        self.error = ""
        if not filename.endswith(".safetensors"):
            self.error = (
                f"{filename}: upload a native .safetensors checkpoint; original EDM runs are folders, load them by path"
            )
            return None
        if not data:
            self.error = f"{filename} is empty"
            return None
        if len(data) > MAX_UPLOAD_MB * 2**20:
            self.error = (
                f"{filename} is {len(data) / 2**20:.0f} MB, more than the {MAX_UPLOAD_MB} MB an upload may be; "
                f"put it in {self.settings.data_dir} and load it by path"
            )
            return None
        base = Path(filename).name  # a name is never a path: the uuid prefix stays, no other upload is reached
        target = self.settings.writable("uploads", f"{uuid.uuid4().hex[:8]}-{base}")
        label = None
        try:
            target.write_bytes(data)
            label = self.add_checkpoint(str(target), name=Path(base).stem)
        except Exception as e:  # whatever a malformed file raises becomes the banner, never a server traceback
            self.error = f"Cannot load {base}: {fmt_error(e)}"
        finally:  # a refused (or crashing) upload never stays on disk
            if label is None:
                target.unlink(missing_ok=True)
                self.error = self.error.replace(str(target), base)  # the user's file, not the internal path
        return label

    def model_path(self, name: str) -> Path:
        if name not in self.models:
            raise ValueError(f"no model named {name!r}; load a checkpoint first")
        return self.models[name]

    def _readable(self, path: Path) -> bool:
        """True when ``path`` (resolved, so a symlink is followed) lies in a folder this studio may read."""
        try:
            self.settings.readable(path)
        except (PathNotAllowed, OSError):
            return False
        return True

    def _run_checkpoints(self, run_dir: Path) -> list[Path]:
        """A run folder's readable checkpoints, oldest first."""
        return sorted(
            (p for p in run_dir.glob("**/*.safetensors") if self._readable(p)), key=lambda p: p.stat().st_mtime
        )
