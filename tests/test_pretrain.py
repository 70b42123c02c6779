import json
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest
import torch

import elign.models.egnn as egnn
from elign.data.dense import DenseDataset
from elign.diffusion.sampler import node_mask_from_sizes
from elign.io.checkpoints import load_checkpoint
from elign.training.pretrain import PretrainConfig, Pretrainer

TINY = [
    "--hidden",
    "16",
    "--n-layers",
    "2",
    "--timesteps",
    "50",
    "--batch-size",
    "8",
    "--log-every",
    "1",
    "--threads",
    "1",
    "--no-progress",
    "--seed",
    "3",
    "--warmup-steps",
    "5",
]


def _run(data, out, *extra, wait=True):
    cmd = [sys.executable, "-m", "elign.cli", "pretrain", "--data", str(data), "--out", str(out), *TINY, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    return proc


def _losses(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def test_sigterm_then_resume_continues_exactly(tmp_path):
    data = tmp_path / "tiny.npz"
    DenseDataset.synthetic(80, seed=1).save(data)
    killed = tmp_path / "killed"
    proc = _run(data, killed, "--max-steps", "100000", "--no-compile", wait=False)  # long: eager by choice
    deadline = time.time() + 90
    while time.time() < deadline:
        if (killed / "metrics.jsonl").exists() and len((killed / "metrics.jsonl").read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    stopped_at = max(_losses(killed))
    assert stopped_at >= 5
    state = torch.load(killed / "state.pt", weights_only=True)
    assert state["step"] == stopped_at

    _run(data, killed, "--resume", "--max-steps", str(stopped_at + 6))
    straight = tmp_path / "straight"
    _run(data, straight, "--max-steps", str(stopped_at + 6))
    resumed, reference = _losses(killed), _losses(straight)
    assert sorted(resumed) == sorted(reference) == list(range(1, stopped_at + 7))
    for step in range(stopped_at + 1, stopped_at + 7):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-6, abs=1e-9), step
    # the shipped weights (EMA) are the same too
    a, _, meta = load_checkpoint(killed / "model.safetensors")
    b, _, _ = load_checkpoint(straight / "model.safetensors")
    assert meta["step"] == stopped_at + 6
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), k


def test_data_order_covers_each_epoch_once(tmp_path):
    data = DenseDataset.synthetic(70, seed=0)
    t = Pretrainer(PretrainConfig(out_dir=str(tmp_path), hidden=8, n_layers=1, timesteps=20, batch_size=10), data)
    spe = t.steps_per_epoch
    seen = torch.cat([t.batch_indices(s) for s in range(spe)])
    assert len(set(seen.tolist())) == len(seen) == spe * 10
    assert set(seen.tolist()) <= set(data.splits["train"].tolist())
    assert not torch.equal(t.batch_indices(0), t.batch_indices(spe))  # a new order each epoch


def test_training_lowers_the_loss_and_ema_tracks(tmp_path):
    data = DenseDataset.synthetic(64, seed=0)
    cfg = PretrainConfig(
        out_dir=str(tmp_path),
        hidden=16,
        n_layers=2,
        timesteps=50,
        batch_size=16,
        lr=3e-3,
        warmup_steps=1,
        max_steps=150,
        log_every=10,
        ema_decay=0.9,
    )
    t = Pretrainer(cfg, data)
    t.train()
    losses = list(_losses(tmp_path).values())
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:2]) / 2
    drift = max((p - q).abs().max().item() for p, q in zip(t.model.parameters(), t.ema.parameters(), strict=True))
    assert 0 < drift < 0.5


def test_bad_config_rejected(tmp_path):
    with pytest.raises(ValueError, match="invalid PretrainConfig"):
        PretrainConfig(out_dir=str(tmp_path), hidden=0)
    data = DenseDataset.synthetic(16)
    with pytest.raises(ValueError, match="smaller than one global batch"):
        Pretrainer(PretrainConfig(out_dir=str(tmp_path), batch_size=64, hidden=8, n_layers=1), data)


def test_max_minutes_ends_cleanly_despite_periodic_checkpoints(tmp_path):
    data = DenseDataset.synthetic(64, seed=0)
    cfg = PretrainConfig(
        out_dir=str(tmp_path),
        hidden=8,
        n_layers=1,
        timesteps=20,
        batch_size=8,
        max_steps=100_000,
        max_minutes=0.03,
        checkpoint_minutes=0.005,
        log_every=1000,
    )
    result = Pretrainer(cfg, data).train()
    assert result["stopped_by"] == "max_minutes"
    assert 0.03 <= result["train_minutes"] < 0.5
    assert torch.load(tmp_path / "state.pt", weights_only=True)["step"] == result["step"]


