"""Planning: keys for every step a build needs, what is cached, and why the rest must run.

Planning imports neither torch nor transformers nor onnx: a fully cached build costs a
``stat`` of each input file and an ``exists`` of each action entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .explain import reason
from .graph import Graph
from .keys import compute_keys
from .statcache import StatCache
from .steps import StepNode
from .store import Store


@dataclass
class PlannedStep:
    node: StepNode
    key: str
    material: dict[str, Any]
    cached: bool
    reasons: list[str] = field(default_factory=list)

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
            "reasons": self.reasons,
        }


@dataclass
class Plan:
    graph: Graph
    steps: list[PlannedStep]  # upstream first
    targets: list[str]
    closures: dict[str, list[str]]  # target -> every step id it needs
    by_id: dict[str, PlannedStep] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {s.id: s for s in self.steps}

    def to_run(self) -> list[PlannedStep]:
        return [s for s in self.steps if not s.cached]

    def to_json(self) -> dict[str, Any]:
        return {
            "targets": self.targets,
            "steps": [s.to_json() for s in self.steps],
            "to_run": len(self.to_run()),
            "cached": sum(s.cached for s in self.steps),
        }


def make_plan(graph: Graph, targets: list[str], store: Store, stat: StatCache, salt: str = "",
              with_reasons: bool = True) -> Plan:
    closures: dict[str, list[str]] = {}
    roots: list[str] = []
    for t in targets:
        closure = graph.closure(graph.outputs[t])
        closures[t] = [n.id for n in closure]
        roots.extend(graph.outputs[t])
    order = graph.closure(roots)
    keyed = compute_keys(order, stat, salt)
    steps = [PlannedStep(k.node, k.key, k.material, store.has(k.key)) for k in keyed.values()]
    if with_reasons and any(not s.cached for s in steps):
        _add_reasons(steps, closures, store)
    return Plan(graph, steps, targets, closures)


def _add_reasons(steps: list[PlannedStep], closures: dict[str, list[str]], store: Store) -> None:
    previous: dict[str, str] = {}
    for target in closures:
        for step_id, key in store.read_history(target).items():
            previous.setdefault(step_id, key)
    for s in steps:
        if not s.cached:
            s.reasons = reason(store, previous.get(s.id), s.material, s.node.deps)
