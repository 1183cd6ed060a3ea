"""The store room: the Store protocol every cache implements, and opening one.

``local.py`` is the cache on this machine's disk. A step's result is an action entry (step
key → output digests, duration, log, key material) plus the blobs it names; a store makes
every entry visible only after its blobs, and never two builders run one key at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from .local import ActionEntry, LocalStore, atomic_write, link_or_copy

__all__ = ["ActionEntry", "LocalStore", "Store", "atomic_write", "link_or_copy", "open_store"]


class Store(Protocol):
    """What the planner, the executors and materialization need of a cache."""

    root: Path

    def has(self, key: str) -> bool: ...

    def lookup(self, key: str) -> ActionEntry | None: ...

    def complete(self, entry: ActionEntry) -> bool: ...

    def commit(self, key: str, step: str, scratch: Path, material: dict[str, Any], duration_s: float,
               log_tail: str) -> ActionEntry: ...

    def tree(self, entry: ActionEntry) -> Path: ...

    def blob_path(self, digest: str) -> Path: ...

    def drop(self, key: str) -> None: ...

    def scratch(self, key: str) -> Path: ...

    def lock(self, key: str) -> Any: ...

    def clean_stale_tmp(self) -> int: ...

    def verify(self) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]: ...

    def gc(self, keep: set[str]) -> dict[str, Any]: ...


def open_store(root: Path) -> Store:
    return LocalStore(root)
