"""Studio state and worker classes, without a server: start, metrics arrive, stop, error path, paths."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("panel")
pytest.importorskip("holoviews")

from elign.io.checkpoints import save_checkpoint  # noqa: E402
from elign.testing import tiny_model  # noqa: E402
from elign_studio.session import StudioSession  # noqa: E402
from elign_studio.settings import PathNotAllowed, StudioSettings  # noqa: E402
from elign_studio.worker import TrainingWorker  # noqa: E402

METRICS = {
    "reward_force_mean": 0.1,
    "reward_energy_mean": 0.2,
    "kl": 0.01,
    "clip_fraction": 0.05,
    "rollout_molecule_stability": 0.5,
    "time_iteration": 0.01,
}


class FakeTrainer:
    """The FedGrpoTrainer contract: callbacks per iteration, checkpoint on stop, resume from out_dir."""

    def __init__(self, config: dict, callbacks: list) -> None:
        self.config, self.callbacks = config, callbacks

    def train(self, stop_event: threading.Event | None = None) -> None:
        out = Path(self.config["out_dir"])
        out.mkdir(parents=True, exist_ok=True)
        state = out / "state.txt"
        start = int(state.read_text()) if state.exists() else 0
        for step in range(start, self.config["iterations"]):
            if stop_event is not None and stop_event.is_set():
                break
            for cb in self.callbacks:
                cb.on_step_end(step + 1, dict(METRICS, reward_force_mean=0.1 * step))  # iterations completed
            state.write_text(str(step + 1))
            time.sleep(0.01)
        model, config = tiny_model()
        save_checkpoint(out / "model.safetensors", model, config)


class FailingTrainer(FakeTrainer):
    def train(self, stop_event: threading.Event | None = None) -> None:
        self.callbacks[0].on_step_end(1, METRICS)
        raise RuntimeError("reward is NaN")


@pytest.fixture
def studio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StudioSession:
    monkeypatch.setenv("ELIGN_ASSETS", str(tmp_path / "no-assets"))
    model, config = tiny_model()
    save_checkpoint(tmp_path / "tiny.safetensors", model, config)
    s = StudioSession(
        StudioSettings(tmp_path, force_field="synthetic"),
        trainer_factory=FakeTrainer,
        config_builder=lambda preset, overrides: dict(overrides, preset=preset),
    )
    assert s.add_checkpoint("tiny.safetensors") == "tiny", s.error
    yield s
    s.close()


def _wait(cond, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.01)


def test_worker_start_metrics_stop(tmp_path: Path) -> None:
    worker = TrainingWorker(FakeTrainer)
    worker.start({"out_dir": str(tmp_path / "run"), "iterations": 10_000}, tmp_path / "run")
    events = []
    _wait(lambda: len([e for e in events if e.kind == "metrics"]) >= 3 or events.extend(worker.drain()))
    assert events[0].kind == "started"
    assert events[1].metrics["reward_force_mean"] == 0.0
    with pytest.raises(RuntimeError, match="already running"):
        worker.start({}, tmp_path / "run")
    assert worker.stop(timeout=5)
    assert not worker.running
    kinds = [e.kind for e in events + worker.drain()]
    assert kinds[-1] == "finished"
    assert (tmp_path / "run" / "model.safetensors").exists()


def test_worker_error_reaches_queue(tmp_path: Path) -> None:
    worker = TrainingWorker(FailingTrainer)
    worker.start({"out_dir": str(tmp_path / "run")}, tmp_path / "run")
    worker._thread.join(5)
    events = worker.drain()
    assert [e.kind for e in events] == ["started", "metrics", "error"]
    assert "reward is NaN" in events[-1].message


def test_two_workers_cannot_share_a_run_folder(tmp_path: Path) -> None:
    a, b = TrainingWorker(FakeTrainer), TrainingWorker(FakeTrainer)
    a.start({"out_dir": str(tmp_path), "iterations": 10_000}, tmp_path)
    try:
        with pytest.raises(RuntimeError, match="another session"):
            b.start({"out_dir": str(tmp_path), "iterations": 10}, tmp_path)
    finally:
        a.stop(5)


def test_session_alignment_stop_resume(studio: StudioSession) -> None:
    studio.iterations = 10_000
    assert studio.start_alignment(), studio.error
    assert studio.training
    _wait(lambda: studio.poll() is not None and len(studio.history) >= 3)
    run = studio.run_name
    studio.stop_alignment(timeout=5)
    _wait(lambda: studio.poll() is not None and not studio.training)
    n = len(studio.history)
    assert run in studio.model_names  # the stopped run left a loadable checkpoint
    assert "stopped" in studio.status
    stopped_status = studio.status
    assert studio.start_alignment(resume=True) and studio.run_name == run
    _wait(lambda: studio.poll() is not None and len(studio.history) > n + 2)
    assert studio.history[n]["step"] == n + 1  # resumed where it stopped
    assert f"after {n} iterations" in stopped_status  # counts what ran, not one more
    studio.stop_alignment(timeout=5)


def test_session_alignment_error_is_shown(studio: StudioSession) -> None:
    studio.worker.trainer_factory = FailingTrainer
    assert studio.start_alignment()
    _wait(lambda: studio.poll() is not None and not studio.training)
    assert "reward is NaN" in studio.error


def test_session_sample_and_export(studio: StudioSession) -> None:
    from rdkit import Chem

    studio.param.update(num=2, sample_steps=10, seed=3)
    assert studio.sample()
    studio.wait_sampling(60)
    assert not studio.error and len(studio.rows) == 2
    s = studio.sets[0]
    assert s.num_frames == 11 and len(s.frames[0][0]["elements"]) == s.rows[0]["atoms"]
    path = studio.export_sdf("selected", [1])
    assert path.parent == studio.settings.data_dir / "exports"
    mols = [m for m in Chem.SDMolSupplier(str(path), sanitize=False)]
    assert len(mols) == 1 and mols[0].HasProp("rms_force_eV_A")


def test_a_typed_formula_samples_its_isomers(studio: StudioSession) -> None:
    from collections import Counter

    studio.param.update(num=3, sample_steps=5, formula="CH4O")
    assert studio.sample(), studio.error
    studio.wait_sampling(60)
    assert not studio.error and len(studio.rows) == 3
    for b in range(3):
        assert Counter(studio.sets[0].frames[b][-1]["elements"]) == Counter(C=1, H=4, O=1)
    studio.param.update(formula="CH3Cl")
    assert studio.sample()
    studio.wait_sampling(60)
    assert "the model has no Cl" in studio.error


def test_side_by_side_same_seed(studio: StudioSession) -> None:
    studio.add_checkpoint(str(studio.settings.data_dir / "tiny.safetensors"), name="copy")
    studio.param.update(side_by_side=True, sample_model="tiny", compare_model="copy", sample_steps=5, n_atoms=4)
    assert studio.sample(), studio.error
    studio.wait_sampling(60)
    a, b = studio.sets
    assert a.frames[0][0]["xyz"] == b.frames[0][0]["xyz"]  # same weights, same seed: same chain


def test_bad_checkpoints_and_paths(studio: StudioSession, tmp_path: Path) -> None:
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 20)
    assert studio.add_checkpoint("broken.safetensors") is None
    assert "broken.safetensors" in studio.error
    assert studio.add_checkpoint("missing.safetensors") is None and "not found" in studio.error
    assert studio.add_checkpoint("/etc/hostname") is None and "outside" in studio.error
    assert studio.add_checkpoint("../../etc/hostname") is None and "outside" in studio.error
    assert studio.add_upload("x.pt", b"abc") is None and ".safetensors" in studio.error
    assert studio.add_upload("y.safetensors", b"garbage!") is None
    assert not list((tmp_path / "uploads").iterdir())
    with pytest.raises(PathNotAllowed):
        studio.settings.readable("/")
    assert studio.settings.writable("exports", "../../evil.sdf").parent == tmp_path / "exports"


def test_upload_registers_model(studio: StudioSession, tmp_path: Path) -> None:
    data = (tmp_path / "tiny.safetensors").read_bytes()
    assert studio.add_upload("mine.safetensors", data) == "mine"
    assert studio.models["mine"].parent == tmp_path / "uploads"


def test_create_app_builds_without_server(studio: StudioSession) -> None:
    from elign_studio import create_app

    layout = create_app(session=studio)
    assert layout.session is studio


def test_upload_declaring_a_huge_model_is_refused_and_removed(studio: StudioSession, tmp_path: Path) -> None:
    import json

    from safetensors.torch import load, save

    raw = (tmp_path / "tiny.safetensors").read_bytes()
    meta = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    meta["config"] = json.dumps({**json.loads(meta["config"]), "hidden": 10**6})
    assert studio.add_upload("huge.safetensors", save(load(raw), metadata=meta)) is None
    assert "implausibly large" in studio.error
    assert not list((tmp_path / "uploads").iterdir())


def test_finished_run_never_registers_a_symlink_out_of_bounds(studio: StudioSession, tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside.safetensors"
    outside.write_bytes((tmp_path / "tiny.safetensors").read_bytes())
    studio.run_name = "run-x"
    studio.run_dir.mkdir(parents=True)
    (studio.run_dir / "model.safetensors").symlink_to(outside)
    before = dict(studio.models)
    studio._finish_run("finished")
    assert studio.models == before and "no checkpoint" in studio.status
    outside.unlink()


def test_chain_series_drops_unscored_frames_and_starts_at_the_window() -> None:
    import numpy as np

    from elign_studio.views.chain_plots import chain_series
    from elign_studio.views.trajectory import chain_force_top

    class Sampled:  # the SampledSet fields the plots read
        num_frames = 5
        energy = np.array([[6e4, np.nan, 3.0, -0.5, -0.6]])
        rms_force = np.array([[4e6, np.nan, 20.0, 0.0, 0.3]])
        frames = [[{"force": [1.0, None, 3.0]}, {"force": [None]}, {"force": [2.0, 9.0]}]]

    d = chain_series(Sampled(), 0)
    assert d["frame"].tolist() == [0, 2, 3, 4] and d["unscored"] == 1
    assert d["frame_f"].tolist() == [0, 2, 4]  # a zero RMS force has no place on a log axis
    late = chain_series(Sampled(), 0, first_frame=3)
    assert late["frame"].tolist() == [3, 4] and late["energy"].tolist() == [-0.5, -0.6]
    assert chain_force_top([Sampled()], 0) == pytest.approx(np.percentile([2.0, 9.0], 95))  # the formed molecule
    assert chain_force_top([], 0) == 1.0


def test_the_energy_axis_shows_the_formed_molecule_not_the_noises_spikes() -> None:
    import numpy as np

    from elign_studio.views.chain_plots import ChainPlots, energy_span

    class Sampled:
        model_name, num_frames, frames_scored = "m", 6, True
        energy = np.array([[5e4, 4e3, -3.0, -5.5, -6.0, -6.1]])
        rms_force = np.ones((1, 6))
        frames = [[{"force": [1.0]}] * 6]

    plots = ChainPlots()
    plots.show([Sampled()], 0, 0, 5)
    y = plots.energy.fig.y_range
    assert -6.5 < y.start < -6.1 and -5.5 < y.end < -4.0  # the last half's span, padded; the 5e4 spike off the top
    assert energy_span([]) == (-10.0, 1.0)
    assert len(plots.energy.fig.title.text) < 40  # the title fits above the plot


def test_molecule_table_shows_the_index_and_a_click_selects(studio: StudioSession) -> None:
    from types import SimpleNamespace

    import panel as pn

    from elign_studio.views.molecules import MoleculeTable

    view = pn.panel(MoleculeTable(session=studio))
    studio.param.update(num=3, sample_steps=5, seed=1)
    assert studio.sample(), studio.error
    studio.wait_sampling(60)
    table = next(iter(view.select(pn.widgets.Tabulator)))
    assert table.value["molecule"].tolist() == [0, 1, 2]
    assert studio.selected == 0
    table._process_event(SimpleNamespace(event_name="cell-click", column="formula", row=2, value=None))
    assert studio.selected == 2


def test_a_new_run_starts_with_empty_curves(studio: StudioSession) -> None:
    studio.iterations = 3
    assert studio.start_alignment(), studio.error
    _wait(lambda: studio.poll() is not None and not studio.training)
    assert len(studio.history) == 3 and "after 3 iterations" in studio.status
    seen = []  # what a view watching run_name finds when the new run is announced
    studio.param.watch(lambda e: seen.append(len(studio.history)), "run_name")
    assert studio.start_alignment(), studio.error
    _wait(lambda: studio.poll() is not None and not studio.training)
    assert seen == [0]


def test_loading_a_loaded_file_again_names_the_first(studio: StudioSession) -> None:
    before = list(studio.model_names)
    assert studio.add_checkpoint(str(studio.settings.data_dir / "tiny.safetensors")) == "tiny"
    assert studio.model_names == before and "already loaded as tiny" in studio.status


def test_a_failed_sample_leaves_no_sampling_banner(studio: StudioSession, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("the force field crashed")

    from elign_studio.state import sampling as session_module

    monkeypatch.setattr(session_module, "sample_many", broken)
    assert studio.sample()
    assert studio.status.startswith("Sampling")
    studio.wait_sampling(30)
    assert "the force field crashed" in studio.error and not studio.sampling
    assert "Sampling" not in studio.status


def test_runs_have_readable_names_and_a_new_session_lists_them(studio: StudioSession) -> None:
    studio.iterations = 2
    assert studio.start_alignment(), studio.error
    _wait(lambda: studio.poll() is not None and not studio.training)
    run = studio.run_name
    assert run.startswith("tiny-cpu-demo-"), run
    later = StudioSession(studio.settings, trainer_factory=FakeTrainer)  # another browser session
    try:
        assert run in later.model_names
        assert later.model_path(run) == studio.model_path(run)
    finally:
        later.close()


def test_unscored_molecules_say_why_and_fragments_are_marked(monkeypatch: pytest.MonkeyPatch) -> None:
    import elign_studio.sampling as sampling
    from elign.mlff.synthetic import SyntheticForceField

    monkeypatch.setattr(sampling, "force_field", lambda name: SyntheticForceField(closed_shell_only=True))
    model, config = tiny_model(seed=2)
    s = sampling.sample_set(model, config, "tiny", seed=0, num=12, steps=5, n_atoms=3, force_field_name="synthetic")
    for row in s.rows:
        assert (row["not_scored_because"] == "") == row["mlff_scored"], row
    assert any("odd electron count" in row["not_scored_because"] for row in s.rows)
    for b, row in enumerate(s.rows):  # the viewer's final frame says the same
        assert s.frames[b][-1].get("why", "") == (row["not_scored_because"] or ""), row
    scored = sampling.score_frames(s)
    grey = [fr for chain in scored.frames for fr in chain if all(v is None for v in fr["force"])]
    assert grey and all(fr.get("why") for fr in grey)  # every grey frame carries its reason


def test_notebook_resources_are_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    """In Jupyter the app's scripts travel with the output: no URL for the loader to fetch, 3Dmol.js included."""
    import re

    import IPython.display

    from elign_studio.notebook import load_resources
    from elign_studio.resources import ThreeDmolComponent

    published: list[dict] = []
    monkeypatch.setattr(IPython.display, "publish_display_data", lambda data, *a, **k: published.append(data))
    monkeypatch.setattr(ThreeDmolComponent, "__javascript__", ["static/3Dmol-min.js"])  # restored after the test
    load_resources()
    scripts = [p.get("application/javascript", "") for p in published]
    assert any("window.$3Dmol" in s and "(function (define, exports, module)" in s for s in scripts)
    bundle = max(scripts, key=len)
    assert "Tabulator" in bundle and "importShim" in bundle  # the extensions are inlined, not fetched
    lists = re.findall(r"const (?:js_urls|css_urls|js_modules) = (\[[^\]]*\])", bundle)
    assert lists == ["[]", "[]", "[]"], lists
    assert ThreeDmolComponent.__javascript__ == []  # in a kernel never asked for by a URL (a reload would 404)


