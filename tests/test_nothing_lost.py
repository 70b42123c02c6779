"""Interrupted runs leave nothing stale: temporaries, logs that run ahead of the state, lagging weights."""

import json
import os

import pytest
import torch

import elign.io.checkpoints
import elign.training.pretrain
from elign.data.dense import DenseDataset
from elign.io.checkpoints import load_checkpoint
from elign.io.export import write_sdf
from elign.training.pretrain import PretrainConfig, Pretrainer


def _config(out, **kw):
    return PretrainConfig(out_dir=str(out), hidden=8, n_layers=1, timesteps=20, batch_size=8, log_every=1,
                          warmup_steps=1, **kw)  # fmt: skip


def _steps(out):
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_resume_drops_log_records_beyond_the_state_and_stale_temporaries(tmp_path):
    data = DenseDataset.synthetic(64, seed=0)
    Pretrainer(_config(tmp_path, max_steps=10), data).train()
    with (tmp_path / "metrics.jsonl").open("a") as f:  # a kill after step 12 with the last save at step 10
        for step in (11, 12):
            f.write(json.dumps({"step": step, "loss": 1.0}) + "\n")
        f.write('{"step": 13, "lo')  # cut mid-line
    stale = tmp_path / ".state.pt.x1y2.tmp"
    stale.write_bytes(b"half a checkpoint")
    t = Pretrainer(_config(tmp_path, max_steps=15), data)
    t.resume()
    t.train()
    assert _steps(tmp_path) == list(range(1, 16))
    assert not stale.exists()


def test_weights_are_written_before_the_state_and_refreshed_on_resume(tmp_path, monkeypatch):
    data = DenseDataset.synthetic(64, seed=0)
    t = Pretrainer(_config(tmp_path, max_steps=4), data)
    t.train()
    order = []
    real = elign.training.pretrain.atomic_write
    monkeypatch.setattr(elign.io.checkpoints, "atomic_write", lambda p, d: (order.append(os.fspath(p)), real(p, d)))
    monkeypatch.setattr(elign.training.pretrain, "atomic_write", lambda p, d: (order.append(os.fspath(p)), real(p, d)))
    t.save()
    assert [os.path.basename(p) for p in order] == ["model.safetensors", "state.pt"]
    # weights left behind their state (a kill between the two writes of an older order): resume re-exports
    Pretrainer(_config(tmp_path / "other", max_steps=1), data).train()
    (tmp_path / "other" / "model.safetensors").replace(tmp_path / "model.safetensors")
    assert load_checkpoint(tmp_path / "model.safetensors")[2]["step"] == 1
    r = Pretrainer(_config(tmp_path, max_steps=4), data)
    r.resume()
    assert load_checkpoint(tmp_path / "model.safetensors")[2]["step"] == 4


def test_sdf_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "out.sdf"
    path.write_text("previous export\n")
    mols = [(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.1]]), torch.tensor([1, 3]))]

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_sdf(path, mols, ["H", "C", "N", "O", "F"])
    assert path.read_text() == "previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.sdf"]  # no temporary left behind
    monkeypatch.undo()
    assert write_sdf(path, mols, ["H", "C", "N", "O", "F"])["written"] == 1
    assert "M  END" in path.read_text()


def test_a_state_of_the_other_trainer_or_without_its_optimiser_is_named(tmp_path):
    """Handing an alignment state to pretraining (or a state missing a part) is one clear error, not a KeyError."""
    import torch

    from elign.data.dense import DenseDataset
    from elign.training.pretrain import PretrainConfig, Pretrainer

    cfg = PretrainConfig(out_dir=str(tmp_path), hidden=16, n_layers=2, timesteps=50, batch_size=8, max_steps=1)
    trainer = Pretrainer(cfg, DenseDataset.synthetic(16, seed=1))
    trainer.train()
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    torch.save({**state, "format": "elign-align/1"}, tmp_path / "state.pt")
    with pytest.raises(ValueError, match="is a elign-align/1 state, not elign-pretrain/1"):
        Pretrainer(cfg, DenseDataset.synthetic(16, seed=1)).resume()
    torch.save({k: v for k, v in state.items() if k != "optimizer"}, tmp_path / "state.pt")
    with pytest.raises(ValueError, match=r"lacks \['optimizer'\]"):
        Pretrainer(cfg, DenseDataset.synthetic(16, seed=1)).resume()


def test_a_state_of_another_shape_is_one_line(tmp_path):
    import torch

    from elign.data.dense import DenseDataset
    from elign.training.pretrain import PretrainConfig, Pretrainer

    cfg = PretrainConfig(out_dir=str(tmp_path), hidden=16, n_layers=2, timesteps=50, batch_size=8, max_steps=1)
    Pretrainer(cfg, DenseDataset.synthetic(16, seed=1)).train()
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    state["model"] = {k: torch.zeros(3, *v.shape[1:]) if v.dim() else v for k, v in state["model"].items()}
    torch.save(state, tmp_path / "state.pt")
    with pytest.raises(ValueError, match=r"state\.pt does not fit this run's model \(\d+ parameters differ") as err:
        Pretrainer(cfg, DenseDataset.synthetic(16, seed=1)).resume()
    assert "\n" not in str(err.value)
