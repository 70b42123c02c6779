"""EDM's eps loss of checkpoints at fixed noise levels: a cheap proxy for how well a backbone finishes molecules.

The uniform-t training loss is dominated by high noise levels, where every late checkpoint of a run is alike;
molecule stability is decided by how precisely the last, low-noise steps place atoms. This script evaluates
each checkpoint's coordinate eps loss (``x@t``: mean squared error of eps on the position dimensions of real
atoms) and feature eps loss (``h@t``) at fixed integer times t of T = 1000, on the first ``--num`` validation
molecules with the same noise for every checkpoint (paired: differences between checkpoints are far less noisy
than each figure). A ``.pt`` training state is evaluated through its EMA weights. Seconds per checkpoint on one
CPU thread at the defaults: about 9, imports and data included.

    python benchmarks/noise_level_loss.py CHECKPOINT_OR_STATE [...] --data runs/qm9_dense.npz
        [--times 5 20 50 200 500] [--num 2000] [--labels ...] [--no-results]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from elign.data.dense import DenseDataset
from elign.diffusion.edm import EquivariantDiffusion
from elign.io.checkpoints import load_checkpoint, load_state_ema

try:
    from harness import write_results
except ImportError:  # imported as benchmarks.noise_level_loss
    from benchmarks.harness import write_results


def load_ema(path: Path) -> tuple[EquivariantDiffusion, dict]:
    """The model of a native checkpoint, or the EMA weights of an ``elign pretrain`` state (``state.pt``)."""
    if path.suffix != ".pt":
        model, _, meta = load_checkpoint(path, "cpu")
        return model.eval(), meta
    model, step = load_state_ema(path)
    return model, {"step": step}


@torch.no_grad()
def noise_level_losses(
    model: EquivariantDiffusion, data: DenseDataset, times: list[int], num: int = 2000, chunk: int = 250
) -> dict[str, float]:
    """{"x@t": coordinate eps loss, "h@t": feature eps loss} at each integer time t; noise seeded by (t, chunk)."""
    idx = data.splits["valid"][:num]
    sums = {key: 0.0 for t_int in times for key in (f"x@{t_int}", f"h@{t_int}")}  # squared errors
    n_x = n_h = 0.0  # real coordinate and feature dimensions
    for k, rows in enumerate(idx.split(chunk)):  # each batch is built once and noised at every time
        batch = data.batch(rows)
        mask = batch.node_mask  # [B, N, 1]
        xh = model.centred_latent(batch)  # [B, N, 3 + F]
        B = xh.shape[0]
        n_x += float(mask.sum()) * 3
        n_h += float(mask.sum()) * (xh.shape[-1] - 3)
        for t_int in times:
            gen = torch.Generator().manual_seed(1_000 * t_int + k)
            t = torch.full((B, 1), t_int / model.T)
            eps = model.scheduler.sample_noise(mask, gen)
            z_t = model.scheduler.add_noise(xh, t, eps)
            err = (eps - model.predict_eps(z_t, t, mask)) ** 2 * mask  # [B, N, 3 + F]
            sums[f"x@{t_int}"] += float(err[..., :3].sum())
            sums[f"h@{t_int}"] += float(err[..., 3:].sum())
    out = {key: value / (n_x if key.startswith("x") else n_h) for key, value in sums.items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", type=Path, help="native .safetensors checkpoints or state.pt files")
    p.add_argument("--data", required=True, help="dense training file (elign data --dense)")
    p.add_argument("--times", nargs="+", type=int, default=[5, 20, 50, 200, 500], help="integer times of T")
    p.add_argument("--num", type=int, default=2000, help="validation molecules (the first NUM of the split)")
    p.add_argument("--labels", nargs="+", help="a label per checkpoint (default: its path)")
    p.add_argument("--no-results", action="store_true", help="print only; do not append to RESULTS.md")
    args = p.parse_args()
    if args.labels and len(args.labels) != len(args.checkpoints):
        p.error(f"{len(args.labels)} labels for {len(args.checkpoints)} checkpoints")
    torch.set_num_threads(1)
    data = DenseDataset.load(args.data)
    labels = args.labels or [str(c) for c in args.checkpoints]
    rows = []
    for label, path in zip(labels, args.checkpoints, strict=True):
        model, meta = load_ema(path)
        row = {"label": label, "step": meta.get("step"), **noise_level_losses(model, data, args.times, args.num)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    keys = [f"{c}@{t}" for t in args.times for c in "xh"]
    head = (
        f"eps loss at fixed times t of T = 1000 (x: coordinates, h: atom features) on the first {args.num} "
        f"validation molecules of {args.data}, the same noise for every checkpoint, one CPU thread"
    )
    table = ["| checkpoint | step | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for r in rows:
        step = f"{r['step']:,}" if r["step"] is not None else ""
        table.append(f"| {r['label']} | {step} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |")
    cmd = " ".join(["python benchmarks/noise_level_loss.py", *map(str, args.checkpoints), "--data", args.data])
    cmd += f" --times {' '.join(map(str, args.times))} --num {args.num}" + (" --labels ..." if args.labels else "")
    lines = [head, "table:\n\n" + "\n".join(table) + "\n", f"`{cmd}`"]
    if args.no_results:
        print("\n".join(lines))
    else:
        write_results("Loss at fixed noise levels (benchmarks/noise_level_loss.py)", lines)


if __name__ == "__main__":
    main()
