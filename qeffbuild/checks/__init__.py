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

from ..core.plugins import Metric

if TYPE_CHECKING:
    from ..core.plugins import Plugins, Task
    from ..core.tables import ValidationBase

METRICS = (
    Metric("mad", "tensor", False, "mean absolute difference from the reference",
           "qeffbuild.checks.tensor:mad"),
    Metric("max_abs", "tensor", False, "largest absolute difference from the reference",
           "qeffbuild.checks.tensor:max_abs"),
    Metric("cosine", "tensor", True, "lowest cosine similarity of a row with the reference's",
           "qeffbuild.checks.tensor:min_cosine", lowest=-1.0, highest=1.0),
    Metric("token_agreement", "tokens", True, "fraction of generated tokens equal to the reference's",
           "qeffbuild.checks.tokens:token_agreement", highest=1.0),
    Metric("wer", "text", False, "word error rate against the transcripts", "qeffbuild.checks.text:wer"),
    Metric("cer", "text", False, "character error rate against the transcripts", "qeffbuild.checks.text:cer"),
)
BY_NAME = {m.name: m for m in METRICS}


def register(plugins: Plugins) -> None:
    for m in METRICS:
        plugins.metrics.add(m.name, m)


def check(values: dict[str, float], bounds: dict[str, float], metrics: dict[str, Metric] | None = None) -> list[str]:
    """Every bound that ``values`` break, as readable lines (empty when all hold).

    A bound on a metric that has no value is a failure too: a check that did not run must
    not pass. NaN never passes.
    """
    metrics = metrics or BY_NAME
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
    """``{runtime: {specialization: {metric: bound}}}``: the task's defaults, overridden by ``checks``."""
    out: dict[str, Any] = {}
    for runtime in v.runtimes:
        overrides = v.checks.get(runtime, {})
        out[runtime] = {name: {**task.default_checks(runtime, dtype), **overrides}
                        for name, dtype in zip(specs, dtypes, strict=True)}
    return out
