"""FED-GRPO trainer: updates, learning on a synthetic force field, resume, DDP equivalence."""

import copy
import json
import math
import os
import socket
import subprocess
import sys
import threading

import pytest
import torch

from elign.data.dense import DenseDataset
from elign.io.checkpoints import load_checkpoint, save_checkpoint
from elign.mlff import load_force_field
from elign.rl.config import AlignConfig
from elign.rl.trainer import FedGrpoTrainer
from elign.training.pretrain import PretrainConfig, Pretrainer


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """A tiny EDM pretrained for a few seconds on synthetic chain molecules."""
    out = tmp_path_factory.mktemp("backbone")
    data = DenseDataset.synthetic(256, seed=0, sizes=(4, 7))
    cfg = PretrainConfig(
        out_dir=str(out),
        hidden=32,
        n_layers=2,
        timesteps=100,
        batch_size=32,
        lr=2e-3,
        warmup_steps=10,
        max_steps=300,
        log_every=100,
        ema_decay=0.95,
    )
    Pretrainer(cfg, data, device="cpu").train()
    return out / "model.safetensors"


def tiny_align(out, backbone, **overrides):
    base = dict(
        out_dir=str(out),
        checkpoint=str(backbone),
        mlff="synthetic",
        steps=20,
        shared_steps=8,
        prompts=2,
        group_size=4,
        eval_every=0,
        device="cpu",
        disconnected_failed=False,
    )
    return AlignConfig.preset("cpu-demo", **{**base, **overrides})


def make_trainer(cfg, **kw):
    model, model_config, _ = load_checkpoint(cfg.checkpoint)
    return FedGrpoTrainer(cfg, force_field=load_force_field("synthetic"), model=model, model_config=model_config, **kw)


def test_one_update_changes_policy_not_reference(tmp_path, backbone):
    tr = make_trainer(tiny_align(tmp_path, backbone, iterations=1, minibatches=1))
    before = {k: v.clone() for k, v in tr.policy.state_dict().items()}
    ref_before = {k: v.clone() for k, v in tr.reference.state_dict().items()}
    metrics = tr.run_iteration()
    changed = [k for k, v in tr.policy.state_dict().items() if not torch.equal(v, before[k])]
    trainable = [k for k, p in tr.policy.named_parameters() if p.requires_grad]
    assert set(changed) == set(trainable)
    assert all(torch.equal(v, ref_before[k]) for k, v in tr.reference.state_dict().items())
    # the first minibatch is evaluated at the rollout policy: ratio exactly 1, KL to the reference 0
    assert metrics["ratio_min"] == pytest.approx(1.0) and metrics["ratio_max"] == pytest.approx(1.0)
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-8)
    for key in (
        "reward_force_mean",
        "reward_energy_mean",
        "clip_fraction",
        "failed",
        "time_rollout",
        "time_reward",
        "time_update",
        "rollout_molecule_stability",
        "approx_kl",
        "grad_norm",
    ):
        assert key in metrics


def _update_recomputing_every_old_log_prob(tr, ro, adv, iteration):
    """The update as written before old log-probs were reused (the first minibatch's forward, the rollout's):
    every old log-prob and reference mean computed first."""
    from elign.rl.loss import clipped_surrogate, gaussian_kl
    from elign.rl.trainer import MINIBATCH_STREAM

    R, L = ro.node_mask.shape[0], ro.num_steps
    logp_old, ref_mean = torch.empty(L, R), torch.empty(L, R, *ro.z_t.shape[2:])
    with torch.no_grad():
        for li, ri in tr._items(ro, torch.arange(R)):
            logp_old[li, ri] = tr._forward(tr.policy, ro, li, ri)[2]
            ref_mean[li, ri] = tr._forward(tr.reference, ro, li, ri)[0]
    order = torch.randperm(R, generator=torch.Generator().manual_seed(tr.cfg.seed * MINIBATCH_STREAM + iteration))
    for group in tr.opt.param_groups:
        group["lr"] = tr.cfg.lr  # iteration 0 of a run without warm-up
    for mb in order.tensor_split(tr.cfg.minibatches):
        tr.opt.zero_grad(set_to_none=True)
        for li, ri in tr._items(ro, mb):
            mean, std, logp, mask = tr._forward(tr.policy, ro, li, ri)
            surrogate, _ = clipped_surrogate(logp, logp_old[li, ri], adv[ri, li], tr.cfg.clip_eps)
            kl = gaussian_kl(mean, ref_mean[li, ri], std, mask).mean()
            ((surrogate + tr.cfg.kl_beta * kl) * (len(li) / (len(mb) * L))).backward()
        torch.nn.utils.clip_grad_norm_(tr.policy.parameters(), tr.cfg.max_grad_norm)
        tr.opt.step()


