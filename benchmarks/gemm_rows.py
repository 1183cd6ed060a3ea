"""Can a Triton kernel read a decoder's weights faster than cuBLAS at batch 2-8 (issue #21, the b8 step)?

    python benchmarks/gemm_rows.py [--layers 32] [--rows 8]

The large-v3 b8 profile (`gpu-quick.sh R profile`, PROFILE_SPEC=whisper-large-v3-zoo-b8-float16) puts cuBLAS's
M = 8 products at ~1.1 ms a step, 1.6 TB/s. This sweeps a multi-row version of `backends/gemv.py`'s kernel (each
program reads BLOCK_N whole weight rows in BLOCK_K chunks and multiplies them by every one of the M input rows,
float32 partial sums kept per lane and summed once) against cuBLAS at whisper-large-v3's decoder shapes, over
32 distinct matrices inside one CUDA graph (as `gemv_variants.py`), each checked against float32.
"""

from __future__ import annotations

import argparse
from typing import Any

from gemv_variants import SHAPES, _graph_us, _over  # type: ignore[import-not-found]


def _kernel() -> Any:
    import triton
    import triton.language as tl

    @triton.jit
    def gemm_rows(x_ptr, w_ptr, y_ptr, M, N, K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_K: tl.constexpr):
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rm = tl.arange(0, BLOCK_M)
        acc = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_K], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + rm[:, None] * K + rk[None, :], mask=rm[:, None] < M, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + rn[:, None] * K + rk[None, :], mask=rn[:, None] < N, other=0.0).to(tl.float32)
            acc += x[:, None, :] * w[None, :, :]
        y = tl.sum(acc, 2)
        tl.store(y_ptr + rm[:, None] * N + rn[None, :], y.to(y_ptr.dtype.element_ty),
                 mask=(rm[:, None] < M) & (rn[None, :] < N))

    return gemm_rows


def _dot_kernel() -> Any:
    """The tensor-core variant: the M rows padded to 16 (``tl.dot``'s smallest), BLOCK_N weight rows a program."""
    import triton
    import triton.language as tl

    @triton.jit
    def gemm_rows_dot(x_ptr, w_ptr, y_ptr, M, N, K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_K: tl.constexpr):
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rm = tl.arange(0, BLOCK_M)
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + rm[:, None] * K + rk[None, :], mask=rm[:, None] < M, other=0.0)
            w = tl.load(w_ptr + rn[:, None] * K + rk[None, :], mask=rn[:, None] < N, other=0.0)
            acc += tl.dot(x, tl.trans(w))
        tl.store(y_ptr + rm[:, None] * N + rn[None, :], acc.to(y_ptr.dtype.element_ty),
                 mask=(rm[:, None] < M) & (rn[None, :] < N))

    return gemm_rows_dot


def _best(kernel: Any, x: Any, ws: list[Any], ys: list[Any], ref: Any, bm: int,
          blocks: Any) -> tuple[float, str, float]:
    """The fastest launch config of ``kernel`` over ``blocks`` ((BLOCK_N, BLOCK_K, warps) …), µs per matrix."""
    import triton

    m, (n, k) = x.shape[0], ws[0].shape
    best: tuple[float, str, float] | None = None
    for bn, bk, warps in blocks:
        def call(w: Any, y: Any, c: tuple[int, int, int] = (bn, bk, warps)) -> None:
            kernel[(triton.cdiv(n, c[0]),)](x, w, y, m, n, K=k, BLOCK_M=bm, BLOCK_N=c[0], BLOCK_K=c[1],
                                            num_warps=c[2])
        try:
            us = _graph_us(_over(ws, ys, call), reps=3) / len(ws)
        except Exception as exc:  # a config Triton cannot build: skip it, say so
            print(f"  skip N{bn} K{bk} w{warps}: {type(exc).__name__}")
            continue
        err = float((ys[0].float() - ref).abs().max().item())
        if best is None or us < best[0]:
            best = (us, f"N{bn} K{bk} w{warps}", err)
    assert best is not None
    return best


def _shape(kernels: tuple[Any, Any], m: int, n: int, k: int, layers: int) -> str:
    """cuBLAS against the best config of each Triton variant for (m × k) @ (k × n), over ``layers`` matrices."""
    import torch
    import triton

    ws = [torch.randn(n, k, device="cuda", dtype=torch.float16) * 0.02 for _ in range(layers)]
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    ys = [torch.empty(m, n, device="cuda", dtype=torch.float16) for _ in ws]
    ref = x.float() @ ws[0].float().t()
    gb = n * k * 2 / 1e9
    cublas = _graph_us(_over(ws, ys, lambda w, y: torch.mm(x, w.t(), out=y))) / layers
    bm = triton.next_power_of_2(m)
    fma = _best(kernels[0], x, ws, ys, ref, bm, [(bn, bk, w) for bn in (2, 4, 8) for bk in (64, 128, 256)
                                                 for w in (4, 8) if bm * bn * bk <= 16384])
    dot = _best(kernels[1], x, ws, ys, ref, 16, [(bn, bk, w) for bn in (16, 32, 64) for bk in (64, 128, 256)
                                                 for w in (2, 4, 8)])
    return (f"cublas {cublas:6.2f} µs ({gb / cublas * 1e6:5.0f} GB/s) | fma {fma[0]:6.2f} µs "
            f"({gb / fma[0] * 1e6:5.0f} GB/s, {fma[1]}) | dot {dot[0]:6.2f} µs ({gb / dot[0] * 1e6:5.0f} GB/s, "
            f"{dot[1]}, max-abs {dot[2]:.1e})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--rows", type=int, nargs="+", default=[8, 4, 2])
    args = ap.parse_args()
    kernels = (_kernel(), _dot_kernel())
    for m in args.rows:
        print(f"== M = {m} rows", flush=True)
        for name, (n, k) in SHAPES.items():
            print(f"  {name:22s} {_shape(kernels, m, n, k, args.layers)}", flush=True)


if __name__ == "__main__":
    main()