def test_cpu_minutes_accumulate_over_resumes_and_old_states_count_from_their_step(tmp_path):
    data = DenseDataset.synthetic(64, seed=0)
    cfg = PretrainConfig(
        out_dir=str(tmp_path), hidden=8, n_layers=1, timesteps=20, batch_size=8, max_steps=30, log_every=10
    )
    t = Pretrainer(cfg, data)
    t.train()
    first = t.cpu_minutes
    assert 0 < first and t.cpu_from_step == 0
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["cpu_minutes"] == pytest.approx(first) and state["cpu_from_step"] == 0
    r = Pretrainer(PretrainConfig(**{**cfg.__dict__, "max_steps": 60}), data)
    r.resume()
    r.train()
    assert r.cpu_minutes > first
    del state["cpu_minutes"], state["cpu_from_step"]  # a state from before CPU time was recorded
    torch.save(state, tmp_path / "state.pt")
    old = Pretrainer(cfg, data)
    old.resume()
    assert (old.cpu_minutes, old.cpu_from_step) == (0.0, 30)


def test_pretraining_runs_in_a_thread_reports_to_callbacks_and_stops_on_the_event(tmp_path):
    import threading

    data = DenseDataset.synthetic(64, seed=0)
    cfg = PretrainConfig(
        out_dir=str(tmp_path), hidden=8, n_layers=1, timesteps=20, batch_size=16, log_every=2, compile=False
    )  # unbounded, so eager by choice
    stop, seen = threading.Event(), []

    class StopAfterThree:
        def on_step_end(self, step, metrics):
            seen.append((step, metrics["loss"]))
            if len(seen) == 3:
                stop.set()

    t = Pretrainer(cfg, data, callbacks=[StopAfterThree()])
    result = {}
    worker = threading.Thread(target=lambda: result.update(t.train(stop)))
    worker.start()  # signal.signal would raise here: the trainer must not install handlers
    worker.join(60)
    assert result["stopped_by"] == "stop requested" and result["step"] == 6
    assert [s for s, _ in seen] == [2, 4, 6] and list(_losses(tmp_path)) == [2, 4, 6]
    assert torch.load(tmp_path / "state.pt", weights_only=True)["step"] == 6  # checkpointed on stop


def _tiny_trainer(tmp_path, **extra):
    cfg = PretrainConfig(out_dir=str(tmp_path), hidden=16, n_layers=2, timesteps=50, batch_size=8, **extra)
    return Pretrainer(cfg, DenseDataset.synthetic(32, seed=1))


