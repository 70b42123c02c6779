"""Starting a pretraining run from a checkpoint: its architecture and weights, with a context added.

A composition-conditioned network (``ModelConfig.context = 'composition'``) reads the element counts as extra
input features after h and t. Fine-tuned from an unconditioned checkpoint, the embedding's new input columns and
the output rows of the context start at zero, so the new network computes exactly what the checkpoint did and
learns to use the context from there.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from elign.models.config import ModelConfig
from elign.models.factory import build_model

__all__ = ["initial_model_config", "load_initial_weights", "starting_model"]

WIDENED = ("dynamics.egnn.embedding.weight", "dynamics.egnn.embedding_out.weight", "dynamics.egnn.embedding_out.bias")


def initial_model_config(path: str, config: ModelConfig) -> ModelConfig:
    """The checkpoint's architecture with this run's context and dataset."""
    from elign.io.checkpoints import load_checkpoint

    _, start, _ = load_checkpoint(path)
    if list(start.atom_decoder) != list(config.atom_decoder):
        raise ValueError(f"{path} makes {start.atom_decoder}, the data {config.atom_decoder}")
    return replace(start, context=config.context, dataset=config.dataset)


def load_initial_weights(model: torch.nn.Module, path: str) -> None:
    """Copy the checkpoint's weights into ``model``; the features the model reads beyond the checkpoint's (its
    context) start at zero."""
    from elign.io.checkpoints import load_checkpoint

    start, _, _ = load_checkpoint(path)
    given = start.state_dict()
    state = model.state_dict()
    for name, value in state.items():
        old = given.get(name)
        if old is None:
            raise ValueError(f"{path} has no {name}")
        if old.shape == value.shape:
            value.copy_(old)
        elif name in WIDENED and old.dim() == value.dim():
            value.zero_()
            value[tuple(slice(0, n) for n in old.shape)] = old  # the checkpoint's inputs / outputs come first
        else:
            raise ValueError(f"{path}: {name} is {tuple(old.shape)}, this model's {tuple(value.shape)}")


def starting_model(config, dataset: dict) -> tuple[ModelConfig, torch.nn.Module]:
    """A pretraining run's first model and its config: fresh (seeded by ``config.seed``), or ``config.init_from``'s
    (a :class:`~elign.training.pretrain_config.PretrainConfig`)."""
    model_config = config.model_config(dataset)
    if config.init_from:
        model_config = initial_model_config(config.init_from, model_config)
    torch.manual_seed(config.seed)
    model = build_model(model_config)
    if config.init_from:
        load_initial_weights(model, config.init_from)
    return model_config, model