def test_the_final_frame_is_scored_first_and_the_rest_equals_scoring_at_once() -> None:
    import numpy as np

    import elign_studio.sampling as sampling

    model, config = tiny_model(seed=2)
    first = sampling.sample_set(model, config, "tiny", seed=1, num=3, steps=6, force_field_name="synthetic")
    assert not first.frames_scored
    assert np.isfinite(first.energy[:, -1]).all() and np.isnan(first.energy[:, :-1]).all()
    assert all(fr["force"][0] is None for chain in first.frames for fr in chain[:-1])
    assert sampling.score_frames(first, should_stop=lambda: True) is None  # a new Sample abandons it
    full = sampling.score_frames(first, chunk_frames=2)
    assert full.frames_scored and first.energy[:, :-1].size and np.isnan(first.energy[:, :-1]).all()  # a copy
    pos, types, mask = first.trajectory
    at_once = sampling._score(sampling.force_field("synthetic"), pos, types, mask, first.atomic_numbers)
    np.testing.assert_allclose(full.energy, at_once["energy"], rtol=1e-6)
    np.testing.assert_allclose(full.rms_force, at_once["rms_force"], rtol=1e-6)
    for b, chain in enumerate(full.frames):
        for f, fr in enumerate(chain):
            n = len(fr["elements"])
            vectors = at_once["forces"][f, b, :n]  # [n, 3]
            np.testing.assert_allclose(fr["force"], np.linalg.norm(vectors, axis=-1), atol=1e-4)
            np.testing.assert_allclose(fr["fvec"], vectors, atol=1e-3)


