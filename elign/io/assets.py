"""Where the shipped checkpoints live: ``$ELIGN_ASSETS``, ``assets/`` beside the package, or inside a wheel."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["assets_dir", "default_mlff", "shipped_backbone", "shipped_aligned", "resolve_checkpoint"]


def assets_dir() -> Path:
    """``$ELIGN_ASSETS``; else the repository's ``assets/`` beside the package (a checkout, an editable
    install); else the copies a wheel carries in ``elign/shipped/`` (an installed package)."""
    env = os.environ.get("ELIGN_ASSETS")
    if env:
        return Path(env)
    repository = Path(__file__).resolve().parents[2] / "assets"
    if (repository / "backbone").is_dir():
        return repository
    return Path(__file__).resolve().parents[1] / "shipped"


def shipped_backbone() -> Path:
    return assets_dir() / "backbone" / "model.safetensors"


def shipped_aligned() -> Path:
    return assets_dir() / "aligned" / "model.safetensors"


def resolve_checkpoint(name_or_path: str | None) -> Path:
    """``None`` or ``"backbone"``: the shipped backbone; ``"aligned"``: the shipped aligned model; else a path."""
    if name_or_path in (None, "backbone"):
        path = shipped_backbone()
    elif name_or_path == "aligned":
        path = shipped_aligned()
    else:
        return Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(
            f"the shipped checkpoint {path} is missing; pass --checkpoint PATH "
            f"(or set ELIGN_ASSETS to a folder holding backbone/ and aligned/)"
        )
    return path


def default_mlff() -> str:
    """The shipped distilled MACE when present, else the offline AIMNet2 foundation model."""
    distilled = assets_dir() / "mlff" / "distilled.model"
    return str(distilled) if distilled.exists() else "aimnet2"
