"""The stat cache: file digests remembered by (path, size, mtime_ns, inode), in sqlite.

An unchanged file is never read twice: a multi-gigabyte weight file costs one ``stat``
per build. The absolute path is only the lookup key here; it never enters a step key.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from .hashing import digest_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS digests (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, inode INTEGER, digest TEXT
)
"""


class StatCache:
    """Digest lookups through sqlite; new digests are written in one transaction on close."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._conn: sqlite3.Connection | None = None
        self._rows: dict[str, tuple[int, int, int, str]] | None = None
        self._pending: dict[str, tuple[int, int, int, str]] = {}
        self.hashed = 0  # files read this run, for tests and `--json` output

    def _load(self) -> dict[str, tuple[int, int, int, str]]:
        if self._rows is None:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.db_path, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(_SCHEMA)
            rows = self._conn.execute("SELECT path, size, mtime_ns, inode, digest FROM digests")
            self._rows = {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}
        return self._rows

    def digest(self, path: Path) -> str:
        """The file's blake3, re-read only when size, mtime or inode changed."""
        st = os.stat(path)
        key = os.fspath(path)
        rows = self._load()
        hit = rows.get(key)
        if hit is not None and hit[:3] == (st.st_size, st.st_mtime_ns, st.st_ino):
            return hit[3]
        digest = digest_file(path)
        self.hashed += 1
        # A file modified within the mtime granularity of its stat could change again
        # unseen; the inode and size checks plus ns mtimes make that vanishingly rare.
        row = (st.st_size, st.st_mtime_ns, st.st_ino, digest)
        rows[key] = row
        self._pending[key] = row
        return digest

    def close(self) -> None:
        if self._conn is None:
            return
        if self._pending:
            with self._conn:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?)",
                    [(k, *v) for k, v in self._pending.items()],
                )
            self._pending.clear()
        self._conn.close()
        self._conn = None
        self._rows = None
