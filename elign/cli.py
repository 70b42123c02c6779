"""The ``elign`` command line: data, pretrain, sample, evaluate, align, score."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["main"]


from elign.configs import (  # noqa: E402
    add_config_arguments,
    config_overrides,
    describe_config,
    positive_int,
    read_config_file,
)


def _device(name: str | None) -> str:
    from elign.distributed import resolve_device

    return resolve_device(name)


# ----------------------------------------------------------------------------------------- data
def cmd_data(args: argparse.Namespace) -> int:
    from elign.data.qm9 import build_cache, default_cache_path, load_qm9

    cache = Path(args.cache) if args.cache else default_cache_path()
    if cache.exists() and not args.rebuild:
        print(f"QM9 cache: {cache} (already built; --rebuild to parse the source again)")
    else:
        print(json.dumps(build_cache(cache_path=cache, source=args.source, archive_path=args.archive), indent=1))
    if args.dense:
        data = load_qm9(cache_path=cache)
        dense = dense_from_qm9(data)
        Path(args.dense).parent.mkdir(parents=True, exist_ok=True)
        dense.save(args.dense)
        print(f"dense training file: {args.dense} ({Path(args.dense).stat().st_size / 1e6:.1f} MB)")
    return 0


def dense_from_qm9(data):
    from elign.data.dense import DenseDataset

    splits = {name: data.split(name) for name in ("train", "valid", "test")}
    molecules = [data.molecule(i) for i in range(len(data))]
    return DenseDataset.from_molecules(molecules, splits, data.dataset_info())


def _training_data(path: str | None):
    from elign.data.dense import DenseDataset

    if path is None:
        from elign.data.qm9 import load_qm9

        return dense_from_qm9(load_qm9())
    if path.startswith("synthetic:"):
        return DenseDataset.synthetic(int(path.split(":", 1)[1]))
    return DenseDataset.load(path)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM and SIGINT set the yielded event (a trainer then checkpoints and returns); the previous handlers
    come back afterwards. The only place signals are handled (elign.callbacks)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------------------------- pretrain
def cmd_pretrain(args: argparse.Namespace) -> int:
    import torch

    from elign.pretrain import PretrainConfig, Pretrainer

    torch.set_num_threads(args.threads) if args.threads else None
    out = Path(args.out)
    saved = out / "config.json"
    overrides = {**(read_config_file(args.config, PretrainConfig) if args.config else {})}
    overrides.update(config_overrides(PretrainConfig, args))
    if args.resume and saved.exists():
        try:
            base = json.loads(saved.read_text())
            architecture = {k: base[k] for k in ("hidden", "n_layers", "timesteps", "seed")}
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(
                f"{saved} is not the config.json of an elign pretraining run ({e!r}); cannot resume from it"
            ) from None
        config = PretrainConfig.from_dict({**base, **overrides, **architecture, "out_dir": str(out)})
    else:
        config = PretrainConfig.from_dict({**overrides, "out_dir": str(out)})
    if args.show_config:
        print(describe_config(config))
        return 0
    data = _training_data(args.data)
    trainer = Pretrainer(config, data, device=_device(args.device))
    if args.resume:
        trainer.resume()
        print(f"resumed {out} at step {trainer.step} ({trainer.elapsed_minutes:.1f} training minutes so far)")
    n_params = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    n_train = len(data.splits["train"])
    print(
        f"pretraining {config.n_layers}x{config.hidden} EDM ({n_params:,} parameters) on {n_train:,} "
        f"molecules, device {trainer.device}, world size {trainer.world}"
    )
    with _stop_on_signals() as stop:
        result = trainer.fit(progress=not args.no_progress, stop_event=stop)
    print(json.dumps(result))
    from elign.distributed import finish

    finish()
    return 0


# --------------------------------------------------------------------------------------- sample
def cmd_sample(args: argparse.Namespace) -> int:
    from elign.assets import resolve_checkpoint
    from elign.checkpoints import load_checkpoint
    from elign.diffusion.sampler import sample_molecules
    from elign.export import write_npz, write_sdf
    from elign.metrics.stability import stability_metrics

    device = _device(args.device)
    path = resolve_checkpoint(args.checkpoint)
    model, config, _ = load_checkpoint(path, device)
    info = config.dataset_info()
    guidance = None
    if args.guidance_mlff:
        from elign.diffusion.sampler import ForceGuidance
        from elign.mlff import load_force_field

        guidance = ForceGuidance(
            load_force_field(args.guidance_mlff, device=device),
            args.guidance_scale,
            args.guidance_threshold,
            info.atomic_numbers,
        )
    t0 = time.perf_counter()
    mols = sample_molecules(
        model,
        args.num,
        info.size_probabilities(),
        steps=args.steps,
        seed=args.seed,
        batch_size=args.batch_size,
        device=device,
        atomic_numbers=info.atomic_numbers,
        progress=True,
        guidance=guidance,
    )
    dt = time.perf_counter() - t0
    stab = stability_metrics(mols, info.atom_decoder)
    per = stab["per_molecule"]
    steps = args.steps or model.T
    props = [
        {
            "index": i,
            "seed": args.seed,
            "steps": steps,
            "checkpoint": str(path),
            "n_atoms": int(per["n_atoms"][i]),
            "molecule_stable": int(per["molecule_stable"][i]),
        }
        for i in range(mols.batch_size)
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if Path(args.out).suffix.lower() == ".npz":  # lossless, and needs no RDKit
        written = f"wrote {write_npz(args.out, mols, info.atom_decoder, props)} molecules to {args.out}"
    else:
        counts = write_sdf(args.out, mols, info.atom_decoder, props)
        written = f"wrote {counts['written']} molecules to {args.out} ({counts['invalid']} flagged invalid)"
    print(f"sampled {args.num} molecules in {dt:.1f} s ({args.num / dt:.2f} molecules/s, {steps} steps, {device})")
    if guidance is not None:
        print(
            f"guidance by {args.guidance_mlff} (scale {args.guidance_scale}): {guidance.calls / args.num:.0f} "
            f"force-field calls per molecule, {guidance.seconds:.1f} s of the {dt:.1f} s in the force field, "
            f"{guidance.skipped} unscorable evaluations left unguided"
        )
    print(
        f"atom stability {stab['atom_stability']:.3f}, molecule stability {stab['molecule_stability']:.3f}; {written}"
    )
    return 0


# ------------------------------------------------------------------------------------- evaluate
def _evaluate_one_file(args: argparse.Namespace) -> int:
    """The chemistry-only report of one file (``--samples FILE.sdf|.npz [--json REPORT.json]`` without --out)."""
    from elign.evaluate import evaluate_file

    novelty = EVALUATE_DEFAULTS["novelty"] if args.novelty is None else args.novelty
    report = evaluate_file(args.samples[0], train_smiles=args.train_smiles, novelty=novelty)
    keys = ("n", "atom_stability", "molecule_stability", "validity", "uniqueness", "novelty", "vxu")
    for k in keys:
        v = report[k]
        print(f"{k:>20}: {v if v is None or isinstance(v, int) else f'{v:.4f}'}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"report written to {args.json}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.out is None:
        if args.checkpoint or args.guided or len(args.samples) != 1:
            raise ValueError("--out DIR is required unless a single --samples FILE is evaluated for chemistry")
        return _evaluate_one_file(args)
    if not (args.checkpoint or args.guided or args.samples):
        raise ValueError("nothing to evaluate: give --checkpoint, --guided or --samples")
    from elign.assets import default_mlff
    from elign.evaluate import EvaluationSettings, collect_samples, evaluate_models

    device = _device(args.device)
    mlff = args.mlff or default_mlff()
    given = config_overrides(EvaluationSettings, args, skip=EVALUATE_OWN_FIELDS)
    settings = EvaluationSettings(
        **{**EVALUATE_DEFAULTS, **given},
        mlff=None if mlff.lower() == "none" else mlff,
        independent=None if args.independent.lower() == "none" else args.independent,
        referees=tuple(dict.fromkeys(args.referee)),
        device=device,
        seed=args.seed,
        dft_density_fit=not args.dft_no_density_fit,
        progress=not args.no_progress,
    )
    samples = collect_samples(
        args.checkpoint,
        args.guided,
        args.samples,
        num=args.num,
        steps=args.steps,
        seed=args.seed,
        batch_size=args.batch_size,
        device=device,
        progress=not args.no_progress,
    )
    run_info = {
        "num": args.num,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "checkpoints": args.checkpoint,
        "guided": args.guided,
        "samples": args.samples,
    }
    report = evaluate_models(samples, settings, args.out, run_info)
    for m in report["models"]:
        c, tp = m["chemistry"], m["throughput"] or {}
        rate = f", {tp['molecules_per_second']:.2f} molecules/s" if tp.get("molecules_per_second") else ""
        fig = {
            k: "n/a" if c.get(k) is None else f"{c[k]:.3f}"
            for k in ("atom_stability", "molecule_stability", "validity")
        }
        print(
            f"{m['name']}: n {m['n']}, atom stability {fig['atom_stability']}, molecule stability "
            f"{fig['molecule_stability']}, validity {fig['validity']}{rate}"
        )
        for group, g in m["physics"].items():
            figures = ", ".join(
                f"{k} median {v['median']:.4g}"
                for k, v in g.items()
                if isinstance(v, dict) and "median" in v and v["median"] is not None
            )
            print(f"  {group}: {g['n_evaluated']} evaluated, {g['n_failed']} failed {g['failures'] or ''} {figures}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"report written to {Path(args.out) / 'report.json'}" + (" and report.html" if settings.plots else ""))
    return 0


# ---------------------------------------------------------------------------------------- align
def cmd_align(args: argparse.Namespace) -> int:
    from elign.rl.config import AlignConfig

    if args.device:
        _device(args.device)  # a clear error now rather than at the first tensor moved
    overrides = config_overrides(AlignConfig, args)
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    overrides["out_dir"] = args.out
    config = (
        AlignConfig.from_file(args.config, **overrides) if args.config else AlignConfig.preset(args.preset, **overrides)
    )
    if args.show_config:
        print(describe_config(config))
        return 0
    from elign.rl.trainer import FedGrpoTrainer

    trainer = FedGrpoTrainer(config)
    print(
        f"aligning {config.checkpoint or 'the shipped backbone'} to {trainer.ff!r}: {config.prompts} x "
        f"{config.group_size} rollouts, {config.steps} steps ({config.trained_steps} trained), "
        f"device {trainer.device}"
    )
    with _stop_on_signals() as stop:  # finish the iteration, checkpoint, exit
        print(json.dumps(trainer.train(stop, progress=True)))
    from elign.distributed import finish

    finish()
    return 0


# ---------------------------------------------------------------------------------------- score
def cmd_score(args: argparse.Namespace) -> int:
    import csv

    import torch

    from elign.assets import default_mlff
    from elign.data.batch import MoleculeBatch
    from elign.data.info import ATOMIC_NUMBERS
    from elign.export import read_molecules
    from elign.mlff import formation_energy_per_atom, load_force_field, rms_force

    records = read_molecules(args.sdf)
    if not records:
        raise ValueError(f"{args.sdf} holds no readable molecules")
    symbols = sorted({s for _, syms, _ in records for s in syms}, key=lambda e: ATOMIC_NUMBERS.get(e, 999))
    unknown = [s for s in symbols if s not in ATOMIC_NUMBERS]
    if unknown:
        raise ValueError(f"{args.sdf}: elements {unknown} are not supported")
    index = {s: i for i, s in enumerate(symbols)}
    batch = MoleculeBatch.from_lists(
        [torch.as_tensor(p) for p, _, _ in records],
        [torch.tensor([index[s] for s in syms]) for _, syms, _ in records],
        [ATOMIC_NUMBERS[s] for s in symbols],
    )
    device = _device(args.device)
    ff = load_force_field(args.mlff or default_mlff(), device=device)
    result = ff(batch.to(device))
    e_form = formation_energy_per_atom(batch.to(device), result, ff.reference_energies).cpu()
    rms = rms_force(batch.to(device), result).cpu()
    out = args.out
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["index", "n_atoms", "energy_eV", "formation_energy_per_atom_eV", "rms_force_eV_per_A", "valid", "reason"]
        )
        for b in range(batch.batch_size):
            w.writerow(
                [
                    b,
                    int(batch.num_atoms[b]),
                    f"{float(result.energy[b]):.6f}",
                    f"{float(e_form[b]):.6f}",
                    f"{float(rms[b]):.6f}",
                    int(result.valid[b]),
                    result.reason[b] or "",
                ]
            )
    if args.atoms:
        with open(args.atoms, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["molecule", "atom", "element", "fx", "fy", "fz", "force_norm"])
            for b, (_, syms, _) in enumerate(records):
                for i, sym in enumerate(syms):
                    fx, fy, fz = result.forces[b, i].tolist()
                    w.writerow(
                        [
                            b,
                            i,
                            sym,
                            f"{fx:.6f}",
                            f"{fy:.6f}",
                            f"{fz:.6f}",
                            f"{(fx * fx + fy * fy + fz * fz) ** 0.5:.6f}",
                        ]
                    )
    valid = result.valid.cpu()
    print(f"{ff!r}: {int(valid.sum())}/{len(valid)} molecules scored")
    if valid.any():
        print(
            f"formation energy per atom: mean {e_form[valid].mean():.4f} eV; RMS force: mean {rms[valid].mean():.4f} "
            f"eV/A, median {rms[valid].median():.4f} eV/A"
        )
    for b in torch.nonzero(~valid).flatten().tolist():
        print(f"molecule {b} not scored: {result.reason[b]}")
    print(f"per-molecule scores: {out}" + (f"; per-atom forces: {args.atoms}" if args.atoms else ""))
    return 0


# ---------------------------------------------------------------------------------------- mlff
def cmd_mlff_distill(args: argparse.Namespace) -> int:
    """``elign mlff distill``: label molecules with a teacher force field and fit a small MACE to it."""
    import torch

    from elign.mlff.distill import QM9_ELEMENTS, DistillConfig, StudentConfig, distill

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    student = StudentConfig(**config_overrides(StudentConfig, args))
    saved = out / "config.json"
    if args.resume and (out / "state.pt").exists() and saved.exists():
        base = json.loads(saved.read_text())  # the architecture of a resumed run is the saved one
        student = StudentConfig(**{**base["student"], "radial_mlp": tuple(base["student"]["radial_mlp"])})
        print(f"resuming {out}: student architecture from {saved}")
    own = ("out_dir", "device", "progress", "student")  # set below from --out, --device, --no-progress
    given = config_overrides(DistillConfig, args, skip=own)
    config = DistillConfig(
        **{"elements": QM9_ELEMENTS, **given},
        out_dir=str(out),
        device=_device(args.device),
        progress=not args.no_progress,
        student=student,
    )
    distill(config)
    print(f"student: {out / 'distilled.model'}; report: {out / 'report.json'}; per-epoch log: {out / 'log.jsonl'}")
    return 0


# elign evaluate: fields its own flags set (--mlff/--independent accept 'none', --referee repeats, --seed also
# seeds sampling), and its defaults where they differ from EvaluationSettings' (novelty on, two xTB workers)
EVALUATE_OWN_FIELDS = ("mlff", "independent", "referees", "device", "seed", "dft_density_fit", "progress", "extra")
EVALUATE_DEFAULTS = {"novelty": True, "xtb_workers": 2}


# ----------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from elign.evaluation.settings import EvaluationSettings
    from elign.mlff.distill import DistillConfig, StudentConfig
    from elign.pretrain import PretrainConfig
    from elign.rl.config import PRESETS, AlignConfig

    p = argparse.ArgumentParser(prog="elign", description="Align 3D molecular diffusion models with force fields.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="build the QM9 cache (and optionally a dense training file)")
    d.add_argument("--cache", help="cache file (default: $ELIGN_CACHE or ~/.cache/elign/qm9.npz)")
    d.add_argument("--source", default="auto", choices=["auto", "qm9pack", "archive"])
    d.add_argument("--archive", help="path to dsgdb9nsd.xyz.tar.bz2 when the qm9pack wheel is absent")
    d.add_argument("--dense", help="also write a dense training file (.npz) that a GPU run can carry")
    d.add_argument("--rebuild", action="store_true", help="parse the source again even if the cache exists")
    d.set_defaults(func=cmd_data)

    t = sub.add_parser("pretrain", help="pretrain an EDM on QM9 (resumable; torchrun for several GPUs)")
    t.add_argument("--out", required=True, help="run directory (state.pt, model.safetensors, metrics.jsonl)")
    t.add_argument("--data", help="dense training file (.npz) from `elign data --dense`; default: the QM9 cache")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    t.add_argument("--config", help="JSON file of PretrainConfig fields (flags given override it)")
    t.add_argument("--show-config", action="store_true", help="print every field with its value and help, and exit")
    add_config_arguments(t, PretrainConfig, skip=("out_dir",))
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=positive_int, help="CPU threads (torch.set_num_threads)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_pretrain, output_dirs=("out",))

    s = sub.add_parser("sample", help="sample molecules from a checkpoint into an SDF file")
    s.add_argument(
        "--checkpoint", help="native .safetensors, an original EDM run directory, 'backbone' (default) or 'aligned'"
    )
    s.add_argument("--num", type=positive_int, default=100)
    s.add_argument("--steps", type=positive_int, default=None, help="denoising steps (default: the model's T)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=positive_int, default=256)
    s.add_argument("--device", default="auto")
    s.add_argument(
        "--out", required=True, help="output file: .sdf (bonds, validity tags) or .npz (lossless coordinates, no RDKit)"
    )
    s.add_argument("--guidance-mlff", help="baseline: move positions along this force field's forces while sampling")
    s.add_argument("--guidance-scale", type=float, default=0.1, help="step size of force guidance (A^2/eV)")
    s.add_argument("--guidance-threshold", type=float, default=0.8, help="guide once sigma_t is below this")
    s.set_defaults(func=cmd_sample, output_files=("out",))

    a = sub.add_parser("align", help="align a backbone to a force field with FED-GRPO (torchrun for several GPUs)")
    a.add_argument("--out", required=True, help="run directory (resumed when it holds a state.pt)")
    a.add_argument("--preset", choices=sorted(PRESETS), default="cpu-demo", help="defaults of the fields below")
    a.add_argument("--config", help="JSON file of AlignConfig fields (may name a preset); flags given override it")
    a.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override any AlignConfig field")
    a.add_argument("--show-config", action="store_true", help="print every field with its value and help, and exit")
    add_config_arguments(
        a,
        AlignConfig,
        skip=("out_dir",),
        group_title="AlignConfig fields (defaults: the preset's)",
        show_defaults=False,
    )
    a.set_defaults(func=cmd_align, output_dirs=("out",))

    c = sub.add_parser("score", help="energies and forces of the molecules of an SDF file")
    c.add_argument("sdf", help="SDF or .npz file of molecules")
    c.add_argument("--mlff", default=None, help="force field name or .model path (default: the shipped one)")
    c.add_argument("--out", help="per-molecule CSV (default: <sdf>.scores.csv)")
    c.add_argument("--atoms", help="also write a per-atom force table (CSV) here")
    c.add_argument("--device", default="auto")
    c.set_defaults(func=cmd_score, output_files=("out", "atoms"), derive_out=lambda a: a.out or f"{a.sdf}.scores.csv")

    e = sub.add_parser("evaluate", help="evaluate models against independent physics (report, plots, HTML)")
    e.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="model to sample (repeatable; the first is "
        "the baseline): a .safetensors path, an EDM run directory, 'backbone' or 'aligned'",
    )
    e.add_argument(
        "--samples", action="append", default=[], help="SDF or .npz file of generated molecules (repeatable)"
    )
    e.add_argument(
        "--guided",
        action="append",
        default=[],
        metavar="MODEL:MLFF:SCALE",
        help="baseline row: MODEL sampled with force guidance by MLFF at SCALE (repeatable)",
    )
    e.add_argument("--num", type=positive_int, default=100, help="molecules per model")
    e.add_argument("--steps", type=positive_int, default=None, help="denoising steps (default: the model's T)")
    e.add_argument("--seed", type=int, default=0, help="seed of sizes, sampling, DFT subsample and bootstrap")
    e.add_argument("--batch-size", type=positive_int, default=256)
    e.add_argument("--device", default="auto")
    e.add_argument("--out", help="report directory (report.json, molecules.csv, SDF files, plots, report.html)")
    e.add_argument("--json", help="also write the report here (alone with one --samples: chemistry only)")
    e.add_argument("--mlff", help="reward force field (default: the shipped one, else aimnet2; 'none' to skip)")
    e.add_argument("--independent", default="xtb", help="independent force field (default xtb; 'none' to skip)")
    e.add_argument(
        "--referee",
        action="append",
        default=[],
        choices=["xtb", "dft"],
        help="xtb: GFN2-xTB RMS force and relaxation (dE_relax, RMSD); dft: PySCF on a subsample",
    )
    e.add_argument("--dft-no-density-fit", action="store_true", help="PySCF without density fitting")
    e.add_argument("--no-progress", action="store_true")
    add_config_arguments(
        e,
        EvaluationSettings,
        skip=EVALUATE_OWN_FIELDS,
        group_title="EvaluationSettings fields",
        defaults=EVALUATE_DEFAULTS,
    )
    e.set_defaults(func=cmd_evaluate, output_files=("json",), output_dirs=("out",))

    m = sub.add_parser("mlff", help="force-field tools: distil a teacher into a small MACE")
    msub = m.add_subparsers(dest="mlff_command", required=True)
    md = msub.add_parser(
        "distill",
        help="label QM9 (+ perturbed, + backbone samples) with a teacher force field "
        "and train a small MACE on it (resumable); writes distilled.model and report.json",
    )
    md.add_argument(
        "--out", required=True, help="run directory (labels.pt, state.pt, distilled.model, log.jsonl, report.json)"
    )
    md.add_argument("--device", default="auto")
    md.add_argument("--threads", type=positive_int, help="CPU threads (torch.set_num_threads)")
    md.add_argument("--no-progress", action="store_true")
    add_config_arguments(md, DistillConfig, skip=("out_dir", "device", "progress", "student"))  # as cmd_mlff_distill
    add_config_arguments(md, StudentConfig, group_title="student architecture (StudentConfig)")
    md.set_defaults(func=cmd_mlff_distill, output_dirs=("out",))
    return p


def _check_outputs(args: argparse.Namespace) -> None:
    """Every command's output paths (its ``output_files`` / ``output_dirs`` defaults) are checked before work."""
    from elign.checkpoints import check_writable

    if getattr(args, "derive_out", None):  # an output path that defaults to one derived from the input
        args.out = args.derive_out(args)
    for name in getattr(args, "output_files", ()):
        if getattr(args, name, None):
            check_writable(getattr(args, name))
    for name in getattr(args, "output_dirs", ()):
        if getattr(args, name, None):
            check_writable(getattr(args, name), directory=True)


def main(argv: list[str] | None = None) -> int:
    """Run a command; a failure is one line on stderr (``ELIGN_TRACEBACK=1`` shows the traceback)."""
    import os

    from elign.runtime import tune_malloc

    args = build_parser().parse_args(argv)
    tune_malloc()
    try:
        _check_outputs(args)
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("ELIGN_TRACEBACK"):
            raise
        expected = (ValueError, OSError, FloatingPointError)  # bad input, files, a diverged run
        kind = "" if isinstance(e, expected) else f"{type(e).__name__}: "
        print(f"error: {kind}{e}", file=sys.stderr)
        return 2 if isinstance(e, expected) else 1


if __name__ == "__main__":
    sys.exit(main())
