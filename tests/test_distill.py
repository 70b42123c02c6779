"""Distillation of a teacher force field into a small MACE: end to end on tiny molecules, label cache, resume."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch

from elign.data.batch import MoleculeBatch
from elign.mlff import ForceField, ForceFieldResult, load_force_field

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mace") is None, reason="mace-torch not installed")

ZS = [1, 6, 7, 8, 9]  # type index -> atomic number
# Closed-shell molecules near equilibrium (Angstrom) and their type indices.
MOLECULES = [
    ([[0.0, 0.0, 0.117], [0.0, 0.757, -0.467], [0.0, -0.757, -0.467]], [3, 0, 0]),  # water
    ([[-0.046, 0.663, 0.0], [-0.046, -0.758, 0.0], [-1.086, 0.975, 0.0], [0.438, 1.079, 0.887],
      [0.438, 1.079, -0.887], [0.861, -1.081, 0.0]], [1, 3, 0, 0, 0, 0]),  # methanol
    ([[0.0, 0.0, 0.0], [0.629, 0.629, 0.629], [-0.629, -0.629, 0.629], [-0.629, 0.629, -0.629],
      [0.629, -0.629, -0.629]], [1, 0, 0, 0, 0]),  # methane
    ([[0.0, 0.0, 0.116], [0.0, 0.939, -0.272], [0.813, -0.470, -0.272], [-0.813, -0.470, -0.272]],
     [2, 0, 0, 0]),  # ammonia
    ([[0.0, 0.0, 0.0], [0.0, 0.0, 0.92]], [4, 0]),  # HF
]  # fmt: skip


def tiny_molecules(num: int, seed: int, jitter: float = 0.08) -> MoleculeBatch:
    """``num`` randomly rotated, jittered copies of the molecules above, padded to 6 atoms."""
    g = torch.Generator().manual_seed(seed)
    xs, ts = [], []
    for k in range(num):
        x, t = MOLECULES[k % len(MOLECULES)]
        q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))
        x = torch.tensor(x) @ q.T + jitter * torch.randn(len(t), 3, generator=g)
        xs.append(x - x.mean(0))
        ts.append(torch.tensor(t))
    return MoleculeBatch.from_lists(xs, ts, ZS, max_atoms=6)


class CountingTeacher(ForceField):
    """The synthetic force field, counting the molecules it is asked to score."""

    def __init__(self) -> None:
        inner = load_force_field("synthetic")
        super().__init__(inner.device, inner.dtype)
        self.inner, self.name, self.supported_elements = inner, "synthetic", inner.supported_elements
        self.calls = 0

    def _compute(self, positions, numbers, mask):
        return self.inner._compute(positions, numbers, mask)

    def __call__(self, batch: MoleculeBatch) -> ForceFieldResult:
        self.calls += 1
        return super().__call__(batch)


def config(out_dir, **kw):
    from elign.mlff.distill_config import DistillConfig, StudentConfig

    student = StudentConfig(
        channels=8, max_ell=1, num_interactions=1, correlation=2, radial_mlp=(16,), num_bessel=6, r_max=4.0
    )
    settings = dict(
        out_dir=str(out_dir),
        teacher="synthetic",
        epochs=2,
        batch_size=6,
        label_batch_size=16,
        lr=1e-2,
        perturb=0.05,
        ema_decay=0.5,
        progress=False,
        student=student,
        seed=0,
    )
    return DistillConfig(**{**settings, **kw})


@pytest.fixture(scope="module")
def molecules():
    return [tiny_molecules(18, seed=0)], [tiny_molecules(5, seed=1)]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, molecules):
    from elign.mlff.distill import Distiller

    out = tmp_path_factory.mktemp("distill")
    teacher = CountingTeacher()
    report = Distiller(config(out), teacher=teacher, molecules=molecules, log=lambda _: None).train()
    return out, teacher, report


def test_end_to_end_writes_model_log_and_report(first_run) -> None:
    out, teacher, report = first_run
    assert teacher.calls > 0
    for name in ("labels.pt", "state.pt", "distilled.model", "log.jsonl", "report.json", "config.json"):
        assert (out / name).is_file(), name
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2]
    saved = json.loads((out / "report.json").read_text())
    assert saved["epochs"] == 2 and saved["data"]["train"] == 36 and saved["data"]["held_out"] == 10
    assert saved["held_out"]["n_invalid"] == 0
    for key in ("student_molecules_per_s", "teacher_molecules_per_s", "speedup"):
        assert math.isfinite(saved["speed"][key]) and saved["speed"][key] > 0
    # The held-out force error went down (synthetic teacher, same molecules before and after).
    assert report["held_out"]["force_mae_ev_per_a"] < report["held_out_before"]["force_mae_ev_per_a"]


def test_saved_model_loads_safely_with_teacher_reference_energies(first_run) -> None:
    out, teacher, _ = first_run
    ff = load_force_field(out / "distilled.model")  # the allow-list loader, not a full unpickle
    assert ff.name == "mace:distilled.model"
    batch = tiny_molecules(4, seed=3)
    result = ff(batch)
    assert result.valid.all(), result.reason
    assert result.energy.shape == (4,) and result.forces.shape == (4, 6, 3)
    assert (result.forces[batch.node_mask[..., 0] == 0] == 0).all()
    # A lone atom of the student has exactly the teacher's reference energy, so formation energies
    # (E - sum E_ref) / n mean the same for both.
    assert ff.model.atomic_numbers.tolist() == [1, 6, 7, 8, 9]
    for z, e in ff.reference_energies.items():
        assert e == pytest.approx(teacher.reference_energies[z], abs=1e-4)


def test_labels_are_cached_and_resume_continues(first_run, molecules) -> None:
    from elign.mlff.distill import Distiller
    from elign.mlff.distill_labels import load_labels

    out, _, _ = first_run
    labels = load_labels(out / "labels.pt")
    assert len(labels.train) == 36 and labels.n_invalid == {"train": 0, "val": 0}
    teacher = CountingTeacher()
    resumed = config(out, epochs=3, resume=True)
    report = Distiller(resumed, teacher=teacher, molecules=molecules, log=lambda _: None).train()
    assert teacher.calls == 0  # labels and reference energies come from DIR/labels.pt
    assert report["epochs"] == 3
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2, 3]
    # Other label settings: relabelled.
    Distiller(config(out, epochs=0, perturb=0.1), teacher=teacher, molecules=molecules, log=lambda _: None).train()
    assert teacher.calls > 0


def test_label_cache_refuses_pickles(tmp_path) -> None:
    import os

    from elign.mlff.distill_labels import load_labels

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "labels.pt"
    torch.save({"format": "elign-distill-labels/1", "x": Evil()}, path)
    with pytest.raises(ValueError, match="not a readable label cache"):
        load_labels(path)


def test_invalid_teacher_labels_are_dropped_and_counted(tmp_path) -> None:
    from elign.mlff.distill_config import DistillConfig
    from elign.mlff.distill_labels import make_labels

    teacher = load_force_field("synthetic", closed_shell_only=True)
    odd = MoleculeBatch.from_lists([torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.1]])], [torch.tensor([1, 2])], ZS)
    train = [tiny_molecules(3, seed=0), odd]  # CN radical: odd electron count
    cfg = DistillConfig(out_dir=str(tmp_path), teacher="synthetic", perturb=0.0, progress=False)
    labels = make_labels(teacher, train, [tiny_molecules(2, seed=1)], cfg)
    assert len(labels.train) == 3 and labels.n_invalid == {"train": 1, "val": 0}
    assert sum(labels.invalid_reasons.values()) == 1
    assert torch.isfinite(labels.train.energy).all() and torch.isfinite(labels.train.forces).all()


def test_config_rejects_bad_settings(tmp_path) -> None:
    from elign.mlff.distill_config import DistillConfig

    with pytest.raises(ValueError, match="batch_size=0"):
        DistillConfig(out_dir=str(tmp_path), batch_size=0)
    with pytest.raises(ValueError, match="samples_from"):
        DistillConfig(out_dir=str(tmp_path), num_samples=5)


def test_cli_parses_mlff_distill(tmp_path, distill_configs) -> None:
    from elign.cli import build_parser, main
    from elign.cli.mlff import cmd_mlff_distill

    argv = ["mlff", "distill", "--out", str(tmp_path / "run"), "--train", "5", "--val", "2", "--perturb", "0.05"]
    argv += ["--epochs", "1", "--channels", "8", "--max-ell", "1", "--r-max", "4", "--max-minutes", "0.5", "--resume"]
    assert build_parser().parse_args(argv).func is cmd_mlff_distill
    seen = distill_configs
    assert main(argv) == 0
    (config,) = seen
    assert config.teacher == "aimnet2" and (config.n_train, config.n_val, config.perturb) == (5, 2, 0.05)
    assert (config.student.channels, config.student.max_ell, config.student.r_max) == (8, 1, 4.0)
    assert config.resume and config.max_minutes == 0.5 and config.epochs == 1


def test_backbone_samples_join_the_training_set(tmp_path) -> None:
    from elign.io.checkpoints import save_checkpoint
    from elign.mlff.distill_config import DistillConfig
    from elign.mlff.distill_labels import make_labels, sample_molecules_from
    from elign.testing import tiny_model

    model, model_config = tiny_model()
    path = save_checkpoint(tmp_path / "backbone.safetensors", model, model_config)
    samples = sample_molecules_from(str(path), 4, seed=0, device="cpu", steps=5, progress=False)
    assert samples.batch_size == 4
    cfg = DistillConfig(out_dir=str(tmp_path), teacher="synthetic", perturb=0.0, progress=False)
    teacher = load_force_field("synthetic")  # open shells allowed: all 4 untrained samples are scored
    labels = make_labels(teacher, [tiny_molecules(3, seed=0)], [tiny_molecules(2, seed=1)], cfg, [samples])
    assert (labels.train.kind == 2).sum() + labels.n_invalid["train"] == 4


def test_a_non_finite_student_is_never_saved(tmp_path) -> None:
    from types import SimpleNamespace

    from elign.mlff.distill import _Run

    path = tmp_path / "state.pt"
    good = {"model": {"w": torch.ones(2)}, "optimizer": {"state": {}}, "ema": {}}
    run = SimpleNamespace(epoch=3, step=30, state=lambda: good)
    _Run.save(run, path)
    before = path.read_bytes()
    bad = {**good, "optimizer": {"state": {0: {"exp_avg": torch.tensor([float("nan")])}}}}
    run.state = lambda: bad
    with pytest.raises(FloatingPointError, match=r"by epoch 3, step 30 \(optimizer.state.0.exp_avg\).*keeps"):
        _Run.save(run, path)
    assert path.read_bytes() == before
