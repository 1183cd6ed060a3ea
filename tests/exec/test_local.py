"""Building command steps: caching, failures, kill -9, Ctrl-C, concurrency, materialization."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from ..helpers import HANG_S, ProjectDir

TWO_STEPS = """
[project]
name = "t"

[steps.gen]
cmd = ["sh", "-c", "echo run >> {root}/gen.count; echo hello > hello.txt"]
outputs = ["hello.txt"]

[steps.upper]
cmd = ["sh", "-c", "tr a-z A-Z < {dep:gen}/hello.txt > up.txt && cat {root}/in.txt >> up.txt"]
inputs = ["in.txt"]
outputs = ["up.txt"]
deps = ["gen"]
"""


def _two(project: ProjectDir) -> None:
    project.manifest(TWO_STEPS)
    project.write("manifests/in.txt", "data\n")


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_build_materializes_outputs_with_provenance(project: ProjectDir) -> None:
    _two(project)
    res = project.cli("build", "upper", "--json")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert data["counts"] == {"built": 2}
    out = project.root / "out" / "upper"
    assert (out / "up.txt").read_text() == "HELLO\ndata\n"
    prov = json.loads((out / "provenance.json").read_text())
    assert [s["id"] for s in prov["steps"]] == ["command:gen", "command:upper"]
    assert all(str(project.root) not in json.dumps(s["material"]) for s in prov["steps"])  # no absolute paths


def test_noop_rebuild_runs_nothing(project: ProjectDir) -> None:
    _two(project)
    assert project.cli("build").code == 0
    res = project.cli("build", "--json")
    assert json.loads(res.out)["counts"] == {"cached": 2}
    assert _lines(project.root / "manifests" / "gen.count") == 1


def test_changed_input_reruns_only_dependents(project: ProjectDir) -> None:
    _two(project)
    project.cli("build")
    project.write("manifests/in.txt", "new\n")
    res = project.cli("build", "--json")
    assert json.loads(res.out)["steps"]["command:upper"]["status"] == "built"
    assert json.loads(res.out)["steps"]["command:gen"]["status"] == "cached"
    assert (project.root / "out" / "upper" / "up.txt").read_text() == "HELLO\nnew\n"


def test_failed_step_exits_1_with_its_log_and_skips_dependents(project: ProjectDir) -> None:
    project.manifest("""
        [project]
        name = "t"
        [steps.bad]
        cmd = ["sh", "-c", "echo 'compiler says no' >&2; exit 3"]
        outputs = ["x"]
        [steps.after]
        cmd = ["sh", "-c", "cp {dep:bad}/x y"]
        outputs = ["y"]
        deps = ["bad"]
        [steps.other]
        cmd = ["sh", "-c", "echo ok > z"]
        outputs = ["z"]
    """)
    res = project.cli("build", "--keep-going", "--json")
    assert res.code == 1
    steps = json.loads(res.out)["steps"]
    assert steps["command:bad"]["status"] == "failed"
    assert "exit code 3" in steps["command:bad"]["message"]
    assert "compiler says no" in steps["command:bad"]["message"]
    assert steps["command:after"]["status"] == "skipped"
    assert steps["command:other"]["status"] == "built"  # --keep-going builds what does not depend on it
    human = project.cli("build", "after")
    assert human.code == 1 and "compiler says no" in human.err and "Traceback" not in human.err


def test_missing_declared_output_is_a_clear_failure(project: ProjectDir) -> None:
    project.manifest('[project]\nname = "t"\n[steps.s]\ncmd = ["true"]\noutputs = ["result.bin"]\n')
    res = project.cli("build")
    assert res.code == 1
    assert "did not write result.bin" in res.err


def test_unknown_command_is_reported(project: ProjectDir) -> None:
    project.manifest('[project]\nname = "t"\n[steps.s]\ncmd = ["no-such-tool-xyz"]\noutputs = ["o"]\n')
    res = project.cli("build")
    assert res.code == 1 and "cannot start 'no-such-tool-xyz'" in res.err


def test_unknown_target_suggests_a_name(project: ProjectDir) -> None:
    _two(project)
    res = project.cli("build", "uper")
    assert res.code == 2 and "did you mean 'upper'?" in res.err


SLOW = """
[project]
name = "t"