def test_the_session_shows_molecules_before_their_trajectory_is_scored(studio: StudioSession) -> None:
    studio.param.update(num=2, sample_steps=10, seed=3)
    assert studio.sample()
    _wait(lambda: studio._sample_job.done())
    studio.poll()
    assert studio.sets and not studio.sets[0].frames_scored and "scoring the other frames" in studio.status
    shown = studio.sets[0]
    studio.wait_sampling(60)
    assert studio.sets[0].frames_scored and studio.sets[0].batch is shown.batch
    assert "forces on every frame" in studio.status


def test_a_fragmented_molecule_is_valid_but_not_connected_and_its_smiles_shows_both_pieces() -> None:
    import numpy as np

    from elign_studio.sampling import chemistry_columns

    water = np.array([[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]])
    co = np.array([[10.0, 0.0, 0.0], [11.21, 0.0, 0.0], [9.45, 0.94, 0.0], [9.45, -0.94, 0.0]])  # H2C=O
    decoder = ["H", "C", "N", "O", "F"]
    cols = chemistry_columns(np.concatenate([water, co]), np.array([3, 0, 0, 1, 3, 0, 0]), decoder)
    assert cols["valid"] and not cols["connected"], cols  # valid: its largest fragment (the metric's rule)
    assert sorted(cols["smiles"].split(".")) == ["C=O", "O"] and cols["formula"] == "CH4O2"  # Hill order
    one = chemistry_columns(co, np.array([1, 3, 0, 0]), decoder)
    assert one == {"formula": "CH2O", "valid": True, "smiles": "C=O", "connected": True}


