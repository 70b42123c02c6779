"""Elign: align 3D molecular diffusion models (EDM) with machine-learning force fields (FED-GRPO)."""

from elign.data.batch import MoleculeBatch
from elign.data.info import DatasetInfo
from elign.diffusion.sampler import sample_chain, sample_molecules
from elign.io.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from elign.models.config import ModelConfig
from elign.models.factory import build_model

__all__ = [
    "CheckpointError",
    "DatasetInfo",
    "ModelConfig",
    "MoleculeBatch",
    "build_model",
    "load_checkpoint",
    "sample_chain",
    "sample_molecules",
    "save_checkpoint",
]
__version__ = "0.1.0"