def test_the_update_equals_one_that_recomputes_every_old_log_prob(tmp_path, backbone):
    cfg = tiny_align(tmp_path, backbone, iterations=1, minibatches=2, warmup_iterations=0, kl_beta=0.5, prefix_kl=0.0)
    a, b = make_trainer(cfg), make_trainer(cfg)
    b.policy.load_state_dict(a.policy.state_dict())  # a perturbed policy, so the KL term has a gradient
    with torch.no_grad():
        for pa, pb in zip(a.policy.parameters(), b.policy.parameters(), strict=True):
            pa.add_(1e-3 * torch.randn_like(pa))
            pb.copy_(pa)
    scored = a.rollout_and_score(0)
    adv, _ = a.advantages(scored)
    calls = []
    forward = a._forward
    a._forward = lambda model, ro, l, r: (
        calls.append((model is a.policy, torch.is_grad_enabled(), len(l))) or forward(model, ro, l, r)
    )
    assert bool(scored.rollouts.on_data().all())  # every rollout is trained
    a.update(scored.rollouts, adv, 0)
    _update_recomputing_every_old_log_prob(b, scored.rollouts, adv, 0)
    for pa, pb in zip(a.policy.parameters(), b.policy.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5)
    R, L = scored.rollouts.node_mask.shape[0], scored.rollouts.num_steps
    no_grad_policy_items = sum(n for is_policy, grad, n in calls if is_policy and not grad)
    assert no_grad_policy_items == 0  # old log-probs: the first minibatch's own forward, then the rollout's
    reference_items = sum(n for is_policy, grad, n in calls if not is_policy)
    assert reference_items == R * L


