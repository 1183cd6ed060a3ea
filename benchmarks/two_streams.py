"""Whether a batch-8 decode step runs faster as two batch-4 halves (or four batch-2 quarters) on as many streams.

    python benchmarks/two_streams.py [--layers 32]

whisper-large-v3's batch-8 step is a dependent chain of small kernels: per layer its products (latency-bound,
reading their weights at ~1.3 TB/s) and its cross-attention (streaming 61 MB of states at ~3 TB/s). Two halves of
the batch on two streams are two independent chains: one half's products can run while the other half's
attention streams, and the two read the same weights at about the same time (a second read may come from L2).
This measures a model of the step (per layer six chained products of whisper-large-v3's sizes through
``qeffbuild::gemv`` and its cross-attention through ``qeffbuild::decode_attention``, the states loaded before the
wait), ``--layers`` layers in one CUDA graph: one batch-8 chain; two batch-4 chains one after the other; the two
on two streams; four batch-2 chains on four streams. The attention's per-(row, head) counts and the products'
split-K workspace are keyed by stream here: the shipped ops keep one per device (their decode loops run one
stream), which two launches running at once would share.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    import torch
    from gemv_variants import _graph_us
    from l2_prefetch import DIM, HEADS, WIDTH, layer_model

    from qeffbuild.backends import attention, gemv, gemv_mma

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=32)
    args = ap.parse_args()
    attention.register()
    gemv.register()
    counters: dict[tuple[str, int, int], Any] = {}

    def per_stream(device: Any, n: int) -> Any:
        key = (str(device), n, torch.cuda.current_stream().cuda_stream)
        if key not in counters:
            counters[key] = torch.zeros(n, device=device, dtype=torch.int32)
        return counters[key]

    attention._counter = per_stream
    # the several-row products' split-K workspace and counts, per stream too (gemv_mma keeps one per device)
    workspace = gemv_mma._workspace
    workspaces: dict[int, dict[Any, Any]] = {}

    def workspace_per_stream(device: Any, partials: int, tiles: int) -> Any:
        saved = gemv_mma._WORKSPACES
        gemv_mma._WORKSPACES = workspaces.setdefault(torch.cuda.current_stream().cuda_stream, {})
        try:
            return workspace(device, partials, tiles)
        finally:
            gemv_mma._WORKSPACES = saved

    gemv_mma._workspace = workspace_per_stream
    b, width, heads, dim = 8, WIDTH, HEADS, DIM
    layers, x0 = layer_model(args.layers, b)
    streams = [torch.cuda.Stream() for _ in range(4)]

    def chain(rows: slice) -> Any:
        x = x0[rows]
        n = x.shape[0]
        for ws, k, v in layers:
            for w in ws:
                if w is None:
                    q = x.view(n, heads, 1, dim)
                    x = attention._launch(q, k[rows], v[rows], None, dim ** -0.5, kv_ready=True).view(n, width)
                else:
                    x = torch.ops.qeffbuild.gemv(x, w, None)
        return x

    def one() -> Any:
        return chain(slice(0, 8))

    def halves() -> Any:
        return torch.cat([chain(slice(0, 4)), chain(slice(4, 8))])

    def on_streams(parts: int) -> Any:
        def run() -> Any:
            main_stream = torch.cuda.current_stream()
            outs = []
            size = b // parts
            for i, s in enumerate(streams[:parts]):
                s.wait_stream(main_stream)
                with torch.cuda.stream(s):
                    outs.append(chain(slice(i * size, (i + 1) * size)))
            for s in streams[:parts]:
                main_stream.wait_stream(s)
            return torch.cat(outs)
        return run

    base = one()
    print(f"batch 8, {args.layers} layers: six products of large-v3's sizes and one cross-attention a layer; "
          "µs a layer (of the whole batch)")
    for name, fn in (("one batch-8 chain", one), ("two batch-4 chains, one after the other", halves),
                     ("two batch-4 chains on two streams", on_streams(2)),
                     ("four batch-2 chains on four streams", on_streams(4))):
        diff = (fn().float() - base.float()).abs().max().item()
        print(f"  {name:45s} {_graph_us(fn) / args.layers:8.2f} µs   max |diff| from batch 8 {diff:.1e}")


if __name__ == "__main__":
    main()
