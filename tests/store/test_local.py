"""The local store specifically: hard links, read-only blobs, torn entries, stale scratch (the rest: conformance)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qeffbuild.core.hashing import digest_bytes, digest_json
from qeffbuild.store import LocalStore as Store


def _commit(store: Store, name: str, files: dict[str, bytes]) -> str:
    material = {"kind": "t", "name": name}
    key = digest_json(material)  # a key is the hash of its material (lookups check it)
    scratch = store.scratch(key)
    for rel, data in files.items():
        (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
        (scratch / rel).write_bytes(data)
    store.commit(key, f"step:{name}", scratch, material, 0.1, "log")
    return key


def test_commit_then_lookup_and_tree(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    key = _commit(store, "k1", {"a.txt": b"A", "sub/b.txt": b"B"})
    entry = store.lookup(key)
    assert entry is not None
    assert entry.outputs == {"a.txt": digest_bytes(b"A"), "sub/b.txt": digest_bytes(b"B")}
    tree = store.tree(entry)
    assert (tree / "sub" / "b.txt").read_bytes() == b"B"
    blob = store.blob_path(entry.outputs["a.txt"])
    assert os.stat(blob).st_ino == os.stat(tree / "a.txt").st_ino  # a hard link, not a copy
    assert not os.access(blob, os.W_OK) or os.geteuid() == 0  # read-only (root can still write)
    assert oct(blob.stat().st_mode & 0o777) == "0o444"


def test_missing_entry_and_unreadable_entry_are_misses(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.lookup("nope") is None
    path = store.entry_path("torn")
    path.parent.mkdir(parents=True)
    path.write_text("{ half a json")
    assert store.lookup("torn") is None


def test_stale_scratch_of_a_dead_build_is_removed(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.tmp.mkdir(parents=True)
    dead = store.tmp / "run-999999999-abcdef-1234"  # no such pid
    dead.mkdir()
    live = store.scratch("k")  # this process: alive
    (store.tmp / "x").write_text("a command wrote ../../x from its output folder")
    assert store.clean_stale_tmp() == 2
    assert not dead.exists() and live.exists() and not (store.tmp / "x").exists()


def test_a_zombie_owns_no_scratch_and_a_cancelled_steps_scratch_is_awaited(tmp_path: Path) -> None:
    """A killed Ray worker is a zombie until its raylet reaps it: its folder is stale at once. The driver's wait for
    a cancelled step's scratch removes that folder, and leaves another step's, and a live process's, alone."""
    import subprocess

    from qeffbuild.store.local import pid_alive

    child = subprocess.Popen(["true"])
    while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        pass  # exited, not yet reaped: a zombie
    assert not pid_alive(child.pid) and pid_alive(os.getpid())
    store = Store(tmp_path)
    store.tmp.mkdir(parents=True)
    key, other = "a" * 64, "b" * 64
    zombie = store.tmp / f"run-{child.pid}-{key[:16]}-1234"
    zombie.mkdir()
    theirs = store.tmp / f"run-{child.pid}-{other[:16]}-1234"
    theirs.mkdir()
    assert store.clean_scratch_of(key, wait_s=0) == 1
    assert not zombie.exists() and theirs.exists()
    ours = store.scratch(key)  # this process is alive: waited for until the wait ends, then left
    assert store.clean_scratch_of(key, wait_s=0.3) == 0 and ours.exists()
    child.wait()


def test_every_blob_and_entry_is_fsynced_unless_the_cache_is_declared_throwaway(tmp_path: Path,
                                                                              monkeypatch: Any) -> None:
    """A commit fsyncs each blob before its rename and the entry before its own; QEFFBUILD_UNSAFE_NO_FSYNC=1
    (the tests' default, as dpkg's force-unsafe-io) skips them and changes nothing else."""
    import qeffbuild.store.local as local

    synced: list[int] = []
    monkeypatch.setattr(local.os, "fsync", synced.append)
    monkeypatch.setenv(local.UNSAFE_NO_FSYNC, "0")
    store = Store(tmp_path / "cache")
    key = _commit(store, "k1", {"a.txt": b"A", "b.txt": b"B"})
    assert len(synced) >= 3  # two blobs and the entry
    monkeypatch.setenv(local.UNSAFE_NO_FSYNC, "1")
    synced.clear()
    key2 = _commit(store, "k2", {"c.txt": b"C"})
    assert synced == []
    assert store.lookup(key) is not None and store.lookup(key2) is not None
    assert store.tree(store.lookup(key2)).joinpath("c.txt").read_bytes() == b"C"


def test_clean_scratch_of_hands_each_folder_it_removes_to_the_callers_clean_up_first(tmp_path: Path) -> None:
    """The Ray driver ends what a killed worker's step left running (its recorded process group) before the
    folder that records it goes; a live process's folder is neither handed over nor removed."""
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()  # reaped: its pid names no process
    store = Store(tmp_path)
    store.tmp.mkdir(parents=True)
    key = "c" * 64
    dead = store.tmp / f"run-{child.pid}-{key[:16]}-1234"
    (dead / "out").mkdir(parents=True)
    ours = store.scratch(key)
    seen: list[tuple[Path, bool]] = []
    assert store.clean_scratch_of(key, wait_s=0, before_remove=lambda p: seen.append((p, p.exists()))) == 1
    assert seen == [(dead, True)] and not dead.exists() and ours.exists()


def test_a_folder_the_caller_says_has_ended_is_removed_though_its_process_lives(tmp_path: Path) -> None:
    """A Ray driver's own cancelled try (its run id in the folder) is over when Ray says so, even if the worker
    that ran it lingers: removed at once, after the caller's clean-up; another live run's folder is left."""
    store = Store(tmp_path)
    key = "d" * 64
    mine, theirs = store.scratch(key), store.scratch(key)  # both owned by this (live) process
    seen: list[Path] = []
    assert store.clean_scratch_of(key, wait_s=0, before_remove=seen.append, ended=lambda p: p == mine) == 1
    assert seen == [mine] and not mine.exists() and theirs.exists()