def test_the_update_evaluates_a_groups_shared_first_step_once(tmp_path, backbone, monkeypatch):
    from elign.rl import trainer as trainer_module

    cfg = tiny_align(tmp_path, backbone, iterations=1, minibatches=2, warmup_iterations=0, kl_beta=0.5, prefix_kl=0.0)
    a, b = make_trainer(cfg), make_trainer(cfg)
    scored = a.rollout_and_score(0)
    adv, _ = a.advantages(scored)
    rows = []
    predict = a.policy.predict_eps
    a.policy.predict_eps = lambda z, t, mask, *context: rows.append(z.shape[0]) or predict(z, t, mask, *context)
    a.update(scored.rollouts, adv, 0)
    monkeypatch.setattr(trainer_module, "shared_first_steps", lambda *args: None)  # every item evaluated
    b.update(scored.rollouts, adv, 0)
    for pa, pb in zip(a.policy.parameters(), b.policy.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5)
    R, L, K = scored.rollouts.node_mask.shape[0], scored.rollouts.num_steps, cfg.group_size
    order = torch.randperm(R, generator=torch.Generator().manual_seed(cfg.seed * trainer_module.MINIBATCH_STREAM))
    minibatches = order.tensor_split(cfg.minibatches)
    assert all(len(mb) * L <= cfg.chunk for mb in minibatches)  # one chunk each: its first steps together
    # a minibatch's first steps: one input per group among its rollouts
    assert rows == [len(mb) * (L - 1) + len(set((mb // K).tolist())) for mb in minibatches]


def test_rollout_log_probs_are_the_policy_log_probs_of_its_steps(tmp_path, backbone):
    tr = make_trainer(tiny_align(tmp_path, backbone))
    ro = tr.rollout_and_score(0).rollouts
    R, L = ro.node_mask.shape[0], ro.num_steps
    assert ro.log_prob.shape == (L, R)
    recomputed = torch.empty(L, R)
    with torch.no_grad():
        for li, ri in tr._items(ro, torch.arange(R)):
            recomputed[li, ri] = tr._forward(tr.policy, ro, li, ri)[2]
    torch.testing.assert_close(ro.log_prob, recomputed, atol=1e-3, rtol=1e-5)  # float rounding of a ~1e2 sum


def test_the_first_branched_step_sees_each_group_once(tmp_path, backbone):
    cfg = tiny_align(tmp_path, backbone)  # 2 groups of 4, 8 shared steps of 20
    tr = make_trainer(cfg)
    rows = []
    predict = tr.policy.predict_eps
    tr.policy.predict_eps = lambda z, t, mask, *context: rows.append(z.shape[0]) or predict(z, t, mask, *context)
    scored = tr.rollout_and_score(0)
    ro, G, K = scored.rollouts, cfg.prompts, cfg.group_size
    trained = cfg.steps - cfg.shared_steps
    assert rows == [G] * (cfg.shared_steps + 1) + [G * K] * (trained - 1) + [G * K]  # the last: decoding z_0
    for name in ("z_t", "x0_pred", "std"):  # shared bit for bit within a group at the first trained step
        first = getattr(ro, name)[0].view(G, K, -1)
        assert torch.equal(first, first[:, :1].expand_as(first)), name
    assert not torch.equal(ro.z_s[0][0], ro.z_s[0][1])  # each rollout then draws its own noise
    with torch.no_grad():  # and they are what the network gives each rollout on its own
        s, t = ro.s[:1].expand(G * K) / tr.policy.T, ro.t[:1].expand(G * K) / tr.policy.T
        eps = tr.policy.predict_eps(ro.z_t[0], t.view(-1, 1), ro.node_mask)
        x0 = tr.policy.scheduler.reverse(ro.z_t[0], eps, s, t, ro.node_mask)[2]
    torch.testing.assert_close(ro.x0_pred[0], x0, atol=1e-5, rtol=1e-5)


def test_potentials_score_the_shared_first_step_once_per_group(tmp_path, backbone, monkeypatch):
    from elign.rl.rewards import energy_schedule, potentials_on_x0

    cfg = tiny_align(tmp_path, backbone)
    tr = make_trainer(cfg)
    ro = tr.rollout_and_score(0).rollouts
    evaluated = energy_schedule(ro.num_steps, cfg.energy_every)
    scored = []
    call = type(tr.ff).__call__
    monkeypatch.setattr(
        type(tr.ff),
        "__call__",
        lambda ff, batch, forces=True: scored.append(batch.batch_size) or call(ff, batch, forces),
    )
    psi, valid = potentials_on_x0(tr.policy, tr.ff, ro, evaluated, tr.info.atomic_numbers)
    G, R, n_eval = cfg.prompts, ro.node_mask.shape[0], int(evaluated.sum())
    assert sum(scored) == G + (n_eval - 1) * R
    for l in torch.nonzero(evaluated).flatten().tolist():  # each column as scoring every rollout gives it
        batch = tr.policy.to_batch(ro.x0_pred[l], ro.node_mask, tr.info.atomic_numbers)
        r = tr.ff(batch, forces=False)
        expected = -tr.ff.formation_energy_per_atom(batch, r).float()
        torch.testing.assert_close(psi[:, l], expected, atol=1e-5, rtol=1e-5, equal_nan=True)
        assert torch.equal(valid[:, l], r.valid)
    assert torch.isnan(psi[:, ~evaluated]).all() and not valid[:, ~evaluated].any()


def test_without_a_kl_term_the_update_skips_the_reference_network(tmp_path, backbone):
    tr = make_trainer(tiny_align(tmp_path, backbone, iterations=1, kl_beta=0.0))
    scored = tr.rollout_and_score(0)
    adv, _ = tr.advantages(scored)
    models = []
    forward = tr._forward
    tr._forward = lambda model, ro, l, r: models.append(model) or forward(model, ro, l, r)
    stats = tr.update(scored.rollouts, adv, 0)
    assert models and all(m is tr.policy for m in models)
    assert "kl" not in stats and "kl_prefix" not in stats and math.isfinite(stats["loss"])


def test_alignment_lowers_rms_force_of_fresh_samples(tmp_path, backbone):
    """20 iterations lower the reward model's RMS force on fresh samples by more than the seed spread."""
    torch.set_num_threads(2)
    after, before = [], None
    for seed in range(3):
        cfg = tiny_align(tmp_path / f"s{seed}", backbone, iterations=20, seed=seed, lr=1e-3, eval_samples=64)
        tr = make_trainer(cfg)
        if before is None:
            before = tr.evaluate(64)["eval_rms_force"]
        tr.train()
        after.append(tr.evaluate(64)["eval_rms_force"])
    spread = max(after) - min(after)
    gains = [before - a for a in after]
    assert min(gains) > spread, (before, after)


def test_stop_event_checkpoint_and_resume(tmp_path, backbone):
    cfg = tiny_align(tmp_path, backbone, iterations=4)
    seen = []

    class Stopper:
        def on_step_end(self, step, metrics):
            seen.append(step)
            if step == 2:
                stop.set()

    stop = threading.Event()
    result = make_trainer(cfg, callbacks=[Stopper()]).train(stop)
    assert result == {"iteration": 2, "stopped": True, "resumed": False}
    _, _, extra = load_checkpoint(tmp_path / "model.safetensors")
    assert extra["aligned_iterations"] == 2
    result = make_trainer(cfg, callbacks=[Stopper()]).train()
    assert result["resumed"] and result["iteration"] == 4 and seen == [1, 2, 3, 4]
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [1, 2, 3, 4]


def test_resume_is_exact(tmp_path, backbone):
    a = make_trainer(tiny_align(tmp_path / "a", backbone, iterations=3))
    a.train()
    b_cfg = tiny_align(tmp_path / "b", backbone, iterations=2)
    make_trainer(b_cfg).train()
    b = make_trainer(tiny_align(tmp_path / "b", backbone, iterations=3))
    b.train()
    for (k, p), q in zip(a.policy.state_dict().items(), b.policy.state_dict().values(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), k


DDP_SCRIPT = r"""
import sys, torch
from elign.io.checkpoints import load_checkpoint
from elign.mlff import load_force_field
from elign.rl.config import AlignConfig
from elign.rl.trainer import FedGrpoTrainer
torch.set_num_threads(1)
backbone, out = sys.argv[1], sys.argv[2]
cfg = AlignConfig.preset("cpu-demo", out_dir=out, checkpoint=backbone, mlff="synthetic", steps=12, shared_steps=4,
                         prompts=2, group_size=3, minibatches=1, eval_every=0, device="cpu", iterations=1,
                         kl_beta=0.5, w_uniqueness=0.5)  # the uniqueness channel counts every process's molecules
model, mc, _ = load_checkpoint(backbone)
tr = FedGrpoTrainer(cfg, force_field=load_force_field("synthetic"), model=model, model_config=mc)
tr.run_iteration()
grads = {f"grad.{k}": p.grad for k, p in tr.policy.named_parameters() if p.grad is not None}
torch.save({**tr.policy.state_dict(), **grads}, f"{out}/rank{tr.rank}.pt")
if torch.distributed.is_initialized():
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
"""


def test_ddp_two_processes_match_single_process(tmp_path, backbone):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={port}",
        str(script),
        str(backbone),
        str(tmp_path / "ddp"),
    ]
    (tmp_path / "ddp").mkdir()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (tmp_path / "single").mkdir()
    single_env = {k: v for k, v in env.items() if k not in ("RANK", "WORLD_SIZE")}
    proc = subprocess.run(
        [sys.executable, str(script), str(backbone), str(tmp_path / "single")],
        capture_output=True,
        text=True,
        timeout=300,
        env=single_env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "ddp/rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "ddp/rank1.pt", weights_only=True)
    single = torch.load(tmp_path / "single/rank0.pt", weights_only=True)
    start = load_checkpoint(backbone)[0].state_dict()
    assert r0.keys() == r1.keys() == single.keys()
    for k in r0:  # the ranks hold identical weights and identical (synchronised) gradients
        assert torch.equal(r0[k], r1[k]), f"ranks disagree on {k}"
    grads = [k for k in r0 if k.startswith("grad.")]
    assert len(grads) == sum(1 for k in start if k != "gamma.gamma" and k != "buffer")
    g_ddp = torch.cat([r0[k].flatten() for k in grads])
    g_one = torch.cat([single[k].flatten() for k in grads])
    assert ((g_ddp - g_one).norm() / g_one.norm()).item() < 1e-4  # the same gradient as one process
    # Adam's first step is lr * g / (|g| + eps): a gradient entry near zero may flip sign between two
    # summation orders and move by up to 2 lr; every other entry must agree to float precision.
    lr_first = 2e-4 * 0.5  # cpu-demo lr, first warm-up iteration
    w_ddp = torch.cat([r0[k].flatten() for k in start])
    w_one = torch.cat([single[k].flatten() for k in start])
    moved = (w_ddp - torch.cat([v.flatten() for v in start.values()])).abs()
    diff = (w_ddp - w_one).abs()
    assert moved.max() > 0.5 * lr_first
    assert diff.max() <= 2 * lr_first + 1e-6
    assert (diff > 1e-6).float().mean() < 0.01, f"{int((diff > 1e-6).sum())} of {diff.numel()} weights differ"


def test_save_native_checkpoint_for_sampling(tmp_path, backbone):
    tr = make_trainer(tiny_align(tmp_path, backbone, iterations=1))
    tr.train()
    model, config, extra = load_checkpoint(tmp_path / "model.safetensors")
    assert extra["method"] == "FED-GRPO" and config.hidden == 32
    save_checkpoint(tmp_path / "copy.safetensors", model, config)


def test_disconnected_molecules_can_count_as_failed(tmp_path, backbone):
    base = make_trainer(tiny_align(tmp_path / "a", backbone, iterations=1, disconnected_failed=False))
    strict = make_trainer(tiny_align(tmp_path / "b", backbone, iterations=1, disconnected_failed=True))
    m_base, m_strict = base.run_iteration(), strict.run_iteration()  # same rollouts: same seed and weights
    R = 2 * 4
    n_disconnected = round((1 - m_strict["rollout_connected"]) * R)
    assert m_base["rollout_connected"] == m_strict["rollout_connected"]
    assert n_disconnected > 0  # the tiny synthetic backbone makes fragments: the rule has something to count
    assert m_strict["failed"] == m_base["failed"] + n_disconnected
    assert AlignConfig().disconnected_failed is False and AlignConfig.preset("cpu-demo").disconnected_failed


def _weights(path):
    return torch.load(path, weights_only=True)


def test_non_finite_alignment_stops_and_keeps_the_last_checkpoint(tmp_path, backbone):
    tr = make_trainer(tiny_align(tmp_path, backbone, iterations=5))
    original = tr.update

    def poisoned_update(ro, adv, iteration):
        out = original(ro, adv, iteration)
        if iteration == 2:  # the third iteration's update leaves NaN weights, as a diverging run does
            with torch.no_grad():
                next(p for p in tr.policy.parameters() if p.requires_grad).fill_(float("nan"))
        return out

    tr.update = poisoned_update
    with pytest.raises(FloatingPointError, match="non-finite at iteration 3"):
        tr.train()
    state = _weights(tmp_path / "state.pt")
    assert state["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in state["policy"].values())
    model, _, extra = load_checkpoint(tmp_path / "model.safetensors")
    assert extra["aligned_iterations"] == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_an_error_between_minibatches_saves_nothing_of_that_iteration(tmp_path, backbone):
    tr = make_trainer(tiny_align(tmp_path, backbone, iterations=3, minibatches=2))
    tr.cfg.iterations = 1
    tr.train()
    saved = _weights(tmp_path / "state.pt")
    tr.cfg.iterations = 3
    steps = []
    original_step = tr.opt.step

    def failing_step(*a, **k):
        steps.append(1)
        if len(steps) == 2:  # after the first minibatch of iteration 2 has updated the policy
            raise RuntimeError("worker lost")
        return original_step(*a, **k)

    tr.opt.step = failing_step
    with pytest.raises(RuntimeError, match="worker lost"):
        tr.train()
    after = _weights(tmp_path / "state.pt")
    assert after["iteration"] == saved["iteration"] == 1
    for k, v in saved["policy"].items():
        assert torch.equal(after["policy"][k], v), k


def test_resume_drops_log_records_beyond_the_state(tmp_path, backbone):
    cfg = tiny_align(tmp_path, backbone, iterations=2)
    make_trainer(cfg).train()
    with (tmp_path / "metrics.jsonl").open("a") as f:  # logged after the last checkpoint, then killed
        f.write(json.dumps({"iteration": 3, "loss": 0.0}) + "\n")
    (tmp_path / ".state.pt.abc.tmp").write_bytes(b"half")
    make_trainer(tiny_align(tmp_path, backbone, iterations=3)).train()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [1, 2, 3]
    assert not (tmp_path / ".state.pt.abc.tmp").exists()


def test_the_cpu_preset_is_cpu_demo_on_the_100_step_chain() -> None:
    cpu, demo = AlignConfig.preset("cpu"), AlignConfig.preset("cpu-demo")
    assert (cpu.steps, cpu.shared_steps, cpu.iterations, cpu.trained_steps) == (100, 40, 90, 60)
    differ = {k for k, v in cpu.to_dict().items() if v != demo.to_dict()[k]}
    assert differ == {"steps", "shared_steps", "iterations", "eval_every", "eval_samples"}


def test_train_steps_trains_a_seeded_subset_of_the_branched_steps(tmp_path, backbone):
    tr = make_trainer(tiny_align(tmp_path, backbone, iterations=1, train_steps=3, kl_beta=0.5))
    subset = tr.trained_steps(12, iteration=4)
    assert len(subset) == 3 and subset.tolist() == sorted(set(subset.tolist())) and int(subset.max()) < 12
    assert torch.equal(subset, tr.trained_steps(12, iteration=4))  # a function of (seed, iteration): resumable
    assert not all(torch.equal(subset, tr.trained_steps(12, iteration=i)) for i in range(5, 10))
    scored = tr.rollout_and_score(0)
    adv, _ = tr.advantages(scored)
    steps_seen = []
    forward = tr._forward
    tr._forward = lambda model, ro, l, r: steps_seen.extend(l.tolist()) or forward(model, ro, l, r)
    stats = tr.update(scored.rollouts, adv, 0)
    assert set(steps_seen) == set(tr.trained_steps(scored.rollouts.num_steps, 0).tolist())
    assert math.isfinite(stats["loss"]) and "kl" in stats
    full = make_trainer(tiny_align(tmp_path / "full", backbone, iterations=1))
    assert full.trained_steps(12, 0).tolist() == list(range(12))


def test_the_composition_channel_tracks_and_resumes_its_running_drift(tmp_path, backbone):
    cfg = tiny_align(tmp_path, backbone, iterations=2, w_composition=0.5)
    tr = make_trainer(cfg)
    tr.train()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["rollout_composition_tv"] <= 1 and "rollout_hydrogen_fraction" in r for r in lines)
    assert all(0 <= r["rollout_bond_tv"] <= 1 and "running_bond_tv" not in r for r in lines)
    assert tr.composition.updates == 2 and float(tr.composition.running().abs().sum()) > 0
    again = make_trainer(tiny_align(tmp_path, backbone, iterations=2, w_composition=0.5))
    assert again.maybe_resume() and again.composition.updates == 2
    assert torch.equal(again.composition.drift, tr.composition.drift)
    scored = again.rollout_and_score(2)
    with_channel, _ = again.advantages(scored)
    again.cfg.w_composition = 0.0
    without, _ = again.advantages(scored)
    assert not torch.allclose(with_channel, without)


def test_with_composition_bonds_the_channel_also_pushes_the_bond_types(tmp_path, backbone):
    tr = make_trainer(tiny_align(tmp_path, backbone, iterations=2, w_composition=0.5, composition_bonds=True))
    tr.train()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["running_bond_tv"] <= 1 for r in lines)
    assert tr.composition.drift.shape == (tr.info.num_types + 3,) and tr.composition.updates == 2
    scored = tr.rollout_and_score(2)
    assert scored.bond_counts.shape == (len(scored.fractions), 3)
    with_bonds, _ = tr.advantages(scored)
    tr.composition.drift[tr.info.num_types :] = 0.0  # no bond drift: the channel is the atom-type one
    atoms_only, _ = tr.advantages(scored)
    assert not torch.allclose(with_bonds, atoms_only)
    # a run resumed without bonds restarts its running drift rather than misreading the longer one
    again = make_trainer(tiny_align(tmp_path, backbone, iterations=2, w_composition=0.5))
    assert again.maybe_resume() and again.composition.updates == 0


def test_the_bond_drift_is_pooled_and_a_rollout_without_bonds_pushes_nothing() -> None:
    from elign.data.info import qm9_info
    from elign.metrics.composition import BOND_LABELS
    from elign.rl.composition import CompositionTracker

    info = qm9_info()
    tracker = CompositionTracker(info, momentum=0.5, bonds=True)
    fractions = torch.full((2, info.num_types), 1.0 / info.num_types)  # [R, E]
    bond_counts = torch.tensor([[9, 1, 0], [0, 0, 0]])  # [R, 3]: the second rollout has no bonds
    drift = tracker.batch_drift(fractions, bond_counts, torch.tensor([9, 9]))
    assert torch.allclose(
        drift[info.num_types :], torch.tensor([0.9, 0.1, 0.0], dtype=torch.float64) - tracker.bond_target
    )
    vectors = tracker.vectors(fractions, bond_counts)
    assert torch.allclose(vectors[1, info.num_types :], tracker.bond_target) and len(BOND_LABELS) == 3
    tracker.fold(drift)
    assert torch.allclose(tracker.running(), drift)  # bias-corrected: the first batch is the running drift
    channel = tracker.channel(vectors.view(1, 2, -1), weight=1.0, tolerance=0.1)
    assert channel.shape == (1, 2) and abs(float(channel.sum())) < 1e-9
    # the rollout that makes the batch's excess of double bonds is pushed down, the one without bonds up
    assert float(channel[0, 0]) < float(channel[0, 1])


def test_the_composition_channel_needs_qm9s_elements(tmp_path, backbone):
    model, model_config, _ = load_checkpoint(backbone)
    model_config.dataset_info = lambda: type(
        "Info", (), {"atom_decoder": ["C", "H"], "num_types": 2, "max_n_nodes": 7}
    )()
    with pytest.raises(ValueError, match="QM9's elements"):
        FedGrpoTrainer(
            tiny_align(tmp_path, backbone, w_composition=0.5),
            force_field=load_force_field("synthetic"),
            model=model,
            model_config=model_config,
        )


def test_the_best_model_is_chosen_by_stability_within_the_guards(tmp_path, backbone):
    tr = make_trainer(tiny_align(tmp_path, backbone))
    base = {"eval_molecule_stability": 0.8, "eval_uniqueness": 1.0, "eval_atom_type_tv": 0.03, "eval_rms_force": 0.5}
    assert tr.held_out_score(base) == pytest.approx(0.8)
    drifted = {**base, "eval_molecule_stability": 0.9, "eval_atom_type_tv": 0.06}
    assert tr.held_out_score(drifted) == pytest.approx(0.9 - 10 * 0.02)
    assert tr.held_out_score(drifted) < tr.held_out_score(base)
    collapsed = {**base, "eval_uniqueness": 0.9}
    assert tr.held_out_score(collapsed) == pytest.approx(0.8 - 10 * 0.05)
    tr.cfg.best_by = "force"
    assert tr.held_out_score(base) == -0.5
    with pytest.raises(ValueError, match="best_by"):
        tiny_align(tmp_path, backbone, best_by="newest")


def test_evaluation_reports_the_guards(tmp_path, backbone):
    metrics = make_trainer(tiny_align(tmp_path, backbone, eval_samples=8)).evaluate()
    for k in ("eval_atom_type_tv", "eval_bond_type_tv", "eval_ring_size_tv", "eval_uniqueness", "eval_validity"):
        assert k in metrics and 0 <= metrics[k] <= 1, k
    assert metrics["eval_heavy_formulas_distinct"] >= 1


def test_the_composition_channel_stops_a_reward_that_pays_for_hydrogen_from_drifting_the_atom_types(
    tmp_path, backbone, monkeypatch
):
    """A reward that pays for hydrogen drifts the policy's atom types; the composition channel holds them."""
    from elign.rl import rewards as rewards_module
    from elign.rl.composition import type_fractions
    from elign.rl.rewards import RewardOutput

    def pays_for_hydrogen(ff, molecules, chunk=256):
        fractions = type_fractions(molecules)  # [B, E]
        n = len(fractions)
        return RewardOutput(fractions[:, 0].clone(), torch.zeros(n), torch.ones(n, dtype=torch.bool), [None] * n)

    monkeypatch.setattr(rewards_module, "score_molecules", pays_for_hydrogen)
    torch.set_num_threads(2)
    hydrogen = {}
    for w in (0.0, 2.0):
        cfg = tiny_align(tmp_path / f"w{w}", backbone, iterations=25, lr=2e-3, kl_beta=0.0, w_energy=0.0,
                         w_composition=w, prompts=2, group_size=8, eval_samples=96, seed=1)  # fmt: skip
        tr = make_trainer(cfg)
        before = tr.evaluate()["eval_hydrogen_fraction"]
        tr.train()
        hydrogen[w] = tr.evaluate()["eval_hydrogen_fraction"] - before
    assert hydrogen[0.0] > 0.03, hydrogen  # the reward alone drifts the types
    assert hydrogen[2.0] < hydrogen[0.0] / 2, hydrogen  # the channel holds them


@pytest.mark.parametrize("type_guidance", [0.0, 0.5])
def test_groups_that_share_a_formula_make_its_isomers_and_train_only_positions(tmp_path, backbone, type_guidance):
    from collections import Counter

    from elign.data.formula import parse_formula

    cfg = tiny_align(tmp_path, backbone, prompts_by="formula", iterations=1, minibatches=1, type_guidance=type_guidance)
    tr = make_trainer(cfg)
    prompts = tr.prompts(0)
    assert len(prompts.formulas) == 2 and prompts.formulas == tr.prompts(0).formulas  # seeded by the iteration
    scored = tr.rollout_and_score(0)
    ro, decoder = scored.rollouts, tr.info.atom_decoder
    assert ro.positions_only and ro.channels == slice(0, 3)
    mols = ro.molecules.to("cpu")
    for r in range(mols.batch_size):
        n = int(mols.node_mask[r].sum())
        made = Counter(decoder[int(k)] for k in mols.one_hot[r, :n].argmax(-1))
        assert made == Counter(parse_formula(prompts.formulas[r // ro.group_size])), r
    # the potentials score the x0 predictions with the formula's types: at the last step, the molecules' own
    x0_types = ro.x0_pred[-1, ..., 3 : 3 + len(decoder)].argmax(-1).cpu()  # [R, N]
    real = mols.node_mask[..., 0].long()  # [R, N]
    assert torch.equal(x0_types * real, mols.one_hot.argmax(-1) * real)
    R = ro.node_mask.shape[0]
    recomputed = torch.empty(ro.num_steps, R)
    with torch.no_grad():
        for li, ri in tr._items(ro, torch.arange(R)):
            recomputed[li, ri] = tr._forward(tr.policy, ro, li, ri)[2]
    torch.testing.assert_close(ro.log_prob, recomputed, atol=1e-3, rtol=1e-5)  # the positions' log-probs
    # the guidance moves the positions after the action: the next step starts where the guidance put them
    moved = (ro.z_t[1:, ..., :3] - ro.z_s[:-1, ..., :3]).abs().amax()
    assert (moved > 1e-4) if type_guidance else (moved == 0)
    metrics = tr.run_iteration()
    assert metrics["ratio_min"] == pytest.approx(1.0) and metrics["ratio_max"] == pytest.approx(1.0)
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-8)


def test_a_formula_run_evaluates_formulas_saves_its_kind_and_refuses_the_composition_channel(tmp_path, backbone):
    from elign.rl.prompts import formula_prompts

    cfg = tiny_align(tmp_path, backbone, prompts_by="formula", iterations=1, eval_samples=6)
    tr = make_trainer(cfg)
    formulas, types = formula_prompts(tr.info, 6, torch.Generator().manual_seed(0))
    assert types.shape[0] == 6 and all(len(f) for f in formulas) and int((types >= 0).sum(1).max()) <= 7
    assert 0 <= tr.evaluate()["eval_molecule_stability"] <= 1
    tr.train()
    _, _, extra = load_checkpoint(tmp_path / "model.safetensors")
    assert extra["prompts_by"] == "formula"
    with pytest.raises(ValueError, match="w_composition=0"):
        tiny_align(tmp_path, backbone, prompts_by="formula", w_composition=0.1)
    with pytest.raises(ValueError, match="prompts_by"):
        tiny_align(tmp_path, backbone, prompts_by="atoms")
    with pytest.raises(ValueError, match="type_guidance"):
        tiny_align(tmp_path, backbone, prompts_by="formula", type_guidance=-0.5)


def test_a_composition_conditioned_policy_aligns_on_formulas_reading_their_counts(tmp_path, backbone):
    from dataclasses import replace

    from elign.models.factory import build_model
    from elign.training.init_from import load_initial_weights

    _, model_config, _ = load_checkpoint(backbone)
    conditioned_config = replace(model_config, context="composition")
    model = build_model(conditioned_config)
    load_initial_weights(model, str(backbone))
    ff = load_force_field("synthetic")
    with pytest.raises(ValueError, match="prompts_by=formula"):
        FedGrpoTrainer(tiny_align(tmp_path, backbone), force_field=ff, model=model, model_config=conditioned_config)
    cfg = tiny_align(tmp_path, backbone, prompts_by="formula", iterations=1, minibatches=1, eval_samples=4)
    tr = FedGrpoTrainer(cfg, force_field=ff, model=model, model_config=conditioned_config)
    ro = tr.rollout_and_score(0).rollouts
    counts = ro.molecules.one_hot.sum(1).cpu() / 10  # [R, K] the formulas' counts are what the network read
    torch.testing.assert_close(ro.context.cpu(), counts)
    metrics = tr.run_iteration()
    assert metrics["ratio_min"] == pytest.approx(1.0) and metrics["ratio_max"] == pytest.approx(1.0)
    assert 0 <= tr.evaluate()["eval_molecule_stability"] <= 1


def test_the_uniqueness_channel_remembers_and_resumes_what_the_policy_made(tmp_path, backbone):
    tr = make_trainer(tiny_align(tmp_path, backbone, iterations=2, w_uniqueness=0.5, uniqueness_memory=5))
    tr.train()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["rollout_repeated"] <= 1 for r in lines)
    assert len(tr.recent.batches) == 2 and all(len(b) == tr.cfg.prompts * tr.cfg.group_size for b in tr.recent.batches)
    again = make_trainer(tiny_align(tmp_path, backbone, iterations=2, w_uniqueness=0.5, uniqueness_memory=5))
    assert again.maybe_resume() and list(again.recent.batches) == list(tr.recent.batches)
    scored = again.rollout_and_score(2)
    K = again.cfg.group_size
    valid = scored.rdkit_valid.view(-1, K)  # [G, K]
    group = int(valid.sum(dim=1).argmax())
    assert int(valid[group].sum()) >= 2, "the tiny backbone made too few valid molecules to compare"
    repeats = torch.zeros(len(scored.smiles))
    repeats[group * K + int(valid[group].nonzero()[0])] = 5.0  # one valid molecule made often lately
    with_channel, _ = again.advantages(scored, repeats)
    again.cfg.w_uniqueness = 0.0
    without, _ = again.advantages(scored, repeats)
    assert not torch.allclose(with_channel, without)


def test_chain_lengths_draw_each_iterations_chain_and_branch_at_the_same_share(tmp_path, backbone):
    from elign.rl.prompts import chain_branch

    assert chain_branch(100, 40, 50) == 20 and chain_branch(100, 40, 250) == 100 and chain_branch(20, 19, 2) == 1
    tr = make_trainer(tiny_align(tmp_path, backbone, iterations=2, chain_lengths=[10, 20]))
    chains = [tr.prompts.chain(i) for i in range(12)]
    assert set(chains) == {(10, 4), (20, 8)} and chains == [tr.prompts.chain(i) for i in range(12)]
    short = next(i for i, c in enumerate(chains) if c == (10, 4))
    scored = tr.rollout_and_score(short)
    assert scored.rollouts.num_steps == 6  # 10 steps, 4 shared: 6 branched steps trained
    adv, _ = tr.advantages(scored)
    assert adv.shape == (len(scored.smiles), 6) and math.isfinite(tr.update(scored.rollouts, adv, short)["loss"])
    tr.train()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["chain_steps"] for r in lines] == [chains[0][0], chains[1][0]]
    plain = make_trainer(tiny_align(tmp_path / "plain", backbone, iterations=1))
    assert {plain.prompts.chain(i) for i in range(5)} == {(20, 8)}
    with pytest.raises(ValueError, match="chain_lengths"):
        tiny_align(tmp_path, backbone, chain_lengths=[1, 20])


def test_rollouts_keep_their_shared_prefix_and_know_when_they_left_the_data(tmp_path, backbone):
    tr = make_trainer(tiny_align(tmp_path, backbone, iterations=1))
    ro = tr.rollout_and_score(0).rollouts
    G, K, S = ro.num_groups, ro.group_size, tr.cfg.shared_steps
    assert ro.prefix_z.shape == (S, G, *ro.z_t.shape[2:]) and ro.prefix_t.shape == ro.prefix_s.shape == (S,)
    assert bool((ro.prefix_t[1:] == ro.prefix_s[:-1]).all()) and int(ro.prefix_s[-1]) == int(ro.t[0])
    assert bool(ro.on_data().all()) and bool(ro.prefix_on_data().all())
    ro.z_t[5, 1, 0, 0] = float("nan")  # rollout 1 blew up
    ro.z_s[4, 2, 0, 0] = 1e3  # rollout 2 ran away
    ro.prefix_z[3, 1, 0, 0] = 1e3  # group 1's shared state at step 3 ran away
    assert ro.finite().tolist() == [r != 1 for r in range(G * K)]
    assert ro.on_data().tolist() == [r not in (1, 2) for r in range(G * K)]
    assert ro.prefix_on_data()[:, 1].tolist() == [s != 3 for s in range(S)] and bool(ro.prefix_on_data()[:, 0].all())


def test_the_update_leaves_out_non_finite_rollouts_keeps_the_kl_on_the_data_and_holds_the_prefix(tmp_path, backbone):
    tr = make_trainer(tiny_align(tmp_path, backbone, iterations=1, kl_beta=1.0, minibatches=2))
    with torch.no_grad():  # a reference that differs from the policy: the KL has a gradient
        for p in tr.reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ro = tr.rollout_and_score(0).rollouts
    ro.z_t[2, 0] = float("nan")  # rollout 0 blew up: its forward would be NaN
    zero = torch.zeros(ro.node_mask.shape[0], ro.num_steps)  # no preference: only the KL moves the policy
    state = copy.deepcopy(tr.policy.state_dict()), copy.deepcopy(tr.opt.state_dict())

    def update(prefix_kl: float) -> dict:
        tr.policy.load_state_dict(state[0])
        tr.opt.load_state_dict(state[1])
        tr.cfg.prefix_kl = prefix_kl
        return tr.update(ro, zero, 0)

    held, free = update(1.0), update(0.0)
    assert held["off_data"] == free["off_data"] == 1 and all(math.isfinite(v) for v in held.values())
    assert all(bool(torch.isfinite(p).all()) for p in tr.policy.parameters())
    assert held["kl_prefix"] > 0 and "kl_prefix" not in free and held["kl"] > 0
    assert held["grad_norm"] != free["grad_norm"]
    ro.z_t[3, 1] *= 1e4  # rollout 1 ran away (finite): the surrogate still trains it, the KL leaves it out
    far = update(0.0)
    assert far["off_data"] == 2 and 0 < far["kl"] < free["kl"] and math.isfinite(far["grad_norm"])
