"""The checks room: every metric a validation computes, registered with its direction, and bounds.

A metric says whether higher is better, so a bound reads the right way round without a
hard-coded list; the manifest may bound only metrics its task computes (checked at load).

    mad, max_abs, cosine      tensors (tensor.py)
    token_agreement           generated tokens (tokens.py)
    wer, cer                  text against transcripts, through jiwer (text.py)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..core.plugins import Metric, Plugins, Task
    from ..core.tables import ValidationBase

def builtin_metrics() -> list[Metric]:
    """Every ``METRICS`` of the modules in this room (adding a metric file needs no edit here)."""
    from ..core.plugins import submodules

    return [m for module in submodules(__name__) for m in getattr(module, "METRICS", ())]


def register(plugins: Plugins) -> None:
    for m in builtin_metrics():
        plugins.metrics.add(m.name, m)


def check(values: dict[str, float], bounds: dict[str, float], metrics: dict[str, Metric] | None = None) -> list[str]:
    """Every bound that ``values`` break, as readable lines (empty when all hold).

    A bound on a metric that has no value is a failure too: a check that did not run must
    not pass. NaN never passes.
    """
    metrics = metrics or {m.name: m for m in builtin_metrics()}
    out = []
    for name, bound in bounds.items():
        metric = metrics[name]
        rel = "≥" if metric.higher_is_better else "≤"
        if name not in values:
            out.append(f"{name} was not measured, expected {rel} {bound:g}")
            continue
        v = values[name]
        ok = not math.isnan(v) and (v >= bound if metric.higher_is_better else v <= bound)
        if not ok:
            out.append(f"{name} = {v:.3g}, expected {rel} {bound:g}")
    return out


def resolve_checks(task: Task, v: ValidationBase, dtypes: list[str], specs: list[str]) -> dict[str, Any]:
    """``{runtime: {specialization: {metric: bound}}}``: the runtime's own defaults for this task if it
    has them (an accelerator's tolerances), else the task's; overridden by the manifest's ``checks``."""
    from ..core.plugins import plugins

    out: dict[str, Any] = {}
    for runtime in v.runtimes:
        overrides = v.checks.get(runtime, {})
        own = plugins().runtimes.get(runtime).default_checks.get(task.name) if runtime in plugins().runtimes else None
        out[runtime] = {name: {**(dict(own) if own is not None else task.default_checks(runtime, dtype)), **overrides}
                        for name, dtype in zip(specs, dtypes, strict=True)}
    return out
