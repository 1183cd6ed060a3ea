"""Programmatic dependent launch (PDL) for the batch-1 GEMV chain of a decode step, on an H200.

    python benchmarks/gemv_pdl.py [--layers 32]

A batch-1 decoder step is a chain of small products, each reading the one before it: whisper-large-v3's take
4.3–9 µs each where their weights alone would take 1–3.5 µs at the copy bandwidth. Between two kernels of a stream
the GPU drains the first, flushes it, then launches the second. With PDL (Hopper's ``griddepcontrol``) the second
kernel may start while the first finishes: it reads its weights (which no kernel of the step writes), then waits
for the first's output (``gdc_wait``) before reading its input row.

Per layer a chain out-proj (1280×1280) → fc1 (5120×1280) → fc2 (1280×5120), each reading the previous output, over
``--layers`` distinct weights in one CUDA graph: ``qeffbuild::gemv`` as shipped (its weight tile first, launched
with PDL on a Hopper GPU) and in its chunked loop (shipped before); this script's own tile-first kernel without
and with PDL (the experiment that chose the shipped form); cuBLAS. µs per product, and the largest difference of
the chain's last output from the shipped kernel's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHAPES = ((1280, 1280), (5120, 1280), (1280, 5120))  # (out, in): out-proj, fc1, fc2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=32)
    args = ap.parse_args()
    import torch
    from gemv_variants import _graph_us

    from qeffbuild.backends import gemv

    gemv.register()
    torch.manual_seed(0)
    half = torch.float16
    # scaled by 1/√k: the chain's values stay near 1 through its 96 products
    weights = [[(torch.randn(n, k, device="cuda") * k ** -0.5).to(half) for n, k in SHAPES]
               for _ in range(args.layers)]
    x0 = torch.randn(1, 1280, device="cuda").to(half)
    kernel = _kernel()

    def chain(launch: Any) -> Any:
        def run() -> Any:
            x = x0
            for layer in weights:
                for w in layer:
                    x = launch(x, w)
            return x
        return run

    def shipped(weight_first: bool | None) -> Any:
        def launch(x: Any, w: Any) -> Any:
            gemv.WEIGHT_FIRST = weight_first
            return gemv._launch(x, w, None)
        return launch

    ways = {"qeffbuild::gemv as shipped": chain(shipped(None)),
            "qeffbuild::gemv chunked loop": chain(shipped(False)),
            "whole tile first, no PDL": chain(lambda x, w: _launch(kernel, x, w, pdl=False)),
            "whole tile first, PDL": chain(lambda x, w: _launch(kernel, x, w, pdl=True)),
            "cuBLAS": chain(lambda x, w: x @ w.t())}
    want = ways["qeffbuild::gemv as shipped"]().float()
    products = args.layers * len(SHAPES)
    for name, fn in ways.items():
        try:
            err = (fn().float() - want).abs().max().item()
            us = _graph_us(fn) / products
        except Exception as e:  # a launch option this Triton or driver lacks: say so, go on
            print(f"{name:28s} failed: {type(e).__name__}: {str(e).splitlines()[0][:100]}")
            continue
        print(f"{name:28s} {us:7.2f} µs a product   max |diff| vs shipped {err:.2e}")


def _launch(kernel: Any, x: Any, w: Any, pdl: bool) -> Any:
    import torch

    n, k = w.shape
    out = torch.empty((1, n), device=x.device, dtype=x.dtype)
    block_n = 4
    kernel[((n + block_n - 1) // block_n,)](x, w, out, n, K=k, K_P2=1 << (k - 1).bit_length(), BLOCK_N=block_n,
                                           PDL=pdl, num_warps=8, launch_pdl=pdl)
    return out


def _kernel() -> Any:
    import triton
    import triton.language as tl

    @triton.jit
    def gemv_tile_first(x_ptr, w_ptr, y_ptr, N, K: tl.constexpr, K_P2: tl.constexpr, BLOCK_N: tl.constexpr,
                        PDL: tl.constexpr):
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, K_P2)
        inside = rk < K
        if PDL:
            tl.extra.cuda.gdc_launch_dependents()
        w = tl.load(w_ptr + rn[:, None] * K + rk[None, :], mask=(rn[:, None] < N) & inside[None, :], other=0.0)
        if PDL:
            tl.extra.cuda.gdc_wait()  # the previous kernel's output (this one's x) is written and visible
        x = tl.load(x_ptr + rk, mask=inside, other=0.0).to(tl.float32)
        y = tl.sum(w.to(tl.float32) * x[None, :], 1)
        tl.store(y_ptr + rn, y.to(y_ptr.dtype.element_ty), mask=rn < N)

    return gemv_tile_first


if __name__ == "__main__":
    main()
