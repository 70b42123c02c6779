"""Sampling and the trajectory shown: which models, the sampling settings, the sampled (or opened) sets, the
molecule and frame in the viewer, and the background jobs that sample and score them."""

from __future__ import annotations

import concurrent.futures as cf
import math
import time
import uuid
from pathlib import Path
from typing import Any

import param

from elign_studio.sampling import ModelCache, SampledSet, file_set, sample_many, score_frames, warm_up
from elign_studio.serving import MAX_UPLOAD_MB
from elign_studio.state.base import fmt_error
from elign_studio.state.checkpoints import CheckpointState, ModelChoice

__all__ = ["SamplingState"]


class SamplingState(CheckpointState):
    """What to sample (``sample_model``, ``compare_model`` beside it, seed, sizes, steps, formula), what was
    sampled or opened (``sets``: a :class:`SampledSet` per model), what the viewer shows (``selected``,
    ``frame``), and the jobs on the session's thread: the sample, then the forces on its other frames."""

    sample_model = ModelChoice(doc="name of the model to sample from")
    compare_model = ModelChoice(doc="name of the model sampled beside it (side by side)")
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

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._sample_job: cf.Future | None = None
        self._score_job: cf.Future | None = None  # forces on the frames before the final one
        self._sample_generation = 0  # a new Sample abandons the previous one's frame scoring
        self._sample_started = 0.0
        self._sampled_status = ""
        self.last_sample_seconds = math.nan

    @property
    def rows(self) -> list[dict]:
        """The table rows of every set, each with the index of its set."""
        return [dict(r, set=k) for k, s in enumerate(self.sets) for r in s.rows]

    def warm_up(self) -> None:
        """Load the default model and force field in the background (the app calls it once the page shows)."""
        self._executor.submit(warm_up, self.models.get(self.sample_model), self.force_field)

    @param.depends("model_names", watch=True)
    def _offer_sample_models(self) -> None:
        self._offer_models("sample_model")
        self._offer_models("compare_model", pick=1)

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

    def open_molecules(self, filename: str, data: bytes) -> bool:
        """Show a user's .sdf, .npz or .xyz file (an .xyz of one molecule's frames is its trajectory) in the viewer,
        the table and the grid, scored by the session's force field. False with ``error`` set."""
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
            self.error = f"Cannot open {base}: {fmt_error(e)}".replace(str(target), base)
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

    def poll(self) -> list[dict[str, float]]:
        """A finished sample into ``sets``, and the forces on its other frames once they are scored."""
        new = super().poll()
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
                self.error = f"Scoring the trajectory failed: {fmt_error(e)}"
            else:
                if scored is not None and self.sets and scored[0].batch is self.sets[0].batch:  # still shown
                    self.sets = scored
                    seconds = time.perf_counter() - self._sample_started - self.last_sample_seconds
                    self.status = f"{self._sampled_status}; forces on every frame after {seconds:.1f} s more"

    def _collect_sample(self) -> None:
        job = self._sample_job
        if job is not None and job.done() and self.sampling:
            self.sampling = False
            self.last_sample_seconds = time.perf_counter() - self._sample_started
            try:
                sets = job.result()
            except Exception as e:  # noqa: BLE001 - shown in the app
                self.error = f"Sampling failed: {fmt_error(e)}"
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