def test_a_started_run_says_starting_until_its_first_iteration(studio: StudioSession) -> None:
    import panel as pn

    from elign_studio.views.training import TrainingView

    released = threading.Event()

    class SlowStart(FakeTrainer):
        def train(self, stop_event: threading.Event | None = None) -> None:
            released.wait(10)  # loading the model and force field
            super().train(stop_event)

    studio.worker.trainer_factory = SlowStart
    view = pn.panel(TrainingView(session=studio))
    progress = next(p for p in view.select(pn.pane.Markdown) if "elign-train-state" in p.css_classes)
    studio.iterations = 3
    assert studio.start_alignment(), studio.error
    studio.poll()
    assert "(starting)" in progress.object and "iterations received" not in progress.object
    released.set()
    _wait(lambda: studio.poll() is not None and not studio.training)
    assert "3 iterations received" in progress.object, progress.object


def test_each_alignment_plot_keeps_its_own_axes_and_composition_is_plotted(studio: StudioSession) -> None:
    """Clip fraction (~0.01) and stability (~0.5) share the label 'fraction': linked axes would empty one."""
    import holoviews as hv
    import holoviews.plotting.bokeh  # noqa: F401  (the app loads it; a test loads it itself)
    import pandas as pd
    import panel as pn

    from elign_studio.views.training import STABILITY_CHART, TrainingView, _curves

    view = TrainingView(session=studio)
    panes = list(pn.panel(view).select(pn.pane.HoloViews))
    assert len(panes) == 5 and not any(p.linked_axes for p in panes)
    data = pd.DataFrame(
        {"step": [1.0, 2.0], "rollout_composition_tv": [0.03, 0.02], "eval_atom_type_tv": [None, 0.025]}
    )
    overlay = _curves(data, ("rollout_composition_tv", "eval_atom_type_tv"), "Atom types", "TV")
    plot = hv.renderer("bokeh").get_plot(overlay)
    assert plot.state.xaxis[0].formatter.format == "%d"  # whole iterations on the x axis
    assert {c.label for c in overlay if isinstance(c, hv.Curve)} == {
        "atom-type TV (rollouts)",
        "atom-type TV (held-out)",
    }
    # the stability chart shows the diversity guards beside it; a run's rows stream them into the charts
    diversity = _curves(data.assign(**dict.fromkeys(STABILITY_CHART, 0.5)), STABILITY_CHART, "Stability", "fraction")
    assert {c.label for c in diversity if isinstance(c, hv.Curve)} >= {"uniqueness (held-out)"}
    studio.run_name = "run"
    studio.history = [{"step": 1, "rollout_repeated": 0.25, "eval_uniqueness": 0.9, "kl_prefix": 3.0}]
    view._stream()
    streamed = view.buffer.data[["rollout_repeated", "eval_uniqueness", "kl_prefix"]]
    assert streamed.values.tolist() == [[0.25, 0.9, 3.0]]


