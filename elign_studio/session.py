"""Per-session state of the studio (param.Parameterized), apart from any view; testable without a server.

A session owns its training worker and its sampling executor. Background work reports through queues
and futures; :meth:`StudioSession.poll` (a periodic callback in the app) moves results into params.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import re
import time
import uuid
from pathlib import Path
from typing import Any

import param

from elign.rl.config import PRESETS
from elign_studio.exports import write_molecules_sdf, write_trajectory_xyz
from elign_studio.sampling import ModelCache, SampledSet, sample_many, score_frames, warm_up
from elign_studio.serving import MAX_UPLOAD_MB
from elign_studio.settings import DEFAULT_FORCE_FIELDS, PathNotAllowed, StudioSettings
from elign_studio.worker import (
    EDITABLE,
    ConfigBuilder,
    TrainerFactory,
    TrainingWorker,
    default_config_builder,
    preset_settings,
)

__all__ = ["METRIC_KEYS", "RUN_STATES", "StudioSession"]

METRIC_KEYS = (
    "reward_force_mean",
    "reward_energy_mean",
    "kl",
    "clip_fraction",
    "rollout_molecule_stability",
    "rollout_composition_tv",  # the rollouts' atom-type distance to QM9 (a guard against composition drift)
    "eval_atom_type_tv",  # the same on the held-out evaluation's molecules, at its iterations only
)
SHIPPED = {"backbone (shipped)": "shipped_backbone", "aligned (shipped)": "shipped_aligned"}


def _fmt_error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if not isinstance(e, ValueError | RuntimeError | OSError) else str(e)


RUN_STATES = ("idle", "starting", "running", "stopping", "completed", "stopped", "failed")
ACTIVE_RUN_STATES = ("starting", "running", "stopping")  # a training thread owns the run folder
DEFAULT_PRESET = "cpu-demo"
_PRESET_DEFAULTS = preset_settings(DEFAULT_PRESET)  # the declared defaults are the default preset's


class StudioSession(param.Parameterized):
    # ---------------------------------------------------------------- checkpoints
    model_names = param.List(default=[], doc="models this session can sample from or align")
    force_field = param.Selector(
        default="synthetic", objects=list(DEFAULT_FORCE_FIELDS), doc="force field that scores sampled frames"
    )
    status = param.String(default="", doc="the last thing the session did, for the status line")
    error = param.String(default="", doc="the last failure, for the error banner (empty: none)")
    # ---------------------------------------------------------------- alignment
    align_model = param.String(default="", doc="name (in model_names) of the model to align")
    preset = param.Selector(
        default=DEFAULT_PRESET, objects=sorted(PRESETS), doc="alignment preset; choosing one sets the fields below"
    )
    iterations = param.Integer(
        default=_PRESET_DEFAULTS["iterations"], bounds=(1, None), doc="policy-update iterations of a run"
    )
    prompts = param.Integer(default=_PRESET_DEFAULTS["prompts"], bounds=(1, None), doc="molecule sizes per iteration")
    group_size = param.Integer(
        default=_PRESET_DEFAULTS["group_size"], bounds=(2, None), doc="rollouts per size (one normalisation group)"
    )
    steps = param.Integer(default=_PRESET_DEFAULTS["steps"], bounds=(1, None), doc="denoising steps of the rollouts")
    lr = param.Number(default=_PRESET_DEFAULTS["lr"], bounds=(0, None), doc="peak learning rate")
    run_name = param.String(default="", doc="folder (under runs/) of the current or last alignment run")
    run_state = param.Selector(
        default="idle",
        objects=list(RUN_STATES),
        doc="the alignment run: idle (none yet), starting (loading), running, stopping (checkpointing), "
        "completed, stopped (resumable) or failed",
    )
    step = param.Integer(default=0, doc="iterations the trainer reports completed in this run")
    # ---------------------------------------------------------------- sampling
    sample_model = param.String(default="", doc="name of the model to sample from")
    compare_model = param.String(default="", doc="name of the model sampled beside it (side by side)")
    side_by_side = param.Boolean(default=False, doc="sample both models on the same seeds and sizes")
    seed = param.Integer(default=0, bounds=(0, None), doc="seed of the sizes and the sampling noise")
    num = param.Integer(default=1, bounds=(1, 64), label="Molecules (1-64)", doc="molecules per click")
    sample_steps = param.Integer(
        default=100,
        bounds=(1, None),
        label="Sample steps (1-T)",
        doc="denoising steps; more than the model's T samples T",
    )
    n_atoms = param.Integer(
        default=0,
        bounds=(0, None),
        label="Atoms (0: from the prior)",
        doc="atoms per molecule; 0 draws sizes from the model's size prior",
    )
    formula = param.String(
        default="",
        label="Formula (isomers; empty: free)",
        doc="sample isomers of this formula (C7H10O2): the atom types are fixed, only positions are sampled",
    )
    sampling = param.Boolean(default=False, doc="a sample is being drawn in the background")
    sets = param.List(default=[], doc="SampledSet per model (one, or two side by side)")
    selected = param.Integer(default=0, doc="molecule index shown in the viewer")
    frame = param.Integer(default=0, doc="frame of the denoising chain shown (0: pure noise)")

    def __init__(
        self,
        settings: StudioSettings | None = None,
        trainer_factory: TrainerFactory | None = None,
        config_builder: ConfigBuilder | None = None,
        **params: Any,
    ) -> None:
        self.settings = settings or StudioSettings.from_env()
        super().__init__(**params)
        ffs = list(dict.fromkeys([self.settings.force_field, *DEFAULT_FORCE_FIELDS]))
        self.param.force_field.objects = ffs
        if "force_field" not in params:
            self.force_field = self.settings.force_field
        if trainer_factory is None and self.settings.trainer:
            trainer_factory = self.settings.load_object(self.settings.trainer)
        if config_builder is None and self.settings.config_builder:
            config_builder = self.settings.load_object(self.settings.config_builder)
        self.worker = TrainingWorker(trainer_factory)
        self.config_builder = config_builder or default_config_builder
        self.history: list[dict[str, float]] = []
        self.models: dict[str, Path] = {}
        self._executor = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="elign-sample")
        self._sample_job: cf.Future | None = None
        self._score_job: cf.Future | None = None  # forces on the frames before the final one
        self._sample_generation = 0  # a new Sample abandons the previous one's frame scoring
        self._sample_started = 0.0
        self._sampled_status = ""
        self.last_sample_seconds = math.nan
        self.refresh_models()
        if self.preset != DEFAULT_PRESET:  # a preset chosen at construction sets what was not given explicitly
            self._apply_preset()
            self.param.update({k: params[k] for k in EDITABLE if k in params})

    @property
    def training(self) -> bool:
        """A training thread owns the current run (starting, running or stopping)."""
        return self.run_state in ACTIVE_RUN_STATES

    def warm_up(self) -> None:
        """Load the default model and force field in the background (the app calls it once the page shows)."""
        self._executor.submit(warm_up, self.models.get(self.sample_model), self.force_field)

    # ================================================================ checkpoints
    def refresh_models(self) -> None:
        """Shipped models that exist, user checkpoints, and the latest checkpoint of every run in the data
        folder (earlier browser sessions' runs included)."""
        from elign.io import assets

        missing = []
        for name, fn in SHIPPED.items():
            path = getattr(assets, fn)()
            if path.exists():
                self.models[name] = path
            else:
                missing.append(str(path))
        runs = self.settings.data_dir / "runs"
        for run in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
            ckpts = self._run_checkpoints(run)
            if ckpts:
                self.models.setdefault(run.name, ckpts[-1])
        self.model_names = list(self.models)
        if not self.sample_model and self.model_names:
            self.sample_model = self.model_names[0]
        if not self.align_model and self.model_names:
            self.align_model = self.model_names[0]
        if not self.compare_model and len(self.model_names) > 1:
            self.compare_model = self.model_names[1]
        if missing and not self.model_names:
            self.status = (
                "No shipped checkpoint found (" + "; ".join(missing) + "). Load one by path or "
                "upload a .safetensors file."
            )

    def _register(self, name: str, path: Path) -> str:
        self.models[name] = path
        self.model_names = list(self.models)
        if not self.sample_model:
            self.sample_model = name
        if not self.align_model:
            self.align_model = name
        return name

    def add_checkpoint(self, user_path: str, name: str | None = None) -> str | None:
        """Validate and register a native checkpoint or an original EDM run folder. None on error."""
        self.error = ""
        try:
            path = self.settings.readable(user_path)
            if path.is_dir():  # an EDM run folder: every file it is loaded from must lie in a readable folder too
                for name_in_run in ("args.pickle", "generative_model_ema.npy", "generative_model.npy"):
                    if (path / name_in_run).is_symlink() or (path / name_in_run).exists():
                        self.settings.readable(path / name_in_run)
            model, config, _ = ModelCache.load(path)
        except (PathNotAllowed, ValueError, OSError) as e:
            self.error = f"Cannot load {user_path}: {_fmt_error(e)}"
            return None
        known = [n for n, p in self.models.items() if p.resolve() == path.resolve()]
        if known and name is None:  # the same file again (e.g. the shipped backbone by its path)
            self.status = f"{user_path} is already loaded as {known[0]}"
            return known[0]
        label = name or (path.name if path.is_dir() else path.stem if path.stem != "model" else path.parent.name)
        label = self._register(f"{label} ({path.parent.name})" if label in self.models else label, path)
        self.status = f"Loaded {label}: {config.dataset_info().name}, T={model.T}"
        return label

    def add_upload(self, filename: str, data: bytes) -> str | None:
        """Save an uploaded .safetensors file into the uploads folder and register it."""
        self.error = ""
        if not filename.endswith(".safetensors"):
            self.error = (
                f"{filename}: upload a native .safetensors checkpoint; original EDM runs are folders, load them by path"
            )
            return None
        if not data:
            self.error = f"{filename} is empty"
            return None
        if len(data) > MAX_UPLOAD_MB * 2**20:
            self.error = (
                f"{filename} is {len(data) / 2**20:.0f} MB, more than the {MAX_UPLOAD_MB} MB an upload may be; "
                f"put it in {self.settings.data_dir} and load it by path"
            )
            return None
        base = Path(filename).name  # a name is never a path: the uuid prefix stays, no other upload is reached
        target = self.settings.writable("uploads", f"{uuid.uuid4().hex[:8]}-{base}")
        label = None
        try:
            target.write_bytes(data)
            label = self.add_checkpoint(str(target), name=Path(base).stem)
        except Exception as e:  # whatever a malformed file raises becomes the banner, never a server traceback
            self.error = f"Cannot load {base}: {_fmt_error(e)}"
        finally:  # a refused (or crashing) upload never stays on disk
            if label is None:
                target.unlink(missing_ok=True)
                self.error = self.error.replace(str(target), base)  # the user's file, not the internal path
        return label

    def model_path(self, name: str) -> Path:
        if name not in self.models:
            raise ValueError(f"no model named {name!r}; load a checkpoint first")
        return self.models[name]

    @param.depends("sample_model", watch=True)
    def _bound_atoms(self) -> None:
        """Atoms per molecule may reach the chosen model's largest size, no more (0: from its size prior)."""
        try:
            _, config, _ = ModelCache.load(self.model_path(self.sample_model))
        except (ValueError, OSError):  # no model yet, or one that cannot load: Sample says why
            return
        largest = int(config.dataset_info().max_n_nodes)
        self.param.n_atoms.bounds = (0, largest)
        if self.n_atoms > largest:
            self.status = f"Atoms: {self.n_atoms} is more than {self.sample_model} makes, {largest} is used"
            self.n_atoms = largest

    # ================================================================ alignment
    @param.depends("preset", watch=True)
    def _apply_preset(self) -> None:
        for k, v in preset_settings(self.preset).items():
            if k in self.param:
                setattr(self, k, type(getattr(self, k))(v))

    @property
    def run_dir(self) -> Path:
        return self.settings.folder("runs") / self.run_name

    def start_alignment(self, resume: bool = False) -> bool:
        """Start (or resume, same run folder) alignment in the background. False with ``error`` set."""
        self.error = ""
        if self.worker.running:
            self.error = "Alignment is already running in this session."
            return False
        if not resume or not self.run_name:
            self.history = []  # emptied before the new name is announced: views redraw on run_name
            self.step = 0
            model = re.sub(r"[^A-Za-z0-9]+", "-", self.align_model).strip("-")[:32] or "model"
            self.run_name = f"{model}-{self.preset}-" + time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
        try:
            checkpoint = self.model_path(self.align_model)
            overrides = {k: getattr(self, k) for k in EDITABLE}
            overrides.update(out_dir=str(self.run_dir), checkpoint=str(checkpoint), mlff=self.force_field)
            config = self.config_builder(self.preset, overrides)
            self.worker.start(config, self.run_dir)
        except Exception as e:  # noqa: BLE001 - shown in the app
            self.error = f"Cannot start alignment: {_fmt_error(e)}"
            return False
        self.run_state = "starting"
        self.status = f"{'Resumed' if resume else 'Started'} alignment of {self.align_model} into {self.run_dir}"
        return True

    def stop_alignment(self, timeout: float | None = None) -> None:
        """Ask the trainer to write a checkpoint and stop (pause: resume continues the same run)."""
        if self.worker.running:
            self.run_state = "stopping"
            self.worker.stop(timeout)
            self.status = "Stopping: the trainer writes a checkpoint after the current iteration..."
        self.poll()

    def _readable(self, path: Path) -> bool:
        """True when ``path`` (resolved, so a symlink is followed) lies in a folder this studio may read."""
        try:
            self.settings.readable(path)
        except (PathNotAllowed, OSError):
            return False
        return True

    def _run_checkpoints(self, run_dir: Path) -> list[Path]:
        """A run folder's readable checkpoints, oldest first."""
        return sorted(
            (p for p in run_dir.glob("**/*.safetensors") if self._readable(p)), key=lambda p: p.stat().st_mtime
        )

    def _finish_run(self, how: str) -> None:
        ckpts = self._run_checkpoints(self.run_dir)
        if ckpts:
            label = self._register(f"{self.run_name}", ckpts[-1])
            self.status = f"Alignment {how} after {self.step} iterations; checkpoint {ckpts[-1]} ({label})"
        else:
            self.status = f"Alignment {how}; no checkpoint was written in {self.run_dir}"

    # ================================================================ sampling
    def sample(self) -> bool:
        """Sample in the background from ``sample_model`` (and ``compare_model`` side by side)."""
        self.error = ""
        if self._sample_job is not None and not self._sample_job.done():
            self.error = "Sampling is already running."
            return False
        names = [self.sample_model] + ([self.compare_model] if self.side_by_side else [])
        try:
            if self.side_by_side and self.compare_model == self.sample_model:
                raise ValueError("pick two different models to compare")
            paths = [self.model_path(n) for n in names]
        except ValueError as e:
            self.error = str(e)
            return False
        args = dict(
            seed=self.seed,
            num=self.num,
            steps=self.sample_steps,
            n_atoms=self.n_atoms or None,
            formula=self.formula.strip() or None,
            force_field_name=self.force_field,
        )
        self._sample_started = time.perf_counter()
        self._sample_generation += 1
        self._sample_job = self._executor.submit(sample_many, names, paths, args)
        self.sampling = True
        self.status = f"Sampling {self.num} molecule(s), {self.sample_steps} steps, from {', '.join(names)}..."
        return True

    def _score_many(self, sets: list[SampledSet], generation: int) -> list[SampledSet] | None:
        scored = []
        for s in sets:
            done = score_frames(s, should_stop=lambda: generation != self._sample_generation)
            if done is None:
                return None
            scored.append(done)
        return scored

    def wait_sampling(self, timeout: float = 60.0) -> None:
        """Wait for the sampled molecules and the forces on all their frames (tests, notebooks)."""
        t0 = time.perf_counter()
        for attr in ("_sample_job", "_score_job"):
            job = getattr(self, attr)
            if job is not None:
                cf.wait([job], timeout=max(0.0, timeout - (time.perf_counter() - t0)))
            self.poll()

    @property
    def rows(self) -> list[dict]:
        return [dict(r, set=k) for k, s in enumerate(self.sets) for r in s.rows]

    def export_sdf(self, which: str = "all", indices: list[int] | None = None) -> Path:
        """Write all (or the selected table rows') molecules with their metrics to an SDF in exports/."""
        rows = self.rows
        chosen = list(range(len(rows))) if which == "all" or not indices else sorted(set(indices))
        if not chosen:
            raise ValueError("nothing to export: sample molecules first")
        path = self.settings.writable("exports", time.strftime("molecules-%Y%m%d-%H%M%S.sdf"))
        return write_molecules_sdf(path, self.sets, [rows[i] for i in chosen])

    def export_trajectory(self) -> Path:
        """The shown molecule's denoising chain as a multi-frame extended XYZ in exports/
        (:func:`elign_studio.exports.write_trajectory_xyz`)."""
        if not self.sets:
            raise ValueError("nothing to export: sample molecules first")
        path = self.settings.writable("exports", time.strftime(f"trajectory-{self.selected}-%Y%m%d-%H%M%S.xyz"))
        return write_trajectory_xyz(path, self.sets, self.selected)

    # ================================================================ polling
    def poll(self) -> list[dict[str, float]]:
        """Move finished background work into params; returns metric rows that arrived now."""
        new: list[dict[str, float]] = []
        for ev in self.worker.drain():
            if ev.kind == "metrics":
                row = {"step": float(ev.step), **ev.metrics}
                self.history.append(row)
                new.append(row)
                self.step = ev.step
                if self.run_state == "starting":
                    self.run_state = "running"
            elif ev.kind == "error":
                self.error = f"Alignment failed: {ev.message}"
                self.run_state = "failed"
                self._finish_run("failed")
            elif ev.kind == "finished" and self.run_state != "failed":
                self.run_state = ev.message  # "completed" or "stopped"
                self._finish_run(ev.message)
        if self.training and not self.worker.running and not new:  # ended without a word: resumable
            self.run_state = "stopped"
        self._collect_scored_frames()  # before a new sample's job: its scoring is checked at the next poll
        self._collect_sample()
        return new

    def _collect_scored_frames(self) -> None:
        job = self._score_job
        if job is not None and job.done():
            self._score_job = None
            try:
                scored = job.result()
            except Exception as e:  # noqa: BLE001 - shown in the app
                self.error = f"Scoring the trajectory failed: {_fmt_error(e)}"
            else:
                if scored is not None and self.sets and scored[0].batch is self.sets[0].batch:  # still shown
                    self.sets = scored
                    seconds = time.perf_counter() - self._sample_started - self.last_sample_seconds
                    self.status = f"{self._sampled_status}; forces on every frame after {seconds:.1f} s more"

    def open_molecules(self, filename: str, data: bytes) -> bool:
        """Show a user's .sdf, .npz or .xyz file (an .xyz of one molecule's frames is its trajectory) in the viewer,
        the table and the grid, scored by the session's force field. False with ``error`` set."""
        from elign_studio.sampling import file_set

        self.error = ""
        base = Path(filename).name
        if Path(base).suffix.lower() not in (".sdf", ".sd", ".mol", ".npz", ".xyz"):
            self.error = f"{base}: open an .sdf, .npz or .xyz file of molecules"
            return False
        if len(data) > MAX_UPLOAD_MB * 2**20:
            self.error = f"{base} is more than the {MAX_UPLOAD_MB} MB an upload may be"
            return False
        target = self.settings.writable("uploads", f"{uuid.uuid4().hex[:8]}-{base}")
        try:
            target.write_bytes(data)
            opened = file_set(target, Path(base).stem, self.force_field)
        except Exception as e:  # whatever a malformed file raises becomes the banner
            self.error = f"Cannot open {base}: {_fmt_error(e)}".replace(str(target), base)
            return False
        finally:
            target.unlink(missing_ok=True)
        self._sample_generation += 1  # a sample still being scored no longer replaces what is shown
        self.param.update(selected=0, frame=opened.num_frames - 1, sets=[opened])
        self._sampled_status = f"Opened {base}: {len(opened.rows)} molecule(s), {opened.num_frames} frame(s)"
        self.status = self._sampled_status
        if not opened.frames_scored:
            self._sample_started = time.perf_counter()
            self.last_sample_seconds = 0.0
            self.status += "; scoring the other frames..."
            self._score_job = self._executor.submit(self._score_many, [opened], self._sample_generation)
        return True

    def _collect_sample(self) -> None:
        job = self._sample_job
        if job is not None and job.done() and self.sampling:
            self.sampling = False
            self.last_sample_seconds = time.perf_counter() - self._sample_started
            try:
                sets = job.result()
            except Exception as e:  # noqa: BLE001 - shown in the app
                self.error = f"Sampling failed: {_fmt_error(e)}"
                self.status = ""  # no "Sampling..." banner left beside the error
            else:
                # one update: the viewer and plots are drawn once, at the final frame
                self.param.update(selected=0, frame=sets[0].num_frames - 1, sets=sets)
                self._sampled_status = (
                    f"Sampled {len(sets[0].rows)} molecule(s) from {', '.join(s.model_name for s in sets)}"
                    f" in {self.last_sample_seconds:.1f} s ({sets[0].num_frames} frames)"
                )
                self.status = self._sampled_status
                if not all(s.frames_scored for s in sets):
                    self.status += "; scoring the other frames..."
                    self._score_job = self._executor.submit(self._score_many, sets, self._sample_generation)

    def close(self) -> None:
        """End of the browser session: stop training (with a checkpoint) and the sampler."""
        self.worker.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
