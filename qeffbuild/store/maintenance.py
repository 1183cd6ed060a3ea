"""Whole-cache maintenance (``qeffbuild cache gc|verify|stats``) and the projects' roots gc keeps.

Separate from :class:`~qeffbuild.store.local.LocalStore`'s step-level promises (lookup, commit, serve), which
a build uses on every step: these walk every entry and blob, hold the store lock alone (never beside a
build) and are reached through ``store.maintenance``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.hashing import digest_file
from ..errors import StoreError
from .local import HEX64, ActionEntry, atomic_write

if TYPE_CHECKING:
    from .local import LocalStore


class Maintenance:
    """gc, verify and stats over one local cache, and the record of which keys each project needs."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store

    # --- roots: what each project sharing this cache needs ------------------------------------------
    def record_root(self, owner: str, keys: set[str]) -> None:
        """Remember that the project writing to ``owner`` (its out folder) needs ``keys`` (for gc)."""
        from ..core.hashing import digest_json

        path = self.store.roots / f"{digest_json(owner)[:32]}.json"
        try:
            old = json.loads(path.read_bytes())
            if isinstance(old, dict) and set(old.get("keys", [])) == keys and old.get("owner") == owner:
                return
        except (OSError, ValueError):
            pass
        try:
            self.store.ensure_layout()
            data = json.dumps({"owner": owner, "keys": sorted(keys), "time": time.time()}).encode()
            atomic_write(path, data, self.store.tmp)
        except (OSError, StoreError) as e:
            self.store.notes.append(f"could not record this project's keys in {self.store.roots} ({e}); `cache gc` "
                                    "from another project sharing the cache may collect them")

    def root_keys(self) -> dict[str, set[str]]:
        """owner → keys, for every project that recorded its keys and whose out folder still exists."""
        out: dict[str, set[str]] = {}
        if not self.store.roots.is_dir():
            return out
        for path in self.store.roots.glob("*.json"):
            try:
                data = json.loads(path.read_bytes())
                owner, keys = data["owner"], data["keys"]
                if not isinstance(owner, str) or not all(isinstance(k, str) and HEX64.fullmatch(k) for k in keys):
                    raise ValueError("wrong shape")
            except (OSError, ValueError, KeyError, TypeError):
                self.store.quarantine_file(path, "roots")
                self.store.notes.append(f"{path.name} in {self.store.roots} was corrupt; moved it to quarantine")
                continue
            if Path(owner).exists():
                out[owner] = set(keys)
        return out

    # --- maintenance -----------------------------------------------------------------------
    def entry_keys(self) -> list[str]:
        if not self.store.ac.is_dir():
            return []
        return sorted(p.stem for p in self.store.ac.glob("*/*.json") if HEX64.fullmatch(p.stem))

    def entries(self) -> Iterator[ActionEntry]:
        for key in self.entry_keys():
            e = self.store.lookup(key)
            if e is not None:
                yield e

    def verify(self) -> dict[str, Any]:
        """Re-hash every blob; quarantine mismatches, malformed entries and what consumed bad blobs.

        An entry is dropped when a blob it names or a blob it consumed is gone or corrupt, and so
        is every entry downstream of it (built from what may have been wrong bytes).
        """
        with self.store.exclusive():
            bad: set[str] = set()
            checked = 0
            for blob in sorted(self.store.cas.glob("*/*")) if self.store.cas.is_dir() else []:
                checked += 1
                if not HEX64.fullmatch(blob.name) or digest_file(blob) != blob.name:
                    self.store.quarantine_file(blob, "blobs")
                    bad.add(blob.name)
                else:
                    self.store.stat.record(blob, blob.name)
            ac = self.store.ac
            strays = [p for p in ac.glob("*/*") if not HEX64.fullmatch(p.stem)] if ac.is_dir() else []
            for p in strays:
                self.store.quarantine_file(p, "entries")
            entries = list(self.entries())  # malformed ones are quarantined on the way
            dropped = self._drop_tainted(entries, bad)
            shutil.rmtree(self.store.trees, ignore_errors=True)  # rebuilt from verified blobs on demand
            self.store.stat.flush()
            return {"blobs_checked": checked, "corrupt_blobs": sorted(bad), "entries_dropped": sorted(dropped),
                    "quarantined_entries": len(strays) + sum("cache entry" in n for n in self.store.notes),
                    "notes": list(self.store.notes)}

    def _drop_tainted(self, entries: list[ActionEntry], bad: set[str]) -> list[str]:
        dropped: list[str] = []
        remaining = list(entries)
        changed = True
        while changed:
            changed = False
            for e in list(remaining):
                missing = any(not self.store.blob_path(d).exists() for d in e.outputs.values())
                if missing or bad.intersection(e.outputs.values()) or bad.intersection(e.consumed):
                    self.store.drop(e.key)
                    dropped.append(e.step)
                    remaining.remove(e)
                    bad.update(e.outputs.values())  # what it made may be wrong: its consumers go too
                    changed = True
        return dropped

    def stats(self) -> dict[str, Any]:
        blobs = list(self.store.cas.glob("*/*")) if self.store.cas.is_dir() else []
        return {
            "root": str(self.store.root),
            "entries": len(self.entry_keys()),
            "blobs": len(blobs),
            "bytes": sum(b.stat().st_size for b in blobs),
            "quarantined": len(list(self.store.quarantine.rglob("*"))) if self.store.quarantine.is_dir() else 0,
            "projects": sorted(self.root_keys()),
        }

    def gc(self, keep: set[str], dry_run: bool = False, other_projects: bool = True) -> dict[str, Any]:
        """Drop entries whose key is not in ``keep`` (nor, with ``other_projects``, in another project's
        recorded roots), then blobs no entry names, then every per-key lock file (no build runs beside gc).
        Holds the store lock alone: never beside a build. A cache that cannot be written is refused before
        anything is dropped."""
        if not dry_run:
            self.store.ensure_writable("collect garbage in")
        with self.store.exclusive():
            kept_for_others = set().union(*self.root_keys().values()) if other_projects else set()
            live_keys = keep | kept_for_others
            dropped = 0
            live: set[str] = set()
            for e in list(self.entries()):
                if e.key in live_keys:
                    live.update(e.outputs.values())
                else:
                    dropped += 1
                    if not dry_run:
                        self.store.drop(e.key)
            freed = removed = 0
            for blob in list(self.store.cas.glob("*/*")) if self.store.cas.is_dir() else []:
                if blob.name not in live:
                    freed += blob.stat().st_size
                    removed += 1
                    if not dry_run:
                        blob.unlink()
            if not dry_run:
                for tree in list(self.store.trees.iterdir()) if self.store.trees.is_dir() else []:
                    if tree.name not in live_keys:
                        shutil.rmtree(tree, ignore_errors=True)
                self.store.clean_stale_tmp()
                for lock in list(self.store.locks.glob("*/*.lock")) if self.store.locks.is_dir() else []:
                    lock.unlink(missing_ok=True)  # per-key locks: builds hold the store lock, so none is in use
            return {"entries_dropped": dropped, "blobs_removed": removed, "bytes_freed": freed, "dry_run": dry_run,
                    "kept_for_other_projects": len(kept_for_others - keep)}
