"""Does the tensor-core several-row product (``backends/gemv_mma.py``) read a decoder's weights faster than cuBLAS
at batch 8 (issue #21, the b8 step)?

    python benchmarks/gemm_rows.py [--layers 32] [--rows 8] [--no-sweep]

The large-v3 b8 profile (`gpu-quick.sh R profile`, PROFILE_SPEC=whisper-large-v3-zoo-b8-float16) puts cuBLAS's
M = 8 products at 1.06 of a 2.51 ms step. At whisper-large-v3's decoder shapes, over ``--layers`` distinct
matrices inside one CUDA graph (as ``gemv_variants.py``; the 50 MB L2 holds none of them), µs per product for:

- cuBLAS (``torch.mm``);
- ``qeffbuild::gemv`` as shipped (the tensor-core tile, split along K by ``gemv_mma.blocks``, PDL on Hopper);
- a sweep of its launch config (BLOCK_N, largest BLOCK_K, target programs, warps): the best, to choose the
  shipped constants;

then a dependent chain per layer, out-proj → fc1 → fc2 (each reading the previous output, as in a step), through
cuBLAS and through the op. Every output is checked against float32 on the same inputs (max-abs shown).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gemv_variants import SHAPES, _graph_us, _over  # type: ignore[import-not-found]

SWEEP = [(bn, bk, target, warps) for bn in (32, 64, 128) for bk in (128, 256) for target in (64, 128, 256)
         for warps in (4, 8)]
# products of each shape in a large-v3 decoder layer (out-proj, cross-attention q and out; qkv; fc1; fc2), and the
# LM head once a step (of 32 layers): the weights of the sweep's one-config-for-all choice
PER_LAYER = {"attn 1280x1280": 3, "fused qkv 3840x1280": 1, "fc1 5120x1280": 1, "fc2 1280x5120": 1,
             "lm head 51866x1280": 1 / 32}


def _shape(m: int, n: int, k: int, layers: int, sweep: bool, table: dict[Any, float]) -> str:
    import torch

    from qeffbuild.backends import gemv_mma

    ws = [torch.randn(n, k, device="cuda", dtype=torch.float16) * 0.02 for _ in range(layers)]
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    ys = [torch.empty(m, n, device="cuda", dtype=torch.float16) for _ in ws]
    ref = x.float() @ ws[0].float().t()
    gb = n * k * 2 / 1e9

    outs: dict[int, Any] = {}

    def timed(config: Any) -> tuple[float, float]:
        """The op's launch alone (no copy into ``ys``: a kernel of its own), its first output kept to check."""
        us = _graph_us(_over(ws, list(range(layers)), lambda w, i: outs.__setitem__(
            i, gemv_mma.launch(x, w, None, None, 0.0, "none", None, True, config))), reps=3) / layers
        return us, float((outs[0].float() - ref).abs().max().item())

    cublas = _graph_us(_over(ws, ys, lambda w, y: torch.mm(x, w.t(), out=y))) / layers
    shipped = timed(None)
    line = (f"cublas {cublas:6.2f} µs ({gb / cublas * 1e6:5.0f} GB/s) | shipped {shipped[0]:6.2f} µs "
            f"({gb / shipped[0] * 1e6:5.0f} GB/s, {gemv_mma.blocks(n, k)}, max-abs {shipped[1]:.1e})")
    if sweep:
        best: tuple[float, float, Any] | None = None
        for config in SWEEP:
            us, e = timed(config)
            table[config] = us
            if best is None or us < best[0]:
                best = (us, e, config)
        assert best is not None
        line += f" | best {best[0]:6.2f} µs {best[2]} max-abs {best[1]:.1e}"
    return line


def _chain(m: int, layers: int) -> str:
    """Per layer out-proj → fc1 → fc2, each product reading the one before: µs per product."""
    import torch

    from qeffbuild.backends import gemv

    gemv.register()
    shapes = [(1280, 1280), (5120, 1280), (1280, 5120)] * layers
    weights = [(torch.randn(n, k, device="cuda") * k ** -0.5).half() for n, k in shapes]
    x = torch.randn(m, 1280, device="cuda").half()
    out: dict[str, Any] = {}

    def run(name: str, product: Any) -> None:
        y = x
        for w in weights:
            y = product(y, w)
        out[name] = y

    cublas = _graph_us(lambda: run("cublas", lambda y, w: torch.mm(y, w.t()))) / len(weights)
    ours = _graph_us(lambda: run("op", lambda y, w: torch.ops.qeffbuild.gemv(y, w, None))) / len(weights)
    diff = float((out["op"].float() - out["cublas"].float()).abs().max().item())
    return f"chain out→fc1→fc2 ×{layers}, M={m}: cublas {cublas:6.2f} µs | op {ours:6.2f} µs a product " \
           f"(last output max-abs {diff:.1e} apart)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--rows", type=int, nargs="+", default=[8])
    ap.add_argument("--no-sweep", action="store_true", help="the shipped config only")
    args = ap.parse_args()
    import torch

    torch.manual_seed(0)
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    for m in args.rows:
        print(f"== M = {m} rows", flush=True)
        print(f"  {_chain(m, args.layers)}", flush=True)
        tables: dict[str, dict[Any, float]] = {}
        for name, (n, k) in SHAPES.items():
            layers = 4 if n > 10000 else args.layers
            tables[name] = {}
            print(f"  {name:22s} {_shape(m, n, k, layers, not args.no_sweep, tables[name])}", flush=True)
        if not args.no_sweep:
            best = _one_config(tables)
            from qeffbuild.backends import gemv_mma

            gemv_mma.BLOCK_N, gemv_mma.MAX_BLOCK_K, gemv_mma.TARGET_PROGRAMS, gemv_mma.NUM_WARPS = best
            print(f"  with {best}: {_chain(m, args.layers)}", flush=True)


def _one_config(tables: dict[str, dict[Any, float]]) -> Any:
    """Each config's µs per layer (its products weighted as a large-v3 layer has them), best first, and each
    shape's time under it."""
    per_layer = {c: sum(PER_LAYER[s] * t[c] for s, t in tables.items()) for c in SWEEP}
    print("  config (BLOCK_N, max BLOCK_K, target programs, warps): µs a layer | per shape", flush=True)
    for config in sorted(per_layer, key=per_layer.__getitem__)[:12]:
        shapes = " ".join(f"{t[config]:6.2f}" for t in tables.values())
        print(f"    {config!s:22s} {per_layer[config]:7.2f} | {shapes}", flush=True)
    return min(per_layer, key=per_layer.__getitem__)


if __name__ == "__main__":
    main()
