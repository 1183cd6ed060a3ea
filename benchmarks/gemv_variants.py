"""Which kernel reads a decoder's weights fastest at batch 1 and 8 (issue #21, part 2): cuBLAS (`F.linear`),
Inductor's own GEMV (mul + sum, with and without coordinate-descent tuning) and qeffbuild's Triton GEMV
(`backends/gemv.py`, shipped config and a block sweep; batch 1 only), at whisper-large-v3's decoder shapes in
float16.

    python benchmarks/gemv_variants.py [--layers 32] [--batches 1 8]

Each variant runs over ``--layers`` distinct weight matrices (so the 50 MB L2 cache holds none of them, as in a
real step) inside one CUDA graph; the figure is µs per matrix and the bandwidth it reaches (weight bytes / time).
Every variant's output is checked against float32 on the same inputs (max-abs shown).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

SHAPES = {  # (out, in) of whisper-large-v3's decoder linears
    "attn 1280x1280": (1280, 1280),
    "fused qkv 3840x1280": (3840, 1280),
    "fc1 5120x1280": (5120, 1280),
    "fc2 1280x5120": (1280, 5120),
    "lm head 51866x1280": (51866, 1280),
}


def _graph_us(fn: Any, reps: int = 5) -> float:
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(20):
            graph.replay()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / 20)
    return best * 1e6


def _triton_gemv() -> Any:
    """qeffbuild's GEMV kernel (``backends/gemv.py``) at any block sizes: the sweep that picks the shipped config."""
    import triton

    from qeffbuild.backends import gemv as shipped

    kernel = shipped._triton_kernel()

    def run(x: Any, w: Any, y: Any, bn: int, bk: int, warps: int) -> None:
        n, k = w.shape
        kernel[(triton.cdiv(n, bn),)](x, w, y, y, n, K=k, K_P2=shipped.next_pow2(k), HAS_BIAS=False, TILE=False,
                                      PDL=False, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps)  # the chunked loop

    return run


def _over(ws: list[Any], ys: list[Any], call: Any) -> Any:
    """One pass over every layer's matrix: what a captured decoder step does with its weights."""
    def run() -> None:
        for w, y in zip(ws, ys, strict=True):
            call(w, y)
    return run


def _shape_rows(n: int, k: int, m: int, layers: int, gemv: Any, sweep: bool) -> dict[str, tuple[float, float]]:
    """µs per matrix and max-abs against float32, per variant, for (m × k) @ (k × n) over ``layers`` matrices."""
    import torch
    import torch._inductor.config as iconfig

    from qeffbuild.backends import gemv as shipped

    ws = [torch.randn(n, k, device="cuda", dtype=torch.float16) * 0.02 for _ in range(layers)]
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    ys = [torch.empty(m, n, device="cuda", dtype=torch.float16) for _ in ws]
    ref = x.float() @ ws[0].float().t()

    def err() -> float:
        return float((ys[0].float() - ref).abs().max().item())

    rows: dict[str, tuple[float, float]] = {}
    rows["cublas"] = (_graph_us(_over(ws, ys, lambda w, y: torch.mm(x, w.t(), out=y))) / layers, err())
    if m == 1:
        shipped.register()
        rows["qeffbuild::gemv (shipped)"] = (
            _graph_us(_over(ws, ys, lambda w, y: y.copy_(torch.ops.qeffbuild.gemv(x, w, None)))) / layers, err())
    if not sweep:
        for coordesc in (False, True):
            torch._dynamo.reset()
            with iconfig.patch(coordinate_descent_tuning=coordesc):
                fn = torch.compile(lambda x, w: (x.unsqueeze(1) * w.unsqueeze(0)).sum(-1), dynamic=False)
                us = _graph_us(_over(ws, ys, lambda w, y, fn=fn: y.copy_(fn(x, w)))) / layers
            rows[f"inductor mul-sum{' coordesc' if coordesc else ''}"] = (us, err())
    if m != 1:  # the hand kernel is for one row; a batch keeps cuBLAS
        return rows
    best: tuple[float, float, str] | None = None
    blocks_n = (1, 2, 4, 8) if sweep else (4, 8, 16, 32)
    for bn in blocks_n:
        for bk in ((64, 128, 256) if sweep else (128, 256, 512)):
            for warps in ((4, 8, 16) if sweep else (2, 4, 8)):
                if bn * bk > 16384:
                    continue
                try:
                    us = _graph_us(_over(ws, ys, lambda w, y, c=(bn, bk, warps): gemv(x, w, y, *c)), reps=3) / layers
                except Exception as exc:  # a config Triton cannot build: skip it, say so
                    print(f"  skip BLOCK_N={bn} BLOCK_K={bk} warps={warps}: {type(exc).__name__}")
                    continue
                if best is None or us < best[0]:
                    best = (us, err(), f"N{bn} K{bk} w{warps}")
    if best:
        rows[f"triton hand ({best[2]})"] = best[:2]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--sweep", action="store_true", help="a finer sweep of the hand kernel's blocks, at batch 1 "
                                                        "only, without Inductor's variants")
    args = ap.parse_args()
    import torch

    torch.manual_seed(0)
    gemv = _triton_gemv()
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}")
    for label, (n, k) in SHAPES.items():
        mb = n * k * 2 / 1e6
        for m in ([1] if args.sweep else args.batches):
            rows = _shape_rows(n, k, m, 4 if n > 10000 else args.layers, gemv, args.sweep)
            for name, (us, err) in rows.items():
                print(f"{label:22s} M={m}  {name:34s} {us:7.2f} µs  {mb / us * 1e3:6.0f} GB/s  max-abs {err:.2e}")


if __name__ == "__main__":
    main()
