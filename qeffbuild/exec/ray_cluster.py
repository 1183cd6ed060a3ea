"""The Ray executor (``qeffbuild build --executor ray``): every uncached step is a Ray task.

The scheduling is the local executor's (dependencies first, ``-k``, Ctrl-C); only where a step
runs changes. Each step becomes a task that asks Ray for what it needs — one CPU; a GPU for a
CUDA specialization's steps; a custom resource for steps that need a device only some nodes have
(``qaic`` for a Cloud AI 100 compile or validation: start those nodes with
``ray start --resources '{"qaic": 1}'``) — so Ray places it on a node that can run it.

Artifacts never travel through Ray's object store: the task opens the cache at the same path on
its node (a shared filesystem every node mounts there), reads its inputs from it and writes its
outputs into it, under the cache's per-key locks; only the job (keys, the step's node) and a
small result go through Ray. A task whose worker dies or whose node is lost is retried by Ray
(``max_retries``); the step's own processes die with their worker (``PR_SET_PDEATHSIG``), and
the retry starts clean. A step that fails for real is reported as locally, with its log. Ctrl-C
cancels the running tasks.

Nodes need qeffbuild installed (the same version) and the cache mounted at the same path.
Environment variables the steps read (``QAIC_COMPILER``, the Hugging Face offline switches) are
forwarded from the driver to the tasks.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.planner import Plan
from ..core.plugins import plugins
from ..core.progress import Reporter
from ..errors import UsageError
from ..store import Store
from . import StepResult
from .local import LocalExecutor
from .runner import Job, StepRunner

MAX_RETRIES = 3
FORWARDED_ENV = ("QAIC_COMPILER", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
                 "TOKENIZERS_PARALLELISM", "QEFFBUILD_DEBUG")


_STORES: dict[str, Any] = {}  # per worker process: the cache opened once, reused by its next tasks
_FLUSHED: dict[str, float] = {}
FLUSH_EVERY_S = 5.0


def run_on_node(cache_root: str, job: Job) -> StepResult:
    """The Ray task: run one job against the cache at ``cache_root`` on this node."""
    import ray

    from ..store import open_store

    store = _STORES.get(cache_root)
    if store is None:
        store = _STORES[cache_root] = open_store(Path(cache_root))
    runner = StepRunner(store, Reporter(quiet=True), threading.Event(), die_with_parent=True)
    try:
        result = runner.run(job)
    finally:
        # The digests of new blobs are a speed-up for later builds, not a correctness matter (the driver
        # verifies what it reads): written every few seconds, not after every task, so that workers on
        # one machine do not queue on the state database's lock.
        if time.monotonic() - _FLUSHED.get(cache_root, 0.0) > FLUSH_EVERY_S:
            store.stat.flush()
            _FLUSHED[cache_root] = time.monotonic()
    result.where = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
    return result


def resources_for(job: Job) -> dict[str, Any]:
    """What the step asks Ray for: a CPU, a GPU for CUDA, the custom resource of a device backend."""
    params = job.node.params
    options: dict[str, Any] = {"num_cpus": 1}
    if params.get("device") == "cuda":
        options["num_gpus"] = 1
    names = [params["backend"]] if job.node.kind == "compile" else []
    if job.node.kind == "validate":
        names += [opens for opens in params.get("runtimes", {}).values() if opens in plugins().backends]
    custom = {plugins().backends.get(n).cluster_resource: 1 for n in names
              if plugins().backends.get(n).cluster_resource}
    if custom:
        options["resources"] = custom
    return options


class RayExecutor(LocalExecutor):
    """:class:`LocalExecutor`'s scheduling, with each step sent to a Ray cluster."""

    runs_steps_here = False

    def __init__(self, plan: Plan, store: Store, jobs: int, keep_going: bool, reporter: Reporter, out_root: Path,
                 verbose: bool = False, on_built: Callable[[str, str], None] | None = None,
                 address: str | None = None) -> None:
        """``jobs`` 0: as many steps in flight as the cluster has CPUs."""
        super().__init__(plan, store, max(1, jobs), keep_going, reporter, out_root, verbose, on_built)
        try:
            import ray
        except ImportError as e:
            raise UsageError("--executor ray needs Ray: pip install 'qeffbuild[ray]'") from e
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS") or None
            try:
                ray.init(address=address, log_to_driver=False, include_dashboard=False, logging_level=logging.WARNING,
                         configure_logging=True)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise UsageError(f"cannot reach the Ray cluster at {address or 'this machine'} ({e}); start one "
                                 "with `ray start --head`, or pass --ray-address HOST:PORT") from e
        self._ray = ray
        self._task = ray.remote(run_on_node)
        self._live: set[Any] = set()
        self._live_lock = threading.Lock()
        if jobs == 0:  # as many steps in flight as the cluster has CPUs
            self.jobs = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}

    def execute(self, job: Job) -> StepResult:
        ray = self._ray
        submitted = time.perf_counter()
        ref = self._task.options(
            **resources_for(job), max_retries=MAX_RETRIES, retry_exceptions=False, name=job.id[:200],
            runtime_env={"env_vars": self.env} if self.env else None,
        ).remote(str(self.store.root), job)
        with self._live_lock:
            self._live.add(ref)
        try:
            future = ref.future()  # completed by Ray's callback: no polling delay on the result
            while True:
                try:
                    result: StepResult = future.result(timeout=0.25)
                    break
                except concurrent.futures.TimeoutError:
                    if self.stop.is_set():
                        ray.cancel(ref, force=True)
                        return StepResult(job.id, "interrupted")
                except ray.exceptions.TaskCancelledError:
                    return StepResult(job.id, "interrupted")
                except ray.exceptions.RayError as e:  # retries exhausted: a worker or node kept dying
                    return StepResult(job.id, "failed", message=f"the Ray task of {job.id} failed after "
                                                                f"{MAX_RETRIES} retries: {type(e).__name__}: "
                                                                f"{str(e)[:500]}")
            result.dispatch_s = round(max(0.0, time.perf_counter() - submitted - result.duration_s), 4)
            return result
        finally:
            with self._live_lock:
                self._live.discard(ref)

    def _kill_all(self) -> None:
        with self._live_lock:
            for ref in list(self._live):
                self._ray.cancel(ref, force=True)  # the worker dies, and its step's processes with it
