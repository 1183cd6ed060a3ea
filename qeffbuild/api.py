"""The Python API behind the CLI: load a workspace, plan, build, explain, bench, run.

    from qeffbuild.api import Project
    project = Project()                   # ./manifests (found from a subfolder too), ./out
    result = project.build(["minilm-parity"])
    print(result.ok, result.counts(), result.outputs["minilm-parity"])
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .core.explain import Reason
from .core.graph import Graph, expand
from .core.loader import load
from .core.planner import Plan, make_plan
from .core.progress import ApiReporter, Reporter
from .core.statcache import History
from .core.workspace import Workspace
from .errors import BuildError, UsageError
from .exec.materialize import LOCKS, check_out, materialize
from .store import LocalStore, Store, open_store

OK_STATUSES = ("cached", "built", "shared", "remote")


@dataclass
class BuildResult:
    targets: list[str]
    steps: dict[str, dict[str, Any]]  # step id -> {status, duration_s, message}
    outputs: dict[str, str] = field(default_factory=dict)  # target -> out folder (built targets only)
    target_status: dict[str, dict[str, Any]] = field(default_factory=dict)  # target -> {status, failed}
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.steps.items() if v["status"] not in OK_STATUSES}

    @property
    def failed_targets(self) -> list[str]:
        return [t for t, s in self.target_status.items() if s["status"] != "ok"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.steps.values():
            out[v["status"]] = out.get(v["status"], 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "targets": self.target_status, "counts": self.counts(),
                "wall_s": round(self.wall_s, 3), "outputs": self.outputs, "steps": self.steps, "notes": self.notes}


def _remove_tree(folder: Path, option: str) -> None:
    """Remove ``folder``, or say why not and what to do (a read-only file system, a folder without write
    permission): outputs and caches are rebuilt from their inputs, so a partial removal loses nothing."""
    def refused(_func: Any, path: str, exc: Any) -> None:
        error = exc[1] if isinstance(exc, tuple) else exc
        raise UsageError(f"cannot remove {path} ({getattr(error, 'strerror', None) or error}): make {folder} "
                         f"writable (or remount it read-write), or point {option} elsewhere") from None

    shutil.rmtree(folder, onerror=refused)


def find_project_root(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` holding a ``manifests/`` folder."""
    for folder in (start, *start.parents):
        if (folder / "manifests").is_dir():
            return folder
    return None


