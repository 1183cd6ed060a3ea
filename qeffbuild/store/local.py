"""The local store: content-addressed blobs plus an action cache from step key to result.

Layout under the cache root::

    cas/ab/<digest>        blobs, read-only, named by their blake3
    ac/ab/<key>.json       action entries: outputs, duration, log tail, key material
    trees/<key>/...        an entry's outputs laid out by name (hard links into cas/)
    locks/ab/<key>.lock    per-key locks: concurrent builds never run one step twice
    state.sqlite           file digests by stat, and each step's last key (core/statcache.py)
    tmp/                   scratch folders and half-written files; never read as results
    quarantine/            blobs whose content no longer matched their digest

Every write is temp file → flush → fsync → rename, and an action entry is written only
after every blob it names, so a killed build never leaves a visible half-entry.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.hashing import digest_file
from ..errors import StoreError


@dataclass(frozen=True)
class ActionEntry:
    key: str
    step: str
    outputs: dict[str, str]  # relative path -> blob digest
    duration_s: float
    log_tail: str
    material: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "step": self.step,
            "outputs": self.outputs,
            "duration_s": self.duration_s,
            "log_tail": self.log_tail,
            "material": self.material,
            "created": time.time(),
        }


def atomic_write(path: Path, data: bytes, tmp_dir: Path) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"w-{uuid.uuid4().hex}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (copy when they are on different devices)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class LocalStore:
    """A cache root on disk. Cheap to construct: folders are made on first write."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cas = root / "cas"
        self.ac = root / "ac"
        self.trees = root / "trees"
        self.locks = root / "locks"
        self.history = root / "history"
        self.tmp = root / "tmp"
        self.quarantine = root / "quarantine"

    # --- paths -----------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.cas / digest[:2] / digest

    def entry_path(self, key: str) -> Path:
        return self.ac / key[:2] / f"{key}.json"

    def _ensure(self) -> None:
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the cache at {self.root}: {e}; set QEFFBUILD_CACHE_DIR "
                             "or --cache-dir to a writable folder") from e

    # --- action cache ------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return self.entry_path(key).exists()

    def lookup(self, key: str) -> ActionEntry | None:
        try:
            data = json.loads(self.entry_path(key).read_bytes())
        except (OSError, ValueError):
            return None
        return ActionEntry(data["key"], data["step"], data["outputs"], data["duration_s"],
                           data.get("log_tail", ""), data["material"])

    def complete(self, entry: ActionEntry) -> bool:
        """Whether every blob the entry names is present."""
        return all(self.blob_path(d).exists() for d in entry.outputs.values())

    def drop(self, key: str) -> None:
        """Forget an action entry (its blobs stay until gc)."""
        self.entry_path(key).unlink(missing_ok=True)
        shutil.rmtree(self.trees / key, ignore_errors=True)

    def commit(self, key: str, step: str, scratch: Path, material: dict[str, Any],
               duration_s: float, log_tail: str) -> ActionEntry:
        """Move a finished step's outputs into the store and then, last, write its entry."""
        self._ensure()
        outputs: dict[str, str] = {}
        for path in sorted(_files_under(scratch)):
            rel = path.relative_to(scratch).as_posix()
            outputs[rel] = self._put_blob(path)
        entry = ActionEntry(key, step, outputs, round(duration_s, 3), log_tail, material)
        data = json.dumps(entry.to_json(), indent=1, sort_keys=True).encode()
        atomic_write(self.entry_path(key), data, self.tmp)
        return entry

    def _put_blob(self, path: Path) -> str:
        digest = digest_file(path)
        dst = self.blob_path(digest)
        if dst.exists():
            return digest
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(path, 0o444)  # blobs are shared by hard links: never edit one in place
        os.replace(path, dst)
        return digest

    # --- trees: an entry's outputs by name ----------------------------------------------------
    def tree(self, entry: ActionEntry) -> Path:
        """A folder with the entry's outputs under their names (hard links into cas/)."""
        final = self.trees / entry.key
        if final.exists():
            return final
        self._ensure()
        staging = self.tmp / f"tree-{entry.key[:16]}-{uuid.uuid4().hex[:8]}"
        for rel, digest in entry.outputs.items():
            link_or_copy(self.blob_path(digest), staging / rel)
        staging.mkdir(parents=True, exist_ok=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staging, final)
        except OSError:  # another build made it first
            shutil.rmtree(staging, ignore_errors=True)
        return final

    # --- scratch, locks, history ---------------------------------------------------------
    def scratch(self, key: str) -> Path:
        self._ensure()
        path = self.tmp / f"run-{key[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def lock(self, key: str) -> Any:
        from filelock import FileLock

        path = self.locks / key[:2] / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(path)

    def clean_stale_tmp(self) -> int:
        """Remove scratch left by builds whose process is gone (killed with SIGKILL)."""
        removed = 0
        if not self.tmp.is_dir():
            return 0
        for p in self.tmp.iterdir():
            parts = p.name.split("-")
            pid = int(parts[2]) if p.name.startswith("run-") and len(parts) > 2 and parts[2].isdigit() else None
            if pid is not None and _alive(pid):
                continue
            if pid is None and time.time() - p.stat().st_mtime < 3600:
                continue  # a write of a live build; stale ones go after an hour
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed += 1
        return removed

    # --- maintenance -----------------------------------------------------------------------
    def entries(self) -> Iterator[ActionEntry]:
        if not self.ac.is_dir():
            return
        for p in sorted(self.ac.glob("*/*.json")):
            e = self.lookup(p.stem)
            if e is not None:
                yield e

    def verify(self) -> dict[str, Any]:
        """Re-hash every blob; quarantine mismatches and drop the entries that name them."""
        bad: list[str] = []
        checked = 0
        if self.cas.is_dir():
            for blob in sorted(self.cas.glob("*/*")):
                checked += 1
                if digest_file(blob) != blob.name:
                    self.quarantine.mkdir(parents=True, exist_ok=True)
                    os.replace(blob, self.quarantine / f"{blob.name}.{int(time.time())}")
                    bad.append(blob.name)
        dropped: list[str] = []
        for e in list(self.entries()):
            if not self.complete(e):
                self.drop(e.key)
                dropped.append(e.step)
        return {"blobs_checked": checked, "corrupt_blobs": bad, "entries_dropped": sorted(dropped)}

    def stats(self) -> dict[str, Any]:
        entries = list(self.entries())
        blobs = list(self.cas.glob("*/*")) if self.cas.is_dir() else []
        return {
            "root": str(self.root),
            "entries": len(entries),
            "blobs": len(blobs),
            "bytes": sum(b.stat().st_size for b in blobs),
            "quarantined": len(list(self.quarantine.iterdir())) if self.quarantine.is_dir() else 0,
        }

    def gc(self, keep: set[str]) -> dict[str, Any]:
        """Drop entries whose key is not in ``keep``, then blobs no entry names."""
        dropped = 0
        live: set[str] = set()
        for e in list(self.entries()):
            if e.key in keep:
                live.update(e.outputs.values())
            else:
                self.drop(e.key)
                dropped += 1
        freed = 0
        removed = 0
        for blob in list(self.cas.glob("*/*")) if self.cas.is_dir() else []:
            if blob.name not in live:
                freed += blob.stat().st_size
                blob.unlink()
                removed += 1
        for tree in list(self.trees.iterdir()) if self.trees.is_dir() else []:
            if tree.name not in keep:
                shutil.rmtree(tree, ignore_errors=True)
        self.clean_stale_tmp()
        return {"entries_dropped": dropped, "blobs_removed": removed, "bytes_freed": freed}


def _files_under(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            yield Path(dirpath) / name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
