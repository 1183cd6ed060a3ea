"""The store's promises, one by one: outputs that are links, hostile entries, read-only caches, full
disks, signals, shared caches and gc, and artifacts that would unpickle."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qeffbuild.store.local import CorruptEntry, parse_entry

from ..helpers import HANG_S, ProjectDir, alive

ONE = """
[project]
name = "p"

[steps.s]
cmd = ["sh", "-c", %s]
outputs = ["o.txt"]
"""


def _one(project: ProjectDir, script: str) -> None:
    project.manifest(ONE % json.dumps(script))


def _unshare_ok() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-Urm", "true"], capture_output=True).returncode == 0


namespaces = pytest.mark.skipif(not _unshare_ok(), reason="needs user and mount namespaces (unshare -Urm)")


def test_a_symlink_output_is_refused_and_nothing_outside_is_stored(project: ProjectDir, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("outside\n")
    _one(project, f"ln -s {secret} o.txt")
    res = project.cli("build")
    assert res.code == 1 and "did not write o.txt as regular files" in res.err
    assert "Traceback" not in res.err
    assert not list((project.root / "out" / ".cache").glob("cas/*/*"))


def test_a_hard_link_output_is_stored_as_a_copy(project: ProjectDir, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("shared bytes\n")
    outside.chmod(0o644)
    _one(project, f"ln {outside} o.txt")
    assert project.cli("build").code == 0
    assert oct(outside.stat().st_mode & 0o777) == "0o644"  # not made read-only through the link
    outside.write_text("changed later\n")  # the build's result must not change with it
    assert (project.root / "out" / "s" / "o.txt").read_text() == "shared bytes\n"
    assert project.cli("build", "--json").json()["counts"] == {"cached": 1}
    assert (project.root / "out" / "s" / "o.txt").read_text() == "shared bytes\n"


def test_a_symlinked_output_folder_is_refused(project: ProjectDir, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "o.txt").write_text("x\n")
    project.manifest('[project]\nname = "p"\n[steps.s]\ncmd = ["sh", "-c", "ln -s %s d"]\noutputs = ["d/o.txt"]\n'
                     % (tmp_path / "elsewhere"))
    res = project.cli("build")
    assert res.code == 1 and "Traceback" not in res.err and "regular files" in res.err


@pytest.mark.parametrize("outputs", [
    {"../../escape.txt": "a" * 64}, {"/etc/passwd": "a" * 64}, {"a/./b": "a" * 64}, {"ok.txt": "../" + "a" * 61},
    {"ok.txt": "A" * 64}, [], {"": "a" * 64}, {"a\\b": "a" * 64},
])
def test_hostile_entries_do_not_parse(outputs: object) -> None:
    data = {"key": "f" * 64, "step": "s", "outputs": outputs, "duration_s": 1.0, "log_tail": "", "material": {}}
    with pytest.raises(CorruptEntry):
        parse_entry(data, "f" * 64)
    with pytest.raises(CorruptEntry, match="not its own"):
        parse_entry({**data, "outputs": {}}, "e" * 64)


def test_a_traversal_entry_writes_nothing_outside(project: ProjectDir, tmp_path: Path) -> None:
    _one(project, "echo hi > o.txt")
    assert project.cli("build").code == 0
    entry = next((project.root / "out" / ".cache").glob("ac/*/*.json"))
    data = json.loads(entry.read_text())
    data["outputs"] = {"../../../../escape.txt": next(iter(data["outputs"].values()))}
    entry.write_text(json.dumps(data))
    shutil.rmtree(project.root / "out" / "s")
    res = project.cli("build", "--json")
    assert res.code == 0 and res.json()["counts"] == {"built": 1}
    assert any("was corrupt" in n for n in res.json()["notes"])
    assert not list(tmp_path.rglob("escape.txt"))
    assert (project.root / "out" / "s" / "o.txt").read_text() == "hi\n"
    assert project.cli("cache", "verify").code == 0


def _in_namespace(project: ProjectDir, setup: str, *args: str) -> subprocess.CompletedProcess[str]:
    cli = " ".join([sys.executable, "-m", "qeffbuild", *args])
    return subprocess.run(["unshare", "-Urm", "sh", "-c", f"{setup} && cd {project.root} && {cli}"],
                          capture_output=True, text=True, timeout=HANG_S, env={**os.environ, "QEFFBUILD_DEBUG": ""})


@namespaces
def test_a_read_only_cache_serves_a_fully_cached_build(project: ProjectDir) -> None:
    _one(project, "echo hi > o.txt")
    assert project.cli("build").code == 0
    cache = project.root / "out" / ".cache"
    shutil.rmtree(project.root / "out" / "s")
    ro = f"mount --bind {cache} {cache} && mount -o remount,ro,bind {cache} {cache}"
    res = _in_namespace(project, ro, "build")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert (project.root / "out" / "s" / "o.txt").read_text() == "hi\n"
    _one(project, "echo changed > o.txt")  # now a step must run: a clear error, not a traceback
    res = _in_namespace(project, ro, "build")
    assert res.returncode == 1 and "read-only" in res.stderr and "QEFFBUILD_CACHE_DIR" in res.stderr
    assert "Traceback" not in res.stderr


@namespaces
@pytest.mark.parametrize("full", ["cache", "out"])
def test_a_full_disk_is_a_clear_error_and_leaves_nothing_half_written(project: ProjectDir, tmp_path: Path,
                                                                       full: str) -> None:
    small = tmp_path / "small"
    small.mkdir()
    other = tmp_path / "other"
    _one(project, "head -c 3000000 /dev/urandom > o.txt")
    cache, out = (small, other) if full == "cache" else (other, small)
    setup = f"mount -t tmpfs -o size=1m tmpfs {small}"
    res = _in_namespace(project, setup, "--cache-dir", str(cache), "--out-dir", str(out), "build")
    assert res.returncode == 1, res.stderr
    assert "no space left on the device" in res.stderr and "Traceback" not in res.stderr
    leftovers = [p.name for p in out.glob(".staging-*")] if out.exists() else []
    assert leftovers == []


def test_stopping_kills_a_steps_grandchildren_and_a_second_signal_exits_130(project: ProjectDir) -> None:
    marker = project.root / "child.pid"
    _one(project, f"sleep 60 & echo $! > {marker}; touch {project.root}/started; wait")
    for signals in ([signal.SIGINT], [signal.SIGTERM, signal.SIGTERM]):
        marker.unlink(missing_ok=True)
        (project.root / "started").unlink(missing_ok=True)
        proc = project.popen("build", start_new_session=True)
        deadline = time.monotonic() + HANG_S  # only a hang ends the wait
        while not (project.root / "started").exists():
            assert time.monotonic() < deadline, "the step never started"
            time.sleep(0.05)
        for sig in signals:
            os.kill(proc.pid, sig)
            time.sleep(0.05)
        _out, err = proc.communicate(timeout=HANG_S)
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        child = int(marker.read_text())
        deadline = time.monotonic() + HANG_S  # only a hang ends the wait
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child), "the step's background process outlived the build"



def test_gc_keeps_what_other_projects_sharing_the_cache_need(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    a, b = ProjectDir(tmp_path / "a", {"QEFFBUILD_CACHE_DIR": str(cache)}), \
        ProjectDir(tmp_path / "b", {"QEFFBUILD_CACHE_DIR": str(cache)})
    a.manifest(ONE % json.dumps("echo A > o.txt"))
    b.manifest(ONE % json.dumps("echo B > o.txt"))
    assert a.cli("build").code == 0 and b.cli("build").code == 0
    dry = a.cli("cache", "gc", "--dry-run").json()
    assert dry["entries_dropped"] == 0 and dry["kept_for_other_projects"] == 1
    assert a.cli("cache", "gc").json()["entries_dropped"] == 0
    assert b.cli("build", "--json").json()["counts"] == {"cached": 1}
    assert a.cli("cache", "gc", "--drop-other-projects", "--dry-run").json()["entries_dropped"] == 1
    assert b.cli("build", "--json").json()["counts"] == {"cached": 1}  # the dry run dropped nothing
    assert a.cli("cache", "gc", "--drop-other-projects").json()["entries_dropped"] == 1
    assert b.cli("build", "--json").json()["counts"] == {"built": 1}


def test_staging_left_by_a_killed_build_is_swept(project: ProjectDir) -> None:
    _one(project, "echo hi > o.txt")
    out = project.root / "out"
    (out / ".staging-999999999-abcd-s").mkdir(parents=True)
    (out / ".old-999999999-abcd-s").mkdir()
    assert project.cli("build").code == 0
    assert not list(out.glob(".staging-*")) and not list(out.glob(".old-*"))


def test_a_program_that_would_unpickle_is_refused(tmp_path: Path) -> None:
    import io
    import pickle
    import zipfile

    import torch
    from torch._export.serde.schema import SCHEMA_VERSION
    from torch._export.serde.serialize import serialize

    from qeffbuild.errors import ModelLoadError
    from qeffbuild.pipeline.torchutil import load_program

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    buf = io.BytesIO()
    pickle.dump(Payload(), buf)
    art = serialize(torch.export.export(torch.nn.Linear(2, 2), (torch.randn(1, 2),)))
    path = tmp_path / "program.pt2"
    with zipfile.ZipFile(path, "w") as z:  # the older archive format, whose loader falls back to unpickling
        z.writestr("version", ".".join(map(str, SCHEMA_VERSION)))
        z.writestr("serialized_exported_program.json", art.exported_program)
        z.writestr("serialized_state_dict.pt", buf.getvalue())
        z.writestr("serialized_constants.pt", art.constants)
        z.writestr("serialized_example_inputs.pt", art.example_inputs)
    with pytest.raises(ModelLoadError, match=r"cannot be loaded as a torch\.export program without unpickling"):
        load_program(path)
    assert not marker.exists()
    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(torch.nn.Linear(2, 2), (torch.randn(1, 2),)), good)
    assert load_program(good).module()(torch.ones(1, 2)).shape == (1, 2)


LIE = """
[project]
name = "lie"