class Project:
    """A set of manifests plus where their cache and outputs live.

    ``manifests`` defaults to ``manifests/`` of the nearest folder at or above the working
    directory that has one; outputs go to ``out_dir`` (``out/`` beside it); the cache to
    ``cache_dir``, else ``$QEFFBUILD_CACHE_DIR``, else ``out_dir/.cache``.
    """

    def __init__(self, manifests: list[Path] | None = None, out_dir: Path | None = None,
                 cache_dir: Path | None = None) -> None:
        root = None if manifests else find_project_root(Path.cwd())
        base = root or Path.cwd()
        self.manifest_paths = list(manifests) if manifests else [base / "manifests"]
        self.out_dir = (out_dir or base / "out").absolute()
        env_cache = os.environ.get("QEFFBUILD_CACHE_DIR")
        self.cache_dir = (cache_dir or (Path(env_cache) if env_cache else self.out_dir / ".cache")).absolute()
        self.store: Store = open_store(self.cache_dir)
        self.state = self.store.state
        self.history = History(self.state, str(self.out_dir))

    @cached_property
    def workspace(self) -> Workspace:
        return load(self.manifest_paths)

    def resolve(self, names: list[str] | tuple[str, ...]) -> list[str]:
        """Target names (a name with ``*``, ``?`` or ``[…]`` is a shell-style pattern: every target it matches,
        in the manifests' order); none: the manifests' defaults."""
        names = list(names) or self.workspace.defaults()
        if not names:
            raise UsageError("nothing to build: the manifests declare no targets")
        out: list[str] = []
        for n in names:
            if n in self.workspace.targets:
                out.append(n)
                continue
            if any(c in n for c in "*?["):
                import fnmatch

                matched = [t for t in self.workspace.targets if fnmatch.fnmatchcase(t, n)]
                if matched:
                    out += matched
                    continue
                raise UsageError(f"pattern {n!r} matches no target; `qeffbuild ls` lists them")
            from .errors import UnknownNameError

            raise UnknownNameError("target", n, list(self.workspace.targets))
        return list(dict.fromkeys(out))

    def graph(self, names: list[str] | tuple[str, ...] = ()) -> Graph:
        return expand(self.workspace, self.resolve(names))

    def plan(self, names: list[str] | tuple[str, ...] = (), with_reasons: bool = True,
             force: tuple[str, ...] = ()) -> Plan:
        targets = self.resolve(names)
        graph = expand(self.workspace, targets)
        try:
            return make_plan(graph, targets, self.store, self.store.stat, self.history, with_reasons, force)
        finally:
            self.store.stat.flush()

    # --- building ---------------------------------------------------------------------------
    def build(self, names: list[str] | tuple[str, ...] = (), jobs: int | None = None, keep_going: bool = False,
              reporter: Reporter | None = None, force: tuple[str, ...] = (), verbose: bool = False,
              executor: str = "local", ray_address: str | None = None, remote_cache: str | None = None,
              remote_upload: bool | None = None, remote_required: bool | None = None,
              progress: Callable[[dict[str, Any]], None] | None = None) -> BuildResult:
        """Build ``names``: run what is not cached, check what is, and lay out every target's folder.

        Without a ``reporter`` (the CLI's display), progress goes to the ``qeffbuild`` logger and, as
        event dicts, to ``progress`` (see :class:`~qeffbuild.core.progress.ApiReporter`).

        ``executor`` is ``local`` (processes on this machine) or ``ray`` (tasks on the Ray cluster at
        ``ray_address``). ``remote_cache`` (else ``$QEFFBUILD_REMOTE_CACHE``) is read through before
        anything runs and receives what this build makes (unless ``remote_upload`` is False).
        Holds the store's shared lock throughout, so `cache gc` and `cache verify` never run beside it.
        """
        t0 = time.perf_counter()
        if force:
            self.resolve(force)
        if executor not in ("local", "ray"):
            raise UsageError(f"unknown executor {executor!r}: use local or ray")
        with self.store.shared():
            plan = self.plan(names, with_reasons=False, force=force)
            reporter = reporter or ApiReporter(progress)
            out_state = {t: check_out(plan, t, self.store, self.out_dir) for t in plan.targets}
            stale = [t for t, state in out_state.items() if state == "stale"]
            self._verify_needed(plan, stale)
            results: dict[str, dict[str, Any]] = {
                s.id: {"status": "cached", "duration_s": 0.0, "message": ""} for s in plan.steps if s.cached
            }
            remote = self._remote(plan, results, remote_cache, remote_upload, remote_required)
            if plan.to_run():
                self.store.ensure_writable("store the steps that must run in")  # before any step runs
                self.store.clean_stale_tmp()
                on_built = (lambda sid, key: self._upload(remote, key)) if remote is not None else None
                if remote is not None and executor == "ray":  # the nodes uploaded; out/ needs the targets' outputs
                    wanted = {sid for t in plan.targets for sid in plan.graph.outputs[t]}
                    on_built = functools.partial(self._download, remote, wanted=wanted)
                runner = self._executor(executor, plan, jobs, keep_going, reporter, verbose, on_built, ray_address,
                                        remote)
                ran = runner.run()
                moved = getattr(runner, "moved", None)
                if moved:
                    self.state.add_counters({f"remote.nodes.{k}": v for k, v in moved.items()}, "", time.time())
                    remote.notes.append("Ray nodes moved through the remote cache: "
                                        + ", ".join(f"{k} {v}" for k, v in sorted(moved.items()) if v))
                for sid, r in ran.items():
                    results[sid] = {"status": r.status, "duration_s": round(r.duration_s, 3), "message": r.message}
                    if r.where:
                        results[sid]["where"] = r.where
                    if r.dispatch_s is not None:
                        results[sid]["dispatch_s"] = r.dispatch_s
            self.history.record({s.id: (s.key, s.node.target) for s in plan.steps
                                 if results.get(s.id, {}).get("status") in OK_STATUSES})
            self.store.maintenance.record_root(str(self.out_dir), {s.key for s in plan.steps})
            outputs, status = self._materialize(plan, results, stale)
            self._count(results, remote)
            self.store.stat.flush()
        notes = list(dict.fromkeys([*self.state.notes, *self.store.notes,
                                    *(remote.notes + remote.trust_notes() if remote else [])]))
        notes += self._random_note(plan.targets)
        repaired = [t for t, state in out_state.items() if state == "repaired"]
        if repaired:
            notes.append(f"restored files changed or removed under out/ for: {', '.join(repaired)}")
        return BuildResult(plan.targets, results, outputs, status, time.perf_counter() - t0, notes)

    def _random_note(self, targets: list[str]) -> list[str]:
        random = [t for t in targets
                  if self.workspace.targets[t].table == "validations" and self.workspace.random_weights(t)]
        if not random:
            return []
        return [f"{', '.join(random)}: random weights — 'ok' means every runtime gives the reference model's "
                "answers, not that the model is any good (its WER and transcripts are noise)"]

    def _executor(self, kind: str, plan: Plan, jobs: int | None, keep_going: bool, reporter: Reporter,
                  verbose: bool, on_built: Any, ray_address: str | None, remote: Any = None) -> Any:
        if kind == "ray":
            from .exec.ray_cluster import RayExecutor

            return RayExecutor(plan, self.store, jobs or 0, keep_going, reporter, self.out_dir, verbose=verbose,
                               on_built=on_built, address=ray_address, remote=remote)
        from .exec.local import LocalExecutor

        return LocalExecutor(plan, self.store, jobs or os.cpu_count() or 1, keep_going, reporter, self.out_dir,
                             verbose=verbose, on_built=on_built)

    def _remote(self, plan: Plan, results: dict[str, dict[str, Any]], url: str | None, upload: bool | None,
                required: bool | None) -> Any:
        """Read the remote cache through for every step that would run: a hit (verified) is cached here."""
        from .store.remote import from_settings

        if not plan.to_run() or not isinstance(self.store, LocalStore):
            return None
        from .store.signing import Trust

        keys = [k for f in self.workspace.files for k in f.manifest.project.trusted_keys]
        remote = from_settings(self.store, url, upload, required, Trust.from_settings(keys))
        if remote is None:
            return None
        for step in plan.to_run():
            if not step.forced and remote.fetch(step.key) is not None:
                step.cached = True
                results[step.id] = {"status": "remote", "duration_s": 0.0, "message": ""}
        return remote

    def _download(self, remote: Any, step_id: str, key: str, *, wanted: set[str]) -> None:
        """Ray over a remote cache: a step a node built, read into this cache when out/ lays it out."""
        if step_id in wanted and not self.store.has(key):
            remote.fetch(key)  # a miss leaves the target unlaid, and the build says which step is missing

    def _upload(self, remote: Any, key: str) -> None:
        entry = self.store.lookup(key)
        if entry is not None:
            remote.push(entry)

    def _count(self, results: dict[str, dict[str, Any]], remote: Any) -> None:
        statuses = [r["status"] for r in results.values()]
        self.state.add_counters({"local.hits": statuses.count("cached"), "steps.built": statuses.count("built")},
                                "", time.time())
        if remote is not None:
            remote.record()

    def _materialize(self, plan: Plan, results: dict[str, dict[str, Any]],
                     stale: list[str]) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
        outputs: dict[str, str] = {}
        status: dict[str, dict[str, Any]] = {}
        rebuilt = {sid for sid, r in results.items() if r["status"] in ("built", "shared")}
        for t in plan.targets:
            own = plan.graph.outputs[t]
            if all(results.get(sid, {}).get("status") in OK_STATUSES for sid in own):
                laid_out = t in stale or bool(rebuilt.intersection(own))
                if laid_out:
                    materialize(plan, t, self.store, self.out_dir)
                outputs[t] = str(self.out_dir / t)
                status[t] = {"status": "ok", "output": outputs[t], "ran": bool(rebuilt.intersection(own)),
                             "materialized": laid_out}
                if self.workspace.random_weights(t):  # ok means "the runtimes agree", not "the model works"
                    status[t]["random_weights"] = True
            else:
                failed = [sid for sid in plan.closure(t)
                          if results.get(sid, {}).get("status") not in (*OK_STATUSES, "skipped")]
                status[t] = {"status": "failed", "failed_steps": failed}
        return outputs, status

    def _verify_needed(self, plan: Plan, stale: list[str]) -> None:
        """Cached steps whose outputs this build reads must be intact: each blob is checked against its
        digest (a stat when unchanged). A broken one runs again, and so does every cached step of the
        plan that consumed a blob found corrupt (it was built from what may have been wrong bytes)."""
        needed = {d for s in plan.to_run() for d in s.node.deps.values()}
        needed |= {sid for t in stale for sid in plan.graph.outputs[t]}
        checked: set[str] = set()
        tainted_by: set[str] = set()
        while True:
            while needed - checked:  # re-running a step needs its inputs: they join `needed` on the way
                sid = min(needed - checked)
                checked.add(sid)
                step = plan.by_id[sid]
                entry = self.store.lookup(step.key) if step.cached else None
                # read in full: these blobs are handed out (a step's inputs, a target's files under out/), and a
                # failing disk changes bytes without changing size, mtime or inode
                if step.cached and (entry is None or not self.store.verified(entry, full=True)):
                    self._rerun(step, needed)
            if self.store.corrupt <= tainted_by:
                return
            tainted_by = set(self.store.corrupt)
            for step in plan.steps:
                entry = self.store.lookup(step.key) if step.cached else None
                if entry is not None and tainted_by.intersection(entry.consumed):
                    self.store.drop(step.key)
                    self._rerun(step, needed)

    @staticmethod
    def _rerun(step: Any, needed: set[str]) -> None:
        step.cached = False
        step.reasons = [Reason.of("outputs_missing")]
        needed |= set(step.node.deps.values())

    # --- checking the cache against a rebuild (Nix's --check) ---------------------------------------
    def verify_rebuild(self, names: list[str] | tuple[str, ...] = (), sample: float = 1.0,
                       seed: int | None = None) -> dict[str, Any]:
        """Run a sample of the cached steps of ``names`` (default: what `build` builds) again in scratch folders and
        compare their outputs with the cached ones, file by file.

        A step whose rebuilt outputs differ runs once more: when the two rebuilds agree with each other the
        cached entry is wrong (a lying or corrupted entry); when they differ the step is not reproducible and is
        named so. Either way the entry is dropped (the next build runs the step) and both digests are reported.
        """
        import random
        import threading

        from .exec.runner import Job, StepRunner

        if not 0 < sample <= 1:
            raise UsageError(f"--sample {sample}: give the share of cached steps to rebuild, 0 < F <= 1")
        plan = self.plan(names, with_reasons=False)
        cached = [s for s in plan.steps if s.cached]
        rng = random.Random(seed)
        chosen = {s.id for s in rng.sample(cached, max(1, round(len(cached) * sample)))} if cached else set()
        runner = StepRunner(self.store, ApiReporter(), threading.Event())
        rows: list[dict[str, Any]] = []
        dropped: set[str] = set()
        with self.store.shared():
            for step in plan.steps:  # dependency order: a step's inputs are checked before it reruns
                if step.id not in chosen:
                    continue
                entry = self.store.lookup(step.key)
                gone = [d for d in step.node.deps.values() if d in dropped]
                if gone:
                    rows.append({"step": step.id, "status": "skipped", "message": f"its input {gone[0]} was "
                                 "dropped above; the next build runs both"})
                    continue
                if entry is None:
                    continue
                rows.append(self._recheck(runner, Job.of(plan, step), entry.outputs))
                if rows[-1]["status"] == "mismatch":
                    dropped.add(step.id)
        mismatched = [r for r in rows if r["status"] == "mismatch"]
        return {"checked": len(rows), "cached_steps": len(cached), "sample": sample, "seed": seed,
                "matched": sum(r["status"] == "match" for r in rows), "mismatched": len(mismatched),
                "nondeterministic": [r["step"] for r in mismatched if r["nondeterministic"]],
                "wrong_entries": [r["step"] for r in mismatched if not r["nondeterministic"]],
                "failed": [r["step"] for r in rows if r["status"] == "failed"],
                "skipped": [r["step"] for r in rows if r["status"] == "skipped"], "steps": rows}

    def _recheck(self, runner: Any, job: Any, cached: dict[str, str]) -> dict[str, Any]:
        result, first = runner.rerun(job)
        if result.status != "built":
            return {"step": job.id, "status": "failed", "message": result.message}
        if first == cached:
            return {"step": job.id, "status": "match"}
        _again, second = runner.rerun(job)
        files = sorted(set(first) | set(cached))
        self.store.drop(job.key)  # the next build runs it; a wrong entry is never served again
        return {"step": job.id, "status": "mismatch", "nondeterministic": second != first, "entry_dropped": True,
                "files": {rel: {"cached": cached.get(rel), "rebuilt": first.get(rel),
                                **({"rebuilt_again": second.get(rel)} if second != first else {})}
                          for rel in files if first.get(rel) != cached.get(rel) or second.get(rel) != first.get(rel)}}

    # --- explaining ---------------------------------------------------------------------------
    def explain(self, name: str) -> list[dict[str, Any]]:
        """For each step of ``name``: unchanged, or why it differs from that step's last build."""
        from .core.explain import reasons

        plan = self.plan([name], with_reasons=False)
        previous = self.history.read()
        rows: list[dict[str, Any]] = []
        for s in plan.steps:
            prev = previous.get(s.id)
            if prev == s.key:
                rows.append({"step": s.id, "status": "unchanged", "cached": s.cached, "reasons": []})
                continue
            entry = self.store.lookup(prev) if prev else None
            why = reasons(entry.material if entry else None, prev is not None, s.material, s.node.deps)
            rows.append({"step": s.id, "status": "changed", "cached": s.cached, "reasons": [r.to_json() for r in why]})
        return rows

    # --- using built artifacts ------------------------------------------------------------------
    def artifact_finder(self, plan: Plan, node_id: str) -> Artifacts:
        """``find(role)``: the folder of ``node_id``'s upstream step with that role (built); ``find.derived``
        makes (once) and caches a folder derived from one."""
        return Artifacts(self.store, plan, node_id)

    def _task_target(self, target: str, table: str, verb: str) -> Any:
        ref = self.workspace.targets.get(target)
        if ref is None:
            from .errors import UnknownNameError

            raise UnknownNameError("target", target, list(self.workspace.targets))
        if ref.table != table:
            raise UsageError(f"`{verb}` takes a {table[:-1]} target; {target!r} is a {ref.kind}")
        return ref

    def bench(self, target: str, iters: int = 20, warmup: int = 3) -> list[dict[str, Any]]:
        """Latency and throughput of every runtime of validation ``target`` (built first)."""
        from .core.plugins import load_attr
        from .reports.timing import machine_load

        ref = self._task_target(target, "validations", "bench")
        task = self.workspace.task_of(ref)
        if task.bench is None:
            raise UsageError(f"task {task.name!r} has no benchmark")
        result = self.build([target])
        if not result.ok:
            raise BuildError(f"{target} did not build; run `qeffbuild build {target}` to see why")
        plan = self.plan([target], with_reasons=False)
        node = plan.graph.nodes[plan.graph.outputs[target][0]]
        rows: list[dict[str, Any]] = load_attr(task.bench)(self.artifact_finder(plan, node.id), node, iters, warmup)
        load = machine_load()  # after the run: the load it ran under (a 1-minute average)
        random = bool(self.workspace.random_weights(target))
        return [{**r, **load, "random_weights": random} for r in rows]

    def built_specialization(self, target: str, task: str | None = None) -> tuple[Path, dict[str, Any]]:
        """Build ``target`` (a specialization, or a validation's first) and return its folder and fields."""
        ref = self.workspace.targets.get(target)
        if ref is not None and ref.table == "validations":
            ref = self.workspace.targets[ref.spec.specializations[0]]
        elif ref is None:
            from .errors import UnknownNameError

            raise UnknownNameError("target", target, list(self.workspace.targets))
        if ref.table != "specializations":
            raise UsageError(f"{target!r} is a {ref.kind}, not a specialization or validation target")
        family = self.workspace.task_of(ref).name
        if task is not None and family != task:
            raise UsageError(f"{target!r} is for a {family!r} model, not {task!r}")
        result = self.build([ref.name])
        if not result.ok:
            raise BuildError(f"{ref.name} did not build; run `qeffbuild build {ref.name}` to see why")
        self._check_out_in_full(ref.name)
        return Path(result.outputs[ref.name]), {"name": ref.name, **ref.spec.model_dump()}

    def _check_out_in_full(self, target: str) -> None:
        """Every file of out/<target> re-hashed before it is used (run, Transcriber): a changed one is restored
        from its (verified) blob; one that cannot be is an error, never a wrong answer."""
        plan = self.plan([target], with_reasons=False)
        with self.store.shared():
            state = check_out(plan, target, self.store, self.out_dir, full=True)
        if state == "stale":  # a blob was rotten too: quarantined, so this build runs its step again
            result = self.build([target])
            if not result.ok:
                raise BuildError(f"{target} did not build; run `qeffbuild build {target}` to see why")

    def task_of_target(self, target: str) -> Any:
        """The family of a model target (a specialization's, a validation's); a usage error for a step."""
        ref = self.workspace.targets.get(target)
        if ref is None:
            from .errors import UnknownNameError

            raise UnknownNameError("target", target, list(self.workspace.targets))
        if ref.table == "steps":
            raise UsageError(f"{target!r} is a command step; `run` takes a specialization or a validation")
        return self.workspace.task_of(ref)

    def run(self, target: str, runtime: str, inputs: list[str], options: dict[str, Any] | None = None) -> list[Any]:
        """Use a built specialization: transcribe audio, embed sentences … (the family decides)."""
        from .core.plugins import load_attr

        ref = self.workspace.targets.get(target)
        task = self.workspace.task_of(ref) if ref is not None and ref.table != "steps" else None
        if task is not None and task.run is None:
            raise UsageError(f"task {task.name!r} has no `run`")
        self.workspace.plugins.runtimes.get(runtime)
        folder, spec = self.built_specialization(target)
        assert task is not None and task.run is not None
        out: list[Any] = load_attr(task.run)(folder, spec, runtime, inputs, options or {})
        return out

    def report(self, target: str, output: Path | None = None) -> Path:
        """Re-render validation ``target``'s report.html from its built report.json, with the build's
        provenance (every step's key and duration) added; returns where it was written."""
        import contextlib
        import json

        from .core.plugins import load_attr
        from .templating import resolve_template

        ref = self._task_target(target, "validations", "report")
        task = self.workspace.task_of(ref)
        folder = self.out_dir / target
        if task.report_html is None:
            raise UsageError(f"task {task.name!r} writes no HTML report")
        try:
            report = json.loads((folder / "report.json").read_text())
        except (OSError, ValueError):
            raise UsageError(f"{target} has no report in {folder} yet; run `qeffbuild build {target}`") from None
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # a failed validation has no record
            record = json.loads((folder / "provenance.json").read_text())
            report.setdefault("provenance", {})["build"] = {
                "materialized_at": record["materialized_at"], "qeffbuild": record["qeffbuild"],
                "steps": [{k: s[k] for k in ("id", "kind", "key", "duration_s")} for s in record["steps"]]}
        template = resolve_template("report/report.html.j2", ref.file.root).read_text()
        html: str = load_attr(task.report_html)(report, template, f"{target}: {task.name} validation")
        dest = output or folder / "report.html"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(html)
        return dest

    # --- maintenance -----------------------------------------------------------------------------
    def clean(self, names: list[str] | tuple[str, ...] = (), cache: bool = False) -> list[str]:
        """Remove the outputs of ``names`` (default: every target) from out/; ``cache`` removes the cache too."""
        removed: list[str] = []
        targets = self.resolve(names) if names else list(self.workspace.targets)
        folders = [self.out_dir / t for t in targets if (self.out_dir / t).exists()]
        if not names and (self.out_dir / LOCKS).is_dir():
            folders.append(self.out_dir / LOCKS)  # every target's lock: nothing else needs them
        for folder in folders:
            _remove_tree(folder, "--out-dir (QEFFBUILD_OUT_DIR)")
            removed.append(str(folder))
        if cache and self.cache_dir.exists():
            self.state.close()
            _remove_tree(self.cache_dir, "--cache-dir (QEFFBUILD_CACHE_DIR)")
            removed.append(str(self.cache_dir))
        return removed


