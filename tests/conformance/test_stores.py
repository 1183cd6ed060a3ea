"""Store conformance: every Store implementation keeps the same promises.

Entries appear only after their blobs; identical outputs share one blob; a lookup of what was
never committed is a miss; trees lay outputs out by name; gc keeps live keys; verify finds and
quarantines corrupt blobs; concurrent commits of one key leave one intact entry.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from qeffbuild.core.hashing import digest_bytes, digest_json
from qeffbuild.store import LocalStore, Store

FACTORIES: dict[str, Callable[[Path], Store]] = {"local": LocalStore}


@pytest.fixture(params=sorted(FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return FACTORIES[request.param](tmp_path / "cache")


MATERIAL = {digest_json(m): m for m in ({"kind": "t", "n": n} for n in (1, 2, 3))}  # a key hashes its material
KEY1, KEY2, KEY3 = MATERIAL


def commit(store: Store, key: str, files: dict[str, bytes]) -> None:
    scratch = store.scratch(key)
    for rel, data in files.items():
        (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
        (scratch / rel).write_bytes(data)
    store.commit(key, f"step:{key}", scratch, MATERIAL[key], 0.1, "log")


def test_commit_then_lookup_and_tree(store: Store) -> None:
    assert store.lookup(KEY1) is None and not store.has(KEY1)
    commit(store, KEY1, {"a.txt": b"A", "sub/b.txt": b"B"})
    entry = store.lookup(KEY1)
    assert entry is not None and store.has(KEY1) and store.complete(entry)
    assert entry.outputs == {"a.txt": digest_bytes(b"A"), "sub/b.txt": digest_bytes(b"B")}
    tree = store.tree(entry)
    assert (tree / "sub" / "b.txt").read_bytes() == b"B" and (tree / "a.txt").read_bytes() == b"A"


def test_identical_outputs_share_one_blob(store: Store) -> None:
    commit(store, KEY1, {"x": b"same"})
    commit(store, KEY2, {"y": b"same"})
    stats = store.maintenance.stats()
    assert stats["blobs"] == 1 and stats["entries"] == 2


def test_gc_keeps_only_live_keys(store: Store) -> None:
    commit(store, KEY1, {"a": b"1"})
    commit(store, KEY2, {"b": b"2"})
    result = store.maintenance.gc({KEY1})
    assert result["entries_dropped"] == 1 and result["blobs_removed"] == 1
    assert store.lookup(KEY1) is not None and store.lookup(KEY2) is None


def test_verify_quarantines_a_corrupt_blob_and_drops_its_entries(store: Store) -> None:
    commit(store, KEY1, {"g": b"good"})
    commit(store, KEY2, {"b": b"bad"})
    blob = store.blob_path(digest_bytes(b"bad"))
    os.chmod(blob, 0o644)
    blob.write_bytes(b"rotten")
    report = store.maintenance.verify()
    assert report["corrupt_blobs"] == [digest_bytes(b"bad")]
    assert report["entries_dropped"] == [f"step:{KEY2}"]
    assert store.lookup(KEY2) is None and store.lookup(KEY1) is not None


def test_concurrent_commits_of_one_key_leave_one_intact_entry(store: Store) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            commit(store, KEY3, {"out.bin": b"payload" * 1000})
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    entry = store.lookup(KEY3)
    assert entry is not None and store.complete(entry)
    assert (store.tree(entry) / "out.bin").read_bytes() == b"payload" * 1000
