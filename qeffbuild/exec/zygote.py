"""A warm parent for Python steps: it imports the heavy libraries once, then forks one child per step.

Every Python step still runs in a process of its own — its own session and process group, its log
as stdout and stderr, killed with its group, its exit code reported — exactly as a spawned
``python -m qeffbuild.exec.worker`` would. What it saves is the import: torch, transformers, onnx and
onnxruntime take ~3.5 s of CPU per process on a 2-core machine, more than most steps of a small model
spend working (half the CPU of a cold build of the default targets). The zygote only imports; it
never runs an operator, so no thread pool of torch or ONNX Runtime exists when it forks (the same
reason PyTorch's DataLoader can fork workers).

Protocol: the executor holds one end of a ``SOCK_SEQPACKET`` socket pair; the zygote the other.
Each step sends one message — its JSON request and two descriptors: a fresh socket for that step's
replies and the file its output goes to. The zygote forks, replies ``{"pid"}``, and when the child
exits ``{"code"}`` (negative: killed by that signal, as ``Popen.returncode``). If the zygote cannot
start or dies, :class:`Zygote` says so and the runner spawns steps the plain way.

``QEFFBUILD_ZYGOTE=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

ENV = "QEFFBUILD_ZYGOTE"
# What a step of any built-in family imports before it does anything; a module missing here (an
# optional extra not installed) is skipped, and the step imports what it needs itself.
PRELOAD = ("numpy", "torch", "torch.export", "transformers", "transformers.modeling_utils",
           "transformers.generation.utils", "onnx", "onnxruntime", "onnxscript", "torch.onnx",
           "soundfile", "qeffbuild.exec.worker", "qeffbuild.pipeline.torchutil")
_MSG = 1 << 20


def enabled() -> bool:
    return os.environ.get(ENV, "1") not in ("0", "false", "no", "off")


class ZygoteProcess:
    """A step forked by the zygote, with the part of ``Popen``'s interface the runner uses."""

    def __init__(self, conn: socket.socket, pid: int, stdout: Any = None) -> None:
        self.conn, self.pid, self.stdout = conn, pid, stdout
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is not None:
            return self.returncode
        self.conn.settimeout(timeout)
        try:
            data = self.conn.recv(_MSG)
        except (TimeoutError, BlockingIOError):
            raise subprocess.TimeoutExpired("zygote step", timeout or 0) from None
        # an empty read: the zygote died (it takes its children with it); report a kill, as Popen would
        self.returncode = int(json.loads(data)["code"]) if data else -signal.SIGKILL
        self.conn.close()
        return self.returncode

    def poll(self) -> int | None:
        """The exit code once :meth:`wait` has seen it (only the step's own thread reads the socket)."""
        return self.returncode


class Zygote:
    """The executor's side: starts the zygote on first use (in the background) and forks steps through it."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self.broken = False

    def start(self) -> None:
        """Start the zygote now (from the executor's main thread: it dies with the thread that started
        it), so it imports while the first steps are being laid out."""
        with self._lock:
            self.ensure_layout()

    def spawn(self, request: str, cwd: str, env: dict[str, str], log_fd: int,
              stdout: Any = None) -> ZygoteProcess | None:
        """Fork a worker for ``request`` with ``log_fd`` as its stdout and stderr; None if the zygote
        cannot (the caller spawns the plain way)."""
        with self._lock:
            sock = self.ensure_layout()
            if sock is None:
                return None
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                message = json.dumps({"request": request, "cwd": cwd, "env": env}).encode()
                socket.send_fds(sock, [message], [theirs.fileno(), log_fd])
            except OSError:
                mine.close()
                self._fail()
                return None
            finally:
                theirs.close()
        data = mine.recv(_MSG)  # the pid, once forked (the zygote imported everything before it first answers)
        if not data:
            mine.close()
            with self._lock:
                self._fail()
            return None
        return ZygoteProcess(mine, int(json.loads(data)["pid"]), stdout)

    def ensure_layout(self) -> socket.socket | None:
        if self.broken:
            return None
        if self._sock is None:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                from .runner import step_env

                # the steps' environment from the start: OpenMP reads its settings when torch loads it, here
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "qeffbuild.exec.zygote", str(theirs.fileno())], pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=step_env(),
                    start_new_session=True, preexec_fn=_die_with_parent)
            except OSError:
                ours.close()
                self.broken = True
                return None
            finally:
                theirs.close()
            self._sock = ours
        return self._sock

    def _fail(self) -> None:
        self.broken = True
        self.close()

    def close(self) -> None:
        """Stop the zygote (its running children are the runner's to kill; they have their own sessions)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


def _die_with_parent() -> None:  # between fork and exec: no Python-level locks here
    from .runner import _die_with_parent as die

    die()


# --- the zygote process --------------------------------------------------------------------------

def serve(fd: int) -> None:
    import importlib

    for name in PRELOAD:
        with contextlib.suppress(Exception):  # an optional library not installed: the step imports it
            importlib.import_module(name)
    control = socket.socket(fileno=fd)
    sel = selectors.DefaultSelector()
    sel.register(control, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    while True:
        for key, _ in sel.select(timeout=0.05):
            if key.fileobj is not control:
                continue
            try:
                message, fds, _flags, _addr = socket.recv_fds(control, _MSG, 2)
            except OSError:
                message = b""
            if not message:  # the executor is gone or done: leave; children run in their own sessions
                return
            reply, log_fd = socket.socket(fileno=fds[0]), fds[1]
            pid = os.fork()
            if pid == 0:
                sel.close()
                _child(json.loads(message), log_fd, [control, *children.values(), reply])
            os.close(log_fd)
            with contextlib.suppress(OSError):
                reply.send(json.dumps({"pid": pid}).encode())
            children[pid] = reply
        _reap(children)


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        reply = children.pop(pid, None)
        if reply is not None:
            code = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):
                reply.send(json.dumps({"code": code}).encode())
            reply.close()


def _child(message: dict[str, Any], log_fd: int, inherited: list[socket.socket]) -> None:
    """In the forked child: become the step's own process, as ``python -m qeffbuild.exec.worker`` would be."""
    code = 1
    try:
        for s in inherited[:-1]:
            s.close()
        os.setsid()  # its own session and process group: the runner kills the whole group
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(null)
        os.close(log_fd)
        inherited[-1].close()
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # PYTHONUNBUFFERED's effect
        os.chdir(message["cwd"])
        os.environ.clear()
        os.environ.update(message["env"])
        import tempfile

        tempfile.tempdir = None  # the zygote's cached temporary folder: the step's TMPDIR (runner.step_temp) wins
        from .worker import main

        code = main(message["request"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
