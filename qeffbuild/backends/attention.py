"""Attention for one query over a decoder's keys and values, for the `inductor` backend's CUDA decoder steps:
``qeffbuild::decode_attention``.

A Whisper decode step attends with one query per head over its self-attention slots (``ctx_len``, masked past
the position) and over the encoder's 1,500 frames. Torch sends both to cuDNN's SDPA, which takes 6.2–6.5 µs a
call at whisper-large-v3's batch-1 shapes (64 calls: 0.40 ms of a 1.79 ms step on the H200) and 14.6 µs at batch
8: a kernel built for long prompts, latency-bound on one query. This one splits the keys into chunks
(flash-decoding): one program per (row, head, chunk) scores its chunk and keeps a softmax-weighted partial
sum, and the chunk's program that finishes last for its (row, head) merges the partials (an atomic count per
(row, head), reset by that program), so the whole attention is one launch.

The compile step routes every ``scaled_dot_product_attention`` of the exported program with one query, a
half-precision CUDA operand, a boolean mask or none, no dropout and no causal flag to this op (:func:`route`,
before the trace); Inductor calls it as an extern kernel, as it does SDPA. :func:`_reference` is the op's
definition and its CPU path. On a Hopper GPU it is launched to overlap the kernel before it (programmatic
dependent launch, as the GEMVs are: ``gemv.pdl_available``). whisper-large-v3 dims fp16 on an H200, one bench against
cuDNN's SDPA: 1.65 against 1.80 ms/token at batch 1, 2.90 against 2.95 at batch 8, exact tokens kept. Keys and
values that are the step's inputs (the encoder's states, the retained cache: ``kv_ready``, set by :func:`route`)
are loaded before that launch waits, while the projection before it still runs: batch 8 2.16 → 2.05 ms/token.
The writing op stores only its slot's row (a store of the whole tile masked to it kept the tile's pointers live:
9 KB of spills a thread) and loads no slot past the position: batch 8 2.05 → 1.89, batch 1 1.08 → 1.03.

The counts live in one buffer per device and rows × heads: launches on one device are taken to run one at a
time (one stream, as the decode loop and its CUDA graphs run them), since two overlapping launches of the same
size would share counts.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from . import gemv

if TYPE_CHECKING:
    import torch

OP = "qeffbuild::decode_attention"
# The same attention that first writes this step's key and value into the self-attention cache at the position
# (the cache is mutated in place), replacing the graph's where(slot == position, new, past) and its copy back
WRITE_OP = "qeffbuild::decode_attention_write"
OPS = (OP, WRITE_OP)
HALF = ("float16", "bfloat16")
HEAD_DIMS = (16, 32, 64, 128, 256)  # a power of two: the kernel loads a head's row whole
ROUTED_DEVICES = ("cuda",)  # where attentions go to the kernel (tests add "cpu" to route a CPU trace)
# Keys a program scores: one chunk per program keeps its loads in flight together. Up to WHOLE keys are one chunk
# (no merge: at whisper-large-v3's 136 self-attention slots 3.2 µs against 3.6 with 64-key chunks and cuDNN's
# 9.4); longer ones are cut into CHUNK-key chunks (1,500 frames: 6.4 µs, cuDNN 8.5 at batch 1; 20.3 against
# 19.6 at batch 8, where both read at ~3 TB/s). benchmarks/decode_attention.py on an H200, 4 warps.
WHOLE = 256
CHUNK = 128
NUM_WARPS = 4
# A launch of split keys with few programs (batch 1's cross-attention: 20 heads × 12 chunks) runs 2 warps a program:
# 6.6 against 7.9 µs a layer, each query projected from the attention before (benchmarks/decode_attention.py's
# chain, kv_ready); at batch 8 (1,920 programs) 4 warps stay best (23.8 against 26.7).
FEW_PROGRAMS = 512
FEW_PROGRAMS_WARPS = 2

_registered: set[str] = set()
_kernel: Any = None
_counters: dict[tuple[str, int], Any] = {}  # (device, rows × heads) -> int32 zeros each launch leaves zero


def register(ops: tuple[str, ...] | list[str] = OPS) -> None:
    """Define the ops in this process, once each (a session defines only those its artifact names)."""
    if OP in ops and OP not in _registered:
        _registered.add(OP)
        _define()
    if WRITE_OP in ops and WRITE_OP not in _registered:
        _registered.add(WRITE_OP)
        _define_write()


def _define() -> None:
    import torch

    @torch.library.custom_op(OP, mutates_args=(),
                             schema="(Tensor q, Tensor k, Tensor v, Tensor? mask, float scale, bool kv_ready=False) "
                                    "-> Tensor")
    def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                         scale: float, kv_ready: bool = False) -> torch.Tensor:
        """softmax(q·kᵀ·scale, masked) · v for q of shape (B, H, 1, D), k and v (B, H, S, D) and a boolean
        mask broadcast to (B, 1, 1, S) (True: attend). ``kv_ready``: k and v are inputs of the step (no kernel
        of the step writes them), which the kernel then loads before it waits for the kernel before it."""
        return _launch(q, k, v, mask, scale, kv_ready=kv_ready) if q.device.type == "cuda" \
            else _reference(q, k, v, mask, scale)

    @decode_attention.register_fake
    def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
          scale: float, kv_ready: bool = False) -> torch.Tensor:
        return q.new_empty(q.shape)


def _define_write() -> None:
    import torch

    @torch.library.custom_op(WRITE_OP, mutates_args=("k_cache", "v_cache"),
                             schema="(Tensor q, Tensor k_new, Tensor v_new, Tensor(a!) k_cache, Tensor(b!) v_cache, "
                                    "Tensor position, Tensor? mask, float scale, bool kv_ready=False) -> Tensor")
    def decode_attention_write(q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, k_cache: torch.Tensor,
                               v_cache: torch.Tensor, position: torch.Tensor, mask: torch.Tensor | None,
                               scale: float, kv_ready: bool = False) -> torch.Tensor:
        """Write ``k_new`` and ``v_new`` (B, H, 1, D) into slot ``position`` of the caches (B, H, S, D), in place
        (no slot when the position is outside them), then :data:`OP` over the caches with ``mask``, or without
        one over the slots up to the position (a decoder's causal mask, made in the kernel). ``kv_ready``: the
        caches are inputs of the step, as :data:`OP`'s k and v."""
        if q.device.type == "cuda" and k_cache.stride(-1) == 1 and v_cache.stride(-1) == 1:
            return _launch(q, k_cache, v_cache, mask, scale, written=(k_new, v_new, position), kv_ready=kv_ready)
        return _reference_write(q, k_new, v_new, k_cache, v_cache, position, mask, scale)

    @decode_attention_write.register_fake
    def _(q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
          position: torch.Tensor, mask: torch.Tensor | None, scale: float, kv_ready: bool = False) -> torch.Tensor:
        return q.new_empty(q.shape)


def _reference_write(q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, k_cache: torch.Tensor,
                     v_cache: torch.Tensor, position: torch.Tensor, mask: torch.Tensor | None,
                     scale: float) -> torch.Tensor:
    """What the writing op computes: the graph's own cache update (RetainedLayer's decode step), in place."""
    import torch

    slots = torch.arange(k_cache.shape[-2], device=k_cache.device)
    slot = (slots == position).view(1, 1, -1, 1)
    k_cache.copy_(torch.where(slot, k_new.to(k_cache.dtype), k_cache))
    v_cache.copy_(torch.where(slot, v_new.to(v_cache.dtype), v_cache))
    return _reference(q, k_cache, v_cache, (slots <= position).view(1, 1, 1, -1) if mask is None else mask, scale)


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
               scale: float) -> torch.Tensor:
    """What the op computes, in float32, rounded to q's dtype."""
    import torch

    scores = (q.float() @ k.float().transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (torch.softmax(scores, -1) @ v.float()).to(q.dtype)


def eligible(q: Any, k: Any, v: Any, mask: Any, dropout_p: float, is_causal: bool, enable_gqa: bool,
             device: str) -> bool:
    """Whether an SDPA call (by its operands' example values) is one this op computes on ``device``."""
    if device not in ROUTED_DEVICES or dropout_p or is_causal or enable_gqa:
        return False
    if any(t is None or t.dim() != 4 for t in (q, k, v)):
        return False
    b, h, s_q, d = q.shape
    if s_q != 1 or d not in HEAD_DIMS or tuple(k.shape) != tuple(v.shape) or tuple(k.shape[:2]) != (b, h) \
            or k.shape[3] != d or k.shape[2] < 1:
        return False
    if str(q.dtype).removeprefix("torch.") not in HALF or k.dtype != q.dtype or v.dtype != q.dtype:
        return False
    if mask is None:
        return True
    # a boolean mask over the keys, the same for every head and the one query: (B or 1, 1, 1, S)
    return (str(mask.dtype) == "torch.bool" and mask.dim() == 4 and mask.shape[0] in (1, b)
            and tuple(mask.shape[1:3]) == (1, 1) and mask.shape[3] == k.shape[2])


def route(module: Any, device: str, write_state: bool = True) -> int:
    """Replace each eligible ``aten.scaled_dot_product_attention`` of an exported program's module by this op
    (its graph's nodes carry example values); returns how many were replaced. With ``write_state``, an attention
    over a retained cache updated by ``where(slot == position, new, past)`` (:func:`_cache_write`) goes to
    :data:`WRITE_OP`, which writes the slot into the cache in place: the module then returns the cache input
    itself as that state's output, and the two kernels Inductor made per layer to write the states are gone."""
    import torch

    register()
    sdpa = torch.ops.aten.scaled_dot_product_attention.default
    graph, routed = module.graph, 0
    causal: dict[tuple[Any, Any], bool] = {}  # (mask, position) -> _is_causal: the layers share one mask
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not sdpa:
            continue
        args: dict[str, Any] = dict(zip(("query", "key", "value", "attn_mask", "dropout_p", "is_causal"), node.args,
                                        strict=False))
        args.update(node.kwargs)
        q, k, v, mask = (args.get(n) for n in ("query", "key", "value", "attn_mask"))
        q_val, k_val, v_val, mask_val = (gemv._val(x) if x is not None else None for x in (q, k, v, mask))
        assert q is not None and k is not None and v is not None  # SDPA's schema: they are required
        if not eligible(q_val, k_val, v_val, mask_val, float(args.get("dropout_p", 0.0)),
                        bool(args.get("is_causal", False)), bool(args.get("enable_gqa", False)), device):
            continue
        scale = args.get("scale")
        scale = float(scale) if scale is not None else 1.0 / math.sqrt(q_val.shape[-1])  # type: ignore[union-attr]
        write = _cache_write(node, k, v) if write_state else None
        q, scale = _unscaled(q, scale)
        with graph.inserting_before(node):
            if write is None:
                new = graph.call_function(torch.ops.qeffbuild.decode_attention.default,
                                          (q, k, v, mask, scale, k.op == v.op == "placeholder"))
            else:
                k_new, v_new, k_cache, v_cache, position = write
                # a mask that is slot <= position is the kernel's own: no kernel a layer to make it
                if mask is not None and (mask, position) not in causal:
                    causal[(mask, position)] = _is_causal(mask, position, gemv._val(k).shape[2])
                mask = None if mask is not None and causal[(mask, position)] else mask
                # the caches are the step's inputs (_cache_write): only this op writes them
                new = graph.call_function(torch.ops.qeffbuild.decode_attention_write.default,
                                          (q, k_new, v_new, k_cache, v_cache, position, mask, scale, True))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        if write is not None:  # the step's outputs are the caches now written in place
            for updated, cache in ((k, write[2]), (v, write[3])):
                updated.replace_all_uses_with(cache)
                graph.erase_node(updated)
        routed += 1
    if routed:
        graph.lint()
        module.recompile()
    return routed


def _cache_write(sdpa: Any, k: Any, v: Any) -> tuple[Any, Any, Any, Any, Any] | None:
    """(k_new, v_new, k_cache, v_cache, position) when the attention's keys and values are a retained cache's
    decode-step update, ``where((arange(S) == position).view(1, 1, S, 1), new, cache_input)`` (decoding/cache.py's
    RetainedLayer), read only by this attention and returned as the step's state; else None (left as it is)."""
    import torch

    aten = torch.ops.aten
    found = []
    for updated in (k, v):
        if getattr(updated, "target", None) is not aten.where.self or len(updated.args) != 3:
            return None
        cond, new, cache = updated.args
        if getattr(cache, "op", None) != "placeholder" or not _reads_only_before(cache, updated, sdpa):
            return None
        # read by this attention and returned as a state: a cache the step only reads must not be written
        if any(u is not sdpa and u.op != "output" for u in updated.users) \
                or not any(u.op == "output" for u in updated.users):
            return None
        new_val, cache_val = gemv._val(new), gemv._val(cache)
        if new_val is None or cache_val is None or new_val.dtype != cache_val.dtype or new_val.dim() != 4 \
                or tuple(new_val.shape) != (*cache_val.shape[:2], 1, cache_val.shape[3]):
            return None
        found.append((cond, _view_source(new), cache))
    (cond, k_new, k_cache), (cond_v, v_new, v_cache) = found
    position = _slot_position(cond, gemv._val(k_cache).shape[2])
    if position is None or _slot_position(cond_v, gemv._val(v_cache).shape[2]) is not position:
        return None
    return k_new, v_new, k_cache, v_cache, position


def _is_causal(mask: Any, position: Any, slots: int) -> bool:
    """Whether ``mask`` is ``slot <= position`` for every row, at every position a step can take (0 … slots - 1):
    its nodes are run for each, from the position alone (a mask that reads any other input is not)."""
    import torch

    nodes: dict[Any, None] = {}
    todo = [mask]
    while todo:
        n = todo.pop()
        if n in nodes or n is position:
            continue
        if n.op != "call_function":  # an input other than the position, or a weight
            return False
        nodes[n] = None
        todo.extend(n.all_input_nodes)
    order = [n for n in mask.graph.nodes if n in nodes]
    pos_val = gemv._val(position)
    try:
        for p in range(slots):
            env = {position: torch.tensor(p, dtype=pos_val.dtype, device=pos_val.device)}
            for n in order:
                env[n] = n.target(*torch.fx.node.map_arg(n.args, env.__getitem__),
                                  **torch.fx.node.map_arg(n.kwargs, env.__getitem__))
            got = env[mask]
            want = torch.arange(slots, device=got.device) <= p
            if got.dtype != torch.bool or not bool((got == want).all()):
                return False
    except (RuntimeError, TypeError, ValueError):  # a node that cannot run alone: keep the mask
        return False
    return True


def _unscaled(q: Any, scale: float) -> tuple[Any, float]:
    """The query without its scaling by a constant (``transpose(view(mul(x, c)))``: Whisper scales q after its
    projection), that constant folded into the op's scale: the kernel then reads q straight from the
    projection's output, with no kernel between them to scale it."""
    import torch

    aten = torch.ops.aten
    if getattr(q, "target", None) is not aten.transpose.int:
        return q, scale
    view = q.args[0]
    if getattr(view, "target", None) not in (aten.view.default, aten.reshape.default) or len(view.users) != 1:
        return q, scale
    mul = view.args[0]
    if getattr(mul, "target", None) is not aten.mul.Tensor or len(mul.users) != 1 \
            or not isinstance(mul.args[1], float | int) or isinstance(mul.args[1], bool):
        return q, scale
    # reshape, not view: the unscaled projection may be a slice of a fused one, which a view may not take
    view.target = aten.reshape.default
    view.args = (mul.args[0], *view.args[1:])
    q.graph.erase_node(mul)
    return q, scale * float(mul.args[1])


def _view_source(node: Any) -> Any:
    """``node`` without the copies that only change its layout (``contiguous``, a ``to`` its own dtype): the
    kernel takes any strides but a unit last one, so it reads the projection's output where it lies."""
    import torch

    aten = torch.ops.aten
    while True:
        target, val = getattr(node, "target", None), gemv._val(node)
        source = node.args[0] if target in (aten.contiguous.default, aten.to.dtype) else None
        if source is None or gemv._val(source) is None or val is None or gemv._val(source).dtype != val.dtype \
                or gemv._val(source).stride(-1) != 1:
            return node
        node = source


def _slot_position(cond: Any, slots: int) -> Any:
    """The position node of ``(arange(slots) == position).view(1, 1, -1, 1)``, a 0-dim integer, or None."""
    import torch

    aten = torch.ops.aten
    if getattr(cond, "target", None) is not aten.view.default or list(cond.args[1]) != [1, 1, -1, 1]:
        return None
    eq = cond.args[0]
    if getattr(eq, "target", None) is not aten.eq.Tensor:
        return None
    arange, position = eq.args
    if getattr(arange, "target", None) is not aten.arange.default or list(arange.args) != [slots] \
            or arange.kwargs.get("dtype") not in (None, torch.int64):
        return None
    val = gemv._val(position)
    return position if val is not None and val.dim() == 0 and not val.is_floating_point() else None


def _reads_only_before(cache: Any, updated: Any, sdpa: Any) -> bool:
    """Whether every reader of the cache input other than its update runs before the attention (an export's
    shape guards do): written in place there, nothing after may expect the old cache."""
    order = {n: i for i, n in enumerate(sdpa.graph.nodes)}
    return all(u is updated or order[u] < order[sdpa] for u in cache.users)


def chunk_for(keys: int) -> int:
    """How many keys one program scores."""
    return max(16, gemv.next_pow2(keys)) if keys <= WHOLE else CHUNK


def warps_for(programs: int, splits: int) -> int:
    """Warps a program of a launch of ``programs`` programs over keys split ``splits`` ways."""
    return FEW_PROGRAMS_WARPS if splits > 1 and programs <= FEW_PROGRAMS else NUM_WARPS


def _launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float,
            chunk: int | None = None, num_warps: int | None = None,
            written: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
            kv_ready: bool = False, load_all: bool = False) -> torch.Tensor:
    """The kernel over (rows × heads, chunks) programs (``chunk``, ``num_warps`` and ``load_all``, which loads the
    causal op's slots past the position as the kernel did before: the benchmark's variants).
    ``written``: (k_new, v_new, position) to write into ``k`` and ``v`` at the position first (in place: the
    caches must be contiguous in their last dimension, as the decode loop's are). ``kv_ready``: k and v (all but
    the written slot) may be loaded before the PDL wait (:func:`_triton_kernel`)."""
    import torch

    b, h, _, d = q.shape
    s = k.shape[2]
    chunk = chunk or chunk_for(s)
    splits = -(-s // chunk)
    q = q if q.stride(-1) == 1 else q.contiguous()
    if written is None:
        k = k if k.stride(-1) == 1 else k.contiguous()
        v = v if v.stride(-1) == 1 else v.contiguous()
        k_new, v_new, position = q, q, q
    else:
        k_new, v_new, position = (t if t.dim() == 0 or t.stride(-1) == 1 else t.contiguous() for t in written)
    out = torch.empty((b, h, 1, d), device=q.device, dtype=q.dtype)
    # each chunk's (weighted sum, max, sum of weights), in float32; only a launch's own programs read them
    partials = torch.empty((b * h * splits, d + 2), device=q.device, dtype=torch.float32) if splits > 1 else out
    counts = _counter(q.device, b * h) if splits > 1 else out
    has_mask = mask is not None
    if mask is not None:
        mask = mask.expand(mask.shape[0], 1, 1, s)
        m_b, m_s = (mask.stride(0) if mask.shape[0] > 1 else 0), mask.stride(3)
    else:
        mask, m_b, m_s = q, 0, 0
    pdl = gemv.pdl_available(q)
    _triton_kernel()[(b * h, splits)](
        q, k, v, mask, out, partials, counts, k_new, v_new, position, h, s, float(scale),
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        m_b, m_s, k_new.stride(0), k_new.stride(1), v_new.stride(0), v_new.stride(1),
        D=d, CHUNK=chunk, SPLITS=splits, SPLITS_P2=max(2, gemv.next_pow2(splits)),
        HAS_MASK=has_mask, WRITE=written is not None, CAUSAL=written is not None and not has_mask, PDL=pdl,
        KV_READY=kv_ready, LOAD_ALL=load_all,
        num_warps=num_warps or warps_for(b * h * splits, splits), launch_pdl=pdl)
    return out


def _counter(device: torch.device, n: int) -> torch.Tensor:
    """The (row, head) counts for ``n`` rows × heads on ``device``: zeros, which every launch leaves zero (its last
    program per (row, head) resets its count). Made on the first call, which a decode loop makes before it
    captures a CUDA graph (a Triton kernel is compiled at its first call, which a capture cannot do either)."""
    import torch

    key = (str(device), n)
    if key not in _counters:
        _counters[key] = torch.zeros(n, device=device, dtype=torch.int32)
    return _counters[key]


def _triton_kernel() -> Any:
    global _kernel
    if _kernel is not None:
        return _kernel
    import triton
    import triton.language as tl

    @triton.jit
    def decode_attention_chunks(q_ptr, k_ptr, v_ptr, m_ptr, o_ptr, p_ptr, c_ptr, kn_ptr, vn_ptr, pos_ptr, H, S,
                                scale, sq_b, sq_h, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, sm_b, sm_s, skn_b, skn_h,
                                svn_b, svn_h, D: tl.constexpr, CHUNK: tl.constexpr, SPLITS: tl.constexpr,
                                SPLITS_P2: tl.constexpr, HAS_MASK: tl.constexpr, WRITE: tl.constexpr,
                                CAUSAL: tl.constexpr, PDL: tl.constexpr, KV_READY: tl.constexpr,
                                LOAD_ALL: tl.constexpr):
        # Launched to overlap the kernel before (PDL): q and a written slot's key and value are its output, read
        # after the wait. With KV_READY the keys and values are the step's inputs: the kernels still running
        # before the wait are only PDL launches of ours (any other kernel ends before the next one starts), none
        # of which writes a step input but this op's own slot (the previous step's, from an earlier graph replay
        # or a launch sequence broken by Inductor's own kernels): this program loads its chunk first, so the
        # 2 GB of a batch-8 step's cross-attention states start streaming under the projection before.
        if PDL:
            tl.extra.cuda.gdc_launch_dependents()
            if not KV_READY:
                tl.extra.cuda.gdc_wait()
        bh = tl.program_id(0)
        split = tl.program_id(1)
        b = bh // H
        h = bh % H
        rd = tl.arange(0, D)
        rs = split * CHUNK + tl.arange(0, CHUNK)
        keep = rs < S
        k_rows = k_ptr + b * sk_b + h * sk_h + rs[:, None] * sk_s + rd[None, :]
        v_rows = v_ptr + b * sv_b + h * sv_h + rs[:, None] * sv_s + rd[None, :]
        if WRITE:  # this step's key and value take the position's slot: read from them, written by its chunk
            pos = tl.load(pos_ptr)
            fresh = (rs == pos)[:, None]
            # the causal op reads no slot past the position (a decode at position p moves p + 1 of ctx_len slots)
            if CAUSAL and not LOAD_ALL:  # noqa: SIM108  (a static branch of the kernel, as its others)
                load = keep & (rs < pos)
            else:
                load = keep & (rs != pos)
            k = tl.load(k_rows, mask=load[:, None], other=0.0)
            v = tl.load(v_rows, mask=load[:, None], other=0.0)
            if PDL and KV_READY:
                tl.extra.cuda.gdc_wait()
            k_new = tl.load(kn_ptr + b * skn_b + h * skn_h + rd)
            v_new = tl.load(vn_ptr + b * svn_b + h * svn_h + rd)
            k_new = k_new.to(k.dtype)
            v_new = v_new.to(v.dtype)
            k = tl.where(fresh, k_new[None, :], k)
            v = tl.where(fresh, v_new[None, :], v)
            # the slot's one row, by the chunk that holds it (a store of the whole tile masked to that row kept
            # the tile's pointers live: 9 KB of spills a thread at 136 slots)
            slot = tl.zeros([D], dtype=pos.dtype) + pos  # the position per element of the row (a block mask)
            mine = (slot >= split * CHUNK) & (slot < split * CHUNK + CHUNK) & (slot < S)
            tl.store(k_ptr + b * sk_b + h * sk_h + slot * sk_s + rd, k_new, mask=mine)
            tl.store(v_ptr + b * sv_b + h * sv_h + slot * sv_s + rd, v_new, mask=mine)
        else:
            k = tl.load(k_rows, mask=keep[:, None], other=0.0)
            v = tl.load(v_rows, mask=keep[:, None], other=0.0)
            if PDL and KV_READY:
                tl.extra.cuda.gdc_wait()
        q = tl.load(q_ptr + b * sq_b + h * sq_h + rd).to(tl.float32) * (scale * 1.4426950408889634)  # log2(e)
        if HAS_MASK:
            keep = keep & (tl.load(m_ptr + b * sm_b + rs * sm_s, mask=keep, other=0) != 0)
        if CAUSAL:  # the writing op without a mask: the slots up to the position
            keep = keep & (rs <= pos)
        scores = tl.where(keep, tl.sum(k.to(tl.float32) * q[None, :], 1), float("-inf"))
        top = tl.max(scores, 0)
        weights = tl.where(keep, tl.exp2(scores - top), 0.0)  # a chunk masked whole has top -inf: weights 0
        total = tl.sum(weights, 0)
        acc = tl.sum(weights[:, None] * v.to(tl.float32), 0)
        dtype = o_ptr.dtype.element_ty
        if SPLITS == 1:
            tl.store(o_ptr + bh * D + rd, (acc / total).to(dtype))
        else:
            row = p_ptr + (bh * SPLITS + split) * (D + 2)
            tl.store(row + rd, acc)
            tl.store(row + D, top)
            tl.store(row + D + 1, total)
            tl.debug_barrier()  # every thread's partials are written before the count says so
            done = tl.atomic_add(c_ptr + bh, 1, sem="acq_rel")
            if done == SPLITS - 1:  # the last chunk of this (row, head) to finish merges them all
                rp = tl.arange(0, SPLITS_P2)
                rows = p_ptr + (bh * SPLITS + rp) * (D + 2)
                inside = rp < SPLITS
                # volatile: bypass this SM's L1, which may hold the previous launch's partials
                tops = tl.load(rows + D, mask=inside, other=float("-inf"), volatile=True)
                totals = tl.load(rows + D + 1, mask=inside, other=0.0, volatile=True)
                accs = tl.load(rows[:, None] + rd[None, :], mask=inside[:, None], other=0.0, volatile=True)
                best = tl.max(tops, 0)
                factor = tl.where(tops > float("-inf"), tl.exp2(tops - best), 0.0)
                out = tl.sum(factor[:, None] * accs, 0) / tl.sum(factor * totals, 0)
                tl.store(o_ptr + bh * D + rd, out.to(dtype))
                tl.store(c_ptr + bh, 0)  # ready for the next launch

    _kernel = decode_attention_chunks
    return _kernel
