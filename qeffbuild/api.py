"""The Python API behind the CLI: load a workspace, plan, build, explain."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import UsageError
from .explain import diff_material
from .graph import Graph, expand
from .loader import Workspace, load
from .materialize import is_current, materialize, stamp_of
from .planner import Plan, make_plan
from .progress import Reporter
from .statcache import StatCache
from .store import Store

OK_STATUSES = ("cached", "built", "shared")


@dataclass
class BuildResult:
    targets: list[str]
    steps: dict[str, dict[str, Any]]  # step id -> {status, duration_s, message}
    outputs: dict[str, str] = field(default_factory=dict)  # target -> out folder
    wall_s: float = 0.0

    @property
    def failures(self) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.steps.items() if v["status"] not in OK_STATUSES}

    @property
    def ok(self) -> bool:
        return not self.failures

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.steps.values():
            out[v["status"]] = out.get(v["status"], 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "targets": self.targets, "counts": self.counts(), "wall_s": round(self.wall_s, 3),
                "outputs": self.outputs, "steps": self.steps}


class Project:
    """A set of manifests plus where their cache and outputs live.

    ``manifests`` defaults to ``./manifests``; outputs go to ``out_dir`` (``./out``); the
    cache to ``cache_dir``, else ``$QEFFBUILD_CACHE_DIR``, else ``out_dir/.cache``.
    """

    def __init__(self, manifests: list[Path] | None = None, out_dir: Path | None = None,
                 cache_dir: Path | None = None) -> None:
        self.manifest_paths = manifests or [Path("manifests")]
        self.out_dir = (out_dir or Path("out")).absolute()
        env_cache = os.environ.get("QEFFBUILD_CACHE_DIR")
        self.cache_dir = (cache_dir or (Path(env_cache) if env_cache else self.out_dir / ".cache")).absolute()
        self.store = Store(self.cache_dir)

    @cached_property
    def workspace(self) -> Workspace:
        return load(self.manifest_paths)

    def resolve(self, names: list[str] | tuple[str, ...]) -> list[str]:
        names = list(names) or self.workspace.defaults()
        if not names:
            raise UsageError("nothing to build: the manifests declare no targets")
        return list(dict.fromkeys(names))

    def graph(self, names: list[str] | tuple[str, ...] = ()) -> Graph:
        return expand(self.workspace, self.resolve(names))

    def plan(self, names: list[str] | tuple[str, ...] = (), with_reasons: bool = True) -> Plan:
        targets = self.resolve(names)
        graph = expand(self.workspace, targets)
        stat = StatCache(self.cache_dir / "statcache.sqlite")
        try:
            return make_plan(graph, targets, self.store, stat, with_reasons=with_reasons)
        finally:
            stat.close()

    def build(self, names: list[str] | tuple[str, ...] = (), jobs: int | None = None, keep_going: bool = False,
              reporter: Reporter | None = None) -> BuildResult:
        t0 = time.perf_counter()
        plan = self.plan(names, with_reasons=False)
        reporter = reporter or Reporter(quiet=True)
        stale = [t for t in plan.targets if not is_current(self.out_dir / t, stamp_of(plan, t))]
        self._recheck_cached_inputs(plan, stale)
        results: dict[str, dict[str, Any]] = {
            s.id: {"status": "cached", "duration_s": 0.0, "message": ""} for s in plan.steps if s.cached
        }
        if plan.to_run():
            from .executor import Executor

            self.store.clean_stale_tmp()
            ran = Executor(plan, self.store, jobs or os.cpu_count() or 1, keep_going, reporter, self.out_dir).run()
            for sid, r in ran.items():
                results[sid] = {"status": r.status, "duration_s": round(r.duration_s, 3), "message": r.message}
        outputs: dict[str, str] = {}
        by_id = plan.by_id
        rebuilt = {sid for sid, r in results.items() if r["status"] != "cached"}
        stale += [t for t in plan.targets if t not in stale and rebuilt.intersection(plan.closures[t])]
        for t in stale:
            closure = plan.closures[t]
            good = [sid for sid in closure if results[sid]["status"] in OK_STATUSES]
            old = self.store.read_history(t)
            self.store.write_history(t, {**old, **{sid: by_id[sid].key for sid in good}})
            if len(good) == len(closure):
                outputs[t] = str(materialize(plan, t, self.store, self.out_dir, force=True))
        for t in plan.targets:
            if t not in stale:
                outputs[t] = str(self.out_dir / t)
        return BuildResult(plan.targets, results, outputs, time.perf_counter() - t0)

    def _recheck_cached_inputs(self, plan: Plan, stale: list[str]) -> None:
        """Cached steps whose blobs are gone (deleted, quarantined) must run again."""
        by_id = plan.by_id
        needed = {d for s in plan.to_run() for d in s.node.deps.values()}
        needed |= {sid for t in stale for sid in plan.graph.outputs[t]}
        while True:
            broken = [sid for sid in needed if by_id[sid].cached and not self._complete(by_id[sid].key)]
            if not broken:
                return
            for sid in broken:
                self.store.drop(by_id[sid].key)
                by_id[sid].cached = False
                by_id[sid].reasons = ["its cached outputs were missing or corrupt"]
                needed |= set(by_id[sid].node.deps.values())

    def _complete(self, key: str) -> bool:
        entry = self.store.lookup(key)
        return entry is not None and self.store.complete(entry)

    def explain(self, name: str) -> list[dict[str, Any]]:
        """For each step of ``name``: unchanged, never built, or the components that changed."""
        plan = self.plan([name], with_reasons=False)
        history = self.store.read_history(name)
        rows: list[dict[str, Any]] = []
        for s in plan.steps:
            prev = history.get(s.id)
            if prev == s.key:
                rows.append({"step": s.id, "status": "unchanged", "changes": []})
                continue
            entry = self.store.lookup(prev) if prev else None
            if prev is None:
                changes = ["never built"]
            elif entry is None:
                changes = ["the last build's cache entry is gone (cache gc or verify); cannot compare"]
            else:
                changes = diff_material(entry.material, s.material, s.node.deps)
            rows.append({"step": s.id, "status": "changed", "cached": s.cached, "changes": changes})
        return rows
