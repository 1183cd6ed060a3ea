"""How close a decode step comes to the memory bound: the bytes it must move over the device's copy bandwidth.

A greedy decode step at small batch is memory-bound: it reads every decoder weight once, the self-attention cache
it attends over and (encoder–decoders) the cross-attention keys/values. ``state_bytes`` counts those from the
decoder graph's own inputs (``io.json``: every retained or cross state, at its shape and dtype; a retained cache
at the slots a step attends over, those up to its position, when the caller knows them) plus the weights;
``copy_bandwidth`` measures what the device sustains for a large device-to-device copy (bytes read + written,
median of several, synchronised). ``bytes / time`` over that bandwidth is the roofline fraction ``bench`` prints:
1.0 would be a step as fast as moving its bytes once can be.
"""

from __future__ import annotations

import math
import time
from typing import Any

ELEMENT_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "int64": 8, "int32": 4}
STATE_PREFIXES = ("past_", "cross_")


def state_bytes(io: dict[str, Any], slots: float | None = None) -> int:
    """Bytes of every cache and cross-attention state a step reads, from a decoder graph's ``io.json``. ``slots``:
    how many self-attention slots a step attends over on average (a step at position p needs p + 1 of the cache's
    ``ctx_len``, its third dimension); None counts every slot."""
    total = 0.0
    for name, shape in io.get("shapes", {}).items():
        if name.startswith(STATE_PREFIXES):
            size: float = math.prod(int(d) for d in shape) * ELEMENT_BYTES[str(io["inputs"][name])]
            if slots is not None and name.startswith("past_") and len(shape) == 4 and int(shape[2]) > 0:
                size = size * min(slots, int(shape[2])) / int(shape[2])
            total += size
    return int(total)


def weight_bytes(*modules: Any) -> int:
    """Bytes of the distinct parameters of ``modules`` (a tied LM head and embedding count once)."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        if module is None:
            continue
        for p in module.parameters():
            if p.data_ptr() not in seen:
                seen.add(p.data_ptr())
                total += p.numel() * p.element_size()
    return total


def copy_bandwidth(device: Any, megabytes: int = 1024, repeats: int = 7) -> float:
    """Bytes/s of a device-to-device copy of ``megabytes`` MB (read + write counted), median of ``repeats``."""
    import torch

    n = megabytes * 1024 * 1024
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch and allocation out of the samples
    samples = []
    for _ in range(repeats):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize(device)
        samples.append(2 * n / (time.perf_counter() - t0))
    del src, dst
    return sorted(samples)[len(samples) // 2]


def roofline(step_bytes_: int, seconds: float, bandwidth: float) -> dict[str, float]:
    """The row's roofline columns: bytes per step, achieved GB/s and the fraction of the copy bandwidth."""
    achieved = step_bytes_ / seconds if seconds > 0 else 0.0
    return {"step_mb": step_bytes_ / 1e6, "achieved_gb_s": achieved / 1e9, "copy_gb_s": bandwidth / 1e9,
            "roofline_frac": achieved / bandwidth if bandwidth > 0 else 0.0,
            "roofline_bound_ms": step_bytes_ / bandwidth * 1000 if bandwidth > 0 else 0.0}
