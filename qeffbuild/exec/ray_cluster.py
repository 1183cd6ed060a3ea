"""The Ray executor (``qeffbuild build --executor ray``): every uncached step is a Ray task.

The scheduling is the local executor's (dependencies first, ``-k``, Ctrl-C); only where a step
runs changes. Each step becomes a task that asks Ray for what it needs — one CPU; a GPU for a
CUDA specialization's steps; a custom resource for steps that need a device only some nodes have
(``qaic`` for a Cloud AI 100 compile or validation: start those nodes with
``ray start --resources '{"qaic": 1}'``) — so Ray places it on a node that can run it.

Artifacts never travel through Ray's object store; only the job (keys, the step's node) and a small
result do. Where the artifacts go is one of two modes:

- **a remote cache** (``--remote-cache s3://…``): no node needs another's disk. Each node keeps its own
  local cache (``QEFFBUILD_NODE_CACHE`` in the node's environment, else a folder under Ray's session
  folder); a task reads the step's inputs through from the remote (every blob verified, every entry's
  signature checked, as a local build does), runs the step, and uploads its outputs — blobs, then the
  signed entry — before it reports success. A step another node finished meanwhile is taken from the
  remote, not run again. The driver then reads what ``out/`` needs from the remote.
- **a shared mount**: the task opens the cache at the same path on its node (a filesystem every node
  mounts there), reads its inputs from it and writes its outputs into it, under the per-key locks.

A task whose worker dies or whose node is lost is retried by Ray (``max_retries``); the step's own
processes die with their worker (``PR_SET_PDEATHSIG``), and the retry starts clean. A step that fails
for real is reported as locally, with its log. Ctrl-C cancels the running tasks gently first: each task
kills its step's process group and removes its scratch folder before it ends; only a task that has not
ended within ``CANCEL_GRACE_S`` is killed. An address nothing answers on fails in seconds (exit 2).

Nodes need qeffbuild installed (the same version), and the cache mounted at the same path unless a
remote cache is used. Environment variables the steps read (``QAIC_COMPILER``, the Hugging Face offline
switches, the remote cache's credentials and trusted keys) are forwarded from the driver to the tasks.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.planner import Plan
from ..core.plugins import plugins
from ..core.progress import Reporter
from ..errors import UsageError
from ..store import Store
from . import StepResult
from .local import LocalExecutor
from .runner import Job, StepRunner, kill_recorded_group, recorded_run

MAX_RETRIES = 3
FORWARDED_ENV = ("QAIC_COMPILER", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
                 "TOKENIZERS_PARALLELISM", "QEFFBUILD_DEBUG", "QEFFBUILD_TRUSTED_KEYS", "QEFFBUILD_REMOTE_TRUST",
                 "QEFFBUILD_REMOTE_TIMEOUT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION")
CANCEL_GRACE_S = 10.0  # Ctrl-C: how long a task may take to kill its step and clean up before it is killed
CONNECT_TIMEOUT_S = 5.0  # an address nobody answers on is an error, not a wait


@dataclass(frozen=True)
class NodeCache:
    """Where a task finds the cache: the driver's folder on a shared mount, or a folder of the node's own read
    through and written back to a remote cache (``remote_url``)."""

    shared_root: str
    remote_url: str | None = None
    trusted_keys: tuple[str, ...] = ()
    signing_key_file: str | None = None


_STORES: dict[str, Any] = {}  # per worker process: the cache opened once, reused by its next tasks
_FLUSHED: dict[str, float] = {}
FLUSH_EVERY_S = 5.0


def node_cache_root() -> Path:
    """This node's own cache folder in remote mode: ``QEFFBUILD_NODE_CACHE``, else under Ray's session folder."""
    if os.environ.get("QEFFBUILD_NODE_CACHE"):
        return Path(os.environ["QEFFBUILD_NODE_CACHE"])
    try:
        import ray

        session = Path(ray._private.worker.global_worker.node.get_session_dir_path())  # type: ignore[union-attr]
    except Exception:  # Ray's private layout moved: a folder of this user's on the node
        import tempfile

        session = Path(tempfile.gettempdir()) / f"qeffbuild-{os.getuid()}"
    return session / "qeffbuild-cache"


def run_on_node(cache: NodeCache, job: Job) -> StepResult:
    """The Ray task: run one job on this node, against ``cache``."""
    import ray

    from ..store import open_store

    root = str(node_cache_root()) if cache.remote_url else cache.shared_root
    store = _STORES.get(root)
    if store is None:
        store = _STORES[root] = open_store(Path(root))
    stop = threading.Event()
    runner = StepRunner(store, Reporter(quiet=True), stop, die_with_parent=True)
    try:
        result = _cancellable(lambda: _through_remote(cache, store, runner, job) if cache.remote_url
                              else runner.run(job), runner)
    finally:
        # The digests of new blobs are a speed-up for later builds, not a correctness matter (the driver
        # verifies what it reads): written every few seconds, not after every task, so that workers on
        # one machine do not queue on the state database's lock.
        if time.monotonic() - _FLUSHED.get(root, 0.0) > FLUSH_EVERY_S:
            store.stat.flush()
            _FLUSHED[root] = time.monotonic()
    result.where = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
    return result


def _cancellable(work: Callable[[], StepResult], runner: StepRunner) -> StepResult:
    """Run ``work`` in a thread while this (the task's main) thread waits for it.

    ``ray.cancel`` raises KeyboardInterrupt in the main thread at its next bytecode. Were the step run
    here, that could land inside a library's handler that swallows it (an at-fork hook of filelock, under
    load) and the cancel would be lost. Here it lands in this wait: the step's process group is killed,
    the worker thread's own clean-up removes its scratch, and only then does the task end."""
    done: list[StepResult] = []
    failed: list[BaseException] = []

    def target() -> None:
        try:
            done.append(work())
        except BaseException as e:  # handed to the main thread, which raises it as Ray expects
            failed.append(e)

    worker = threading.Thread(target=target, name="qeffbuild-step", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(timeout=0.2)
    except KeyboardInterrupt:  # ray.cancel: stop new processes, kill the running ones, wait for clean-up
        runner.stop.set()
        runner.kill_all()
        worker.join()
        raise
    if failed:
        raise failed[0]
    return done[0]


def _through_remote(cache: NodeCache, store: Any, runner: StepRunner, job: Job) -> StepResult:
    """Inputs read through from the remote, the step run here, its outputs uploaded before success is reported."""
    from ..store.remote import RemoteCache, RemoteCacheError
    from ..store.signing import Trust

    if cache.signing_key_file:
        os.environ.setdefault("QEFFBUILD_SIGNING_KEY_FILE", cache.signing_key_file)
    remote = RemoteCache(cache.remote_url or "", store, upload=True, required=True,
                         trust=Trust.from_settings(list(cache.trusted_keys)))
    try:
        if not job.forced:
            here = store.lookup(job.key)
            there = remote.fetch(job.key) is not None
            if here is not None and not there:
                remote.push(here)  # an earlier try on this node was killed mid-upload: finish it, entry last
            if here is not None or there:
                # "remote" for the driver: the outputs are in the remote cache, not in the driver's cache,
                # so it downloads them like any step a node built
                result = StepResult(job.id, "remote")
                result.remote = dict(remote.counts)
                return result
        for role, key in job.dep_keys.items():
            if not store.has(key) and remote.fetch(key) is None:
                return StepResult(job.id, "failed", message=f"input {role} ({job.node.deps[role]}) of {job.id} is not "
                                                            f"in the remote cache {remote.shown}: the node that built "
                                                            "it did not upload it; run the build again")
        result = runner.run(job)
        if result.status in ("built", "shared"):
            entry = store.lookup(job.key)
            if entry is None:
                return StepResult(job.id, "failed", result.duration_s, "its outputs vanished from the node's cache "
                                                                       "before they were uploaded; run again")
            remote.push(entry)  # required: a failed upload raises, and the step is not reported built
    except RemoteCacheError as e:
        return StepResult(job.id, "failed", message=f"{job.id} on this node: {e}")
    result.remote = dict(remote.counts)
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
    custom: dict[str, float] = {plugins().backends.get(n).cluster_resource: 1 for n in names  # type: ignore[misc]
                                if plugins().backends.get(n).cluster_resource}
    for name, amount in job.node.resources.items():  # a command step's own `resources`
        if name.upper() == "GPU":
            options["num_gpus"] = amount
        elif name.upper() == "CPU":
            options["num_cpus"] = amount
        else:
            custom[name] = amount
    if custom:
        options["resources"] = custom
    return options


class RayExecutor(LocalExecutor):
    """:class:`LocalExecutor`'s scheduling, with each step sent to a Ray cluster."""

    runs_steps_here = False

    def __init__(self, plan: Plan, store: Store, jobs: int, keep_going: bool, reporter: Reporter, out_root: Path,
                 verbose: bool = False, on_built: Callable[[str, str], None] | None = None,
                 address: str | None = None, remote: Any = None) -> None:
        """``jobs`` 0: as many steps in flight as the cluster has CPUs. ``remote``: the build's remote cache
        (nodes then keep caches of their own and exchange artifacts through it)."""
        super().__init__(plan, store, max(1, jobs), keep_going, reporter, out_root, verbose, on_built)
        try:
            import ray
        except ImportError as e:
            raise UsageError("--executor ray needs Ray: pip install 'qeffbuild[ray]'") from e
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            address = address or os.environ.get("RAY_ADDRESS") or None
            if address and address != "auto":
                _reachable(address)
            try:
                ray.init(address=address, log_to_driver=False, include_dashboard=False, logging_level=logging.WARNING,
                         configure_logging=True)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise UsageError(f"cannot reach the Ray cluster at {address or 'this machine'} ({e}); start one "
                                 "with `ray start --head`, or pass --ray-address HOST:PORT") from e
        self._ray = ray
        self._task = ray.remote(run_on_node)
        self._live: set[Any] = set()
        self._cancelled: set[Any] = set()
        self._live_lock = threading.Lock()
        if jobs == 0:  # as many steps in flight as the cluster has CPUs
            self.jobs = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        self.cache = NodeCache(str(self.store.root))
        if remote is not None:
            self.cache = NodeCache(str(self.store.root), remote.url, tuple(remote.trust.trusted_keys()),
                                   os.environ.get("QEFFBUILD_SIGNING_KEY_FILE"))
        self.moved: dict[str, int] = {}  # what the nodes moved through the remote cache, summed

    def run(self) -> dict[str, StepResult]:
        try:
            return super().run()
        finally:
            if self._owns_ray:  # disconnect now, while stdout still goes where the caller wants it
                self._ray.shutdown()

    def execute(self, job: Job) -> StepResult:
        ray = self._ray
        job = dataclasses.replace(job, run_id=uuid.uuid4().hex)  # this try's, recorded with its processes
        submitted = time.perf_counter()
        ref = self._task.options(
            **resources_for(job), max_retries=MAX_RETRIES, retry_exceptions=False, name=job.id[:200],
            runtime_env={"env_vars": self.env} if self.env else None,
        ).remote(self.cache, job)
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
                        self._cancel(ref, future, job)
                        return StepResult(job.id, "interrupted")
                except ray.exceptions.TaskCancelledError:  # the stop's gentle cancel (_kill_all) ended it first
                    self._clean_after_cancel(job)
                    return StepResult(job.id, "interrupted")
                except ray.exceptions.RayError as e:  # retries exhausted: a worker or node kept dying
                    return StepResult(job.id, "failed", message=f"the Ray task of {job.id} failed after "
                                                                f"{MAX_RETRIES} retries: {type(e).__name__}: "
                                                                f"{str(e)[:500]}")
            result.dispatch_s = round(max(0.0, time.perf_counter() - submitted - result.duration_s), 4)
            for k, v in (result.remote or {}).items():
                self.moved[k] = self.moved.get(k, 0) + v
            return result
        finally:
            with self._live_lock:
                self._live.discard(ref)
                self._cancelled.discard(ref)

    def _cancel(self, ref: Any, future: Any, job: Job) -> None:
        """Cancel one task gently (it kills its step's process group and removes its scratch), then for sure."""
        self._cancel_gently(ref)
        with contextlib.suppress(Exception):  # TaskCancelledError once it ended, TimeoutError if it would not
            future.result(timeout=CANCEL_GRACE_S)
        if not future.done():
            self._ray.cancel(ref, force=True)  # the worker dies, and its step's processes with it
            with contextlib.suppress(Exception):
                future.result(timeout=CANCEL_GRACE_S)
        self._clean_after_cancel(job)

    def _clean_after_cancel(self, job: Job) -> None:
        """After Ray reported the task ended by a cancel, where the step ran on this machine: its processes and
        its scratch folder are gone when this returns.

        Ray can report the task ended before its worker has: a killed worker is reaped later, and its death
        signal ends the step's shell but not what the shell started; a gentle one may still be removing its
        folder; and under load a cancel was seen reported while the worker had not run its handler (the step
        ran on, its folder stayed). So this try's own folder (by the run id recorded in it) has its process group
        killed and is removed at once; another run's folder of the same step is waited for, and removed once its
        process is gone. Another node's stays until a build driven from that node, or `qeffbuild cache gc`
        there, cleans its stale scratch."""
        self.store.clean_scratch_of(job.key, CANCEL_GRACE_S, before_remove=kill_recorded_group,
                                    ended=lambda folder: recorded_run(folder) == job.run_id)

    def _cancel_gently(self, ref: Any) -> None:
        """Once per task: a second KeyboardInterrupt could land inside the task's own clean-up."""
        with self._live_lock:
            if ref in self._cancelled:
                return
            self._cancelled.add(ref)
        self._ray.cancel(ref, force=False)

    def _kill_all(self) -> None:
        # Gently only: a forced cancel kills the worker before it removes its scratch folder. Each
        # execute() thread notices the stop, waits CANCEL_GRACE_S for its task, and forces only then.
        with self._live_lock:
            live = list(self._live)
        for ref in live:
            self._cancel_gently(ref)


def _reachable(address: str) -> None:
    """Fail fast (exit 2) when nothing answers at the cluster's address: Ray itself retries for minutes."""
    host, _, port = address.rpartition(":")
    if host.startswith("ray://") or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise UsageError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}); start one with "
                         "`ray start --head`, or pass --ray-address HOST:PORT of a running one") from None
