"""Timing helpers for benchmarks: repeated calls after warm-up, and latency percentiles in ms."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def time_calls(fn: Callable[[], Any], warmup: int, iters: int) -> list[float]:
    """Seconds per call of ``fn`` over ``iters`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def percentiles(seconds: list[float]) -> dict[str, float]:
    import numpy as np

    ms = np.array(seconds) * 1000
    # unrounded: rows are data (--json), and ratios of them must be exact; the CLI rounds for display
    return {f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 90, 99)}
