"""The store room: the Store protocol every cache implements, and opening one.

``local.py`` is the cache on this machine's disk. A step's result is an action entry (step
key → output digests, the digests it consumed, duration, log, key material) plus the blobs it
names; a store makes every entry visible only after its blobs, serves no blob it has not
checked, and never lets two builders run one key at once.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from ..core.statcache import StatCache, StateDB
from .local import ActionEntry, CorruptEntry, LocalStore, atomic_write, clone_file, link_or_copy
from .maintenance import Maintenance

__all__ = ["ActionCache", "ActionEntry", "CorruptEntry", "LocalStore", "Maintenance", "Store", "Workspace",
           "atomic_write", "clone_file", "link_or_copy", "open_store"]


class ActionCache(Protocol):
    """Step-level promises, used on every step of a build: look a key up, serve what it names only after
    checking it, commit a result (blobs before the entry), forget one."""

    root: Path
    state: StateDB
    stat: StatCache
    notes: list[str]
    corrupt: set[str]
    checked: set[str]

    def has(self, key: str) -> bool: ...

    def lookup(self, key: str) -> ActionEntry | None: ...

    def complete(self, entry: ActionEntry) -> bool: ...

    def verified(self, entry: ActionEntry, full: bool = False) -> bool: ...

    def verify_blob(self, digest: str, full: bool = False) -> bool: ...

    def commit(self, key: str, step: str, scratch: Path, material: dict[str, Any], duration_s: float,
               log_tail: str, consumed: tuple[str, ...] = ()) -> ActionEntry: ...

    def tree(self, entry: ActionEntry) -> Path: ...

    def blob_path(self, digest: str) -> Path: ...

    def drop(self, key: str) -> None: ...


class Workspace(Protocol):
    """Where builders work beside each other: scratch folders, one builder per key, the store lock that
    builds share and maintenance takes alone."""

    def scratch(self, key: str) -> Path: ...

    def lock(self, key: str) -> Any: ...

    def shared(self) -> AbstractContextManager[None]: ...

    def exclusive(self) -> AbstractContextManager[None]: ...

    def clean_stale_tmp(self) -> int: ...

    def clean_scratch_of(self, key: str, wait_s: float, before_remove: Callable[[Path], object] | None = None,
                         ended: Callable[[Path], bool] | None = None) -> int: ...

    def ensure_writable(self, what: str) -> None: ...


class Store(ActionCache, Workspace, Protocol):
    """A cache: the step-level promises, the builders' workspace, and whole-cache maintenance
    (``store.maintenance``: gc, verify, stats, the projects' roots)."""

    @property
    def maintenance(self) -> Maintenance: ...


def open_store(root: Path) -> Store:
    return LocalStore(root)
