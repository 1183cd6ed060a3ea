"""The zygote forks Python steps with the heavy libraries imported; each must behave as a spawned worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qeffbuild.exec.zygote import Zygote

from ..helpers import HANG_S, REPO, alive


@pytest.fixture
def zygote(monkeypatch: pytest.MonkeyPatch) -> Iterator[Zygote]:
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the zygote imports the test steps from this checkout
    z = Zygote()
    z.start()
    yield z
    z.close()


def _request(tmp: Path, runner: str) -> tuple[Path, Path]:
    out = tmp / "out"
    out.mkdir(parents=True)
    req = tmp / "request.json"
    req.write_text(json.dumps({"node_id": "t", "runner": f"tests.exec.zygote_steps:{runner}", "params": {},
                               "inputs": {}, "files": {}, "out": str(out), "root": None}))
    return req, out


def _run(zygote: Zygote, tmp: Path, runner: str) -> tuple[int, Path, str]:
    req, out = _request(tmp, runner)
    with open(tmp / "log.txt", "wb") as log:
        proc = zygote.spawn(str(req), str(tmp), {**os.environ, "ZYGOTE_TEST": "yes"}, log.fileno())
        assert proc is not None
        code = proc.wait(HANG_S)
    return code, out, (tmp / "log.txt").read_text()


def test_a_forked_step_sees_its_own_cwd_env_session_and_log(zygote: Zygote, tmp_path: Path) -> None:
    code, out, log = _run(zygote, tmp_path, "report")
    assert code == 0, log
    cwd, env, leads_session, leads_group, total, threads = (out / "seen.txt").read_text().splitlines()
    assert (cwd, env, leads_session, leads_group) == (str(tmp_path), "yes", "True", "True")
    assert "to stdout" in log and "to stderr" in log
    spawned = subprocess.run([sys.executable, "-c", "import torch; torch.manual_seed(0); a = torch.randn(256, 256); "
                              "print(f'{float((a @ a).sum()):.4f}', torch.get_num_threads())"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert [total, threads] == spawned  # the same numbers and thread pool as a fresh process


def test_failures_and_signals_come_back_as_a_spawned_worker_reports_them(zygote: Zygote, tmp_path: Path) -> None:
    code, _out, log = _run(zygote, tmp_path / "fail", "fail")
    assert code == 1 and "the step failed on purpose" in (tmp_path / "fail" / "failure.txt").read_text()
    code, _out, log = _run(zygote, tmp_path / "segv", "segfault")
    assert code == -signal.SIGSEGV and "Fatal Python error" in log  # faulthandler's traceback is in the log


def test_killing_the_group_kills_the_step_and_its_children(zygote: Zygote, tmp_path: Path) -> None:
    req, out = _request(tmp_path, "sleeper")
    with open(tmp_path / "log.txt", "wb") as log:
        proc = zygote.spawn(str(req), str(tmp_path), dict(os.environ), log.fileno())
    assert proc is not None
    deadline = time.monotonic() + HANG_S  # only a hang ends the wait
    while not (out / "pids.txt").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    step, grandchild = map(int, (out / "pids.txt").read_text().split())
    assert step == proc.pid
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(HANG_S) == -signal.SIGKILL
    deadline = time.monotonic() + HANG_S
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)


def test_a_dead_zygote_means_spawn_the_plain_way(zygote: Zygote, tmp_path: Path) -> None:
    assert zygote._proc is not None
    zygote._proc.kill()
    zygote._proc.wait()
    req, _out = _request(tmp_path, "report")
    with open(tmp_path / "log.txt", "wb") as log:
        assert zygote.spawn(str(req), str(tmp_path), dict(os.environ), log.fileno()) is None
    assert zygote.broken


def test_a_forked_step_takes_its_own_temporary_folder(zygote: Zygote, tmp_path: Path) -> None:
    """The zygote imported torch, which made tempfile cache /tmp; a forked step still gets the TMPDIR it was given
    (the runner points it into the step's scratch folder, removed with it)."""
    req, out = _request(tmp_path, "temp_dir")
    mine = tmp_path / "steptmp"
    mine.mkdir()
    with open(tmp_path / "log.txt", "wb") as log:
        proc = zygote.spawn(str(req), str(tmp_path), {**os.environ, "TMPDIR": str(mine)}, log.fileno())
        assert proc is not None
        assert proc.wait(HANG_S) == 0, (tmp_path / "log.txt").read_text()
    assert (out / "seen.txt").read_text() == str(mine)
