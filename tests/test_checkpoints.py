import json
import os
import pickle

import pytest
import torch

from elign.io.checkpoints import CheckpointError, load_checkpoint, load_state_ema, save_checkpoint
from elign.testing import random_batch, tiny_model


def _eps(model, batch):
    z = model.normalize(batch)
    with torch.no_grad():
        return model.predict_eps(z, torch.full((batch.batch_size, 1), 0.3), batch.node_mask)


def test_native_round_trip(tmp_path):
    model, config = tiny_model(seed=3)
    path = save_checkpoint(tmp_path / "m.safetensors", model, config, extra={"epochs": 2})
    loaded, config2, extra = load_checkpoint(path)
    assert config2 == config and extra == {"epochs": 2}
    batch = random_batch([4, 5])
    assert torch.equal(_eps(model, batch), _eps(loaded, batch))
    assert not path.read_bytes().startswith(b"\x80")  # no pickle
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left nothing behind


def test_bf16_storage_loads_as_float32(tmp_path):
    model, config = tiny_model(seed=3)
    path = save_checkpoint(tmp_path / "m.safetensors", model, config, dtype=torch.bfloat16)
    loaded, _, _ = load_checkpoint(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert torch.equal(loaded.gamma.gamma, model.gamma.gamma)  # the schedule keeps full precision


def test_truncated_and_missing_files(tmp_path):
    model, config = tiny_model()
    path = save_checkpoint(tmp_path / "m.safetensors", model, config)
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "cut.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_mismatched_config_is_explained(tmp_path):
    from safetensors.torch import save

    from elign.io.files import atomic_write

    model, config = tiny_model()
    other, _ = tiny_model(hidden=8)
    import json

    meta = {"format": "elign-edm/1", "config": json.dumps(config.to_dict()), "extra": "{}"}
    atomic_write(tmp_path / "bad.safetensors", save(other.state_dict(), metadata=meta))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_checkpoint(tmp_path / "bad.safetensors")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_marker",))


def test_malicious_args_pickle_refused(tmp_path, edm_fixtures):
    run = tmp_path / "run"
    run.mkdir()
    weights = (edm_fixtures / "edm_qm9_tiny/generative_model_ema.npy").read_bytes()
    (run / "generative_model_ema.npy").write_bytes(weights)
    (run / "args.pickle").write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError, match="posix.system|os.system|refusing"):
        load_checkpoint(run)
    assert not (tmp_path / "pwned_marker").exists() and not os.path.exists("pwned_marker")


def test_malicious_weights_refused(tmp_path, edm_fixtures):
    run = tmp_path / "run"
    run.mkdir()
    (run / "args.pickle").write_bytes((edm_fixtures / "edm_qm9_tiny/args.pickle").read_bytes())
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"x": Evil()}, run / "generative_model_ema.npy")
    with pytest.raises(CheckpointError, match="refused or unreadable"):
        load_checkpoint(run)
    assert not marker.exists()


def test_old_edm_args_get_defaults(edm_fixtures):
    from elign.io.checkpoints import config_from_edm_args, read_edm_args

    args = read_edm_args(edm_fixtures / "edm_qm9_full" / "args.pickle")
    assert not hasattr(args, "aggregation_method")
    config = config_from_edm_args(args)
    assert config.aggregation == "sum" and config.normalization_factor == 1.0


def _declaring(tmp_path, **config_overrides):
    """The tiny model's file with its stored config claiming other sizes (the tensors unchanged)."""
    import json as _json

    from safetensors.torch import load, save

    model, config = tiny_model()
    path = save_checkpoint(tmp_path / "honest.safetensors", model, config)
    raw = path.read_bytes()
    meta = _json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    meta["config"] = _json.dumps({**_json.loads(meta["config"]), **config_overrides})
    lying = tmp_path / "lying.safetensors"
    lying.write_bytes(save(load(raw), metadata=meta))
    return lying


def test_declared_sizes_are_bounded_before_any_allocation(tmp_path, monkeypatch):
    import elign.io.checkpoints

    devices = []
    real_build = elign.io.checkpoints.build_model

    def recording_build(config):
        devices.append(torch.get_default_device().type)
        return real_build(config)

    monkeypatch.setattr(elign.io.checkpoints, "build_model", recording_build)
    with pytest.raises(CheckpointError, match="implausibly large"):
        load_checkpoint(_declaring(tmp_path, hidden=10**6))
    assert devices == []  # refused from the config alone
    with pytest.raises(CheckpointError, match="does not fit its model config"):
        load_checkpoint(_declaring(tmp_path, hidden=3000))
    assert devices == ["meta"]  # only a shape skeleton was built


def test_state_ema_loads_the_ema_weights_and_refuses_misfits(tmp_path):
    model, config = tiny_model(seed=3)
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in model.state_dict().items()}  # not the model's
    path = tmp_path / "state.pt"
    model_config = json.dumps(config.to_dict())
    torch.save({"ema": ema, "model": model.state_dict(), "step": 17, "model_config": model_config}, path)
    loaded, step = load_state_ema(path)
    assert step == 17
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ema[k]), k
    bad = dict(ema)
    bad.pop(next(iter(bad)))
    torch.save({"ema": bad, "step": 17, "model_config": model_config}, path)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_state_ema(path)
    path.write_bytes(b"not a state")
    with pytest.raises(CheckpointError, match="not a readable elign training state"):
        load_state_ema(path)


@pytest.mark.parametrize("max_n_nodes", [100_000_000_000, 3000, 0])
def test_an_absurd_size_prior_is_refused_before_anything_is_allocated(tmp_path, max_n_nodes):
    from safetensors.torch import load, save

    from elign.data.info import qm9_info

    model, config = tiny_model(seed=3)
    path = save_checkpoint(tmp_path / "m.safetensors", model, config)
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    cfg = json.loads(header["config"])
    cfg["dataset"] = {**qm9_info().to_dict(), "atom_decoder": cfg["atom_decoder"], "max_n_nodes": max_n_nodes}
    header["config"] = json.dumps(cfg)
    path.write_bytes(save(load(raw), metadata=header))
    with pytest.raises(CheckpointError, match=rf"max_n_nodes={max_n_nodes} atoms: must be in \[1, 500\]"):
        load_checkpoint(path)


def test_a_file_of_enormous_molecules_is_refused_before_its_pair_tables(tmp_path):
    import numpy as np

    from elign.io.export import read_molecules, write_npz

    path = tmp_path / "big.npz"
    n = 600
    write_npz(path, [(np.random.default_rng(0).normal(size=(n, 3)) * 10, np.zeros(n, dtype=np.int64))], ["C"])
    with pytest.raises(ValueError, match="molecule 0 has 600 atoms, more than the 500"):
        read_molecules(path)
    assert len(read_molecules(path, max_atoms=600)) == 1


def test_deeply_nested_metadata_is_a_checkpoint_error(tmp_path):
    from safetensors.torch import save

    path = tmp_path / "nested.safetensors"
    deep = "[" * 100_000 + "]" * 100_000
    path.write_bytes(save({"w": torch.zeros(1)}, metadata={"format": "elign-edm/1", "config": deep}))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
