"""Timing helpers for benchmarks: repeated calls after warm-up, and latency percentiles in ms."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
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


UNSTEADY = 0.10  # a row whose samples vary more than this (relative spread) says so

ROUNDS = 5  # interleave(): each row's samples are taken in this many blocks, in turn with every other row's


def blocks(iters: int) -> list[int]:
    """How ``iters`` samples split into the blocks of :func:`interleave` (at most ROUNDS, none empty)."""
    rounds = max(1, min(ROUNDS, iters))
    return [iters // rounds + (1 if i < iters % rounds else 0) for i in range(rounds)]


def interleave(probes: Sequence[Callable[[int], object]], iters: int) -> None:
    """Every probe takes ``iters`` samples, a block at a time, round-robin: ``probe(k)`` takes ``k`` more.

    Rows compared side by side are measured side by side: a slow minute of a shared machine (a noisy neighbour,
    a throttled core) then lands on every row alike instead of on whichever row ran during it, and a ratio of two
    rows means what it says. Measured one row after another on this 2-core VM, the same row moved 30–60 % between
    runs and the issue's ratios flipped. Each probe starts its block with an untimed call of its own (caches and
    thread pools taken back from the previous probe)."""
    for k in blocks(iters):
        for probe in probes:
            probe(k)


class StepSamples:
    """Seconds per decode step from pairs of timed runs: ``(T(steps) − T(1)) / (steps − 1)``, and every T(steps).

    A pair where T(steps) ≤ T(1) (other work on the machine outweighed steps − 1 steps) gives no figure, not a
    zero or a negative time, and is measured once more."""

    def __init__(self, timed: Callable[[int], float], steps: int) -> None:
        self.timed, self.steps = timed, steps
        self.per: list[float] = []
        self.full: list[float] = []

    def take(self, tries: int = 2) -> bool:
        for _ in range(tries):
            one = self.timed(1)
            n = self.timed(self.steps)
            self.full.append(n)
            if n > one:
                self.per.append((n - one) / (self.steps - 1))
                return True
        return False


def per_step_seconds(timed: Callable[[int], float], steps: int, iters: int) -> tuple[list[float], list[float]]:
    """Seconds per decode step, ``(T(steps) − T(1)) / (steps − 1)`` per pair of runs (``timed(n)`` times a run of
    ``n`` steps), and the T(steps) samples.

    A pair where T(steps) ≤ T(1) (other work on the machine outweighed steps − 1 steps) gives no figure, not a
    zero or a negative time, and is measured again: up to ``iters`` more pairs in all, so a loaded machine costs
    time, not the row. None left: the caller's row says why (:data:`LOADED`)."""
    samples = StepSamples(timed, steps)
    for _ in range(2 * iters):
        samples.take(tries=1)
        if len(samples.per) == iters:
            break
    return samples.per, samples.full


LOADED = ("every sample took as long for 1 token as for {steps}: other work on the machine drowned the decode "
          "steps; rerun with more -n on an idle machine")


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50/p90/p99 and the best sample (``min_ms``) in ms, and ``spread``: how much the samples vary, relative to
    the median.

    The spread is the median absolute deviation scaled to a standard deviation (×1.4826) over the median:
    a robust coefficient of variation, which one slow outlier does not inflate.
    """
    import numpy as np

    ms = np.array(seconds) * 1000
    median = float(np.median(ms))
    spread = 1.4826 * float(np.median(np.abs(ms - median))) / median if median > 0 else 0.0
    # unrounded: rows are data (--json), and ratios of them must be exact; the CLI rounds for display
    return {**{f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 90, 99)}, "min_ms": float(ms.min()),
            "spread": spread}


def machine_load() -> dict[str, float]:
    """The 1-minute load average and the cores: a benchmark on a busy machine measures the other work too."""
    import os

    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return {"load_avg_1m": load, "cores": float(os.cpu_count() or 1)}


def _best(row: dict[str, object]) -> str:
    """The best sample, where the row has it: with a host whose slow moments come and go (eager decoding is
    host-bound), the p50 of a few samples lands in either mode, and the best one says which mode is the call's."""
    best = row.get("min_ms")
    return f"best {best:.3g} ms, " if isinstance(best, float) else ""


def warnings_for(rows: list[dict[str, object]], load: dict[str, float]) -> list[str]:
    """What a reader must know before trusting the rows: unsteady samples, a loaded machine."""
    out = []
    if load["load_avg_1m"] > load["cores"]:
        out.append(f"the load average ({load['load_avg_1m']:.1f}) exceeds the {load['cores']:.0f} cores: other work "
                   "shares the machine, so every figure is slower and noisier than on an idle one")
    apart = next((r["measured_apart"] for r in rows if r.get("measured_apart")), None)
    if apart:  # the rows of different specializations were not measured side by side
        out.append(str(apart))
    for r in rows:
        spread = r.get("spread")
        if isinstance(spread, float) and spread > UNSTEADY:
            out.append(f"{r['runtime']} [{r.get('specialization') or '-'}, {r.get('shape', '')}]: samples vary by "
                       f"{spread:.0%} ({_best(r)}p50 {r['p50_ms']:.3g} ms, p99 {r['p99_ms']:.3g} ms); rerun with "
                       "more -n or on an idle machine")
    return out
