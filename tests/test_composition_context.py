"""A composition-conditioned network: EDM's context mechanism fed the element counts, started from an
unconditioned checkpoint, sampled from formulas, pretrained and aligned."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from elign.data.formula import formula_batch
from elign.diffusion.conditioning import composition_context, types_context
from elign.diffusion.sampler import sample_molecules
from elign.io.checkpoints import load_checkpoint, save_checkpoint
from elign.metrics.bonds import split_molecules
from elign.models.factory import build_model
from elign.testing import QM9_Z, random_batch, tiny_model
from elign.training.init_from import load_initial_weights
from elign.training.pretrain import PretrainConfig, Pretrainer

DECODER = ["H", "C", "N", "O", "F"]


@pytest.fixture
def start(tmp_path):
    model, config = tiny_model(seed=3)
    return save_checkpoint(tmp_path / "start.safetensors", model, config), model, config


def test_the_context_is_the_element_counts(start):
    batch = random_batch([3, 5], seed=1, pad_to=6)
    counts = composition_context(batch.one_hot, batch.node_mask)  # [2, 5]
    assert torch.equal(counts.sum(1) * 10, torch.tensor([3.0, 5.0]))
    types = torch.full((2, 6), -1)
    types[0, :3], types[1, :5] = batch.one_hot[0, :3].argmax(-1), batch.one_hot[1, :5].argmax(-1)
    assert torch.equal(types_context(types, 5), counts)


def test_a_conditioned_network_starts_as_its_unconditioned_checkpoint(start):
    path, plain, config = start
    conditioned = build_model(replace(config, context="composition")).eval()
    load_initial_weights(conditioned, str(path))
    batch = random_batch([4, 6], seed=2, pad_to=6)
    z = plain.centred_latent(batch)
    t = torch.full((2, 1), 0.4)
    context = composition_context(batch.one_hot, batch.node_mask)
    with torch.no_grad():
        torch.testing.assert_close(
            conditioned.predict_eps(z, t, batch.node_mask, context), plain.predict_eps(z, t, batch.node_mask)
        )
        with pytest.raises(ValueError, match="context of 5 features"):
            conditioned.predict_eps(z, t, batch.node_mask)
        with pytest.raises(ValueError, match="no context"):
            plain.predict_eps(z, t, batch.node_mask, context)
        conditioned.dynamics.egnn.embedding.weight[:, -5:] += 0.5  # once it reads the counts, they change eps
        assert not torch.allclose(
            conditioned.predict_eps(z, t, batch.node_mask, context), plain.predict_eps(z, t, batch.node_mask)
        )
    with pytest.raises(ValueError, match="give the formulas"):
        sample_molecules(conditioned, 2, config.dataset_info().size_probabilities(), steps=3, atomic_numbers=QM9_Z)
    types = torch.from_numpy(formula_batch(["CH4", "H2O"], 2, DECODER, 9))
    fixed = sample_molecules(conditioned, 4, None, steps=3, atomic_numbers=QM9_Z, types=types)
    assert [sorted(t.tolist()) for _, t in split_molecules(fixed)] == [[0, 0, 0, 0, 1]] * 2 + [[0, 0, 3]] * 2
    free = sample_molecules(conditioned, 4, None, steps=3, atomic_numbers=QM9_Z, types=types, fix_types=False)
    assert [len(t) for _, t in split_molecules(free)] == [5, 5, 3, 3]  # told the counts, it picks the types


def test_pretraining_from_a_checkpoint_adds_the_context_and_resumes(start, tmp_path):
    path, _, config = start
    cfg = PretrainConfig(out_dir=str(tmp_path / "run"), data="synthetic:96", init_from=str(path),
                         context="composition", batch_size=16, max_steps=3, log_every=1, warmup_steps=1,
                         val_every=3, val_samples=4, val_steps=3)  # fmt: skip
    trainer = Pretrainer(cfg, device="cpu")
    assert trainer.model_config.context == "composition" and trainer.model_config.hidden == config.hidden
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    validation = [r for r in records if "val_exact_formula" in r]  # told validation molecules' counts
    assert validation and 0 <= validation[-1]["val_exact_formula"] <= 1 and validation[-1]["val_samples"] == 4
    model, saved, _ = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert saved.context == "composition" and model.context_dim == 5
    again = Pretrainer(PretrainConfig(**{**cfg.__dict__, "max_steps": 4}), device="cpu")
    again.resume()
    assert again.step == 3
    with pytest.raises(ValueError, match="context none"):
        Pretrainer(PretrainConfig(**{**cfg.__dict__, "context": "none"}), device="cpu").resume()
