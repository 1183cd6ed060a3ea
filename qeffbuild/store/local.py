"""The local store: content-addressed blobs plus an action cache from step key to result.

Layout under the cache root::

    cas/ab/<digest>        blobs, read-only, named by their blake3
    ac/ab/<key>.json       action entries: outputs, inputs consumed, duration, log tail, key material
    trees/<key>/...        an entry's outputs laid out by name (hard links into cas/), checked on use
    locks/                 per-key locks (one builder per step) and store.lock (builds share it, gc and
                           verify take it alone)
    roots/<id>.json        the keys each project sharing this cache last needed (gc keeps them)
    state.sqlite           file digests by stat, each step's last key (core/statcache.py)
    tmp/                   scratch folders and half-written files; never read as results
    quarantine/            blobs and entries that failed their checks

Promises: every write is temp file → fsync → rename, and an entry is written only after every
blob it names, so a killed build never leaves a visible half-entry. A blob is checked against its
digest before it is served (through the stat cache: a blob whose size, mtime or inode changed is
re-hashed); a mismatch is quarantined and its producer re-runs. Entries are parsed strictly: a
malformed one (wrong shape, a path escaping its folder, a digest that is not a digest) is
quarantined and treated as a miss. The cache is data, never code: nothing here unpickles.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ..core.hashing import digest_file, digest_json
from ..core.statcache import StatCache, StateDB
from ..errors import StoreError

if TYPE_CHECKING:
    from .maintenance import Maintenance

HEX64 = re.compile(r"[0-9a-f]{64}")
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# QEFFBUILD_UNSAFE_NO_FSYNC=1 skips the fsyncs (dpkg's force-unsafe-io, for a throwaway cache: CI, the tests).
# What a killed process wrote is still in the kernel's page cache, so every promise above holds against
# kills; only a machine crash can then leave a renamed file whose bytes never reached the disk (the blob's
# digest check still catches that: it is quarantined and rebuilt, never served).
UNSAFE_NO_FSYNC = "QEFFBUILD_UNSAFE_NO_FSYNC"


def fsync(f: Any) -> None:
    """Flush ``f`` to the disk, unless the cache was declared throwaway (``QEFFBUILD_UNSAFE_NO_FSYNC=1``)."""
    if os.environ.get(UNSAFE_NO_FSYNC) != "1":
        os.fsync(f.fileno())


class CorruptEntry(ValueError):
    """An action entry that does not parse as one."""


@dataclass(frozen=True)
class ActionEntry:
    key: str
    step: str
    outputs: dict[str, str]  # relative path -> blob digest
    duration_s: float
    log_tail: str
    material: dict[str, Any]
    consumed: tuple[str, ...] = ()  # digests of the input blobs the step read
    signatures: tuple[dict[str, str], ...] = ()  # who vouches for it (remote caches: store/signing.py)

    def to_json(self) -> dict[str, Any]:
        data = {"key": self.key, "step": self.step, "outputs": self.outputs, "duration_s": self.duration_s,
                "log_tail": self.log_tail, "material": self.material, "consumed": list(self.consumed),
                "created": time.time()}
        if self.signatures:
            data["signatures"] = list(self.signatures)
        return data


def safe_relpath(rel: Any) -> str:
    """``rel`` if it is a normalized relative POSIX path inside its folder; CorruptEntry otherwise."""
    if not isinstance(rel, str) or not rel or len(rel) > 4096 or "\\" in rel or "\0" in rel:
        raise CorruptEntry(f"output name {rel!r} is not a relative path")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or pure.as_posix() != rel or any(p in ("..", ".", "") for p in rel.split("/")):
        raise CorruptEntry(f"output name {rel!r} is not a normalized path inside the step's folder")
    return rel


def parse_entry(data: Any, key: str) -> ActionEntry:
    """An action entry from JSON data, checked field by field."""
    if not isinstance(data, dict):
        raise CorruptEntry(f"expected a JSON object, got {type(data).__name__}")
    if data.get("key") != key:
        raise CorruptEntry(f"names key {str(data.get('key'))[:80]!r}, not its own")
    outputs = data.get("outputs")
    if not isinstance(outputs, dict):
        raise CorruptEntry("outputs is not an object")
    for rel, digest in outputs.items():
        safe_relpath(rel)
        if not isinstance(digest, str) or not HEX64.fullmatch(digest):
            raise CorruptEntry(f"output {rel!r} names {str(digest)[:80]!r}, not a blake3 digest")
    consumed = data.get("consumed", [])
    if not isinstance(consumed, list) or not all(isinstance(d, str) and HEX64.fullmatch(d) for d in consumed):
        raise CorruptEntry("consumed is not a list of digests")
    duration = data.get("duration_s")
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration):
        raise CorruptEntry("duration_s is not a number")
    step, log_tail, material = data.get("step"), data.get("log_tail", ""), data.get("material")
    if not isinstance(step, str) or not isinstance(log_tail, str) or not isinstance(material, dict):
        raise CorruptEntry("step, log_tail or material has the wrong type")
    try:  # the key is the hash of the key material: an entry claiming other inputs is not this step's
        matches = digest_json(material) == key
    except (ValueError, TypeError):
        matches = False
    if not matches:
        raise CorruptEntry("its key material does not hash to its key")
    signatures = data.get("signatures", [])
    if not isinstance(signatures, list) or not all(
            isinstance(s, dict) and all(isinstance(s.get(f), str) for f in ("key", "sig")) for s in signatures):
        raise CorruptEntry("signatures is not a list of {key, sig}")
    return ActionEntry(key, step, dict(outputs), float(duration), log_tail, material, tuple(consumed),
                       tuple({"key": s["key"], "sig": s["sig"]} for s in signatures))


def atomic_write(path: Path, data: bytes, tmp_dir: Path) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"w-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            fsync(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def clone_file(src: Path, dst: Path) -> None:
    """An independent copy of ``src`` at ``dst``: a reflink where the filesystem has them, else bytes.

    Never a hard link: editing the copy must not reach the store.
    """
    import fcntl

    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        try:
            fcntl.ioctl(fout.fileno(), 0x40049409, fin.fileno())  # FICLONE: share extents, copy on write
            return
        except OSError:
            pass
        size = os.fstat(fin.fileno()).st_size
        done = 0
        try:
            while done < size:
                n = os.copy_file_range(fin.fileno(), fout.fileno(), size - done)
                if n == 0:
                    break
                done += n
        except OSError as e:
            if e.errno in NO_SPACE:
                raise
            fin.seek(0)
            fout.seek(0)
            fout.truncate()
            shutil.copyfileobj(fin, fout, 1 << 20)
            return
        if done < size:
            shutil.copyfileobj(fin, fout, 1 << 20)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (copy when they are on different devices). Only for the store's own
    read-only trees: anything a user or a command can write gets :func:`clone_file`."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        clone_file(src, dst)


def no_space(e: OSError, where: Path, what: str) -> StoreError:
    return StoreError(f"no space left on the device of {where} while {what}: free space there, or point "
                      "QEFFBUILD_CACHE_DIR / --out-dir at a larger disk; nothing half-written was kept")


class LocalStore:
    """A cache root on disk. Cheap to construct: folders are made on first write."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cas = root / "cas"
        self.ac = root / "ac"
        self.trees = root / "trees"
        self.locks = root / "locks"
        self.roots = root / "roots"
        self.tmp = root / "tmp"
        self.quarantine = root / "quarantine"
        self.state = StateDB(root / "state.sqlite")
        self.stat = StatCache(self.state)
        self.notes: list[str] = []  # what was found broken and healed, said once by the caller
        self.corrupt: set[str] = set()  # digests of blobs found corrupt by this process
        self.checked: set[str] = set()  # blobs this process hashed in full (wrote, imported or re-read)

    # --- paths -----------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.cas / digest[:2] / digest

    def entry_path(self, key: str) -> Path:
        return self.ac / key[:2] / f"{key}.json"

    def ensure_layout(self) -> None:
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot write the cache at {self.root}: {e.strerror}; make it writable, or set "
                             "QEFFBUILD_CACHE_DIR / --cache-dir to a writable folder") from e
        if not os.access(self.tmp, os.W_OK):
            raise StoreError(f"the cache at {self.root} is read-only; steps that must run cannot be stored. Make "
                             "it writable, or set QEFFBUILD_CACHE_DIR / --cache-dir to a writable folder")

    # --- action cache ------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return self.entry_path(key).exists()

    def lookup(self, key: str) -> ActionEntry | None:
        path = self.entry_path(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            self.notes.append(f"cannot read cache entry {path.name} ({e.strerror}); treating it as missing")
            return None
        try:
            return parse_entry(json.loads(raw), key)
        except (ValueError, RecursionError) as e:  # JSON errors and CorruptEntry
            self.quarantine_file(path, "entries")
            self.notes.append(f"cache entry {path.name} was corrupt ({str(e)[:200]}); moved it to quarantine, "
                              "its step runs again")
            return None

    def complete(self, entry: ActionEntry) -> bool:
        """Whether every blob the entry names is present (existence only; see :meth:`verified`)."""
        return all(self.blob_path(d).exists() for d in entry.outputs.values())

    def verified(self, entry: ActionEntry, full: bool = False) -> bool:
        """Whether every blob the entry names is present and still has its digest (stat-cached; ``full``:
        read in full, as :meth:`verify_blob` says).

        A blob that fails is quarantined, and the entry dropped: its step must run again.
        """
        for digest in set(entry.outputs.values()):
            if not self.verify_blob(digest, full):
                self.drop(entry.key)
                return False
        return True

    def verify_blob(self, digest: str, full: bool = False) -> bool:
        """Whether blob ``digest`` is present and has its digest. By default through the stat cache (a blob whose
        size, mtime, ctime or inode changed is re-hashed); ``full`` re-reads it unless this process already
        hashed it: a failing disk flips bytes and keeps all four, so what leaves the store is read in full."""
        path = self.blob_path(digest)
        try:
            if full and digest not in self.checked:
                ok = digest_file(path) == digest
            else:
                ok = self.stat.digest(path) == digest
        except FileNotFoundError:
            return False
        except OSError as e:
            self.notes.append(f"cannot read blob {digest[:12]} ({e.strerror})")
            return False
        if ok and full:
            self.checked.add(digest)
        if not ok:
            self.corrupt.add(digest)
            self.quarantine_file(path, "blobs")
            self.notes.append(f"blob {digest[:12]} no longer matched its digest; moved it to quarantine")
        return ok

    def drop(self, key: str) -> None:
        """Forget an action entry (its blobs stay until gc)."""
        with suppress(OSError):
            self.entry_path(key).unlink(missing_ok=True)
        shutil.rmtree(self.trees / key, ignore_errors=True)

    def commit(self, key: str, step: str, scratch: Path, material: dict[str, Any], duration_s: float,
               log_tail: str, consumed: tuple[str, ...] = ()) -> ActionEntry:
        """Move a finished step's outputs into the store and then, last, write its entry.

        Outputs must be regular files under ``scratch``: a symbolic link is refused (it would make the
        store follow a path outside the step), and a file with other hard links is copied, not moved, so
        the outside file is left untouched.
        """
        self.ensure_layout()
        outputs: dict[str, str] = {}
        try:
            for path in sorted(regular_files(scratch)):
                rel = path.relative_to(scratch).as_posix()
                outputs[rel] = self._put_blob(path)
            entry = ActionEntry(key, step, outputs, round(duration_s, 3), log_tail, material, tuple(sorted(consumed)))
            data = json.dumps(entry.to_json(), indent=1, sort_keys=True).encode()
            atomic_write(self.entry_path(key), data, self.tmp)
        except OSError as e:
            if e.errno in NO_SPACE:
                raise no_space(e, self.root, f"storing the outputs of {step}") from e
            raise StoreError(f"cannot store the outputs of {step} in {self.root}: {e}") from e
        return entry

    def _put_blob(self, path: Path) -> str:
        st = os.lstat(path)
        digest = digest_file(path)
        dst = self.blob_path(digest)
        if dst.exists() and self.verify_blob(digest):  # a corrupt one is quarantined and replaced below
            return digest
        dst.parent.mkdir(parents=True, exist_ok=True)
        if st.st_nlink > 1:  # a hard link to a file outside the step: store a copy, leave that file alone
            tmp = self.tmp / f"blob-{os.getpid()}-{uuid.uuid4().hex}"
            clone_file(path, tmp)
            path = tmp
        with open(path, "rb") as f:
            fsync(f)
        os.chmod(path, 0o444)  # blobs are shared by hard links in trees: never edit one in place
        os.replace(path, dst)
        self.stat.record(dst, digest)
        self.checked.add(digest)
        return digest

    # --- imports: what a remote cache hands over ------------------------------------------------
    def import_blob(self, path: Path, digest: str, source: str, actual: str | None = None) -> bool:
        """Move a downloaded file in as blob ``digest`` if its content has that digest (``actual``: hashed
        while downloading); else quarantine it (under ``quarantine/<source>``) and return False."""
        actual = actual or digest_file(path)
        if actual != digest:
            self.quarantine_file(path, source)
            self.corrupt.add(digest)
            return False
        dst = self.blob_path(digest)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "rb") as f:
            fsync(f)
        os.chmod(path, 0o444)
        os.replace(path, dst)
        self.stat.record(dst, digest)
        self.checked.add(digest)
        return True

    def import_entry(self, entry: ActionEntry) -> None:
        """Write an entry whose blobs are all here (checked by the caller), as :meth:`commit` does last."""
        self.ensure_layout()
        data = json.dumps(entry.to_json(), indent=1, sort_keys=True).encode()
        try:
            atomic_write(self.entry_path(entry.key), data, self.tmp)
        except OSError as e:
            if e.errno in NO_SPACE:
                raise no_space(e, self.root, f"storing {entry.step} from the remote cache") from e
            raise StoreError(f"cannot store {entry.step} from the remote cache in {self.root}: {e}") from e

    # --- trees: an entry's outputs by name ----------------------------------------------------
    def tree(self, entry: ActionEntry) -> Path:
        """A folder with the entry's outputs under their names (hard links into cas/), checked first: every
        blob is read in full once per process (a step's inputs are handed out), and a tree whose files are not
        exactly the entry's blobs (a file missing, added, replaced or edited) is rebuilt from the blobs.
        """
        for digest in set(entry.outputs.values()):
            if not self.verify_blob(digest, full=True):
                self.drop(entry.key)
                raise StoreError(f"the cached outputs of {entry.step} are corrupt and were quarantined; run the "
                                 "build again to rebuild them")
        final = self.trees / entry.key
        if final.exists() and self._tree_intact(final, entry):
            return final
        self.ensure_layout()
        staging = self.tmp / f"tree-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            for rel, digest in entry.outputs.items():
                link_or_copy(self.blob_path(digest), staging / safe_relpath(rel))
            staging.mkdir(parents=True, exist_ok=True)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists() and not self._tree_intact(final, entry):
                # Move a broken tree aside, never delete it in place: a step of another build may be reading
                # it. The stale copy is swept with the scratch of dead processes.
                os.rename(final, self.tmp / f"tree-{os.getpid()}-old-{uuid.uuid4().hex[:8]}")
            os.rename(staging, final)  # fails when another build made it first: then theirs is used
        except OSError as e:
            shutil.rmtree(staging, ignore_errors=True)
            if e.errno in NO_SPACE:
                raise no_space(e, self.root, f"laying out the outputs of {entry.step}") from e
            if not final.exists() or not self._tree_intact(final, entry):  # not "another build made it first"
                raise StoreError(f"cannot lay out the outputs of {entry.step} in {final}: {e}") from e
        return final

    def _tree_intact(self, folder: Path, entry: ActionEntry) -> bool:
        found = {p.relative_to(folder).as_posix(): p for p in regular_files(folder)}
        if set(found) != set(entry.outputs):
            return False
        for rel, path in found.items():
            try:
                st, blob = os.lstat(path), os.stat(self.blob_path(entry.outputs[rel]))
            except OSError:
                return False
            if not stat.S_ISREG(st.st_mode) or st.st_ino != blob.st_ino or st.st_dev != blob.st_dev:
                return False
        return True

    # --- scratch, locks ---------------------------------------------------------------------
    def scratch(self, key: str) -> Path:
        self.ensure_layout()
        path = self.tmp / f"run-{os.getpid()}-{key[:16]}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def lock(self, key: str) -> Any:
        from filelock import FileLock

        path = self.locks / key[:2] / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(path)

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Held by every build: gc and verify (which hold it alone) never run beside one."""
        with _flock(self.locks / "store.lock", exclusive=False):
            yield

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with _flock(self.locks / "store.lock", exclusive=True):
            yield

    def clean_stale_tmp(self) -> int:
        """Remove scratch left by builds whose process is gone (killed with SIGKILL)."""
        removed = 0
        if not self.tmp.is_dir():
            return 0
        for p in self.tmp.iterdir():
            if not _stale(p):
                continue
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed += 1
        return removed

    def clean_scratch_of(self, key: str, wait_s: float, before_remove: Callable[[Path], object] | None = None,
                         ended: Callable[[Path], bool] | None = None) -> int:
        """Wait up to ``wait_s`` for this machine's scratch folders of step ``key`` to go, removing each once its
        process is gone: a cancelled step's worker removes its own, or is killed and leaves it behind.
        ``ended``: the caller's word that a folder's run is over though its process lives (removed at once).
        ``before_remove`` is called with each folder this removes (the executor's: end what the step started)."""
        deadline = time.monotonic() + wait_s
        removed = 0
        while True:
            left = list(self.tmp.glob(f"run-*-{key[:16]}-*")) if self.tmp.is_dir() else []
            for p in [p for p in left if _stale(p) or (ended is not None and ended(p))]:
                if before_remove is not None and p.is_dir():
                    before_remove(p)
                shutil.rmtree(p, ignore_errors=True)
                left.remove(p)
                removed += 1
            if not left or time.monotonic() > deadline:
                return removed
            time.sleep(0.1)

    @property
    def maintenance(self) -> Maintenance:
        """What `qeffbuild cache` does to the whole cache: gc, verify, stats, and the projects' roots."""
        from .maintenance import Maintenance

        return Maintenance(self)

    def ensure_writable(self, what: str) -> None:
        """Refuse, with the fix, before changing anything in a cache this process cannot write."""
        probe = self.root / f".write-probe-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
            for folder in (self.ac, self.cas):
                if folder.is_dir() and not os.access(folder, os.W_OK):
                    raise PermissionError(errno.EACCES, "Permission denied", str(folder))
        except OSError as e:
            raise StoreError(f"cannot {what} the cache at {self.root}: it is read-only or not writable ({e.strerror}: "
                             f"{e.filename or self.root}); nothing was changed. Make it writable (or remount it "
                             "read-write), or set QEFFBUILD_CACHE_DIR / --cache-dir to the cache you mean") from None

    def quarantine_file(self, path: Path, kind: str) -> None:
        try:
            dest = self.quarantine / kind
            dest.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest / f"{path.name}.{int(time.time())}.{uuid.uuid4().hex[:6]}")
        except OSError:
            with suppress(OSError):  # a read-only cache: the caller treats it as missing either way
                path.unlink()


