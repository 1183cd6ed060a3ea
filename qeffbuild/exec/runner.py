"""Running one step: lock its key, lay out its inputs, run it in its own process group, store its outputs.

:class:`StepRunner` is what every executor runs per step: the local executor in a thread of
this process, the Ray executor in a task on any node that mounts the cache. A :class:`Job` is
everything it needs, and pickles (keys, the node, its material; no plan).

A command step's child is the user's command, a Python step's child is ``python -m
qeffbuild.exec.worker``. Each child leads its own process group, so stopping kills the whole
group, grandchildren included. A command step gets copies of its inputs (it may write them; the
store's blobs stay intact); a Python step reads the store's read-only trees and must leave them
as they were (checked).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.hashing import digest_file
from ..core.planner import Plan, PlannedStep
from ..core.progress import Reporter
from ..core.steps import StepNode
from ..errors import StoreError
from ..store import Store, clone_file
from ..store.local import proc_stat, regular_files
from . import StepResult
from .progress import ENV as PROGRESS_ENV
from .progress import read as read_progress
from .worker import EXIT_CHECK_FAILED, EXIT_USER_ERROR, summarize
from .zygote import Zygote

LOG_TAIL = 4000
REPORT_FILES = ("report.json", "report.txt", "report.html")
_LIVE_GROUPS: set[int] = set()  # process groups of running steps, for a second signal's hard stop
_LIVE_LOCK = threading.Lock()


# In a step's scratch folder: the process group its command runs in, the group leader's start time and the run id
# of the job (Job.run_id, "-" for none). A driver that outlives the step's worker reads it (kill_recorded_group).
GROUP_FILE = "group"
LOG_FILE = "log.txt"  # the step's output, in its scratch folder


def kill_recorded_group(scratch: Path) -> bool:
    """Kill what is left of the process group recorded in ``scratch`` (a step whose worker was killed before it
    could: Ray's forced cancel kills the worker, whose death signal reaches the step's shell but not what that
    shell started in the background). Whether a signal was sent.

    A group's id is its leader's pid, which the kernel reuses for no process while any member of the group lives;
    once none does, another process may have it, so a leader alive with another start time is not ours."""
    recorded = _read_group(scratch)
    if recorded is None:
        return False
    pgid, started, _run = recorded
    now = _start_ticks(pgid)
    if pgid <= 1 or (now is not None and str(now) != started):
        return False
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:  # no member left, or not ours to signal
        return False
    return True


def recorded_run(scratch: Path) -> str | None:
    """The run id (Job.run_id) of the step recorded in ``scratch``; None where none is recorded."""
    recorded = _read_group(scratch)
    return recorded[2] if recorded is not None and recorded[2] != "-" else None


def _read_group(scratch: Path) -> tuple[int, str, str] | None:
    try:
        pgid_text, started, run = (scratch / GROUP_FILE).read_text().split()
        return int(pgid_text), started, run
    except (OSError, ValueError):
        return None


def _start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot, /proc/PID/stat's 22nd field); None if no such process."""
    fields = proc_stat(pid)
    try:
        return int(fields[19]) if fields is not None else None
    except (ValueError, IndexError):
        return None


def _record_group(scratch: Path, pid: int, run_id: str) -> None:
    """GROUP_FILE for a step just started (best effort: without /proc the driver cannot check the leader)."""
    started = _start_ticks(pid)
    if started is not None:
        with contextlib.suppress(OSError):
            (scratch / GROUP_FILE).write_text(f"{pid} {started} {run_id or '-'}")


def kill_all_groups() -> None:
    """Kill every running step's process group (used by the CLI on a second signal)."""
    with _LIVE_LOCK:
        for pgid in list(_LIVE_GROUPS):
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)


class _Stopped(Exception):
    pass


@dataclass(frozen=True)
class Job:
    """One step to run, as a runner on any machine needs it."""

    id: str
    key: str
    node: StepNode
    material: dict[str, Any]
    forced: bool = False
    dep_keys: dict[str, str] = field(default_factory=dict)  # role -> the upstream step's key
    dep_subdirs: dict[str, str] = field(default_factory=dict)  # role -> its out/ sub-folder (command steps)
    # what one try of the job is called by the executor that sent it (recorded with the step's process group): a
    # Ray driver ends its own cancelled try's processes by it, never another build's run of the same step
    run_id: str = ""

    @classmethod
    def of(cls, plan: Plan, step: PlannedStep) -> Job:
        deps = step.node.deps
        return cls(step.id, step.key, step.node, step.material, step.forced,
                   {role: plan.by_id[d].key for role, d in deps.items()},
                   {role: plan.graph.nodes[d].out_subdir for role, d in deps.items()})


