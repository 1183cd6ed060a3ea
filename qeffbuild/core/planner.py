"""Planning: keys for every step a build needs, what is cached, and why the rest must run.

Planning imports neither torch nor transformers nor onnx: a fully cached build costs a
``stat`` of each input file and a lookup of each action entry. It is linear in the number
of steps: a target's closure is computed only when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .explain import Reason, reasons
from .graph import Graph
from .hashing import digest_json
from .keys import compute_keys
from .statcache import History, StatCache
from .steps import StepNode


class Store(Protocol):
    """What planning reads of a store (the store room implements it; the engine never imports it)."""

    def has(self, key: str) -> bool: ...

    def lookup(self, key: str) -> Any: ...


@dataclass
class PlannedStep:
    node: StepNode
    key: str
    material: dict[str, Any]
    cached: bool
    reasons: list[Reason] = field(default_factory=list)
    forced: bool = False  # run even if an entry exists (build --force)

    @property
    def id(self) -> str:
        return self.node.id

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.node.kind,
            "target": self.node.target,
            "key": self.key,
            "action": "cached" if self.cached else "run",
            "reasons": [r.to_json() for r in self.reasons],
        }


@dataclass
class Plan:
    graph: Graph
    steps: list[PlannedStep]  # upstream first
    targets: list[str]
    by_id: dict[str, PlannedStep] = field(init=False)
    _closures: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.by_id = {s.id: s for s in self.steps}

    def closure(self, target: str) -> list[str]:
        """Every step id ``target`` needs, upstream first."""
        if target not in self._closures:
            self._closures[target] = [n.id for n in self.graph.closure(self.graph.outputs[target])]
        return self._closures[target]

    def stamp(self, target: str) -> str:
        """What ``out/<target>`` was made from: its output steps' keys (they cover everything upstream)."""
        return digest_json(sorted((sid, self.by_id[sid].key) for sid in self.graph.outputs[target]))

    def to_run(self) -> list[PlannedStep]:
        return [s for s in self.steps if not s.cached]

    def to_json(self) -> dict[str, Any]:
        return {
            "targets": self.targets,
            "steps": [s.to_json() for s in self.steps],
            "to_run": len(self.to_run()),
            "cached": sum(s.cached for s in self.steps),
        }


def make_plan(graph: Graph, targets: list[str], store: Store, stat: StatCache, history: History | None = None,
              with_reasons: bool = True, force: tuple[str, ...] = ()) -> Plan:
    """Key every step ``targets`` need; ``force`` names targets whose own output steps run regardless."""
    roots = [sid for t in targets for sid in graph.outputs[t]]
    keyed = compute_keys(graph.closure(roots), stat)
    forced = {sid for t in force for sid in graph.outputs[t]}
    steps = [PlannedStep(k.node, k.key, k.material, k.node.id not in forced and store.has(k.key))
             for k in keyed.values()]
    for s in steps:
        if s.id in forced:
            s.forced = True
            s.reasons = [Reason.of("forced")]
    if with_reasons and any(not s.cached and not s.reasons for s in steps):
        add_reasons(steps, store, history)
    return Plan(graph, steps, targets)


def add_reasons(steps: list[PlannedStep], store: Store, history: History | None) -> None:
    previous = history.read() if history is not None else {}
    for s in steps:
        if s.cached or s.reasons:
            continue
        prev = previous.get(s.id)
        entry = store.lookup(prev) if prev else None
        s.reasons = reasons(entry.material if entry else None, prev is not None, s.material, s.node.deps)
