"""The state database (sqlite): file digests by stat, and the key each step was last built with.

An unchanged file is never read twice: its digest is remembered by (path, size, mtime_ns,
ctime_ns, inode), so a multi-gigabyte weight file costs one ``stat`` per build. ctime is part of
it because nobody can set it: a write that restores the old mtime still changes it. The absolute path
is only the lookup key here; it never enters a step key. The history (step id → key of
its last build) is what ``explain`` compares against.

The database is a cache of facts that can be recomputed: a corrupt or unreadable file is
moved aside and started afresh, and a read-only cache works with an in-memory one.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from .hashing import digest_file

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS file_digests (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER,"
    " ctime_ns INTEGER, inode INTEGER, digest TEXT)",
    "CREATE TABLE IF NOT EXISTS history (ns TEXT, step TEXT, key TEXT, target TEXT, PRIMARY KEY (ns, step))",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER, detail TEXT, updated REAL)",
)
Row = tuple[int, int, int, int, str]


class StateDB:
    """One sqlite connection to ``state.sqlite`` under the cache root, opened on first use."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._conn: sqlite3.Connection | None = None
        self.notes: list[str] = []  # what went wrong and was healed, said once by the caller

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect(self.db_path)
        except sqlite3.DatabaseError as e:  # garbage, a truncated file, a foreign format
            if self.db_path.exists() and os.access(self.db_path.parent, os.W_OK):
                aside = self.db_path.with_name(f"{self.db_path.name}.corrupt-{int(time.time())}")
                os.replace(self.db_path, aside)
                for suffix in ("-wal", "-shm"):
                    Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)
                self.notes.append(f"the state database {self.db_path} was unreadable ({e}); moved it to {aside.name} "
                                  "and started a new one (file digests are recomputed once)")
                try:
                    return self._connect(self.db_path)
                except sqlite3.Error:
                    pass
        except (sqlite3.Error, OSError):
            pass
        self.notes.append(f"the state database {self.db_path} cannot be written; using a temporary one "
                          "(file digests are recomputed on every run)")
        return self._connect(None)

    @staticmethod
    def _connect(path: Path | None) -> sqlite3.Connection:
        if path is None:
            conn = sqlite3.connect(":memory:", check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL: WAL commits without an fsync each (checkpoints still sync). A machine crash may lose the
            # last records; they are digests of files, recomputed when missing, never a wrong answer.
            conn.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute("SELECT count(*) FROM file_digests").fetchone()  # fails now, not later, on a corrupt file
        return conn

    def write(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        """Write rows in one transaction; a cache that cannot be written only loses the speed-up."""
        if not rows:
            return
        try:
            with self.conn:
                self.conn.executemany(sql, rows)
        except sqlite3.Error as e:
            self.notes.append(f"could not update {self.db_path} ({e}); continuing without it")

    def add_counters(self, counts: dict[str, int], detail: str = "", when: float = 0.0) -> None:
        """Add to running totals (cache hits, bytes up and down): `qeffbuild cache stats` shows them."""
        self.write("INSERT INTO counters VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                   "value = value + excluded.value, detail = excluded.detail, updated = excluded.updated",
                   [(k, int(v), detail, when) for k, v in counts.items()])

    def counters(self) -> dict[str, int]:
        try:
            return {n: int(v) for n, v in self.conn.execute("SELECT name, value FROM counters").fetchall()}
        except sqlite3.Error:
            return {}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class StatCache:
    """File digests through the state database; new digests are written in one transaction on close."""

    def __init__(self, db: StateDB) -> None:
        self.db = db
        self._rows: dict[str, Row] | None = None
        self._pending: dict[str, Row] = {}
        self.hashed = 0  # files read this run, for tests and `--json` output

    def _load(self) -> dict[str, Row]:
        if self._rows is None:
            try:
                rows = self.db.conn.execute(
                    "SELECT path, size, mtime_ns, ctime_ns, inode, digest FROM file_digests").fetchall()
            except sqlite3.Error:
                rows = []
            self._rows = {r[0]: (r[1], r[2], r[3], r[4], r[5]) for r in rows}
        return self._rows

    def digest(self, path: Path) -> str:
        """The file's blake3, re-read only when size, mtime, ctime or inode changed."""
        st = os.stat(path)
        key = os.fspath(path)
        rows = self._load()
        hit = rows.get(key)
        if hit is not None and hit[:4] == (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino):
            return hit[4]
        digest = digest_file(path)
        self.hashed += 1
        row = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, digest)
        rows[key] = row
        self._pending[key] = row
        return digest

    def record(self, path: Path, digest: str) -> None:
        """Remember a digest just computed elsewhere (a blob the store wrote), so the next check is a stat."""
        st = os.stat(path)
        row = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, digest)
        self._load()[os.fspath(path)] = row
        self._pending[os.fspath(path)] = row

    def flush(self) -> None:
        self.db.write("INSERT OR REPLACE INTO file_digests VALUES (?, ?, ?, ?, ?, ?)",
                      [(k, *v) for k, v in self._pending.items()])
        self._pending.clear()


class History:
    """The key each step was last built (or found cached) with, per step id.

    ``namespace`` keeps projects that share one cache apart (their step ids may coincide).
    """

    def __init__(self, db: StateDB, namespace: str) -> None:
        self.db = db
        self.ns = namespace

    def read(self, steps: list[str] | None = None) -> dict[str, str]:
        try:
            rows = self.db.conn.execute("SELECT step, key FROM history WHERE ns = ?", (self.ns,)).fetchall()
        except sqlite3.Error:
            return {}
        found = {r[0]: r[1] for r in rows}
        return found if steps is None else {s: found[s] for s in steps if s in found}

    def record(self, keys: dict[str, tuple[str, str]]) -> None:
        """``keys``: step id → (key, target); only rows that changed are written."""
        known = self.read()
        self.db.write("INSERT OR REPLACE INTO history VALUES (?, ?, ?, ?)",
                      [(self.ns, s, k, t) for s, (k, t) in keys.items() if known.get(s) != k])
