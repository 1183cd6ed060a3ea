"""Python steps for the zygote tests: each is a worker runner (``module:function``) taking a StepContext."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any


def report(ctx: Any) -> None:
    """Writes what the forked process sees: its cwd, env, session and a torch result on every thread."""
    import torch

    torch.manual_seed(0)
    a = torch.randn(256, 256)
    print("to stdout")
    print("to stderr", file=sys.stderr)
    (ctx.out / "seen.txt").write_text("\n".join([
        os.getcwd(), os.environ.get("ZYGOTE_TEST", ""), str(os.getsid(0) == os.getpid()),
        str(os.getpgid(0) == os.getpid()), f"{float((a @ a).sum()):.4f}", str(torch.get_num_threads())]))


def fail(ctx: Any) -> None:
    raise RuntimeError("the step failed on purpose")


def segfault(ctx: Any) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def sleeper(ctx: Any) -> None:
    """Starts a grandchild, writes both pids, then sleeps (the test kills the group)."""
    child = subprocess.Popen(["sleep", "60"])
    (ctx.out / "pids.txt").write_text(f"{os.getpid()} {child.pid}")
    signal.pause()


def temp_dir(ctx: Any) -> None:
    """Writes the temporary folder Python's tempfile hands out in the forked step."""
    import tempfile

    (ctx.out / "seen.txt").write_text(tempfile.gettempdir())