def regular_files(root: Path) -> Iterator[Path]:
    """Every file under ``root``; a symbolic link or special file anywhere is refused with its name."""
    for dirpath, dirs, files in os.walk(root):
        for name in dirs:
            if os.path.islink(os.path.join(dirpath, name)):
                raise StoreError(f"output {Path(dirpath, name).relative_to(root)} is a symbolic link to a folder; "
                                 "a step's outputs must be regular files and folders inside its output folder")
        for name in files:
            path = Path(dirpath) / name
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                raise StoreError(f"output {path.relative_to(root)} is a symbolic link (to {os.readlink(path)}); "
                                 "a step's outputs must be regular files inside its output folder: copy the file")
            if not stat.S_ISREG(st.st_mode):
                raise StoreError(f"output {path.relative_to(root)} is not a regular file (a FIFO, socket or "
                                 "device); a step's outputs must be regular files")
            yield path


@contextmanager
def _flock(path: Path, exclusive: bool) -> Iterator[None]:
    """A shared or exclusive lock on ``path`` (fcntl); without a writable cache there is nothing to guard."""
    import fcntl

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            yield
            return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _stale(p: Path) -> bool:
    """A scratch file or folder whose owning process is gone (named ``<kind>-<pid>-…``), or one qeffbuild did not
    name (a command that wrote ``../../x`` from its output folder): nothing reads those."""
    parts = p.name.split("-")
    if len(parts) > 2 and parts[0].isalpha() and parts[1].isdigit():
        return not pid_alive(int(parts[1]))
    return True


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie does not: a killed Ray worker stays one until its raylet reaps it, and its
    scratch is as dead as its process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = proc_stat(pid)
    if fields is None:  # gone while we looked (Linux), or no /proc to ask (then os.kill's answer stands)
        return not Path("/proc/self/stat").exists()
    return fields[:1] != ["Z"]


def proc_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the parenthesised command name (which may itself hold spaces): the state
    first; None if it cannot be read (no such process, or no /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
