"""The step runner's own guarantees, without a build around it."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

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
                                    dict(os.environ), tmp_path)

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


def _started_group(tmp_path: Path) -> tuple[Any, int, int]:
    """A shell in its own process group with a sleeper it started in the background: (Popen, shell, sleeper)."""
    import subprocess

    pids = tmp_path / "pids.txt"
    proc = subprocess.Popen(["sh", "-c", f"sleep 60 & echo $$ $! > {pids}; wait"], start_new_session=True)
    deadline = time.monotonic() + HANG_S
    while not pids.exists() or len(pids.read_text().split()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    shell, sleeper = map(int, pids.read_text().split())
    return proc, shell, sleeper


def test_a_step_left_running_by_a_killed_worker_is_ended_from_its_recorded_group(tmp_path: Path) -> None:
    """A spawned step records its process group in its scratch folder. Its worker killed (the shell gone with it,
    as PDEATHSIG does), what the shell started in the background still runs in that group: the driver's
    clean-up (kill_recorded_group) ends it."""
    from qeffbuild.exec.runner import GROUP_FILE, _record_group, kill_recorded_group, recorded_run

    proc, shell, sleeper = _started_group(tmp_path)
    _record_group(tmp_path, proc.pid, "run-1")
    assert (tmp_path / GROUP_FILE).read_text().split()[0] == str(proc.pid) == str(shell)
    assert recorded_run(tmp_path) == "run-1"
    os.kill(shell, signal.SIGKILL)
    proc.wait()  # the leader reaped: its pid stays the group's while the sleeper lives
    assert alive(sleeper)
    assert kill_recorded_group(tmp_path)
    deadline = time.monotonic() + HANG_S
    while alive(sleeper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(sleeper)


def test_a_recorded_group_whose_leader_pid_is_another_process_now_is_left_alone(tmp_path: Path) -> None:
    """A group id names a living leader with another start time: the pid was reused, the group is not ours."""
    from qeffbuild.exec.runner import GROUP_FILE, _start_ticks, kill_recorded_group

    proc, shell, sleeper = _started_group(tmp_path)
    try:
        started = _start_ticks(proc.pid)
        assert started is not None
        (tmp_path / GROUP_FILE).write_text(f"{proc.pid} {started + 1} -")
        assert not kill_recorded_group(tmp_path)
        time.sleep(0.2)
        assert alive(shell) and alive(sleeper)
        (tmp_path / GROUP_FILE).write_text("not a group")
        assert not kill_recorded_group(tmp_path)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_the_runner_records_a_steps_group_in_its_scratch_folder(tmp_path: Path) -> None:
    """What the step sees of its scratch folder: the group file names its own process group."""
    from qeffbuild.exec.runner import GROUP_FILE

    runner = StepRunner(store=None, reporter=Reporter(quiet=True), stop=threading.Event())  # type: ignore[arg-type]
    seen = tmp_path / "seen.txt"
    # the file is written just after the spawn: the step waits for it, up to HANG_S
    code = runner._spawn("s", ["sh", "-c", f"i=0; while [ ! -s {tmp_path / GROUP_FILE} ] && [ $i -lt "
                                           f"{int(HANG_S * 20)} ]; do sleep 0.05; i=$((i+1)); done; "
                                           f"echo $(ps -o pgid= $$) > {seen}"],
                         tmp_path, dict(os.environ), tmp_path, run_id="try-7")
    assert code == 0
    pgid, _started, run = (tmp_path / GROUP_FILE).read_text().split()
    assert pgid == seen.read_text().strip() and run == "try-7"


def test_a_step_runs_with_the_users_openmp_wait_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A validation times its runtimes in a step: OpenMP waits as in the user's own process (the policy the user
    set, or libgomp's default), never forced passive, which halved an AOTInductor package's measured speed."""
    from qeffbuild.exec.runner import step_env

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert "OMP_WAIT_POLICY" not in step_env()
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert step_env()["OMP_WAIT_POLICY"] == "PASSIVE"
