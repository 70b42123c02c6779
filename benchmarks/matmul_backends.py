"""The edge MLPs' square products on one CPU thread: MKL (``F.linear``) against oneDNN (``pair_dense``).

For a pair tensor flattened to [rows, H] and an H x H layer: the forward, the input gradient (``grad @ W``) and
the weight gradient (``grad.T @ x``, MKL only: what training would pay), milliseconds a product, medians of
``--repeats``; and what oneDNN pays for a row count it has not seen (it builds a kernel per shape), from 60
row counts near 10,000 each used twice. This is why ``elign.models.pair_ops.pair_dense`` uses oneDNN without
gradients only, where a sampling chain repeats one shape at every step.

    python benchmarks/matmul_backends.py [--repeats 30] [--no-results]
"""

from __future__ import annotations

import argparse

import torch
from harness import repeated, timed, write_results

from elign.models.pair_ops import _ONEDNN_LINEAR


def _time_products(rows: int, hidden: int, g: torch.Generator, repeats: int) -> dict[str, float]:
    """ms of each product for x, grad [rows, hidden] and an hidden x hidden layer."""
    x, grad = (torch.randn(rows, hidden, generator=g) for _ in range(2))  # [rows, H]
    w, b = torch.randn(hidden, hidden, generator=g), torch.randn(hidden, generator=g)
    w_t = w.T.contiguous()
    products = {
        "forward MKL": lambda: torch.addmm(b, x, w.T),
        "forward oneDNN": lambda: _ONEDNN_LINEAR(x, w, b, "none", [], ""),
        "input grad MKL": lambda: grad @ w,
        "input grad oneDNN": lambda: _ONEDNN_LINEAR(grad, w_t, None, "none", [], ""),
        "weight grad MKL": lambda: grad.T @ x,
    }
    return {name: repeated(product, repeats, warmup=1).median * 1e3 for name, product in products.items()}


def _new_row_counts(g: torch.Generator) -> str:
    """What oneDNN pays for row counts it has not seen (a kernel built per shape), against MKL."""
    w, b = torch.randn(64, 64, generator=g), torch.randn(64, generator=g)
    xs = [torch.randn(10_000 + 7 * i, 64, generator=g) for i in range(60)]  # row counts not seen before

    def ms_a_product(product) -> float:
        def every_row_count():
            for x in xs:
                product(x)

        seconds, _ = timed(every_row_count)
        return seconds / len(xs) * 1e3

    passes = [ms_a_product(lambda x: _ONEDNN_LINEAR(x, w, b, "none", [], "")) for _ in range(2)]
    mkl = ms_a_product(lambda x: torch.addmm(b, x, w.T))
    return (
        f"60 new row counts near 10,000 x 64: oneDNN {passes[0]:.3f} ms a product the first time, "
        f"{passes[1]:.3f} ms the second; MKL {mkl:.3f} ms"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--no-results", action="store_true", help="print only, do not append to RESULTS.md")
    args = p.parse_args()
    if _ONEDNN_LINEAR is None:
        raise SystemExit("this PyTorch build has no oneDNN linear op: nothing to compare")
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    lines = ["one thread, float32; ms a product (medians), GFLOP/s in brackets"]
    for hidden in (64, 256):
        for rows in (2_000, 10_000, 23_000):
            gflop = 2 * rows * hidden * hidden / 1e6  # per ms
            ms = _time_products(rows, hidden, g, args.repeats)
            figures = ", ".join(f"{k} {v:.3f} ({gflop / v:.0f})" for k, v in ms.items())
            lines.append(f"{rows:,} rows x {hidden}: {figures}")
    lines.append(_new_row_counts(g))
    section = "Matrix products of the edge MLPs, MKL against oneDNN (benchmarks/matmul_backends.py)"
    write_results(section, lines, write=not args.no_results)


if __name__ == "__main__":
    main()
