"""SamplingSettings: what ``elign sample`` draws, in a module light enough for the command-line parser (no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from elign.configs import option, positive_int

__all__ = ["SamplingSettings", "TYPE_GUIDANCE"]

TYPE_GUIDANCE = 0.5  # default guidance of formula sampling: 0.5 and 1 measured best of 0-1 (docs/sampling.md)


@dataclass
class SamplingSettings:
    """A checkpoint, how many molecules (of which formulas), the chain and its seed, and an optional guide."""

    checkpoint: str | None = option(
        None, "native .safetensors, an original EDM run directory, 'backbone' (None: the shipped one) or 'aligned'"
    )
    num: int = option(100, "molecules (per formula with --formula)", type=positive_int)
    formula: tuple[str, ...] = option(
        (),
        "sample isomers of these formulas (C7H10O2 ...; or a file of them, one per line): the atom types are "
        "fixed, only positions are sampled",
        metavar="FORMULA",
    )
    type_guidance: float = option(
        TYPE_GUIDANCE,
        "with --formula: step of the positions' guidance by the types (0: types replaced only; about 2.5 times "
        "the sampling time, about twice the stable molecules)",
    )
    steps: int | None = option(None, "denoising steps (None: the model's T)", type=positive_int)
    seed: int = option(0, "seed of the sizes and the chain")
    batch_size: int = option(256, "molecules per network call", type=positive_int)
    device: str = option("auto", "'auto', 'cpu' or 'cuda[:i]'")
    guidance_mlff: str | None = option(None, "baseline: move positions along this force field's forces while sampling")
    guidance_scale: float = option(0.1, "step size of force guidance (A^2/eV)")
    guidance_threshold: float = option(0.8, "guide once sigma_t is below this")
    bf16: bool = option(
        False,
        "the network's matrix products in bfloat16 where the hardware has it (AVX512-BF16, AMX, CUDA): faster, "
        "other molecules for the same seed",
    )
