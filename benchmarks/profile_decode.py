"""Where a GPU decode step's time goes (issue #21): kernels per step, time per kernel, and what the step's
kinds of work reach at its shapes.

    python benchmarks/profile_decode.py out/SPEC [--backend inductor] [--steps 20] [--top 25]
    python benchmarks/profile_decode.py out/SPEC --self-attention-ab [--positions 4,68,131]

``out/SPEC`` is a built speech specialization (``qeffbuild build SPEC``). The script opens its decoder the
way the decode loop does (``decoding.device.StepLoop``: static state buffers, state update in place), then

1. times one step (decoder + state update) replayed from a CUDA graph — the loop's per-token path;
2. profiles eager steps with ``torch.profiler``: kernels per step, each kernel's share, and the kernel-busy
   time per step (what is left when launches cost nothing);
3. measures, at the model's own sizes, the bandwidth of the step's kinds of work alone: a GEMV of the FFN's
   size, the LM head, and SDPA at query length 1 over the cross-attention states.

State values are zeros: a step's time does not depend on them, but on its position where the self-attention
reads the slots up to it: ``--self-attention-ab`` replays the step at each of ``--positions`` with the shipped
attention, with its self-attention loading every slot (as before the twenty-second session) and at other
chunkings of the self-attention's keys (the kernel's launch is chosen when a graph is captured, so one artifact
serves every variant).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any


def _timed(fn: Any, reps: int) -> float:
    """Seconds per call of ``fn`` launched from Python: host launch costs included."""
    import torch

    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def _in_graph(fn: Any, reps: int = 50) -> float:
    """Seconds per call of ``fn`` inside one CUDA graph of ``reps`` calls: the device time, as a captured decode
    step pays it (launching from Python alone costs tens of µs, more than these kernels)."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    return _timed(graph.replay, 10) / reps


def _kind(name: str) -> str:
    low = name.lower()
    for kind, marks in (("attention", ("fmha", "flash", "attention", "attn")),
                        ("gemm/gemv", ("gemm", "gemv", "cutlass", "sm90_xmma", "ampere_", "cublas", "splitk")),
                        ("triton (fused pointwise/reduction)", ("triton",)),
                        ("copy", ("copy", "memcpy", "memset")),):
        if any(m in low for m in marks):
            return kind
    return "other"


def profile(folder: Path, backend: str, steps: int, top: int) -> None:
    import torch

    from qeffbuild.core.plugins import plugins
    from qeffbuild.decoding.device import StepLoop
    from qeffbuild.decoding.roofline import copy_bandwidth, state_bytes
    from qeffbuild.runtimes import open_session

    dec_dir = folder / backend / "decoder"
    io = json.loads((dec_dir / "io.json").read_text())
    decoder = open_session(plugins(), backend, dec_dir, "cuda")
    loop = StepLoop(decoder, io)

    def step() -> None:
        loop._step()
        loop.position.zero_()  # stay inside the cache whatever the number of steps

    for _ in range(3):
        step()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    replay = _timed(graph.replay, 50)
    eager = _timed(step, 20)

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    per_kernel: dict[str, list[float]] = defaultdict(list)
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            per_kernel[ev.name].append(ev.device_time_total if hasattr(ev, "device_time_total") else ev.cuda_time)
    kernels = sum(len(v) for v in per_kernel.values()) / steps
    busy_us = sum(sum(v) for v in per_kernel.values()) / steps
    bw = copy_bandwidth(torch.device("cuda"))
    model_dir = folder / "model"
    weights = _weights(model_dir, io)
    total = weights + state_bytes(io)
    print(f"decoder {dec_dir} ({io.get('dtype')}), batch {io['shapes']['input_ids'][0]}")
    print(f"bytes per step: {total / 1e6:.0f} MB (weights {weights / 1e6:.0f} MB, states {state_bytes(io) / 1e6:.0f} "
          f"MB); copy bandwidth {bw / 1e9:.0f} GB/s: bound {total / bw * 1e3:.3f} ms")
    print(f"step, CUDA-graph replay: {replay * 1e3:.3f} ms ({total / replay / bw:.0%} of copy bandwidth); "
          f"eager: {eager * 1e3:.3f} ms")
    print(f"kernels per step: {kernels:.0f}; kernel-busy time per step: {busy_us / 1e3:.3f} ms")
    by_kind: dict[str, float] = defaultdict(float)
    for name, times in per_kernel.items():
        by_kind[_kind(name)] += sum(times) / steps
    for kind, us in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<38} {us / 1e3:7.3f} ms  {us / busy_us:5.1%}")
    print(f"top {top} kernels (per step: calls, µs total, µs each):")
    ranked = sorted(per_kernel.items(), key=lambda kv: -sum(kv[1]))[:top]
    for name, times in ranked:
        print(f"  {len(times) / steps:5.1f}  {sum(times) / steps:8.1f}  {sum(times) / len(times):7.2f}  {name[:110]}")
    _micro(io, bw)


