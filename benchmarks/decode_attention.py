"""qeffbuild::decode_attention against torch's SDPA kernels at whisper-large-v3's decoder shapes (float16).

    python benchmarks/decode_attention.py [--layers 32] [--heads 20] [--head-dim 64] [--chain-only]

A decode step attends with one query per head over its self-attention slots (136, masked past the position) and
over the encoder's 1,500 frames. Per shape and batch size (1 and 8), each way runs over ``--layers`` distinct
key/value tensors inside one CUDA graph (as a step runs its layers, so no call finds another's keys in L2):
torch's default SDPA (what a step ran before: cuDNN on an H200), each SDPA backend forced (flash takes no mask),
and qeffbuild's kernel at several chunk sizes. Per call: µs, and the keys and values read per second. Also each
way's largest difference from the float32 attention of the same half-precision values. Then the
cross-attentions as a step chains them, each query projected from the attention before, with the states loaded
before the projection finishes (``kv_ready``, under programmatic dependent launch) and after. Then the writing
self-attention as a step runs it (its query, key and value from the fused projection of the attention before, the
slot written in place) at positions across a decode, reading every slot or none past the position, at several
chunkings (``--self-only``: only these).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--heads", type=int, default=20)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--chain-only", action="store_true", help="only the projection → attention chains")
    ap.add_argument("--self-only", action="store_true", help="only the writing self-attention's chain")
    args = ap.parse_args()
    for batch in () if args.self_only else (1, 8):
        for slots, masked in () if args.chain_only else ((136, True), (1500, False)):
            print(f"\nbatch {batch}, {slots} keys{' (masked past slot 100)' if masked else ''}:")
            for name, us, gbs, err in _rows(batch, args.heads, slots, args.head_dim, masked, args.layers):
                print(f"  {name:34s} {us:8.2f} µs  {gbs:7.0f} GB/s   max |err| {err:.2e}" if us == us
                      else f"  {name:34s} {'failed':>8s}     {err}")
        print(f"\nbatch {batch}, 1500 frames, each layer's query projected from the attention before (µs a layer):")
        for name, us in _chain(batch, args.heads, 1500, args.head_dim, args.layers):
            print(f"  {name:58s} {us:8.2f} µs")
    for batch in (1, 8):
        print(f"\nbatch {batch}, 136 self-attention slots written in place, each layer's q, k, v projected from the "
              "attention before (µs a layer, at positions 4 / 68 / 131, and their mean):")
        for name, per_position in _self_chain(batch, args.heads, 136, args.head_dim, args.layers, (4, 68, 131)):
            cells = " / ".join(f"{us:6.2f}" for us in per_position)
            print(f"  {name:44s} {cells}   mean {sum(per_position) / len(per_position):6.2f} µs")


def _self_chain(batch: int, heads: int, slots: int, dim: int, layers: int,
                positions: tuple[int, ...]) -> list[tuple[str, list[float]]]:
    """As a step runs its self-attentions: per layer q, k and v are views of one fused projection
    (``qeffbuild::gemv``) of the attention before, and the writing op writes slot ``position`` of that layer's
    caches and attends over the slots up to it. ``load_all`` loads the slots past the position too (masked out
    of the sum), as the kernel did before the twenty-second session."""
    import torch
    from gemv_variants import _graph_us

    from qeffbuild.backends import attention, gemv

    attention.register()
    gemv.register()
    torch.manual_seed(0)
    half, width = torch.float16, heads * dim
    weights = [(torch.randn(3 * width, width, device="cuda") / width ** 0.5).to(half) for _ in range(layers)]
    caches = [tuple(torch.randn(batch, heads, slots, dim, device="cuda").to(half) for _ in range(2))
              for _ in range(layers)]
    x0 = torch.randn(batch, width, device="cuda").to(half)
    position = torch.tensor(0, device="cuda")

    def run(load_all: bool, chunk: int = 0, warps: int = 0) -> Any:
        def step() -> Any:
            x = x0
            for w, (k_cache, v_cache) in zip(weights, caches, strict=True):
                qkv = torch.ops.qeffbuild.gemv(x, w, None).view(batch, 1, 3 * width)
                q, k_new, v_new = (qkv[..., i * width:(i + 1) * width].reshape(batch, 1, heads, dim).transpose(1, 2)
                                   for i in range(3))
                x = attention._launch(q, k_cache, v_cache, None, dim ** -0.5, chunk or None, warps,
                                      written=(k_new, v_new, position), kv_ready=True,
                                      load_all=load_all).view(batch, width)
            return x
        return step

    def at_positions(fn: Any) -> list[float]:
        out = []
        for p in positions:
            position.fill_(p)
            out.append(_graph_us(fn) / layers)
        return out

    rows = [("every slot loaded (before)", at_positions(run(True))),
            ("slots up to the position (shipped chunking)", at_positions(run(False)))]
    for chunk, warps in ((256, 8), (128, 4), (64, 4), (64, 2), (32, 4), (32, 2)):
        rows.append((f"  up to the position, chunk {chunk}, {warps} warps", at_positions(run(False, chunk, warps))))

    def projections() -> Any:
        x = x0
        for w in weights:
            x = torch.ops.qeffbuild.gemv(x, w, None)[:, :width]
        return x

    rows.append(("the projections alone, chained", at_positions(projections)))
    return rows


def _rows(batch: int, heads: int, slots: int, dim: int, masked: bool, layers: int) -> list[tuple[str, float, float,
                                                                                                   Any]]:
    import torch
    from gemv_variants import _graph_us

    from qeffbuild.backends import attention

    attention.register()
    torch.manual_seed(0)
    half = torch.float16
    scale = dim ** -0.5
    # q as HF's attention hands it over: a transposed view of the projection's output
    qs = [torch.randn(batch, 1, heads, dim, device="cuda").to(half).transpose(1, 2) for _ in range(layers)]
    ks = [torch.randn(batch, heads, slots, dim, device="cuda").to(half) for _ in range(layers)]
    vs = [torch.randn(batch, heads, slots, dim, device="cuda").to(half) for _ in range(layers)]
    mask = (torch.arange(slots, device="cuda") <= 100).view(1, 1, 1, slots).expand(batch, 1, 1, slots) \
        if masked else None
    exact = torch.nn.functional.scaled_dot_product_attention(qs[0].float(), ks[0].float(), vs[0].float(),
                                                             attn_mask=mask, scale=scale)
    moved = 2 * batch * heads * slots * dim * 2  # bytes of keys and values a call reads

    def sdpa(backend: Any = None) -> Any:
        def run() -> Any:
            from torch.nn.attention import sdpa_kernel

            if backend is None:
                return [torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
                        for q, k, v in zip(qs, ks, vs, strict=True)]
            with sdpa_kernel([backend]):
                return [torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
                        for q, k, v in zip(qs, ks, vs, strict=True)]
        return run

    def ours(chunk: int, warps: int) -> Any:
        return lambda: [attention._launch(q, k, v, mask, scale, chunk or None, warps) for q, k, v in zip(qs, ks, vs,
                                                                                                  strict=True)]

    from torch.nn.attention import SDPBackend

    ways: dict[str, Any] = {"torch SDPA (default)": sdpa(), "cuDNN": sdpa(SDPBackend.CUDNN_ATTENTION),
                            "efficient": sdpa(SDPBackend.EFFICIENT_ATTENTION)}
    if not masked:
        ways["flash"] = sdpa(SDPBackend.FLASH_ATTENTION)
    ways["qeffbuild (shipped: chunk_for, warps_for)"] = ours(0, 0)
    for chunk in (32, 64, 128, 256):
        for warps in (2, 4):
            ways[f"qeffbuild chunk {chunk}, {warps} warps"] = ours(chunk, warps)
    rows = []
    for name, fn in ways.items():
        try:
            err = (fn()[0].float() - exact).abs().max().item()
            us = _graph_us(fn) / layers
        except Exception as e:  # a backend that does not take these shapes or this mask: say so, go on
            rows.append((name, float("nan"), float("nan"), f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"))
            continue
        rows.append((name, us, moved / us / 1e3, err))
    return rows


def _chain(batch: int, heads: int, frames: int, dim: int, layers: int) -> list[tuple[str, float]]:
    """As a step runs its cross-attentions: per layer the query is a projection (``qeffbuild::gemv``) of the
    attention before, and the attention reads that layer's encoder states. With ``kv_ready`` each attention
    loads its keys and values before it waits for the projection (PDL); without, after."""
    import torch
    from gemv_variants import _graph_us

    from qeffbuild.backends import attention, gemv

    attention.register()
    gemv.register()
    torch.manual_seed(0)
    half, width = torch.float16, heads * dim
    weights = [(torch.randn(width, width, device="cuda") / width ** 0.5).to(half) for _ in range(layers)]
    ks = [torch.randn(batch, heads, frames, dim, device="cuda").to(half) for _ in range(layers)]
    vs = [torch.randn(batch, heads, frames, dim, device="cuda").to(half) for _ in range(layers)]
    x0 = torch.randn(batch, width, device="cuda").to(half)

    def run(kv_ready: bool, chunk: int = 0, warps: int = 0) -> Any:
        def step() -> Any:
            x = x0
            for w, k, v in zip(weights, ks, vs, strict=True):
                q = torch.ops.qeffbuild.gemv(x, w, None).view(batch, heads, 1, dim)
                x = attention._launch(q, k, v, None, dim ** -0.5, chunk or None, warps,
                                      kv_ready=kv_ready).view(batch, width)
            return x
        return step

    same = torch.equal(run(False)(), run(True)())
    rows = [("projection + attention, states loaded after the wait", _graph_us(run(False)) / layers),
            (f"projection + attention, kv_ready (same output: {same})", _graph_us(run(True)) / layers)]
    for chunk in (64, 128, 256):
        for warps in (2, 4, 8):
            rows.append((f"  kv_ready, chunk {chunk}, {warps} warps", _graph_us(run(True, chunk, warps)) / layers))
    rows.append(("the projections alone, chained", _graph_us(_chained(x0, weights)) / layers))
    return rows


def _chained(x0: Any, weights: list[Any]) -> Any:
    import torch

    def step() -> Any:
        x = x0
        for w in weights:
            x = torch.ops.qeffbuild.gemv(x, w, None)
        return x
    return step


if __name__ == "__main__":
    main()