def test_the_run_state_follows_the_run(studio: StudioSession) -> None:
    seen: list[str] = []
    studio.param.watch(lambda e: seen.append(e.new), "run_state")
    assert studio.run_state == "idle" and not studio.training
    studio.iterations = 10_000
    assert studio.start_alignment(), studio.error
    assert studio.run_state == "starting" and studio.training
    _wait(lambda: studio.poll() is not None and studio.run_state == "running")
    studio.stop_alignment(timeout=5)
    _wait(lambda: studio.poll() is not None and not studio.training)
    assert seen[:3] == ["starting", "running", "stopping"] and seen[-1] == "stopped", seen
    studio.iterations = 2
    assert studio.start_alignment(), studio.error
    _wait(lambda: studio.poll() is not None and not studio.training)
    assert studio.run_state == "completed"
    studio.worker.trainer_factory = FailingTrainer
    assert studio.start_alignment(), studio.error
    _wait(lambda: studio.poll() is not None and not studio.training)
    assert studio.run_state == "failed" and "reward is NaN" in studio.error


def test_declared_defaults_are_the_default_preset_and_explicit_values_win(studio: StudioSession) -> None:
    from elign_studio.session import DEFAULT_PRESET
    from elign_studio.worker import EDITABLE, preset_settings

    fresh = StudioSession(studio.settings, trainer_factory=FakeTrainer)
    paper = StudioSession(studio.settings, trainer_factory=FakeTrainer, preset="paper", iterations=7)
    try:
        declared = {k: StudioSession.param[k].default for k in EDITABLE}
        assert declared == preset_settings(DEFAULT_PRESET)
        assert {k: getattr(fresh, k) for k in EDITABLE} == declared
        assert paper.iterations == 7  # given explicitly
        assert paper.group_size == preset_settings("paper")["group_size"] != declared["group_size"]
        assert all(StudioSession.param[k].doc for k in StudioSession.param if k != "name")
    finally:
        fresh.close()
        paper.close()


