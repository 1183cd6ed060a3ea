"""The step runner's own guarantees, without a build around it."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from qeffbuild.core.progress import Reporter
from qeffbuild.exec.runner import StepRunner

from ..helpers import HANG_S, alive


def test_a_stop_kills_a_running_step_and_its_children_even_one_kill_all_missed(tmp_path: Path) -> None:
    """A stop set while a step runs ends the step within the runner's wait, with no kill_all after it: its
    process group is killed, the shell and the process it started in the background both gone."""
    stop = threading.Event()
    runner = StepRunner(store=None, reporter=Reporter(quiet=True), stop=stop)  # type: ignore[arg-type]
    pids = tmp_path / "pids.txt"
    got: dict[str, Any] = {}

    def run() -> None:
        got["code"] = runner._spawn("s", ["sh", "-c", f"sleep 60 & echo $$ $! > {pids}; wait"], tmp_path,
                                    dict(os.environ), tmp_path / "log.txt")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + HANG_S  # only a hang ends the waits
    while not pids.exists() or len(pids.read_text().split()) < 2:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    shell, sleeper = map(int, pids.read_text().split())
    stop.set()
    thread.join(HANG_S)
    assert not thread.is_alive() and got["code"] == -signal.SIGKILL, got
    while (alive(shell) or alive(sleeper)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(shell) and not alive(sleeper)
