"""The store room: the Store protocol every cache implements, and opening one.

``local.py`` is the cache on this machine's disk. A step's result is an action entry (step
key → output digests, the digests it consumed, duration, log, key material) plus the blobs it
names; a store makes every entry visible only after its blobs, serves no blob it has not
checked, and never lets two builders run one key at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from ..core.statcache import StatCache, StateDB
from .local import ActionEntry, CorruptEntry, LocalStore, atomic_write, clone_file, link_or_copy

__all__ = ["ActionEntry", "CorruptEntry", "LocalStore", "Store", "atomic_write", "clone_file", "link_or_copy",
           "open_store"]


class Store(Protocol):
    """What the planner, the executors and materialization need of a cache."""

    root: Path
    state: StateDB
    stat: StatCache
    notes: list[str]
    corrupt: set[str]

    def has(self, key: str) -> bool: ...

    def lookup(self, key: str) -> ActionEntry | None: ...

    def complete(self, entry: ActionEntry) -> bool: ...

    checked: set[str]

    def verified(self, entry: ActionEntry, full: bool = False) -> bool: ...

    def verify_blob(self, digest: str, full: bool = False) -> bool: ...

    def commit(self, key: str, step: str, scratch: Path, material: dict[str, Any], duration_s: float,
               log_tail: str, consumed: tuple[str, ...] = ()) -> ActionEntry: ...

    def tree(self, entry: ActionEntry) -> Path: ...

    def blob_path(self, digest: str) -> Path: ...

    def drop(self, key: str) -> None: ...

    def scratch(self, key: str) -> Path: ...

    def lock(self, key: str) -> Any: ...

    def shared(self) -> AbstractContextManager[None]: ...

    def exclusive(self) -> AbstractContextManager[None]: ...

    def clean_stale_tmp(self) -> int: ...

    def ensure_writable(self, what: str) -> None: ...

    def record_root(self, owner: str, keys: set[str]) -> None: ...

    def root_keys(self) -> dict[str, set[str]]: ...

    def entries(self) -> Iterator[ActionEntry]: ...

    def verify(self) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]: ...

    def gc(self, keep: set[str], dry_run: bool = False, other_projects: bool = True) -> dict[str, Any]: ...


def open_store(root: Path) -> Store:
    return LocalStore(root)