def test_every_view_is_a_viewer_that_renders(studio: StudioSession) -> None:
    import panel as pn
    from panel.viewable import Viewer

    from elign_studio.views.checkpoints import CheckpointView
    from elign_studio.views.grid import GridView
    from elign_studio.views.messages import Messages
    from elign_studio.views.molecules import MoleculeTable
    from elign_studio.views.training import TrainingView
    from elign_studio.views.trajectory import TrajectoryView

    for cls in (CheckpointView, GridView, Messages, MoleculeTable, TrainingView, TrajectoryView):
        view = cls(session=studio)
        assert isinstance(view, Viewer)
        assert isinstance(view.__panel__(), pn.viewable.Viewable)
    messages = Messages(session=studio)
    studio.error = "broken"
    assert messages.error.visible and messages.error.object == "broken"


def test_atoms_are_bounded_by_the_chosen_models_largest_size(studio: StudioSession) -> None:
    from elign_studio.views.inputs import bounded_int_input

    largest = 6  # the tiny model's size prior
    studio.sample_model = ""
    studio.sample_model = "tiny"
    assert studio.param.n_atoms.bounds == (0, largest)
    box = bounded_int_input(studio, "n_atoms")
    box.value = 500
    assert studio.n_atoms == largest and box.value == largest and "500 is out of range" in studio.status
    assert studio.sample(), studio.error  # Sample works with what the box shows
    studio.wait_sampling(60)
    assert not studio.error


def test_uploads_are_named_safely_and_fail_on_the_page(studio: StudioSession, monkeypatch: pytest.MonkeyPatch) -> None:
    uploads = studio.settings.folder("uploads")
    good = (studio.settings.data_dir / "tiny.safetensors").read_bytes()
    label = studio.add_upload("../../other/evil.safetensors", good)
    assert label == "evil"
    (saved,) = uploads.iterdir()
    assert saved.parent == uploads and saved.name.endswith("-evil.safetensors") and len(saved.name) > 20
    assert studio.add_upload("broken.safetensors", b"\x00" * 64) is None
    assert "broken.safetensors" in studio.error and str(uploads) not in studio.error  # the user's file, not ours
    from elign_studio.state import checkpoints as session_module

    def explode(path):
        raise KeyError("nf")  # what a malformed file may raise deep inside a loader

    monkeypatch.setattr(session_module.ModelCache, "load", staticmethod(explode))
    assert studio.add_upload("odd.safetensors", good) is None and "odd.safetensors" in studio.error
    assert [p.name for p in uploads.iterdir()] == [saved.name]