[steps.fast]
cmd = ["sh", "-c", "echo fast > f.txt"]
outputs = ["f.txt"]

[steps.slow]
cmd = ["sh", "-c", "echo run >> {root}/slow.count; touch {root}/slow.started; sleep %s; echo slow > s.txt"]
outputs = ["s.txt"]
"""


def _wait_for(path: Path, timeout: float = HANG_S) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _cache_tmp_is_empty(project: ProjectDir) -> bool:
    tmp = project.root / "out" / ".cache" / "tmp"
    return not tmp.exists() or not any(tmp.iterdir())


def test_sigkill_mid_step_leaves_no_half_entry_and_next_build_resumes(project: ProjectDir) -> None:
    project.manifest(SLOW % "30")
    assert project.cli("build", "fast").code == 0
    proc = project.popen("build", "fast", "slow", start_new_session=True)
    _wait_for(project.root / "manifests" / "slow.started")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    res = project.cli("plan", "--json")
    plan = {s["id"]: s["action"] for s in json.loads(res.out)["steps"]}
    assert plan == {"command:fast": "cached", "command:slow": "run"}  # no visible half-entry
    assert not (project.root / "out" / "slow").exists()
    project.manifest(SLOW % "0")
    res = project.cli("build", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["counts"] == {"built": 1, "cached": 1}
    assert _cache_tmp_is_empty(project)  # the killed build's scratch was cleaned up


def test_ctrl_c_stops_cleanly_and_the_next_build_resumes(project: ProjectDir) -> None:
    project.manifest(SLOW % "30")
    proc = project.popen("build", start_new_session=True)
    _wait_for(project.root / "manifests" / "slow.started")
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert _cache_tmp_is_empty(project)
    project.manifest(SLOW % "0")
    res = project.cli("build", "--json")
    assert res.code == 0
    assert json.loads(res.out)["steps"]["command:slow"]["status"] == "built"


def test_two_concurrent_builds_run_each_step_once(project: ProjectDir) -> None:
    project.manifest(SLOW % "2")
    first = project.popen("build", "slow")
    second = project.popen("build", "slow")
    assert first.wait(60) == 0 and second.wait(60) == 0, (first.stderr.read(), second.stderr.read())  # type: ignore[union-attr]
    assert _lines(project.root / "manifests" / "slow.count") == 1
    assert (project.root / "out" / "slow" / "s.txt").read_text() == "slow\n"


def test_an_edit_under_out_never_reaches_the_store_and_is_restored(project: ProjectDir) -> None:
    _two(project)
    assert project.cli("build").code == 0
    out_file = project.root / "out" / "upper" / "up.txt"
    out_file.write_text("tampered\n")  # a copy, not the blob: the store is untouched
    assert project.cli("cache", "verify").code == 0
    res = project.cli("build", "--json")
    assert res.code == 0 and res.json()["counts"] == {"cached": 2}
    assert "restored files changed or removed under out/ for: upper" in res.json()["notes"]
    assert out_file.read_text() == "HELLO\ndata\n"


def test_corrupt_blob_is_found_by_verify_and_rebuilt(project: ProjectDir) -> None:
    _two(project)
    assert project.cli("build").code == 0
    cas = project.root / "out" / ".cache" / "cas"
    blob = next(b for b in cas.glob("*/*") if b.read_bytes() == b"HELLO\ndata\n")
    blob.chmod(0o644)
    blob.write_text("rotten!!!!!\n")
    res = project.cli("cache", "verify")
    assert res.code == 1
    assert res.json()["entries_dropped"] == ["command:upper"]
    res = project.cli("build", "--json")
    assert res.code == 0
    assert res.json()["steps"]["command:upper"]["status"] == "built"
    assert (project.root / "out" / "upper" / "up.txt").read_text() == "HELLO\ndata\n"
    assert project.cli("cache", "verify").code == 0


def test_cache_dir_is_relocatable_by_env_and_keeps_hits(project: ProjectDir, tmp_path: Path) -> None:
    _two(project)
    cache = tmp_path / "elsewhere-cache"
    env = {"QEFFBUILD_CACHE_DIR": str(cache)}
    assert project.cli("build", env=env).code == 0
    assert (cache / "ac").is_dir() and not (project.root / "out" / ".cache").exists()
    moved = tmp_path / "moved-cache"
    cache.rename(moved)
    res = project.cli("--cache-dir", str(moved), "build", "--json")
    assert json.loads(res.out)["counts"] == {"cached": 2}


def test_a_failure_beside_a_slow_success_is_reported_not_a_crash(project: ProjectDir) -> None:
    """a fails, b (slow) succeeds, c needs both: c is skipped, a's message is shown, exit 1."""
    project.manifest("""
        [project]
        name = "t"
        [steps.a]
        cmd = ["sh", "-c", "echo 'a says no' >&2; exit 1"]
        outputs = ["o"]
        [steps.b]
        cmd = ["sh", "-c", "sleep 1; echo b > o"]
        outputs = ["o"]
        [steps.c]
        cmd = ["sh", "-c", "cat {dep:a}/o {dep:b}/o > o"]
        outputs = ["o"]
        deps = ["a", "b"]
    """)
    for args in ((), ("-j1", "-k"), ("-j2",), ("-k",)):
        res = project.cli("build", "c", *args, "--json")
        assert res.code == 1, res.err
        steps = res.json()["steps"]
        assert steps["command:a"]["status"] == "failed" and "a says no" in steps["command:a"]["message"]
        assert steps["command:c"]["status"] == "skipped"
        assert "Traceback" not in res.err