[steps.a]
cmd = ["sh", "-c", "echo a > a.txt"]
outputs = ["a.txt"]

[steps.b]
cmd = ["sh", "-c", "echo b > b.txt"]
outputs = ["b.txt"]

[steps.clock]
cmd = ["sh", "-c", "date +%s%N > t.txt"]
outputs = ["t.txt"]
"""


def _entry_of(cache: Path, step: str) -> Path:
    return next(p for p in cache.glob("ac/*/*.json") if json.loads(p.read_text())["step"] == step)


def test_a_lying_entry_is_found_by_verify_rebuild_and_never_served_again(project: ProjectDir, tmp_path: Path) -> None:
    """b's entry edited to name a's (valid) blob: verify --rebuild reruns b, sees the lie, drops the entry; a
    clock step is named not reproducible. An entry whose key material was edited is refused at lookup."""
    project.manifest(LIE)
    assert project.cli("build").code == 0
    cache = project.root / "out" / ".cache"
    a, b = (json.loads(_entry_of(cache, f"command:{n}").read_text()) for n in "ab")
    path = _entry_of(cache, "command:b")
    path.chmod(0o644)
    path.write_text(json.dumps({**b, "outputs": {"b.txt": a["outputs"]["a.txt"]}}))
    res = project.cli("cache", "verify", "--rebuild")
    assert res.code == 1
    report = res.json()["rebuild"]
    assert report["wrong_entries"] == ["command:b"] and report["nondeterministic"] == ["command:clock"]
    row = next(r for r in report["steps"] if r["step"] == "command:b")
    assert row["files"]["b.txt"]["cached"] == a["outputs"]["a.txt"] and row["files"]["b.txt"]["rebuilt"] == \
        b["outputs"]["b.txt"]
    fresh = project.cli("build", "--out-dir", str(tmp_path / "fresh"), "--cache-dir", str(cache), "b")
    assert fresh.code == 0 and (tmp_path / "fresh" / "b" / "b.txt").read_text() == "b\n"
    # key material edited (another command), outputs kept: the key no longer hashes its material
    path = _entry_of(cache, "command:a")
    entry = json.loads(path.read_text())
    entry["material"]["params"]["cmd"] = ["sh", "-c", "echo evil > a.txt"]
    path.chmod(0o644)
    path.write_text(json.dumps(entry))
    res = project.cli("build", "a", "--json")
    assert res.json()["steps"]["command:a"]["status"] == "built"
    assert any("key material does not hash to its key" in n for n in res.json()["notes"])
    assert project.cli("build").code == 0
    sample = project.cli("cache", "verify", "--rebuild", "--sample", "0.34", "--seed", "1").json()["rebuild"]
    assert sample["checked"] == 1 and sample["cached_steps"] == 3


def test_media_rot_is_caught_where_bytes_leave_the_store(project: ProjectDir, tmp_path: Path) -> None:
    """One byte flipped in a blob with its size, mtime and inode kept (a failing disk): a build into a fresh out
    dir hashes what it hands out, quarantines the blob, rebuilds the step and serves the right bytes."""
    project.manifest(LIE)
    assert project.cli("build", "b").code == 0
    cache = project.root / "out" / ".cache"
    from ..chaos.harness import rot_in_place

    digest = json.loads(_entry_of(cache, "command:b").read_text())["outputs"]["b.txt"]
    blob = cache / "cas" / digest[:2] / digest
    st = blob.stat()
    rot_in_place(cache, blob, random.Random(0))  # the stat cache's row matches the rotten blob's stat
    assert blob.stat().st_ino == st.st_ino and blob.stat().st_size == st.st_size
    assert project.cli("build", "b", "--json").json()["steps"]["command:b"]["status"] == "cached"  # out/ is intact
    res = project.cli("build", "b", "--out-dir", str(tmp_path / "fresh"), "--cache-dir", str(cache), "--json")
    assert res.code == 0, res.err
    assert res.json()["steps"]["command:b"]["status"] == "built"  # rebuilt, not served
    assert (tmp_path / "fresh" / "b" / "b.txt").read_text() == "b\n"
    assert list((cache / "quarantine" / "blobs").iterdir())
