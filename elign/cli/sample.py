"""``elign sample``: sample molecules from a checkpoint into an SDF or .npz file."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from elign.configs import positive_int
from elign.training.distributed import resolve_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sample", help="sample molecules from a checkpoint into an SDF file")
    s.add_argument(
        "--checkpoint", help="native .safetensors, an original EDM run directory, 'backbone' (default) or 'aligned'"
    )
    s.add_argument("--num", type=positive_int, default=100, help="molecules (per formula with --formula)")
    s.add_argument(
        "--formula",
        nargs="+",
        metavar="FORMULA",
        help="sample isomers of these formulas (C7H10O2 ...; or a file of them, one per line): the atom types are "
        "fixed, only positions are sampled",
    )
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
    s.add_argument(
        "--bf16",
        action="store_true",
        help="the network's matrix products in bfloat16 where the hardware has it (AVX512-BF16, AMX, CUDA): "
        "faster, other molecules for the same seed",
    )
    s.set_defaults(func=cmd_sample, output_files=("out",))


def cmd_sample(args: argparse.Namespace) -> int:
    from elign.diffusion.sampler import sample_molecules
    from elign.io.assets import resolve_checkpoint
    from elign.io.checkpoints import load_checkpoint
    from elign.io.export import write_npz, write_sdf
    from elign.metrics.stability import stability_metrics

    device = resolve_device(args.device)
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
    types = formulas = None
    if args.formula:
        from elign.data.formula import formula_batch, read_formulas

        formulas = read_formulas(args.formula)
        types = formula_batch(formulas, args.num, info.atom_decoder, info.max_n_nodes)
    total = args.num if types is None else len(types)
    t0 = time.perf_counter()
    mols = sample_molecules(
        model,
        total,
        info.size_probabilities(),
        steps=args.steps,
        seed=args.seed,
        batch_size=args.batch_size,
        device=device,
        atomic_numbers=info.atomic_numbers,
        progress=True,
        guidance=guidance,
        bf16=args.bf16,
        types=types,
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
            **({"formula": formulas[i // args.num]} if formulas else {}),
            "molecule_stable": int(per["molecule_stable"][i]),
            **({"precision": "bf16"} if args.bf16 else {}),
        }
        for i in range(mols.batch_size)
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if Path(args.out).suffix.lower() == ".npz":  # lossless, and needs no RDKit
        written = f"wrote {write_npz(args.out, mols, info.atom_decoder, props)} molecules to {args.out}"
    else:
        counts = write_sdf(args.out, mols, info.atom_decoder, props)
        written = f"wrote {counts['written']} molecules to {args.out} ({counts['invalid']} flagged invalid)"
    where = f"{device}, bf16" if args.bf16 else str(device)
    print(f"sampled {total} molecules in {dt:.1f} s ({total / dt:.2f} molecules/s, {steps} steps, {where})")
    if guidance is not None:
        print(
            f"guidance by {args.guidance_mlff} (scale {args.guidance_scale}): {guidance.calls / total:.0f} "
            f"force-field calls per molecule, {guidance.seconds:.1f} s of the {dt:.1f} s in the force field, "
            f"{guidance.skipped} unscorable evaluations left unguided"
        )
    print(
        f"atom stability {stab['atom_stability']:.3f}, molecule stability {stab['molecule_stability']:.3f}; {written}"
    )
    return 0
