"""Whether a batch-8 step's cross-attention states, prefetched into L2 while the layer's products run, cut the step.

    python benchmarks/l2_prefetch.py [--layers 32] [--batch 8]

whisper-large-v3's batch-8 decode step streams 2.0 GB of cross-attention keys and values (61 MB a layer) at
~3 TB/s, while its 193 products, a dependent chain of small ones, read their 1.8 GB of weights at ~1.3 TB/s: the
memory system idles during the products. This measures a model of the step (per layer six chained products of
whisper-large-v3's sizes through ``qeffbuild::gemv``, then its cross-attention through
``qeffbuild::decode_attention`` with the states loaded before the wait, as the compiled step runs them), in one
CUDA graph of ``--layers`` layers, with the layer's states prefetched into L2 at the start of the layer:

- ``side stream``: a prefetch kernel on a second stream, forked at the layer's start (no wait on the chain);
- ``in the chain``: the prefetch kernel in the step's stream under programmatic dependent launch (it lets the next
  product launch at once, and waits for the kernel before it only at its end, so the chain's order holds).

Prefetch forms: ``bulk`` (``cp.async.bulk.prefetch.L2``, 16 KB an instruction) and ``lines evict_last``
(``prefetch.global.L2::evict_last``, a 128-byte line an instruction). Per layer µs, and the fraction of each of
the layer's keys and values prefetched.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

BULK = 16384  # bytes a bulk prefetch instruction asks for
LINE = 128
THREADS = 128  # 4 warps: one pointer a thread


def _prefetch_kernel() -> Any:
    import triton
    import triton.language as tl

    @triton.jit
    def l2_prefetch(k_ptr, v_ptr, n_bytes, PDL: tl.constexpr, BULK_FORM: tl.constexpr, BLOCK: tl.constexpr,
                    STEP: tl.constexpr):
        if PDL:
            tl.extra.cuda.gdc_launch_dependents()
        pid = tl.program_id(0)
        which = tl.program_id(1)
        base = tl.where(which == 0, k_ptr, v_ptr)  # int8 views of the states: offsets in bytes
        offs = pid * BLOCK * STEP + tl.arange(0, BLOCK) * STEP
        if BULK_FORM:
            ptrs = base + tl.minimum(offs, n_bytes - STEP)
            tl.inline_asm_elementwise("cp.async.bulk.prefetch.L2.global [$1], 16384; mov.u32 $0, 0;", "=r,l", [ptrs],
                                      dtype=tl.int32, is_pure=False, pack=1)
        else:
            for i in range(0, 16384, 128):
                ptrs = base + tl.minimum(offs + i, n_bytes - 128)
                tl.inline_asm_elementwise("prefetch.global.L2::evict_last [$1]; mov.u32 $0, 0;", "=r,l", [ptrs],
                                          dtype=tl.int32, is_pure=False, pack=1)
        if PDL:
            tl.extra.cuda.gdc_wait()  # the next kernel's wait then covers the kernel before this one too

    return l2_prefetch


WIDTH, HEADS, FRAMES, DIM = 1280, 20, 1500, 64  # whisper-large-v3's decoder
# a layer's products (weight shapes) in order, None where its cross-attention runs
SHAPES = [(3840, 1280), (1280, 3840), (1280, 1280), None, (1280, 1280), (5120, 1280), (1280, 5120)]


def layer_model(n_layers: int, batch: int) -> tuple[list[tuple[list[Any], Any, Any]], Any]:
    """Per layer its float16 weights (SHAPES) and its cross-attention keys and values (``batch`` rows, 1,500
    frames), and the first layer's input: random, seeded."""
    import torch

    torch.manual_seed(0)
    layers = []
    for _ in range(n_layers):
        ws = [(torch.randn(*s, device="cuda") / s[1] ** 0.5).half() if s else None for s in SHAPES]
        k, v = (torch.randn(batch, HEADS, FRAMES, DIM, device="cuda").half() for _ in range(2))
        layers.append((ws, k, v))
    return layers, torch.randn(batch, WIDTH, device="cuda").half()


def layer_args(doc: str | None) -> argparse.Namespace:
    """``--layers`` and ``--batch`` of a benchmark over the layer model, with qeffbuild's GPU ops registered."""
    from qeffbuild.backends import attention, gemv

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    attention.register()
    gemv.register()
    return args


def main() -> None:
    import torch
    from gemv_variants import _graph_us

    from qeffbuild.backends import attention

    args = layer_args(__doc__)
    width, b = WIDTH, args.batch
    layers, x0 = layer_model(args.layers, b)
    kernel = _prefetch_kernel()
    side = torch.cuda.Stream()
    state_bytes = b * HEADS * FRAMES * DIM * 2

    def prefetch(k: Any, v: Any, fraction: float, pdl: bool, bulk: bool) -> None:
        n = int(state_bytes * fraction) // BULK * BULK
        per_program = THREADS * BULK
        kernel[(-(-n // per_program), 2)](k.view(torch.int8), v.view(torch.int8), n, PDL=pdl, BULK_FORM=bulk,
                                          BLOCK=THREADS, STEP=BULK, num_warps=4, launch_pdl=pdl)

    def step(fraction: float = 0.0, where: str = "", bulk: bool = True) -> Any:
        def run() -> Any:
            main_stream = torch.cuda.current_stream()
            x = x0
            for ws, k, v in layers:
                if fraction and where == "side":
                    side.wait_stream(main_stream)
                    with torch.cuda.stream(side):
                        prefetch(k, v, fraction, False, bulk)
                elif fraction:
                    prefetch(k, v, fraction, True, bulk)
                for w in ws:
                    if w is None:
                        q = x.view(b, HEADS, 1, DIM)
                        x = attention._launch(q, k, v, None, DIM ** -0.5, kv_ready=True).view(b, width)
                    else:
                        x = torch.ops.qeffbuild.gemv(x, w, None)
            if fraction and where == "side":
                main_stream.wait_stream(side)
            return x
        return run

    base = step()()
    print(f"batch {b}, {args.layers} layers: six products of large-v3's sizes and one cross-attention "
          f"({2 * state_bytes / 1e6:.0f} MB of states) a layer; µs a layer")
    rows = [("no prefetch", step())]
    for where in ("side", "chain"):
        for bulk in (True, False):
            for fraction in (0.25, 0.5, 1.0):
                form = "bulk" if bulk else "lines evict_last"
                rows.append((f"{where:5s} {form:16s} {fraction:4.2f} of the states", step(fraction, where, bulk)))
    for name, fn in rows:
        try:
            same = torch.equal(fn(), base)
            print(f"  {name:50s} {_graph_us(fn) / args.layers:8.2f} µs{'' if same else '   (output differs!)'}")
        except Exception as e:  # a form this GPU or Triton does not take: say so, go on
            print(f"  {name:50s} failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}")


if __name__ == "__main__":
    main()
