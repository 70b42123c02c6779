"""Sampling speed of the EDM-size network (9 layers, 256 features).

CPU, one thread: the time of one denoising step for 64 molecules of 19 atoms.
CUDA (when present): molecules/s for 512 molecules and 1000 steps.

    python benchmarks/sample_speed.py [--repeats 5] [--cuda-molecules 512] [--cuda-steps 1000]
"""

from __future__ import annotations

import argparse

import torch
from harness import device_name, repeated, timed, write_results

from elign.diffusion.sampler import node_mask_from_sizes, sample_chain
from elign.models.config import ModelConfig
from elign.models.factory import build_model


def one_step_cpu(repeats: int) -> list[str]:
    torch.set_num_threads(1)
    model = build_model(ModelConfig(hidden=256, n_layers=9)).eval()
    mask = node_mask_from_sizes(torch.full((64,), 19))
    g = torch.Generator().manual_seed(0)
    z = model.scheduler.sample_noise(mask, g)
    s, t = torch.full((64, 1), 0.499), torch.full((64, 1), 0.5)

    def step():
        model.scheduler.step(z, model.predict_eps(z, t, mask), s, t, mask, g)

    with torch.inference_mode():
        timing = repeated(step, repeats, warmup=1)
    med = timing.median
    print(f"CPU one denoising step, 64 x 19 atoms, EDM size, 1 thread: median {med:.3f} s over {repeats}")
    return [
        f"one denoising step, 64 molecules x 19 atoms, 9 layers x 256 features, {device_name('cpu')}: "
        f"median {med:.3f} s (min {timing.minimum:.3f} s, {repeats} repeats; target <= 2 s; same-run ratios against "
        "main's frozen forward: benchmarks/cpu_speed.py)"
    ]


def throughput_cuda(num: int, steps: int) -> list[str]:
    torch.backends.cuda.matmul.allow_tf32 = True
    model = build_model(ModelConfig(hidden=256, n_layers=9)).eval().cuda()
    mask = node_mask_from_sizes(torch.full((num,), 19), device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    sample_chain(model, mask[:8], steps=10, generator=g)  # warm-up
    torch.cuda.synchronize()
    dt, _ = timed(lambda: (sample_chain(model, mask, steps=steps, generator=g), torch.cuda.synchronize()))
    rate = num / dt
    print(f"CUDA sampling: {num} molecules x {steps} steps in {dt:.1f} s = {rate:.1f} molecules/s")
    return [
        f"sampling {num} molecules of 19 atoms, {steps} steps, float32+TF32, {device_name('cuda')}: "
        f"{dt:.1f} s = {rate:.1f} molecules/s (target >= 20; original EDM 6.6 on an H100)"
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cuda-molecules", type=int, default=512)
    p.add_argument("--cuda-steps", type=int, default=1000)
    args = p.parse_args()
    lines = one_step_cpu(args.repeats)
    if torch.cuda.is_available():
        lines += throughput_cuda(args.cuda_molecules, args.cuda_steps)
    else:
        lines.append("CUDA: not available on this machine; CUDA throughput not measured")
    write_results("Sampling speed (benchmarks/sample_speed.py)", lines)


if __name__ == "__main__":
    main()