class StepRunner:
    """Runs jobs against one store; ``die_with_parent`` makes each step's process die with this one
    (a Ray worker that is killed must not leave its step running)."""

    def __init__(self, store: Store, reporter: Reporter, stop: threading.Event, verbose: bool = False,
                 die_with_parent: bool = False, zygote: Zygote | None = None) -> None:
        self.store = store
        self.reporter = reporter
        self.stop = stop
        self.verbose = verbose
        self.die_with_parent = die_with_parent
        self.zygote = zygote  # forks Python steps with the heavy libraries imported (None: spawn each)
        self._procs: dict[str, Any] = {}  # step id -> its Popen or ZygoteProcess
        self._procs_lock = threading.Lock()

    def kill_all(self) -> None:
        with self._procs_lock:
            for p in self._procs.values():
                if p.poll() is None:
                    with contextlib.suppress(OSError):
                        os.killpg(p.pid, signal.SIGKILL)  # the step and everything it started

    def run(self, step: Job) -> StepResult:
        t0 = time.monotonic()
        from filelock import Timeout

        try:
            lock = self.store.lock(step.key)
        except OSError as e:
            return StepResult(step.id, "failed", 0.0, f"cannot lock {step.id} in the cache: {e}; make the cache "
                                                      "writable or set QEFFBUILD_CACHE_DIR")
        while True:  # wait for a concurrent build running this step, but stay responsive to Ctrl-C
            try:
                lock.acquire(timeout=0.2)
                break
            except Timeout:
                if self.stop.is_set():
                    return StepResult(step.id, "interrupted")
            except OSError as e:  # a read-only or full cache: the lock file cannot be made
                return StepResult(step.id, "failed", 0.0, f"cannot lock {step.id} in the cache ({e.strerror}); make "
                                                          f"the cache at {self.store.root} writable or set "
                                                          "QEFFBUILD_CACHE_DIR")
        try:
            if not step.forced and self.store.has(step.key):  # another build ran it while we waited for the lock
                return StepResult(step.id, "shared", time.monotonic() - t0)
            return self._produce(step, t0, commit=True)[0]
        finally:
            lock.release()

    def rerun(self, step: Job) -> tuple[StepResult, dict[str, str]]:
        """Run a cached step again in scratch and return its outputs' digests, storing nothing (``cache verify
        --rebuild``: Nix's ``--check``). The status is ``built`` when it ran to the end."""
        return self._produce(step, time.monotonic(), commit=False)

    def _produce(self, step: Job, t0: float, commit: bool) -> tuple[StepResult, dict[str, str]]:
        """Run the step in a scratch folder; with ``commit``, store its outputs (entry last)."""
        scratch: Path | None = None
        try:
            scratch = self.store.scratch(step.key)
            out = scratch / "out"
            out.mkdir()
            inputs, consumed = self._inputs(step)
            command = step.node.is_command
            before = _signatures(inputs.values())
            oom_before = oom_kills()
            if command:
                code = self._run_command(step, scratch, out, inputs)
            else:
                code = self._run_worker(step, scratch, out, inputs)
            log = _tail(scratch / LOG_FILE)
            if self.stop.is_set():
                return StepResult(step.id, "interrupted"), {}
            if not command and _signatures(inputs.values()) != before:
                return StepResult(step.id, "failed", time.monotonic() - t0,
                                  "the step modified its inputs (read-only files of the cache); this is a bug in "
                                  f"its code, not a cacheable result\n{log}"), {}
            if code != 0:
                kept = self._keep_log(step.id, scratch / LOG_FILE)
                result = self._failure(step, scratch, code, log, time.monotonic() - t0, not command)
                result.message += f"\n(full log: {kept})"
                if code == -signal.SIGKILL:
                    result.message += _oom_hint(oom_before, oom_kills())
                if _disk_full(scratch):
                    result.message += (f"\nno space left on the device of the cache ({self.store.root}), where steps "
                                       "run: free space there, or point QEFFBUILD_CACHE_DIR at a larger disk")
                return result, {}
            if command:
                missing = _keep_declared(out, step.node.params["outputs"])
                if missing:
                    why = (f"the command exited 0 but did not write {', '.join(missing)} as regular files; declared "
                           f"outputs are written under {{out}} (its working folder)\n{log}")
                    return StepResult(step.id, "failed", time.monotonic() - t0, why), {}
            duration = time.monotonic() - t0
            if not commit:
                return StepResult(step.id, "built", duration), {
                    p.relative_to(out).as_posix(): digest_file(p) for p in regular_files(out)}
            entry = self.store.commit(step.key, step.id, out, step.material, duration, log, consumed)
            return StepResult(step.id, "built", duration), dict(entry.outputs)
        except _Stopped:
            return StepResult(step.id, "interrupted"), {}
        except StoreError as e:
            return StepResult(step.id, "failed", time.monotonic() - t0, str(e)), {}
        except Exception as e:  # anything unexpected fails this step only, with what went wrong
            return StepResult(step.id, "failed", time.monotonic() - t0, summarize(e)), {}
        finally:
            if scratch is not None:
                _remove(scratch)

    def _inputs(self, step: Job) -> tuple[dict[str, Path], tuple[str, ...]]:
        """Each upstream role's checked tree, and the digests of every blob the step will read."""
        inputs: dict[str, Path] = {}
        consumed: set[str] = set()
        for role, dep in step.node.deps.items():
            entry = self.store.lookup(step.dep_keys[role])
            if entry is None:
                raise StoreError(f"the cache entry of {dep} is missing or was corrupt; run the build again")
            inputs[role] = self.store.tree(entry)
            consumed.update(entry.outputs.values())
        return inputs, tuple(sorted(consumed))

    def _keep_log(self, step_id: str, log: Path) -> Path:
        """A failed step's whole log outlives its scratch folder: out/.cache/logs/<step>.log."""
        dest = self.store.root / "logs" / (re.sub(r"[^A-Za-z0-9_.-]+", "_", step_id)[:200] + ".log")
        with contextlib.suppress(OSError):
            dest.parent.mkdir(parents=True, exist_ok=True)
            if log.exists():
                shutil.copyfile(log, dest)
        return dest

    def _failure(self, step: Job, scratch: Path, code: int, log: str, duration: float,
                 worker: bool) -> StepResult:
        failure = scratch / "failure.txt"
        text = failure.read_text(errors="replace") if failure.exists() else ""
        if worker and code == EXIT_CHECK_FAILED:  # not cached, but its report is what the user must read
            return StepResult(step.id, "check-failed", duration, text, report=_report_files(scratch / "out"))
        if worker and code == EXIT_USER_ERROR:
            return StepResult(step.id, "failed", duration, text)
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        if text:  # a worker crash: the exception itself first, the log's last lines after it
            return StepResult(step.id, "failed", duration, f"{text}\n--- log (last lines) ---\n{log}".rstrip())
        return StepResult(step.id, "failed", duration, f"{how}\n--- log (last lines) ---\n{log}".rstrip())

    def _spawn(self, step_id: str, args: list[str], cwd: Path, env: dict[str, str], scratch: Path,
               progress: Path | None = None, request: Path | None = None, run_id: str = "") -> int:
        """Run the step's process in its own group, its output in ``scratch``'s LOG_FILE, the group recorded in
        ``scratch`` (GROUP_FILE) for a driver that must end it; returns its exit code."""
        with open(scratch / LOG_FILE, "wb") as logf:
            with self._procs_lock:
                if self.stop.is_set():
                    raise _Stopped
                proc = self._fork(request, cwd, env, logf) if request is not None else None
                if proc is None:
                    try:
                        proc = subprocess.Popen(args, cwd=cwd, env=env, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL,
                                                stdout=subprocess.PIPE if self.verbose else logf,
                                                start_new_session=True,
                                                preexec_fn=_die_with_parent if self.die_with_parent else None)
                    except OSError as e:
                        logf.write(f"cannot start {args[0]!r}: {e}\n".encode())
                        return 127
                self._procs[step_id] = proc
                with _LIVE_LOCK:
                    _LIVE_GROUPS.add(proc.pid)
            _record_group(scratch, proc.pid, run_id)
            try:
                if self.verbose:
                    self._stream(step_id, proc, logf)
                return self._wait(step_id, proc, progress)
            finally:
                # whatever the step left running goes with it — also when this thread is interrupted (a Ray
                # task cancelled by Ctrl-C raises KeyboardInterrupt here)
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with self._procs_lock:
                    self._procs.pop(step_id, None)
                with _LIVE_LOCK:
                    _LIVE_GROUPS.discard(proc.pid)

    def _fork(self, request: Path, cwd: Path, env: dict[str, str], logf: Any) -> Any:
        """A Python step forked by the zygote (its stdout a pipe under -v); None: spawn it instead."""
        if self.zygote is None:
            return None
        if not self.verbose:
            return self.zygote.spawn(str(request), str(cwd), env, logf.fileno())
        read, write = os.pipe()
        try:
            proc = self.zygote.spawn(str(request), str(cwd), env, write, os.fdopen(read, "rb"))
        finally:
            os.close(write)
        return proc

    def _wait(self, step_id: str, proc: Any, progress: Path | None) -> int:
        """Wait for the step, passing the progress its worker reports to the display meanwhile."""
        # Never a bare blocking wait(): a Ray task is cancelled by an exception raised in this thread,
        # which Python delivers only between bytecodes, so the wait must come back every half second.
        seen = None
        while True:
            try:
                return proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if self.stop.is_set():  # the stop alone ends a running step (every caller also calls kill_all
                    # today, which takes the same lock as the spawn's registration): within half a second
                    with contextlib.suppress(OSError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    return proc.wait()
                state = read_progress(progress) if progress is not None else None
                if state is not None and state != seen:
                    seen = state
                    self.reporter.step_progress(step_id, state["done"], state["total"], str(state.get("unit", "")),
                                                str(state.get("what", "")))

    def _stream(self, step_id: str, proc: Any, logf: Any) -> None:
        """-v: every line of the step's output goes to its log and, prefixed, to the reporter."""
        assert proc.stdout is not None
        for raw in proc.stdout:
            logf.write(raw)
            self.reporter.message(f"[{step_id}] {raw.decode(errors='replace').rstrip()}")

    def _run_command(self, step: Job, scratch: Path, out: Path, inputs: dict[str, Path]) -> int:
        node = step.node
        dep_dirs: dict[str, Path] = {}
        for name, roles in node.dep_targets.items():
            folder = scratch / "deps" / name
            folder.mkdir(parents=True)
            for role in roles:
                sub = step.dep_subdirs[role]
                for f in inputs[role].rglob("*"):
                    if f.is_file():
                        clone_file(f, folder / sub / f.relative_to(inputs[role]))  # a copy: the command may write it
            dep_dirs[name] = folder
        values = {"out": str(out), "root": str(node.root or "")}
        values.update({f"dep:{k}": str(v) for k, v in dep_dirs.items()})

        def expand(arg: str) -> str:
            return re.sub(r"\{(out|root|dep:[A-Za-z0-9_.-]+)\}", lambda m: values.get(m.group(1), m.group(0)), arg)

        env = {**os.environ, **step_temp(scratch)}
        env.update({k: expand(v) for k, v in node.params["env"].items()})
        env["QEFFBUILD_OUT"] = str(out)
        env["QEFFBUILD_ROOT"] = values["root"]
        args = [expand(a) for a in node.params["cmd"]]
        return self._spawn(node.id, args, out, env, scratch, run_id=step.run_id)

    def _run_worker(self, step: Job, scratch: Path, out: Path, inputs: dict[str, Path]) -> int:
        node = step.node
        request = {
            "node_id": node.id,
            "runner": node.runner,
            "params": node.params,
            "inputs": {k: str(v) for k, v in inputs.items()},
            "files": {f.label: str(f.path) for f in node.files},
            "out": str(out),
            "root": str(node.root) if node.root else None,
            "paths": {k: str(v) for k, v in node.paths.items()},
            # for provenance in reports: this step's key and each input's
            "keys": {"self": step.key, **step.dep_keys},
        }
        req = scratch / "request.json"
        req.write_text(json.dumps(request))
        env = {**step_env(), **step_temp(scratch)}
        env[PROGRESS_ENV] = str(scratch / "progress.json")
        return self._spawn(node.id, [sys.executable, "-m", "qeffbuild.exec.worker", str(req)], scratch, env,
                           scratch, progress=scratch / "progress.json", request=req, run_id=step.run_id)


def step_env() -> dict[str, str]:
    """The environment of a Python step: this process's, OpenMP's wait policy included. Steps once ran with
    ``OMP_WAIT_POLICY=PASSIVE`` (a long-form validation beside another step took 27 s, 12 s passive, 10 s alone);
    since a step that times what it runs runs alone (``exclusive``), passive threads only slowed what it timed:
    each of an AOTInductor package's parallel regions then woke sleeping threads, and the real all-MiniLM-L6-v2's
    validation measured `aoti` at 16.5 and 44 ms a batch (seq 16, 64) where `bench`, in the user's own process,
    measured 9.2 and 30.5. The validation now measures the runtime as a user's process runs it."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def step_temp(scratch: Path) -> dict[str, str]:
    """A step's temporary folder: ``TMPDIR`` inside its scratch folder, so what it leaves there goes with the
    scratch (which the runner always removes) and lies on the cache's disk. AOTInductor extracts a package into a
    temporary folder at each load and removes it only when the loader is destroyed, which a worker ending with
    ``os._exit`` never does: each validation of a 3.3 GB package left 3.3 GB in /tmp (384 folders had piled up
    there). Inductor's cache stays where it was (set explicitly here, from the old temporary folder), so its
    compiled kernels are still shared between steps and builds."""
    import getpass
    import tempfile

    tmp = scratch / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {"TMPDIR": str(tmp)}
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:  # torch's default, from the temporary folder it would have used
        with contextlib.suppress(Exception):
            user = re.sub(r'[\\/:*?"<>|]', "_", getpass.getuser())
            env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"torchinductor_{user}")
    return env


def _signatures(folders: Any) -> dict[str, tuple[int, int, int]]:
    """(size, mtime, inode) of every file under ``folders``: a step that edits its inputs changes one."""
    sigs: dict[str, tuple[int, int, int]] = {}
    for folder in folders:
        for path in Path(folder).rglob("*"):
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode):
                    sigs[str(path)] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return sigs


def oom_kills() -> int | None:
    """How many processes the kernel's out-of-memory killer has ended since boot (/proc/vmstat's oom_kill, Linux
    4.13+); None where it cannot be read."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        pass
    return None


