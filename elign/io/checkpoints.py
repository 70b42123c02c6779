"""Checkpoints: the native format and the original EDM run directory, both loaded safely.

Native: one ``.safetensors`` file; tensors plus the ModelConfig as JSON in its metadata. No pickle.
Original EDM: a run directory with ``args.pickle`` (an ``argparse.Namespace``, read through an
allow-list unpickler) and ``generative_model_ema.npy`` (a ``torch.save``d state dict, read with
``weights_only=True``), or ``generative_model.npy`` when no EMA file is present.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import pickle
import tempfile
from pathlib import Path

import torch

from elign.diffusion.edm import EquivariantDiffusion
from elign.io.files import TEMP_SUFFIX, atomic_write
from elign.models.config import ModelConfig
from elign.models.factory import build_model

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "load_state_ema",
    "load_edm_run",
    "read_edm_args",
    "config_from_edm_args",
    "check_writable",
    "remove_stale_temporaries",
    "truncate_log",
    "checkpoint_sha256",
    "non_finite_entries",
    "refuse_non_finite",
    "require_state",
    "state_must_fit",
]

FORMAT = "elign-edm/1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, unsafe or does not fit the model it describes."""


def non_finite_entries(tree: object, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors in a nested state (dicts, lists) holding a NaN or an infinity:
    what must never be saved (weights, EMA, optimiser moments)."""
    if isinstance(tree, torch.Tensor):
        return [prefix or "tensor"] if tree.is_floating_point() and not bool(torch.isfinite(tree).all()) else []
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        return []
    return [name for k, v in items for name in non_finite_entries(v, f"{prefix}.{k}" if prefix else str(k))]


def refuse_non_finite(state: dict, parts: tuple[str, ...], what: str, kept: str | Path) -> None:
    """Raise FloatingPointError, naming the bad tensors, when a part of ``state`` holds a NaN or an infinity:
    ``what`` says where the run is ("training ... by step 250"), ``kept`` which file keeps the last good state."""
    bad = non_finite_entries({k: state[k] for k in parts})
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise FloatingPointError(
            f"{what} ({', '.join(bad[:3])}{more}); nothing was saved: {kept} keeps the last finite state"
        )


def require_state(state: object, kind: str, keys: tuple[str, ...], path: str | Path) -> None:
    """Raise ValueError unless ``state`` is a training state of ``kind`` holding ``keys`` (an alignment state
    handed to pretraining, or one written without its optimiser, is named as such)."""
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no training state")
    found = state.get("format")
    if found != kind:
        raise ValueError(f"{path} is a {found or 'unlabelled'} state, not {kind}")
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{path} lacks {missing}")


@contextlib.contextmanager
def state_must_fit(path: str | Path):
    """Turn the many-line error of loading a state into a model of another shape into one line naming ``path``."""
    try:
        yield
    except (RuntimeError, KeyError, ValueError) as e:
        lines = [line.strip() for line in str(e).splitlines() if "size mismatch" in line or "Missing" in line]
        detail = f"{len(lines)} parameters differ, e.g. {lines[0][:120]}" if lines else _first_line(e)
        raise ValueError(f"{path} does not fit this run's model ({detail})") from None


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files an interrupted :func:`atomic_write` left in ``folder``; the removed paths."""
    removed = []
    for tmp in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def truncate_log(path: str | Path, key: str, last: int) -> int:
    """Keep only the records of a JSON-lines log whose ``key`` is at most ``last`` (a resumed run's log
    then continues where its state does, without repeated steps); the number of records dropped."""
    path = Path(path)
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if not isinstance(record, dict) or record.get(key, last) <= last:
            kept.append(line)
    if len(kept) != len(lines):
        atomic_write(path, ("\n".join(kept) + "\n" if kept else "").encode())
    return len(lines) - len(kept)


def check_writable(path: str | Path, directory: bool = False) -> Path:
    """Make sure ``path`` (a file, or a folder with ``directory``) can be written, before any work is done.

    Creates missing parent folders and writes and removes a probe file; a ValueError names the problem.
    """
    path = Path(path)
    folder = path if directory else path.parent
    if not directory and path.is_dir():
        raise ValueError(f"cannot write {path}: it is a directory")
    if directory and path.exists() and not path.is_dir():
        raise ValueError(f"cannot write into {path}: it is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".elign-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e.strerror or e}") from None
    return path


# ---------------------------------------------------------------------------------------- native
def save_checkpoint(
    path: str | Path,
    model: EquivariantDiffusion,
    config: ModelConfig,
    extra: dict | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Save weights (optionally cast, e.g. to bfloat16 for shipping) and config, atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() and k != "gamma.gamma" else v for k, v in tensors.items()}
    meta = {"format": FORMAT, "config": json.dumps(config.to_dict()), "extra": json.dumps(extra or {})}
    atomic_write(path, save(tensors, metadata=meta))
    return Path(path)


def load_checkpoint(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[EquivariantDiffusion, ModelConfig, dict]:
    """Load a native ``.safetensors`` checkpoint or an original EDM run directory.

    Returns (model in eval mode, float32, on ``device``; its config; extra metadata).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        model, config = load_edm_run(path, device)
        return model, config, {"source": "edm", "path": str(path)}
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        raw = path.read_bytes()
        tensors = load(raw)
        meta = _read_metadata(raw)
    except (SafetensorError, ValueError, OSError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(
            f"{path} is not a readable elign checkpoint ({_first_line(e)}); is the file truncated?"
        ) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {meta.get('format')!r}, expected {FORMAT!r}")
    try:
        config = ModelConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, TypeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: invalid model config in checkpoint: {_first_line(e)}") from None
    model = _build_and_load(config, tensors, path)
    return model.to(device), config, json.loads(meta.get("extra", "{}"))


def load_state_ema(path: str | Path, device: torch.device | str = "cpu") -> tuple[EquivariantDiffusion, int]:
    """The EMA weights of an ``elign pretrain`` training state (``state.pt``): (model in eval mode, its step)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        config = ModelConfig.from_dict(json.loads(state["model_config"]))
        ema, step = state["ema"], int(state["step"])
    except Exception as e:  # missing, truncated or foreign files
        raise CheckpointError(f"{path} is not a readable elign training state ({type(e).__name__}: {e})") from e
    return _build_and_load(config, ema, path).to(device), step


def _first_line(e: BaseException) -> str:
    """An exception's first sentence, without the advice some libraries append (to load unsafely, say)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text.split(". ")[0][:200]


def _read_metadata(raw: bytes) -> dict:
    n = int.from_bytes(raw[:8], "little")
    if n <= 0 or n > len(raw) - 8:
        raise ValueError("bad header length")
    return json.loads(raw[8 : 8 + n]).get("__metadata__", {}) or {}


def _build_and_load(config: ModelConfig, state: dict[str, torch.Tensor], path: Path) -> EquivariantDiffusion:
    """The model of ``config`` holding ``state``; shapes are checked on a skeleton first, so a config that
    declares a larger model than its file holds is refused before any memory is allocated for it."""
    with torch.device("meta"):
        skeleton = build_model(config)  # shapes only
    _check_fit({k: v.shape for k, v in skeleton.state_dict().items()}, state, path)
    model = build_model(config)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval()


def _check_fit(own: dict[str, torch.Size], state: dict[str, torch.Tensor], path: Path) -> None:
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k])}" for k in own if k in state and state[k].shape != own[k]]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path} does not fit its model config: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shape mismatches {wrong[:5]}"
        )


# ------------------------------------------------------------------------------ original EDM
class _NamespaceOnlyUnpickler(pickle.Unpickler):
    """Allows exactly ``argparse.Namespace``; every other global is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("argparse", "Namespace"):
            return argparse.Namespace
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only argparse.Namespace is allowed")


def read_edm_args(path: str | Path) -> argparse.Namespace:
    path = Path(path)
    try:
        args = _NamespaceOnlyUnpickler(io.BytesIO(path.read_bytes())).load()
    except FileNotFoundError as e:
        raise CheckpointError(f"EDM run directory lacks {path.name}: {path}") from e
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a safe EDM args.pickle ({e})") from e
    if not isinstance(args, argparse.Namespace):
        raise CheckpointError(f"{path}: expected an argparse.Namespace, got {type(args).__name__}")
    return args


_EDM_DEFAULTS = {  # fields older EDM runs lack, with the original code's defaults
    "normalization_factor": 1.0,
    "aggregation_method": "sum",
    "sin_embedding": False,
    "inv_sublayers": 1,
    "norm_constant": 1.0,
    "include_charges": True,
    "normalize_factors": [1, 4, 10],
    "diffusion_noise_precision": 1e-5,
    "condition_time": True,
    "context_node_nf": 0,
    "remove_h": False,
}


def config_from_edm_args(args: argparse.Namespace) -> ModelConfig:
    """The ModelConfig of an EDM run's args (CheckpointError naming what is missing or unusable)."""
    try:
        return _config_from_edm_args(args)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        what = f"lacks {e}" if isinstance(e, KeyError) else f"holds an unusable value ({e})"
        raise CheckpointError(f"the EDM run's args.pickle {what}") from None


def _config_from_edm_args(args: argparse.Namespace) -> ModelConfig:
    a = {**_EDM_DEFAULTS, **vars(args)}
    if a.get("dataset", "qm9") != "qm9" or a["remove_h"]:
        raise CheckpointError(
            f"only QM9 with hydrogens is supported, this run is dataset={a.get('dataset')!r}, remove_h={a['remove_h']}"
        )
    if a.get("model", "egnn_dynamics") != "egnn_dynamics" or a.get("probabilistic_model", "diffusion") != "diffusion":
        raise CheckpointError(f"unsupported EDM model {a.get('model')!r} / {a.get('probabilistic_model')!r}")
    if a["context_node_nf"] or a.get("conditioning"):
        raise CheckpointError(f"conditional EDM runs are not supported (conditioning={a.get('conditioning')})")
    if not a["condition_time"]:
        raise CheckpointError("EDM runs without time conditioning are not supported")
    return ModelConfig(
        include_charges=bool(a["include_charges"]),
        hidden=int(a["nf"]),
        n_layers=int(a["n_layers"]),
        inv_sublayers=int(a["inv_sublayers"]),
        attention=bool(a["attention"]),
        tanh=bool(a["tanh"]),
        norm_constant=float(a["norm_constant"]),
        sin_embedding=bool(a["sin_embedding"]),
        normalization_factor=float(a["normalization_factor"]),
        aggregation=str(a["aggregation_method"]),
        timesteps=int(a["diffusion_steps"]),
        noise_schedule=str(a["diffusion_noise_schedule"]),
        noise_precision=float(a["diffusion_noise_precision"]),
        norm_values=tuple(a["normalize_factors"]),
    )


def _edm_weights_file(run_dir: Path) -> Path:
    """The weights an EDM run directory is loaded from: the EMA weights when present."""
    for name in ("generative_model_ema.npy", "generative_model.npy"):
        if (run_dir / name).exists():
            return run_dir / name
    raise CheckpointError(f"{run_dir} has neither generative_model_ema.npy nor generative_model.npy")


def checkpoint_sha256(path: str | Path) -> str:
    """Content hash of what ``load_checkpoint`` reads: the ``.safetensors`` file, or an EDM run directory's
    ``args.pickle`` followed by the weights file it loads."""
    path = Path(path)
    files = [path / "args.pickle", _edm_weights_file(path)] if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def load_edm_run(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[EquivariantDiffusion, ModelConfig]:
    run_dir = Path(run_dir)
    config = config_from_edm_args(read_edm_args(run_dir / "args.pickle"))
    weights = _edm_weights_file(run_dir)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for unsafe or corrupt files
        raise CheckpointError(
            f"{weights}: refused or unreadable as a weights-only state dict ({_first_line(e)}); it is never "
            "unpickled in full"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{weights}: expected a state dict, got {type(state).__name__}")
    return _build_and_load(config, state, weights).to(device), config
