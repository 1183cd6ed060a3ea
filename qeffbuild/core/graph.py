"""The build graph: targets expanded into step nodes, ordered, and drawn.

Planning keeps the graph as a plain adjacency map (a no-op build of a thousand targets
must not pay networkx's import); :meth:`Graph.to_networkx` gives the same graph as a
``networkx.DiGraph`` for ``qeffbuild graph --format json``. Model targets are expanded by
their family (:meth:`~qeffbuild.core.plugins.Task.expand`); command steps here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import ManifestError, Problem, UnknownNameError
from .steps import FileInput, StepNode
from .tables import StepTable
from .workspace import TargetRef, Workspace, name_matrix_rows

if TYPE_CHECKING:
    import networkx as nx


@dataclass
class Graph:
    nodes: dict[str, StepNode] = field(default_factory=dict)
    outputs: dict[str, list[str]] = field(default_factory=dict)  # target -> the steps it outputs

    def add(self, node: StepNode) -> str:
        """Add a node; a node with the same id is the same step and is kept once."""
        self.nodes.setdefault(node.id, node)
        return node.id

    def closure(self, ids: list[str]) -> list[StepNode]:
        """Every step that ``ids`` need, upstream first (an iterative post-order DFS)."""
        order: list[StepNode] = []
        done: set[str] = set()
        for root in ids:
            stack: list[tuple[str, bool]] = [(root, False)]
            while stack:
                nid, expanded = stack.pop()
                if nid in done:
                    continue
                if expanded:
                    done.add(nid)
                    order.append(self.nodes[nid])
                    continue
                stack.append((nid, True))
                for dep in sorted(self.nodes[nid].deps.values(), reverse=True):
                    if dep not in done:
                        stack.append((dep, False))
        return order

    def to_networkx(self) -> nx.DiGraph:
        import networkx as nx

        g = nx.DiGraph()
        for n in self.nodes.values():
            g.add_node(n.id, kind=n.kind, target=n.target)
            for role, dep in n.deps.items():
                g.add_edge(dep, n.id, role=role)
        for target, ids in self.outputs.items():
            g.add_node(f"target:{target}", kind="target", target=target)
            for nid in ids:
                g.add_edge(nid, f"target:{target}", role="output")
        return g


class PlanProblem(Exception):
    """A located manifest problem found while expanding a target (collected, then reported together)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.render())
        self.problem = problem


@dataclass
class Expansion:
    """What a family's ``expand`` works with: the workspace and the graph being built."""

    ws: Workspace
    graph: Graph

    def fail(self, ref: TargetRef, key: str, message: str) -> NoReturn:
        """Stop expanding ``ref`` with a problem located at its ``key``."""
        f = ref.file
        line = f.line(ref.table, ref.name, *[int(p) if p.isdigit() else p for p in key.split(".") if p])
        raise PlanProblem(Problem(f.display, line, f"{ref.table}.{ref.name}", key, message))

    @staticmethod
    def salt(ref: TargetRef) -> str:
        return ref.file.manifest.project.salt


def expand(ws: Workspace, names: list[str]) -> Graph:
    """The graph for ``names`` and everything they depend on; every problem found is raised together."""
    x = Expansion(ws, Graph())
    problems: list[Problem] = []
    pending = list(reversed(names))
    while pending:
        name = pending.pop()
        if name in x.graph.outputs:
            continue
        ref = ws.targets.get(name)
        if ref is None:
            raise UnknownNameError("target", name, list(ws.targets))
        if isinstance(ref.spec, StepTable):
            missing = [d for d in ref.spec.deps if d not in x.graph.outputs]
            if missing:
                pending.append(name)
                pending.extend(missing)
                continue
            x.graph.outputs[name] = [_command_node(x.graph, ref)]
            continue
        try:
            x.graph.outputs[name] = ws.task_of(ref).expand(x, ref)
        except PlanProblem as p:
            problems.append(p.problem)
            x.graph.outputs[name] = []
    if problems:
        raise ManifestError(name_matrix_rows(problems, ws.files))
    return x.graph


def _command_node(graph: Graph, ref: TargetRef) -> str:
    spec: StepTable = ref.spec
    deps: dict[str, str] = {}
    dep_targets: dict[str, list[str]] = {}
    for dep in spec.deps:
        dep_targets[dep] = []
        for nid in graph.outputs[dep]:
            role = f"{dep}/{graph.nodes[nid].out_subdir or nid}"
            deps[role] = nid
            dep_targets[dep].append(role)
    node = StepNode(
        id=f"command:{ref.name}",
        kind="command",
        params={"cmd": spec.cmd, "outputs": sorted(spec.outputs), "env": spec.env},
        deps=deps,
        files=tuple(FileInput(rel, ref.file.root / rel) for rel in spec.inputs),
        target=ref.name,
        root=ref.file.root,
        dep_targets=dep_targets,
        resources=dict(spec.resources),
        exclusive=spec.exclusive,
        salt=ref.file.manifest.project.salt,
    )
    return graph.add(node)


# --- drawing --------------------------------------------------------------------------------


def render(graph: Graph, fmt: str) -> str:
    if fmt == "json":
        g = graph.to_networkx()
        import networkx as nx

        data = nx.node_link_data(g, edges="edges")
        data["topological_order"] = list(nx.topological_sort(g))
        return json.dumps(data, indent=2, sort_keys=True)
    if fmt == "dot":
        return _dot(graph)
    if fmt == "mermaid":
        return _mermaid(graph)
    raise UnknownNameError("graph format", fmt, ["dot", "mermaid", "json"])


def _edges(graph: Graph) -> list[tuple[str, str, str]]:
    edges = [(dep, n.id, role) for n in graph.nodes.values() for role, dep in n.deps.items()]
    edges += [(nid, f"target:{t}", "") for t, ids in graph.outputs.items() for nid in ids]
    return sorted(edges)


def _dot(graph: Graph) -> str:
    lines = ["digraph qeffbuild {", "  rankdir=LR;", "  node [shape=box, fontname=monospace];"]
    for nid in sorted(graph.nodes):
        lines.append(f"  {json.dumps(nid)} [label={json.dumps(nid)}];")
    for t in sorted(graph.outputs):
        lines.append(f"  {json.dumps('target:' + t)} [shape=ellipse, label={json.dumps(t)}];")
    for a, b, role in _edges(graph):
        label = f" [label={json.dumps(role)}]" if role else ""
        lines.append(f"  {json.dumps(a)} -> {json.dumps(b)}{label};")
    lines.append("}")
    return "\n".join(lines)


def _mermaid(graph: Graph) -> str:
    ids: dict[str, str] = {}

    def mid(name: str) -> str:
        return ids.setdefault(name, f"n{len(ids)}")

    lines = ["flowchart LR"]
    for nid in sorted(graph.nodes):
        lines.append(f'  {mid(nid)}["{nid}"]')
    for t in sorted(graph.outputs):
        lines.append(f'  {mid("target:" + t)}(["{t}"])')
    for a, b, _role in _edges(graph):
        lines.append(f"  {mid(a)} --> {mid(b)}")
    return "\n".join(lines)


def describe(ref: TargetRef) -> dict[str, Any]:
    return {"name": ref.name, "table": ref.table, "file": ref.file.display}
