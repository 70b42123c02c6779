"""What ``elign sample`` does: sample a checkpoint (free sizes or a formula's isomers) into an SDF or .npz file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from elign.diffusion.settings import SamplingSettings

__all__ = ["sample_to_file"]


def _guidance(settings: SamplingSettings, info: Any, device: str) -> Any:
    """The force guide of a guided baseline, or None."""
    if not settings.guidance_mlff:
        return None
    from elign.diffusion.sampler import ForceGuidance
    from elign.mlff import load_force_field

    ff = load_force_field(settings.guidance_mlff, device=device)
    return ForceGuidance(ff, settings.guidance_scale, settings.guidance_threshold, info.atomic_numbers)


def _write(out: str, mols: Any, info: Any, props: list[dict]) -> str:
    """Write the molecules (.npz lossless, else SDF); -> what was written, in words."""
    from elign.io.export import write_npz, write_sdf

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if Path(out).suffix.lower() == ".npz":  # lossless, and needs no RDKit
        return f"wrote {write_npz(out, mols, info.atom_decoder, props)} molecules to {out}"
    counts = write_sdf(out, mols, info.atom_decoder, props)
    return f"wrote {counts['written']} molecules to {out} ({counts['invalid']} flagged invalid)"


def _properties(settings: SamplingSettings, per: dict, steps: int, path: Path, formulas: list | None) -> list[dict]:
    """Each molecule's SDF/.npz properties: index, seed, steps, checkpoint, size, formula, stability."""
    return [
        {"index": i, "seed": settings.seed, "steps": steps, "checkpoint": str(path), "n_atoms": int(per["n_atoms"][i])}
        | ({"formula": formulas[i // settings.num]} if formulas else {})
        | {"molecule_stable": int(per["molecule_stable"][i])}
        | ({"precision": "bf16"} if settings.bf16 else {})
        for i in range(len(per["n_atoms"]))
    ]


def sample_to_file(settings: SamplingSettings, out: str, device: str) -> list[str]:
    """Sample ``settings`` into ``out``; -> the lines that say what was sampled, how fast and how stable."""
    from elign.diffusion.sampler import sample_molecules
    from elign.io.assets import resolve_checkpoint
    from elign.io.checkpoints import load_checkpoint
    from elign.metrics.stability import stability_metrics

    path = resolve_checkpoint(settings.checkpoint)
    model, config, _ = load_checkpoint(path, device)
    info = config.dataset_info()
    guidance = _guidance(settings, info, device)
    types = formulas = None
    if settings.formula:
        from elign.data.formula import formula_batch, read_formulas

        formulas = read_formulas(settings.formula)
        types = formula_batch(formulas, settings.num, info.atom_decoder, info.max_n_nodes)
    total = settings.num if types is None else len(types)
    steps = settings.steps or model.T
    t0 = time.perf_counter()
    mols = sample_molecules(
        model, total, info.size_probabilities(), steps=steps, seed=settings.seed, batch_size=settings.batch_size,
        device=device, atomic_numbers=info.atomic_numbers, progress=True, guidance=guidance, bf16=settings.bf16,
        types=types,
        type_guidance=settings.type_guidance,
    )  # fmt: skip
    dt = time.perf_counter() - t0
    stab = stability_metrics(mols, info.atom_decoder)
    written = _write(out, mols, info, _properties(settings, stab["per_molecule"], steps, path, formulas))
    where = f"{device}, bf16" if settings.bf16 else str(device)
    lines = [f"sampled {total} molecules in {dt:.1f} s ({total / dt:.2f} molecules/s, {steps} steps, {where})"]
    if guidance is not None:
        lines.append(
            f"guidance by {settings.guidance_mlff} (scale {settings.guidance_scale}): {guidance.calls / total:.0f} "
            f"force-field calls per molecule, {guidance.seconds:.1f} s of the {dt:.1f} s in the force field, "
            f"{guidance.skipped} unscorable evaluations left unguided"
        )
    stability = f"atom stability {stab['atom_stability']:.3f}, molecule stability {stab['molecule_stability']:.3f}"
    return [*lines, f"{stability}; {written}"]