class Artifacts:
    """What a family's bench reads: its validation's upstream folders (``artifacts(role)``), and folders derived
    from them that a baseline needs (a CTranslate2 conversion), made once and kept in the cache (``derived``)."""

    def __init__(self, store: Store, plan: Plan, node_id: str) -> None:
        self.store, self.plan = store, plan
        self.node = plan.by_id[node_id].node

    def __call__(self, role: str) -> Path:
        entry = self.store.lookup(self._key(role))
        if entry is None:
            raise BuildError(f"{self.node.deps[role]} is not built")
        return self.store.tree(entry)

    def derived(self, role: str, what: str, material: dict[str, Any], make: Callable[[Path, Path], None]) -> Path:
        """The folder ``make(source, folder)`` writes from upstream ``role``'s folder, cached under a key of that
        folder's key, ``what`` and ``material`` (the tool's version, its settings): a later bench finds it built.
        Like a step's outputs it is content-addressed, verified when read, and collected by `cache gc`."""
        from .core.hashing import digest_json

        keyed = {"derived": what, "from": self._key(role), "material": material}
        key = digest_json(keyed)  # an entry's material must hash to its key (the store checks when it reads)
        with self.store.lock(key):
            entry = self.store.lookup(key)
            if entry is None:
                source, scratch = self(role), self.store.scratch(key)
                try:
                    started = time.perf_counter()
                    make(source, scratch)
                    entry = self.store.commit(key, f"derived:{what}:{self.node.deps[role]}", scratch, keyed,
                                              time.perf_counter() - started, "")
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
        return self.store.tree(entry)

    def _key(self, role: str) -> str:
        return self.plan.by_id[self.node.deps[role]].key
