"""The checks room: every metric a validation computes, registered with its direction, and bounds.

A metric says whether higher is better, so a bound reads the right way round without a
hard-coded list. Validations never compute metrics by name: a family gathers :class:`Evidence`
(tensors, token sequences, texts) for each runtime and :func:`measure` calls the ``compute`` of
every metric it reports or the manifest bounds, of a kind the family gathers. So a new metric is
one file here (a ``METRICS`` entry and its function), and a bound on it works in `checks` at once.

    mad, max_abs, cosine      tensors (tensor.py)
    token_agreement           generated tokens (tokens.py)
    divergence_gap            the reference's logits where a runtime's tokens first differ (tokens.py)
    wer, cer, wer_delta       text against transcripts, through jiwer (text.py)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..core.plugins import Metric, Plugins, Task
    from ..core.tables import ValidationBase


@dataclass(frozen=True)
class TextEvidence:
    """Transcripts, this runtime's texts and the reference model's texts, with the family's normalizer."""

    references: list[str]
    hypotheses: list[str]
    reference_hypotheses: list[str] | None = None  # None where this row is the reference
    normalize: Callable[[str], str] | None = None


@dataclass(frozen=True)
class Evidence:
    """What one validation row compares with the reference, by metric kind (None: not gathered)."""

    tensor: tuple[Any, Any] | None = None  # (reference array, runtime array)
    tokens: tuple[list[list[int]], list[list[int]]] | None = None  # (reference sequences, runtime sequences)
    text: TextEvidence | None = None
    divergence: list[float] | None = None  # per input that differs: the reference's logit gap at the first difference

    def arguments(self, kind: str) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """A metric of ``kind``'s call arguments, or None when this row gathered nothing of that kind."""
        if kind == "text":
            t = self.text
            if t is None:
                return None
            kwargs: dict[str, Any] = {"reference_hyps": t.reference_hypotheses}
            if t.normalize is not None:
                kwargs["normalize"] = t.normalize
            return (t.references, t.hypotheses), kwargs
        if kind == "divergence":
            return ((self.divergence,), {}) if self.divergence is not None else None
        pair = self.tensor if kind == "tensor" else self.tokens if kind == "tokens" else None
        return (pair, {}) if pair is not None else None


def computed_metrics(task: Task, bounds: Iterable[str] = ()) -> list[str]:
    """What a validation of ``task`` measures: the metrics it reports, and any bounded one of a kind it gathers."""
    from ..core.plugins import plugins

    registry = plugins().metrics
    names = list(task.metrics)
    for name in bounds:
        if name not in names and name in registry and registry.get(name).kind in task.evidence:
            names.append(name)
    return names


def measure(names: Iterable[str], evidence: Evidence) -> dict[str, float]:
    """Each named metric's value on ``evidence``, through its registered ``compute`` (a metric whose evidence
    was not gathered, or that returns None, is left out: a bound on it then fails as not measured)."""
    from ..core.plugins import load_attr, plugins

    registry = plugins().metrics
    out: dict[str, float] = {}
    for name in names:
        metric = registry.get(name)
        call = evidence.arguments(metric.kind)
        if call is None:
            continue
        args, kwargs = call
        value = load_attr(metric.compute)(*args, **kwargs)
        if value is not None:
            out[name] = float(value)
    return out

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
    if metrics is None:
        from ..core.plugins import plugins

        metrics = {n: plugins().metrics.get(n) for n in bounds}
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
    """``{runtime: {specialization: {metric: bound}}}``: the family's defaults for the runtime's numeric class
    and the specialization's dtype, overridden by the manifest's ``checks``."""
    from ..core.plugins import plugins

    out: dict[str, Any] = {}
    for runtime in v.runtimes:
        overrides = v.checks.get(runtime, {})
        numeric = plugins().runtimes.get(runtime).numeric
        out[runtime] = {name: {**task.default_checks(numeric, dtype), **overrides}
                        for name, dtype in zip(specs, dtypes, strict=True)}
    return out
