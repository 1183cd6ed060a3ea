"""The local executor: runs a plan's uncached steps in parallel, each in its own process group.

Threads schedule; :class:`~qeffbuild.exec.runner.StepRunner` runs each step in its own process
group. Per-key locks make concurrent builds run each step once. Stopping (Ctrl-C, SIGTERM, a
failure without ``-k``) kills every running group, grandchildren included, removes scratch and
releases every lock; a second signal kills the groups and exits 130 at once. Other executors
(``ray_cluster.py``) reuse the scheduling and replace :meth:`LocalExecutor.execute`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from ..core.planner import Plan, PlannedStep
from ..core.progress import Reporter
from ..errors import Interrupted
from ..store import Store
from . import StepResult
from .materialize import STAMP
from .runner import Job, StepRunner, kill_all_groups
from .zygote import Zygote
from .zygote import enabled as zygote_enabled

__all__ = ["LocalExecutor", "kill_all_groups"]

# A step whose inputs weigh at least 1/HEAVY_SHARE of the machine's memory runs with no other step beside it. A
# step holds its inputs in memory two or three times over (an ONNX pass: the protobuf, its arrays, the copy it
# writes): two passes over a 1.2 B-parameter model in float32 (5 GB each) side by side ran a 24 GB machine out
# of memory; one at a time, each fits.
HEAVY_SHARE = 8


class LocalExecutor:
    """Runs the plan's uncached steps, ``jobs`` at a time, dependencies first.

    ``on_built(step_id, key)`` is called in the scheduling thread after each step is stored (the
    remote cache uploads it there).
    """

    runs_steps_here = True  # Python steps fork from this machine's zygote (the Ray executor's run on nodes)

    def __init__(self, plan: Plan, store: Store, jobs: int, keep_going: bool, reporter: Reporter,
                 out_root: Path, verbose: bool = False, on_built: Callable[[str, str], None] | None = None) -> None:
        self.plan = plan
        self.verbose = verbose
        self.store = store
        self.jobs = max(1, jobs)
        self.keep_going = keep_going
        self.reporter = reporter
        self.out_root = out_root
        self.on_built = on_built
        self.stop = threading.Event()
        # Python steps fork from a warm zygote when more than one will run (one step gains nothing)
        python_steps = sum(not s.node.is_command for s in plan.to_run())
        self.zygote = Zygote() if self.runs_steps_here and zygote_enabled() and python_steps > 1 else None
        self.runner = StepRunner(store, reporter, self.stop, verbose, zygote=self.zygote)
        self._heavy: dict[str, bool] = {}
        self._memory = memory_bytes()

    # --- scheduling ------------------------------------------------------------------------
    def run(self) -> dict[str, StepResult]:
        if self.zygote is not None:
            self.zygote.start()
        try:
            return self._schedule()
        finally:
            if self.zygote is not None:
                self.zygote.close()

    def _schedule(self) -> dict[str, StepResult]:
        todo = {s.id: s for s in self.plan.to_run()}
        waiting = {sid: {d for d in s.node.deps.values() if d in todo} for sid, s in todo.items()}
        dependents: dict[str, list[str]] = {}
        for sid, deps in waiting.items():
            for d in deps:
                dependents.setdefault(d, []).append(sid)
        results: dict[str, StepResult] = {}
        running: dict[Future[StepResult], str] = {}
        failed = False
        self.reporter.start(len(todo))
        pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="qeffbuild-step")
        try:
            while waiting or running:
                if not failed or self.keep_going:
                    for sid in self._startable(waiting, running, todo):
                        del waiting[sid]
                        self.reporter.step_started(sid)
                        running[pool.submit(self._run_step, todo[sid])] = sid
                elif not running:
                    break
                if not running:
                    break
                done, _ = wait(running, timeout=0.25, return_when=FIRST_COMPLETED)
                for fut in done:
                    sid = running.pop(fut)
                    res = fut.result()
                    results[sid] = res
                    self.reporter.step_finished(sid, res.status, res.duration_s)
                    if res.status in ("built", "remote") and self.on_built is not None:
                        self.on_built(sid, todo[sid].key)
                    if res.status in ("built", "shared"):
                        for dep in dependents.get(sid, []):
                            if dep in waiting:  # a dependent already skipped after another failure is gone
                                waiting[dep].discard(sid)
                    else:
                        failed = True
                        self._skip_dependents(sid, waiting, dependents, results)
        except KeyboardInterrupt:
            self.stop.set()
            self._kill_all()
            for fut in list(running):
                with contextlib.suppress(Exception):
                    fut.result(timeout=30)
            pool.shutdown(wait=True, cancel_futures=True)
            self.reporter.stop()
            raise Interrupted("interrupted: finished steps are cached; run the same command to resume") from None
        except BaseException:
            self.stop.set()
            self._kill_all()
            pool.shutdown(wait=True, cancel_futures=True)
            self.reporter.stop()
            raise
        pool.shutdown(wait=True)
        for sid in waiting:
            results.setdefault(sid, StepResult(sid, "skipped", message="not started after an earlier failure"))
        self.reporter.stop()
        return results

    def _startable(self, waiting: dict[str, set[str]], running: dict[Future[StepResult], str],
                   todo: dict[str, PlannedStep]) -> list[str]:
        """The ready steps to start now, up to ``jobs`` running. An exclusive step (one that times what it runs: a
        validation's speed columns) starts only once nothing else runs and no other kind of step is ready, and
        none starts beside it: a compile beside a validation once made eager PyTorch look faster than `aoti` in
        a report (0.94 against 1.16–2.25 alone). A heavy step (:meth:`_is_heavy`) runs alone too, but is not
        put off behind the light ones."""
        if any(todo[sid].node.exclusive or self._is_heavy(todo[sid]) for sid in running.values()):
            return []
        ready = sorted(s for s, deps in waiting.items() if not deps)
        heavy = [s for s in ready if not todo[s].node.exclusive and self._is_heavy(todo[s])]
        if heavy:
            return heavy[:1] if not running else []
        shared = [s for s in ready if not todo[s].node.exclusive]
        if shared:
            return shared[:max(0, self.jobs - len(running))]
        return ready[:1] if ready and not running else []

    def _is_heavy(self, step: PlannedStep) -> bool:
        """Whether the step's inputs (its dependencies' stored outputs) weigh at least 1/HEAVY_SHARE of this
        machine's memory. Only with more than one job (alone, a step has the machine anyway) and where steps run
        on this machine (a Ray cluster's nodes have their own memory, and Ray's own scheduling)."""
        if self.jobs == 1 or self._memory is None or not self.runs_steps_here:
            return False
        if step.id not in self._heavy:
            self._heavy[step.id] = self._input_bytes(step) * HEAVY_SHARE >= self._memory
        return self._heavy[step.id]

    def _input_bytes(self, step: PlannedStep) -> int:
        total = 0
        for dep in step.node.deps.values():
            planned = self.plan.by_id.get(dep)
            entry = self.store.lookup(planned.key) if planned is not None else None
            for digest in entry.outputs.values() if entry is not None else ():
                with contextlib.suppress(OSError):
                    total += self.store.blob_path(digest).stat().st_size
        return total

    def _skip_dependents(self, sid: str, waiting: dict[str, set[str]], dependents: dict[str, list[str]],
                         results: dict[str, StepResult]) -> None:
        stack = list(dependents.get(sid, []))
        while stack:
            d = stack.pop()
            if d in waiting:
                del waiting[d]
                results[d] = StepResult(d, "skipped", message=f"needs {sid}, which did not build")
                stack.extend(dependents.get(d, []))

    def _kill_all(self) -> None:
        self.runner.kill_all()

    # --- one step ----------------------------------------------------------------------------
    def _run_step(self, step: PlannedStep) -> StepResult:
        result = self.execute(Job.of(self.plan, step))
        if result.status == "check-failed" and result.report:
            self._keep_failed_report(step, result.report)
        return result

    def execute(self, job: Job) -> StepResult:
        """Run one job; here in this process's thread (the Ray executor sends it to a node)."""
        return self.runner.run(job)

    def _keep_failed_report(self, step: PlannedStep, files: dict[str, bytes]) -> None:
        """A failed validation is not cached, but its report is what the user must read."""
        dest = self.out_root / step.node.target
        with contextlib.suppress(OSError):
            dest.mkdir(parents=True, exist_ok=True)
            (dest / STAMP).unlink(missing_ok=True)
            for name, data in files.items():
                target = dest / name
                target.unlink(missing_ok=True)
                target.write_bytes(data)


def memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say."""
    import os

    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None