def test_compile_option_compiles_the_padded_forward(tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(egnn.torch, "compile", lambda fn, **kw: compiled.append(kw) or fn)
    plain = _tiny_trainer(tmp_path / "plain")
    assert not compiled and "_forward_padded" not in vars(plain.model.dynamics)
    trainer = _tiny_trainer(tmp_path / "compiled", compile=True)
    assert compiled == [{"dynamic": True}]  # one graph for every size group
    assert "_forward_padded" in vars(trainer.model.dynamics)  # the training network's, not the EMA's
    assert "_forward_padded" not in vars(trainer.ema.dynamics)
    assert torch.isfinite(trainer.train_step()["loss"])


@pytest.mark.parametrize(
    ("extra", "compiles"),
    [
        ({}, True),  # no limit: a run of hours
        ({"max_minutes": 150}, True),
        ({"max_minutes": 10}, False),  # too short to repay the compilations
        ({"max_steps": 500}, False),
        ({"max_steps": 50_000, "max_minutes": 60}, True),
        ({"compile": False}, False),
        ({"compile": True, "max_steps": 5}, True),
    ],
)
def test_compile_by_default_only_runs_long_enough_to_repay_it(tmp_path, extra, compiles):
    assert _tiny_trainer(tmp_path, **extra).compiles() is compiles


def test_the_steps_a_resumed_run_has_left_decide_whether_it_compiles(tmp_path):
    trainer = _tiny_trainer(tmp_path, max_steps=12_000)
    assert trainer.compiles()
    trainer.step = 11_000  # as after resuming near the end
    assert not trainer.compiles()


def test_fit_compiles_a_long_run_by_default(tmp_path, monkeypatch):
    import threading

    compiled = []
    monkeypatch.setattr(egnn.torch, "compile", lambda fn, **kw: compiled.append(kw) or fn)
    trainer = _tiny_trainer(tmp_path)
    assert not compiled  # deciding waits for fit, when the steps left are known
    stop = threading.Event()
    stop.set()  # one step, then a clean stop
    trainer.train(stop)
    assert compiled == [{"dynamic": True}] and trainer.compiled and trainer.step == 1
    trainer.train(stop)
    assert len(compiled) == 1  # compiled once per trainer


def test_a_failed_compilation_falls_back_to_eager_once(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("no C++ compiler")

    trainer = _tiny_trainer(tmp_path)
    batch = trainer.data.batch(torch.arange(8), trainer.device)
    z, t = trainer.model.normalize(batch), torch.full((8, 1), 0.5)
    expected = trainer.model.predict_eps(z, t, batch.node_mask)
    monkeypatch.setattr(egnn.torch, "compile", lambda fn, **kw: broken)
    trainer.model.dynamics.compile_padded_forward()
    with pytest.warns(UserWarning, match="running it eagerly"):
        first = trainer.model.predict_eps(z, t, batch.node_mask)
    torch.testing.assert_close(first, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the compiled path is dropped: no second warning
        torch.testing.assert_close(trainer.model.predict_eps(z, t, batch.node_mask), expected)


@pytest.mark.slow
def test_the_compiled_network_computes_what_the_eager_one_does(tmp_path):
    trainer = _tiny_trainer(tmp_path)
    batch = trainer.data.batch(torch.arange(8), trainer.device)  # several sizes: several groups
    z, t = trainer.model.normalize(batch), torch.rand(8, 1, generator=torch.Generator().manual_seed(0))
    expected = trainer.model.predict_eps(z, t, batch.node_mask)
    expected.square().sum().backward()
    grads = [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]
    trainer.model.zero_grad()
    trainer.model.dynamics.compile_padded_forward()
    eps = trainer.model.predict_eps(z, t, batch.node_mask)
    eps.square().sum().backward()
    torch.testing.assert_close(eps, expected, rtol=1e-4, atol=1e-5)
    compiled_grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    for g_compiled, g in zip(compiled_grads, grads, strict=True):
        torch.testing.assert_close(g_compiled, g, rtol=1e-3, atol=1e-5)
    # without gradients too (sampling, rollouts), where eager sends large pair products to oneDNN
    mask = node_mask_from_sizes(torch.full((8,), 12))  # 8 x 12 x 12 pair rows: above ONEDNN_MIN_ROWS
    z = trainer.model.scheduler.sample_noise(mask, torch.Generator().manual_seed(1))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to eager
        eps = trainer.model.predict_eps(z, t, mask)
    trainer.model.dynamics.__dict__.pop("_forward_padded")  # eager again
    with torch.no_grad():
        torch.testing.assert_close(eps, trainer.model.predict_eps(z, t, mask), rtol=1e-4, atol=1e-5)


def test_non_finite_weights_are_never_saved_over_the_last_good_state(tmp_path):
    """A diverged run whose loss is not logged at that step still never writes NaN weights: the periodic
    checkpoint and the save at the stop refuse them and the previous state stays resumable."""
    trainer = _tiny_trainer(tmp_path, max_steps=4, log_every=1000)
    trainer.train()
    good = torch.load(tmp_path / "state.pt", weights_only=True)
    assert good["step"] == 4
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("nan"))
    trainer.cfg.max_steps = 100
    stop = threading.Event()
    stop.set()  # the save at a stop (SIGTERM, --max-minutes) after one more step
    with pytest.raises(FloatingPointError, match=r"non-finite by step 5 .*keeps the last finite state"):
        trainer.train(stop)
    trainer.cfg.checkpoint_minutes = 1e-9  # the periodic checkpoint after every step
    with pytest.raises(FloatingPointError, match=r"non-finite by step 6 "):
        trainer.train()
    kept = torch.load(tmp_path / "state.pt", weights_only=True)
    assert kept["step"] == 4 and all(torch.isfinite(v).all() for v in kept["model"].values())
    resumed = _tiny_trainer(tmp_path, max_steps=6, log_every=1000)
    resumed.resume()
    assert resumed.step == 4


def test_non_finite_entries_name_every_bad_tensor():
    from elign.io.checkpoints import non_finite_entries

    state = {"model": {"w": torch.ones(2), "b": torch.tensor([float("inf")])}, "opt": [{"m": torch.tensor([1.0])}]}
    assert non_finite_entries(state) == ["model.b"]
    state["opt"][0]["m"][0] = float("nan")
    assert non_finite_entries(state) == ["model.b", "opt.0.m"] and non_finite_entries({"step": 3}) == []
