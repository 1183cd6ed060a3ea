"""Shared fixtures: throwaway projects, and one cache shared by every test (and xdist worker) that only
needs built artifacts — keys are content hashes, so tests in different folders reuse each other's steps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .helpers import REPO, ProjectDir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("QEFFBUILD_CACHE_DIR", None)  # a developer's own cache never leaks into tests
# Every cache a test makes is thrown away after it: no fsync (as dpkg's force-unsafe-io). A killed process's
# writes survive without it (store/local.py), so the kill and corruption tests still test the promises; a
# store test that wants the fsyncs sets this back to "0".
os.environ.setdefault("QEFFBUILD_UNSAFE_NO_FSYNC", "1")


@pytest.fixture
def project(tmp_path: Path) -> ProjectDir:
    return ProjectDir(tmp_path)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the whole run, across xdist workers (per-key locks make them share work), seeded with
    the default targets the README's install already built (``seed_from_checkout``)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    base = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    path = base / "shared-cache"
    path.mkdir(exist_ok=True)
    with FileLock(str(base / "shared-cache.lock")):
        if not (base / "shared-cache.seeded").exists():
            seed_from_checkout(path)
            (base / "shared-cache.seeded").write_text("")
    return path


def seed_from_checkout(cache: Path) -> int:
    """The README's install ends with ``qeffbuild build``: the checked-in manifests' default targets, built
    into this checkout's out/.cache. Tests build those same steps again in their own projects (keys are
    content hashes, whatever the folder), so their entries are copied into this run's cache first — each
    blob hashed on the way in, the store's own import — and the family fixtures find them built. Only the
    default targets' entries are taken (a developer's cache may hold more); none is written back.
    QEFFBUILD_TEST_NO_SEED=1 starts from an empty cache. Returns how many entries were copied."""
    import shutil

    from qeffbuild.api import Project
    from qeffbuild.store import LocalStore

    src_root = REPO / "out" / ".cache"
    if os.environ.get("QEFFBUILD_TEST_NO_SEED") or not (src_root / "ac").is_dir():
        return 0
    keys = {s.key for s in Project(manifests=[REPO / "manifests"], out_dir=REPO / "out",
                                   cache_dir=src_root).plan(with_reasons=False).steps}
    src, dst = LocalStore(src_root), LocalStore(cache)
    dst.ensure_layout()
    copied = 0
    for key in sorted(keys):
        entry = src.lookup(key)
        if entry is None or dst.has(key):
            continue
        for digest in {d for d in entry.outputs.values() if not dst.blob_path(d).exists()}:
            tmp = dst.tmp / f"seed-{digest}"
            shutil.copyfile(src.blob_path(digest), tmp)
            if not dst.import_blob(tmp, digest, "seed"):
                break  # a rotten blob in the checkout's cache: this step is built here instead
        else:
            dst.import_entry(entry)
            copied += 1
    return copied