def test_an_exclusive_step_runs_with_no_other_step_beside_it(project: ProjectDir) -> None:
    """A step that times what it runs (`exclusive = true`; every validation is one) starts once the steps beside
    it have ended, and none starts while it runs: at -j3 the timing step sees no busy marker of the others."""
    busy = "mkdir -p {root}/busy; touch {root}/busy/$0; sleep 1; rm {root}/busy/$0; echo done > o"
    project.manifest(f"""
        [project]
        name = "t"
        [steps.a]
        cmd = ["sh", "-c", "{busy}", "a"]
        outputs = ["o"]
        [steps.b]
        cmd = ["sh", "-c", "{busy}", "b"]
        outputs = ["o"]
        [steps.timed]
        cmd = ["sh", "-c", "mkdir -p {{root}}/busy; ls {{root}}/busy > seen.txt"]
        outputs = ["seen.txt"]
        exclusive = true
    """)
    res = project.cli("build", "-j3", "--json")
    assert res.code == 0, res.err
    assert res.json()["counts"] == {"built": 3}
    assert (project.root / "out" / "timed" / "seen.txt").read_text() == ""


def test_the_scheduler_keeps_exclusive_steps_alone() -> None:
    """The policy itself: shared steps fill the free slots; an exclusive one waits for every running step and for
    the shared ready ones, then starts alone; nothing starts beside a running exclusive step."""
    from types import SimpleNamespace
    from typing import cast

    from qeffbuild.exec.local import LocalExecutor

    todo = {sid: SimpleNamespace(node=SimpleNamespace(exclusive=sid.startswith("x")), heavy=sid.startswith("h"))
            for sid in ("a", "b", "c", "x1", "x2", "h1", "h2")}

    def startable(ready: list[str], running: list[str], jobs: int = 2) -> list[str]:
        executor = cast(LocalExecutor, SimpleNamespace(jobs=jobs, _is_heavy=lambda step: step.heavy))
        return LocalExecutor._startable(executor, {sid: set() for sid in ready},
                                        {cast(Any, i): sid for i, sid in enumerate(running)}, cast(Any, todo))

    assert startable(["a", "b", "c", "x1"], []) == ["a", "b"]
    assert startable(["c", "x1"], ["a"]) == ["c"]
    assert startable(["x1", "x2"], ["a"]) == []  # waits for a to end
    assert startable(["x2", "x1"], []) == ["x1"]  # alone, one at a time
    assert startable(["a", "x2"], ["x1"]) == []  # nothing beside it
    assert startable(["a"], ["b", "c"]) == []  # no free slot
    # a heavy step (inputs large against the machine's memory) also runs alone, but ahead of the light ones
    assert startable(["a", "b", "h1"], []) == ["h1"]
    assert startable(["a", "h1"], ["b"]) == []  # waits for b to end, and nothing new starts meanwhile
    assert startable(["a", "h2"], ["h1"]) == []  # nothing beside it
    assert startable(["h2", "h1"], []) == ["h1"]  # one at a time