def self_attention_ab(folder: Path, backend: str, positions: list[int]) -> None:
    """The step's CUDA-graph replay at each position, per variant of the writing self-attention (ms)."""
    import functools

    import torch

    from qeffbuild.backends import attention
    from qeffbuild.core.plugins import plugins
    from qeffbuild.decoding.device import StepLoop
    from qeffbuild.runtimes import open_session

    dec_dir = folder / backend / "decoder"
    io = json.loads((dec_dir / "io.json").read_text())
    decoder = open_session(plugins(), backend, dec_dir, "cuda")
    loop = StepLoop(decoder, io)
    launch = attention._launch
    variants: dict[str, Any] = {"shipped (slots up to the position)": launch,
                                "every slot loaded (before)": functools.partial(launch, load_all=True)}
    # the self-attention's keys (up to WHOLE: one chunk as shipped) in other chunks and warps; the cross-attention's
    # as shipped
    for chunk, warps in ((256, 8), (128, 4), (64, 4), (32, 4)):
        def self_launch(q: Any, k: Any, v: Any, mask: Any, scale: float, chunk_: Any = None, warps_: Any = None,
                        chunk: int = chunk, warps: int = warps, **kw: Any) -> Any:
            if k.shape[2] <= attention.WHOLE:
                chunk_, warps_ = chunk, warps
            return launch(q, k, v, mask, scale, chunk_, warps_, **kw)

        variants[f"self-attention: {chunk}-key chunks, {warps} warps"] = self_launch
    print(f"decoder {dec_dir}: step replay (ms) at positions {positions}")
    for name, patched in variants.items():
        attention._launch = patched
        try:
            times = []
            for p in positions:
                def step(p: int = p) -> None:
                    loop._step()
                    loop.position.fill_(p)

                for _ in range(3):
                    step()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    step()
                times.append(min(_timed(graph.replay, 50) for _ in range(3)))
        finally:
            attention._launch = launch
        cells = " / ".join(f"{t * 1e3:.3f}" for t in times)
        print(f"  {name:40s} {cells}   mean {sum(times) / len(times) * 1e3:.3f}")


def _weights(model_dir: Path, io: dict[str, Any]) -> int:
    import torch
    import transformers

    from qeffbuild.decoding.roofline import weight_bytes

    cfg = transformers.AutoConfig.from_pretrained(model_dir)
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(str(io.get("dtype")), torch.float32)
    with torch.device("meta"):
        model = transformers.AutoModelForSpeechSeq2Seq.from_config(cfg).to(dtype)
    return sum(p.numel() * p.element_size() for p in model.get_decoder().parameters()) + (
        0 if cfg.tie_word_embeddings else weight_bytes(model.get_output_embeddings()))


def _micro(io: dict[str, Any], bw: float) -> None:
    """Each kind of work alone at the step's sizes: the bandwidth it reaches."""
    import torch
    import torch.nn.functional as F

    layers = io["layers"]
    d, heads, hd = layers["hidden_size"], layers["cross_heads"], layers["cross_head_dim"]
    b = io["shapes"]["input_ids"][0]
    frames = next(v[2] for k, v in io["shapes"].items() if k.startswith("cross_"))
    dt = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(str(io.get("dtype")), torch.float32)
    dev = torch.device("cuda")
    x = torch.randn(b, d, dtype=dt, device=dev)
    print("alone, at this model's sizes, inside a CUDA graph (bandwidth = bytes read / time):")
    for label, w in (("GEMV d→4d (FFN up)", torch.randn(4 * d, d, dtype=dt, device=dev)),
                     ("GEMV d→vocab (LM head)", torch.randn(51866, d, dtype=dt, device=dev))):
        t = _in_graph(lambda w=w: F.linear(x, w))
        print(f"  {label:<34} {t * 1e6:8.1f} µs  {w.numel() * w.element_size() / t / 1e9:7.0f} GB/s "
              f"({w.numel() * w.element_size() / t / bw:.0%})")
    q = torch.randn(b, heads, 1, hd, dtype=dt, device=dev)
    k = torch.randn(b, heads, frames, hd, dtype=dt, device=dev)
    v = torch.randn_like(k)
    for backend in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH"):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        try:
            with sdpa_kernel(getattr(SDPBackend, backend)):
                t = _in_graph(lambda: F.scaled_dot_product_attention(q, k, v))
        except (RuntimeError, torch.OutOfMemoryError) as e:
            print(f"  SDPA q=1 over {frames} frames, {backend:<20} unavailable: {str(e).splitlines()[0][:80]}")
            continue
        moved = 2 * k.numel() * k.element_size()
        print(f"  SDPA q=1 over {frames} frames, {backend:<20} {t * 1e6:8.1f} µs  {moved / t / 1e9:7.0f} GB/s "
              f"({moved / t / bw:.0%})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--backend", default="inductor")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--self-attention-ab", action="store_true", help="the step per self-attention variant")
    ap.add_argument("--positions", default="4,68,131", help="positions the step replays at (--self-attention-ab)")
    a = ap.parse_args()
    if a.self_attention_ab:
        self_attention_ab(a.folder, a.backend, [int(p) for p in a.positions.split(",")])
        return
    profile(a.folder, a.backend, a.steps, a.top)


if __name__ == "__main__":
    main()
