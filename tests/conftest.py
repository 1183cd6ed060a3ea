"""Shared fixtures: throwaway projects, and one cache shared by every test (and xdist worker) that only
needs built artifacts — keys are content hashes, so tests in different folders reuse each other's steps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .helpers import ProjectDir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("QEFFBUILD_CACHE_DIR", None)  # a developer's own cache never leaks into tests


@pytest.fixture
def project(tmp_path: Path) -> ProjectDir:
    return ProjectDir(tmp_path)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the whole run, across xdist workers (per-key locks make them share work)."""
    root = tmp_path_factory.getbasetemp()
    base = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    path = base / "shared-cache"
    path.mkdir(exist_ok=True)
    return path