def test_steps_whose_inputs_are_large_against_memory_run_one_at_a_time(project: ProjectDir,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two steps reading a 1 MB input on a machine said to have 4 MB (so the input is over 1/8 of its memory) never
    run side by side at -j 2, as two passes over a 5 GB model must not on 24 GB; the same build on a machine with
    memory to spare runs them together."""
    from qeffbuild.core.progress import Reporter
    from qeffbuild.exec import local

    # each step leaves its mark and waits (up to 10 s) for the other's: side by side both see two; one at a time,
    # the first (h1) sees only itself
    busy = ("d={root}/busy-$RUN; mkdir -p $d; touch $d/$0; i=0; while [ $(ls $d | wc -l) -lt 2 ] && [ $i -lt 200 ]; "
            "do sleep 0.05; i=$((i+1)); done; ls $d > seen.txt")
    project.manifest(f"""
        [project]
        name = "heavy"
        [steps.gen]
        cmd = ["sh", "-c", "head -c 1048576 /dev/zero > big"]
        outputs = ["big"]
        [steps.h1]
        cmd = ["sh", "-c", "{busy}", "h1"]
        outputs = ["seen.txt"]
        deps = ["gen"]
        [steps.h2]
        cmd = ["sh", "-c", "{busy}", "h2"]
        outputs = ["seen.txt"]
        deps = ["gen"]
    """)
    seen = {}
    for memory in (4 << 20, 1 << 40):
        monkeypatch.setattr(local, "memory_bytes", lambda m=memory: m)
        monkeypatch.setenv("RUN", str(memory))
        result = project.api().build(["h1", "h2"], jobs=2, force=("h1", "h2"), reporter=Reporter(quiet=True))
        assert {result.steps[f"command:{h}"]["status"] for h in ("h1", "h2")} == {"built"}
        seen[memory] = sorted((project.root / "out" / h / "seen.txt").read_text().split() for h in ("h1", "h2"))
    assert seen[4 << 20] == [["h1"], ["h1", "h2"]]  # h1 ran alone; h2 found its mark afterwards
    assert seen[1 << 40] == [["h1", "h2"], ["h1", "h2"]]  # side by side


def test_a_steps_temporary_files_go_with_its_scratch_folder(project: ProjectDir) -> None:
    """A step's TMPDIR lies in its scratch folder on the cache's disk and is removed with it: what a library leaves
    there (AOTInductor's extracted package at each load, 3.3 GB for a large model, which a worker ending with
    os._exit never removed) does not pile up in /tmp."""
    project.manifest("""
[project]
name = "tmp"

[steps.t]
cmd = ["sh", "-c", "echo $TMPDIR > where.txt; echo left > $TMPDIR/left.txt"]
outputs = ["where.txt"]
""")
    assert project.cli("build", "t").code == 0
    where = Path((project.root / "out" / "t" / "where.txt").read_text().strip())
    assert (project.root / "out" / ".cache") in where.parents
    assert not where.exists()


def test_an_unexpected_error_fails_only_its_step(project: ProjectDir, monkeypatch: pytest.MonkeyPatch) -> None:
    from qeffbuild.core.progress import Reporter
    from qeffbuild.exec.runner import StepRunner

    project.manifest(TWO_STEPS.replace('inputs = ["in.txt"]\n', "") + """
[steps.solo]
cmd = ["sh", "-c", "echo solo > s.txt"]
outputs = ["s.txt"]
""")
    real = StepRunner._inputs

    def broken(self: StepRunner, job: Any) -> Any:
        if "command:gen" in job.node.deps.values():
            raise RuntimeError("the dependency tree exploded")
        return real(self, job)

    monkeypatch.setattr(StepRunner, "_inputs", broken)
    stopped: list[bool] = []

    class Watch(Reporter):
        def stop(self) -> None:
            stopped.append(True)

    result = project.api().build(["upper", "solo"], keep_going=True, reporter=Watch(quiet=True))
    assert result.steps["command:upper"]["status"] == "failed"
    assert result.steps["command:upper"]["message"].startswith("RuntimeError: the dependency tree exploded")
    assert result.steps["command:solo"]["status"] == "built" and result.steps["command:gen"]["status"] == "built"
    assert stopped == [True]


def test_step_progress_reaches_both_reporters(tmp_path: Path) -> None:
    """A worker's progress file becomes a line (plain) or a bar with an ETA (terminal)."""
    import io

    from qeffbuild.core.progress import Reporter, RichReporter
    from qeffbuild.exec.progress import StepProgress, read

    stream = io.StringIO()
    plain = Reporter(stream)
    plain.step_progress("validate:v", 3, 10, "decodes")  # the first report prints
    plain.step_progress("validate:v", 4, 10, "decodes")  # within 15 s: quiet
    plain.step_progress("validate:v", 10, 10, "decodes")  # the last always prints
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("  validate:v: 3/10 decodes") and lines[-1].startswith("  validate:v: 10/10 decodes")
    assert len(lines) == 2

    rich = RichReporter(io.StringIO())
    rich.start(2)
    rich.step_started("validate:v")
    rich.step_progress("validate:v", 5, 10, "decodes", "onnxruntime b4")
    assert rich.progress.tasks[1].completed == 5 and rich.progress.tasks[1].total == 10
    rich.step_finished("validate:v", "built", 1.0)
    assert len(rich.progress.tasks) == 1  # the step's own bar goes when it ends
    rich.stop()

    import os

    os.environ["QEFFBUILD_PROGRESS"] = str(tmp_path / "p.json")
    try:
        sp = StepProgress(4, "decodes")
        sp.advance(4, "done")
    finally:
        del os.environ["QEFFBUILD_PROGRESS"]
    assert read(tmp_path / "p.json") == {"done": 4, "total": 4, "unit": "decodes", "what": "done"}


def test_the_api_reports_progress_to_a_callback_and_to_logging(project: ProjectDir,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """Project.build is not silent for minutes: each step reaches `progress` and the `qeffbuild` logger."""
    import logging

    project.manifest("""
        [project]
        name = "p"
        [steps.a]
        cmd = ["sh", "-c", "echo a > a.txt"]
        outputs = ["a.txt"]
        [steps.b]
        cmd = ["sh", "-c", "cat {dep:a}/a.txt > b.txt"]
        outputs = ["b.txt"]
        deps = ["a"]
    """)
    events: list[dict[str, object]] = []
    with caplog.at_level(logging.INFO, logger="qeffbuild"):
        result = project.api().build(["b"], progress=events.append)
    assert result.ok
    assert events[0] == {"event": "start", "total": 2}
    finished = [e for e in events if e["event"] == "step_finished"]
    assert [(e["step"], e["status"], e["done"]) for e in finished] == [("command:a", "built", 1),
                                                                       ("command:b", "built", 2)]
    assert any("[2/2] built command:b" in r.getMessage() for r in caplog.records)


def test_a_step_the_out_of_memory_killer_ended_says_so(project: ProjectDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step killed by SIGKILL while the kernel's out-of-memory count rose is reported as the machine running out of
    memory, with the fix; a SIGKILL with the count unchanged is not blamed on memory. (The count is faked: a test
    run must not cause a real out-of-memory kill. Two 5 GB ONNX passes side by side on 24 GB were one.)"""
    from qeffbuild.core.progress import Reporter
    from qeffbuild.exec import runner

    project.manifest("""
[project]
name = "oom"

[steps.boom]
cmd = ["sh", "-c", "kill -9 $$"]
outputs = ["x.txt"]
""")
    counts = iter(range(5, 100))
    monkeypatch.setattr(runner, "oom_kills", lambda: next(counts))
    message = project.api().build(["boom"], reporter=Reporter(quiet=True)).steps["command:boom"]["message"]
    assert message.startswith("killed by signal 9")
    assert "out-of-memory killer ended a process while this step ran (/proc/vmstat oom_kill 5 → 6)" in message
    assert "Run fewer steps at once (-j 1)" in message
    monkeypatch.setattr(runner, "oom_kills", lambda: 7)
    message = project.api().build(["boom"], reporter=Reporter(quiet=True)).steps["command:boom"]["message"]
    assert message.startswith("killed by signal 9") and "out-of-memory" not in message