def _oom_hint(before: int | None, after: int | None) -> str:
    """For a step killed by SIGKILL: the likely cause, when the out-of-memory killer struck while it ran (the
    count is machine-wide, so "likely"; a step killed by SIGKILL leaves no traceback of its own)."""
    if before is None or after is None or after <= before:
        return ""
    return (f"\nthe kernel's out-of-memory killer ended a process while this step ran (/proc/vmstat oom_kill "
            f"{before} → {after}): the machine ran out of memory, likely in this step. Run fewer steps at once "
            "(-j 1), stop what else uses memory, or build on a machine with more")


def _disk_full(path: Path, margin: int = 1 << 20) -> bool:
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < margin


def _remove(path: Path) -> None:
    """Remove a scratch folder even where a step left read-only subfolders."""
    def onerror(func: Any, p: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)

    shutil.rmtree(path, onerror=onerror)


def _tail(path: Path, lines: int = 25) -> str:
    """The log's last lines (each cut to 300 characters): enough to see, never a wall of text."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    tail = data.decode(errors="replace").splitlines()[-lines:]
    return "\n".join(ln if len(ln) <= 300 else ln[:297] + "..." for ln in tail)[-LOG_TAIL:]


def _keep_declared(out: Path, declared: list[str]) -> list[str]:
    """Delete undeclared entries from ``out`` (links included, never followed); return the declared
    outputs that are missing or not regular files."""
    wanted = {Path(d).as_posix() for d in declared}
    prefixes = {p.as_posix() for d in wanted for p in Path(d).parents}
    for dirpath, dirs, files in os.walk(out, topdown=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            if path.relative_to(out).as_posix() not in wanted:
                path.unlink()
        folder = Path(dirpath)
        if folder != out and folder.relative_to(out).as_posix() not in prefixes and not any(folder.iterdir()):
            folder.rmdir()
    missing = []
    for d in sorted(wanted):
        try:
            st = os.lstat(out / d)
        except OSError:
            missing.append(d)
            continue
        if not stat.S_ISREG(st.st_mode):
            missing.append(d)
    return missing


def _report_files(out: Path) -> dict[str, bytes]:
    """A failed validation's report files (small), for the executor to lay out under out/."""
    files = {}
    for name in REPORT_FILES:
        with contextlib.suppress(OSError):
            files[name] = (out / name).read_bytes()
    return files


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:  # runs in the child between fork and exec: no Python-level locks here
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