def test_an_edm_run_folder_may_not_link_out_of_the_readable_folders(studio: StudioSession, tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside"  # beside the data folder, not in it
    outside.mkdir()
    (outside / "args.pickle").write_bytes(b"secret")
    run = studio.settings.data_dir / "edm_run"
    run.mkdir()
    (run / "args.pickle").symlink_to(outside / "args.pickle")
    (run / "generative_model_ema.npy").write_bytes(b"x")
    assert studio.add_checkpoint("edm_run") is None
    assert "outside the folders this studio may read" in studio.error


def test_the_viewer_controls_reach_both_viewers_and_the_player(studio: StudioSession) -> None:
    from elign_studio.views.trajectory import TrajectoryView

    view = TrajectoryView(session=studio)
    view.hide_h.value = True
    view.atom_labels.value = "index"
    view.style.value = "spacefill"
    view.speed.value = 400
    for v in view.viewers:
        assert (v.hide_h, v.atom_labels, v.style) == (True, "index", "spacefill")
    assert view.player.interval == 400


def test_an_upload_beyond_the_limit_is_refused_with_the_way_round(studio: StudioSession) -> None:
    from elign_studio.serving import MAX_UPLOAD_MB, WEBSOCKET_MAX_MESSAGE_BYTES, serve_command

    assert studio.add_upload("huge.safetensors", b"\x00" * (MAX_UPLOAD_MB * 2**20 + 1)) is None
    assert f"more than the {MAX_UPLOAD_MB} MB" in studio.error and "load it by path" in studio.error
    cmd = serve_command(5006)
    assert cmd[cmd.index("--websocket-max-message-size") + 1] == str(WEBSOCKET_MAX_MESSAGE_BYTES)
    assert WEBSOCKET_MAX_MESSAGE_BYTES > MAX_UPLOAD_MB * 2**20 * 4 / 3  # base64 of the largest upload fits


def test_the_table_shows_why_a_molecule_was_not_scored_beside_its_figures() -> None:
    from elign_studio.views.molecules import COLUMNS

    where = COLUMNS.index("not_scored_because")
    assert where == COLUMNS.index("energy_per_atom_eV") + 1 and where < len(COLUMNS) - 3


def test_a_users_own_file_is_viewed_scored_and_exported(studio: StudioSession, tmp_path: Path) -> None:
    import numpy as np
    from rdkit import Chem

    from elign.io.export import write_npz, write_sdf, write_xyz

    d = 1.09 / 3**0.5
    methane = (np.array([[0, 0, 0], [d, d, d], [-d, -d, d], [-d, d, -d], [d, -d, -d]]), np.array([0, 1, 1, 1, 1]))
    water = (np.array([[0, 0, 0.12], [0, 0.76, -0.47], [0, -0.76, -0.47]]), np.array([1, 0, 0]))
    decoder = ["C", "H", "O"]
    water = (water[0], np.array([2, 1, 1]))
    write_sdf(tmp_path / "mine.sdf", [methane, water], decoder)
    assert studio.open_molecules("mine.sdf", (tmp_path / "mine.sdf").read_bytes()), studio.error
    assert [r["formula"] for r in studio.rows] == ["CH4", "H2O"] and studio.sets[0].model_name == "mine"
    assert all(r["mlff_scored"] for r in studio.rows) and "Opened mine.sdf: 2 molecule(s)" in studio.status
    path = studio.export_sdf("all")
    assert len([m for m in Chem.SDMolSupplier(str(path), sanitize=False)]) == 2
    write_npz(tmp_path / "mine.npz", [methane], decoder)
    assert studio.open_molecules("mine.npz", (tmp_path / "mine.npz").read_bytes()) and len(studio.rows) == 1
    frames = [(methane[0] * s, methane[1]) for s in (3.0, 2.0, 1.0)]  # one molecule's chain, as exported
    write_xyz(tmp_path / "chain.xyz", frames, decoder, forces=[None] * 3)
    assert studio.open_molecules("chain.xyz", (tmp_path / "chain.xyz").read_bytes()), studio.error
    studio.wait_sampling(60)
    studio.poll()
    s = studio.sets[0]
    assert s.num_frames == 3 and len(studio.rows) == 1 and s.frames_scored and studio.frame == 2
    assert not studio.open_molecules("notes.txt", b"hello") and "open an .sdf, .npz or .xyz" in studio.error
    assert not studio.open_molecules("bad.xyz", b"3\\ncomment\\nC 0 0\\n") and "bad.xyz" in studio.error
    assert str(studio.settings.folder("uploads")) not in studio.error
    assert not list(studio.settings.folder("uploads").iterdir())  # nothing of the user's files stays


class EvaluatingTrainer(FakeTrainer):
    """FakeTrainer whose iterations 2 and 4 end with a held-out evaluation of six molecules (methane, water,
    ...), passed to the callbacks that take them, as FedGrpoTrainer.evaluate does."""

    def train(self, stop_event: threading.Event | None = None) -> None:
        import torch

        from elign.data.batch import MoleculeBatch

        d = 1.09 / 3**0.5
        methane = torch.tensor([[0, 0, 0], [d, d, d], [-d, -d, d], [-d, d, -d], [d, -d, -d]])
        water = torch.tensor([[0, 0, 0.12], [0, 0.76, -0.47], [0, -0.76, -0.47]])
        types = [torch.tensor([1, 0, 0, 0, 0]), torch.tensor([2, 0, 0])]  # H, C, O
        batch = MoleculeBatch.from_lists([methane, water] * 3, types * 3, [1, 6, 8])
        for step in (2, 4):
            for cb in self.callbacks:
                if hasattr(cb, "on_held_out"):
                    cb.on_held_out(step, batch)
        super().train(stop_event)


def test_the_policys_held_out_molecules_reach_the_alignment_tab(studio: StudioSession) -> None:
    import panel as pn

    from elign_studio.views.training import TrainingView
    from elign_studio.worker import HELD_OUT_SHOWN

    studio.worker.trainer_factory = EvaluatingTrainer
    view = TrainingView(session=studio)
    pn.panel(view)
    studio.iterations = 4
    assert studio.start_alignment(), studio.error
    _wait(lambda: studio.poll() is not None and not studio.training)
    assert studio.held_out_step == 4 and len(studio.held_out) == HELD_OUT_SHOWN == 4
    methane, water = studio.held_out[:2]
    assert methane["label"] == "#0 CH4" and water["label"] == "#1 H2O"
    assert methane["elements"] == ["C", "H", "H", "H", "H"] and len(methane["bonds"]) == 4
    assert methane["xyz"][1] == pytest.approx([1.09 / 3**0.5] * 3, abs=1e-3)
    assert view.held_out.molecules == studio.held_out
    assert "iteration 4" in view.held_out_note.object
    studio.worker.trainer_factory = FakeTrainer  # a new run: no evaluation yet, nothing of the last run's shown
    assert studio.start_alignment(), studio.error
    assert studio.held_out == [] and view.held_out.molecules == []
    _wait(lambda: studio.poll() is not None and not studio.training)


def test_the_alignment_trainer_passes_its_held_out_molecules_to_the_studio(studio: StudioSession) -> None:
    from elign_studio.worker import default_config_builder, default_trainer_factory

    studio.worker.trainer_factory = default_trainer_factory  # FedGrpoTrainer on the tiny model
    studio.config_builder = lambda preset, overrides: default_config_builder(
        preset, dict(overrides, shared_steps=2, eval_every=1, eval_samples=5, device="cpu")
    )
    studio.param.update(iterations=1, prompts=2, group_size=2, steps=6)
    assert studio.start_alignment(), studio.error
    _wait(lambda: studio.poll() is not None and not studio.training, timeout=300)
    assert studio.run_state == "completed", studio.error
    assert studio.held_out_step == 1 and len(studio.held_out) == 4  # the first four of five
    assert all(len(c["elements"]) == len(c["xyz"]) > 0 for c in studio.held_out)
    assert "eval_molecule_stability" in studio.history[-1]  # the metrics of the same evaluation


def test_the_notebook_extension_sends_3dmol_once_per_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    """``extension()`` then ``create_app()`` in one cell: 3Dmol.js goes out once, beside Panel's own inline scripts;
    a later cell (after a browser reload, say) sends the whole bundle again."""
    from types import SimpleNamespace

    import IPython
    import IPython.display

    from elign_studio import notebook
    from elign_studio.resources import ThreeDmolComponent

    published: list[dict] = []
    shell = SimpleNamespace(kernel=object(), execution_count=7)
    monkeypatch.setattr(IPython.display, "publish_display_data", lambda data, *a, **k: published.append(data))
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    monkeypatch.setattr(ThreeDmolComponent, "__javascript__", ["static/3Dmol-min.js"])  # restored after the test
    monkeypatch.setitem(notebook._PUBLISHED, "cell", None)

    def scripts() -> list[str]:
        return [p.get("application/javascript", "") for p in published]

    notebook.extension()
    assert [s for s in scripts() if "window.$3Dmol" in s] and not [s for s in scripts() if "importShim" in s]
    sent = len(published)
    notebook.load_resources()  # what create_app() does in the same cell
    assert len(published) == sent
    shell.execution_count = 8
    notebook.load_resources()
    later = scripts()[sent:]
    assert any("window.$3Dmol" in s for s in later) and any("importShim" in s for s in later)


def test_the_viewers_of_a_view_share_its_keyed_player_and_link_their_cameras(studio: StudioSession) -> None:
    from elign_studio.views.trajectory import TrajectoryView

    view, other = TrajectoryView(session=studio), TrajectoryView(session=studio)
    assert view.keyed_player.player is view.player
    groups = {v.group for v in view.viewers} | {view.keyed_player.group}
    assert len(groups) == 1 and "" not in groups and other.viewers[0].group not in groups  # one group a view
    assert view.link_cameras.value and all(v.link_cameras for v in view.viewers)
    view.link_cameras.value = False
    assert not any(v.link_cameras for v in view.viewers)
    studio.frame = 2  # set by the session (not the player): the player, readout and viewers follow
    assert view.player.value == 2 and view.frame_readout.value == "2" and view.viewers[0].frame == 2
