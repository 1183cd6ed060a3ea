"""Materializing a built target under ``out/<target>/``: verified copies plus provenance.

``out/`` holds copies of the store's blobs (reflinks where the filesystem has them), never hard
links, so editing a file there cannot reach the store or another target. Every build checks
each requested target's folder against its stamp: a file whose size, mtime or inode changed is
re-hashed, and restored from the (verified) blob when its content changed; a missing file is
restored too. A folder is replaced atomically (staging folder, then renames), one builder at a
time per folder; staging folders left by killed builds are swept.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.hashing import digest_file
from ..core.keys import dist_version
from ..core.planner import Plan
from ..errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..store import Store

STAMP = ".qeffbuild-stamp"
PROVENANCE = "provenance.json"
LOCKS = ".qeffbuild-locks"


def _read_stamp(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / STAMP).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return None
    return data


def is_current(out_dir: Path, stamp: str) -> bool:
    data = _read_stamp(out_dir)
    return data is not None and data.get("stamp") == stamp


def _signature(path: Path) -> list[int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    import stat as stat_module

    if not stat_module.S_ISREG(st.st_mode):
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def check_out(plan: Plan, target: str, store: Store, out_root: Path, full: bool = False) -> str:
    """``current`` (untouched), ``repaired`` (changed files restored) or ``stale`` (materialize anew).

    A file whose size, mtime, ctime or inode changed is re-hashed; ``full`` re-hashes every file (before its
    bytes are used: a failing disk changes content and keeps all four).
    """
    folder = out_root / target
    data = _read_stamp(folder)
    if data is None or data.get("stamp") != plan.stamp(target):
        return "stale"
    expected = _expected(plan, target, store)
    if expected is None or set(data["files"]) != set(expected) | {PROVENANCE}:
        return "stale"
    repaired = False
    for rel, record in data["files"].items():
        path = folder / rel
        sig = _signature(path)
        if sig is not None and isinstance(record, list) and sig == record[:4] and not full:
            continue
        want = record[4] if rel == PROVENANCE and isinstance(record, list) and len(record) == 5 else expected.get(rel)
        if sig is not None and want is not None and digest_file(path) == want:
            if not isinstance(record, list) or sig != record[:4]:
                data["files"][rel] = [*sig, want]  # touched, same bytes
                repaired = True
            continue
        if rel == PROVENANCE or want is None:
            return "stale"
        try:
            _restore(store, want, path)
        except StoreError:  # its blob is gone or rotten (quarantined): the build re-runs its step
            return "stale"
        except OSError as e:
            raise out_not_writable(out_root, e) from None
        data["files"][rel] = [*(_signature(path) or [0, 0, 0, 0]), want]
        repaired = True
    if repaired:
        try:
            (folder / STAMP).write_text(json.dumps(data, sort_keys=True))
        except OSError as e:
            raise out_not_writable(out_root, e) from None
        return "repaired"
    return "current"


def verify_folder(folder: Path, used: Callable[[str], bool] | None = None) -> list[str]:
    """Files of a materialized folder (or a saved copy of one) whose bytes differ from what its stamp recorded,
    each read in full (a failing disk keeps size, mtime and inode); only those ``used`` says a reader opens, when
    given. [] when all match, or when the folder has no stamp (it was not laid out by qeffbuild: nothing to check
    it against)."""
    data = _read_stamp(folder)
    if data is None:
        return []
    bad = []
    for rel, record in data["files"].items():
        if used is not None and not used(rel):
            continue
        want = record[4] if isinstance(record, list) and len(record) == 5 else None
        try:
            ok = want is not None and digest_file(folder / rel) == want
        except OSError:
            ok = False
        if not ok:
            bad.append(rel)
    return bad


def _restore(store: Store, digest: str, path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    _hand_out(store, digest, path, f"the blob of {path}")


def _hand_out(store: Store, digest: str, dest: Path, what: str) -> None:
    """Copy blob ``digest`` to ``dest``, its bytes checked: a blob this process read in full moments ago is
    cloned (a reflink where the filesystem has them), any other is hashed while it is copied. A mismatch is
    quarantined and refused: nothing wrong reaches out/."""
    from ..store import clone_file

    src = store.blob_path(digest)
    if digest in store.checked:
        clone_file(src, dest)
        return
    if not src.exists():
        raise StoreError(f"{what} is gone from the cache; run the build again to rebuild it")
    if copy_hashing(src, dest) != digest:
        dest.unlink(missing_ok=True)
        store.verify_blob(digest, full=True)  # quarantines it and notes why
        raise StoreError(f"{what} no longer matched its digest (a disk error or an edit); it was quarantined: run "
                         "the build again to rebuild it")
    store.checked.add(digest)


def copy_hashing(src: Path, dest: Path) -> str:
    """Copy ``src`` to ``dest`` and return the blake3 of what was copied (one pass over the bytes)."""
    from blake3 import blake3

    dest.parent.mkdir(parents=True, exist_ok=True)
    h = blake3()
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        while chunk := fin.read(1 << 20):
            h.update(chunk)
            fout.write(chunk)
    return str(h.hexdigest())


def _expected(plan: Plan, target: str, store: Store) -> dict[str, str] | None:
    """rel path under out/<target> → digest, from the entries of the target's output steps."""
    out: dict[str, str] = {}
    for sid in plan.graph.outputs[target]:
        step = plan.by_id[sid]
        entry = store.lookup(step.key)
        if entry is None:
            return None
        for rel, digest in entry.outputs.items():
            out[(Path(step.node.out_subdir) / rel).as_posix()] = digest
    return out


def materialize(plan: Plan, target: str, store: Store, out_root: Path) -> Path:
    """Lay the target's outputs out under ``out_root/target`` (verified copies, then one rename)."""
    from filelock import FileLock

    final = out_root / target
    locks = out_root / LOCKS
    lock = FileLock(locks / f"{target}.lock")
    try:
        locks.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as e:
        raise out_not_writable(out_root, e) from None
    try:
        sweep(out_root)
        expected = _expected(plan, target, store)
        if expected is None:
            raise StoreError(f"the cache entries of {target} vanished during the build; run it again")
        staging = out_root / f".staging-{os.getpid()}-{uuid.uuid4().hex[:8]}-{target}"
        try:
            staging.mkdir(parents=True)
            files: dict[str, list[Any]] = {}
            for rel, digest in expected.items():
                _hand_out(store, digest, staging / rel, f"a cached output of {target} ({rel})")
                files[rel] = [*(_signature(staging / rel) or []), digest]
            (staging / PROVENANCE).write_text(json.dumps(_provenance(plan, target, store), indent=1, sort_keys=True))
            files[PROVENANCE] = [*(_signature(staging / PROVENANCE) or []), digest_file(staging / PROVENANCE)]
            (staging / STAMP).write_text(json.dumps({"stamp": plan.stamp(target), "files": files}, sort_keys=True))
            _swap(staging, final)
        except OSError as e:
            shutil.rmtree(staging, ignore_errors=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreError(f"no space left on the device of {out_root} while writing out/{target}: free "
                                 "space there, or pass --out-dir on a larger disk; out/ was left as it was") from e
            raise out_not_writable(out_root, e) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        lock.release()
    return final


def out_not_writable(out_root: Path, e: OSError) -> StoreError:
    """The out folder refused a write (read-only file system or permissions): what to do about it."""
    return StoreError(f"cannot write the out folder {out_root} ({e.strerror}: {e.filename or out_root}); the built "
                      "steps are cached, only laying them out failed: make it writable, or pass --out-dir (or set "
                      "QEFFBUILD_OUT_DIR) to a writable folder")


def _swap(staging: Path, final: Path) -> None:
    old = final.with_name(f".old-{os.getpid()}-{uuid.uuid4().hex[:8]}-{final.name}")
    if final.exists() or final.is_symlink():
        os.rename(final, old)
    os.rename(staging, final)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def sweep(out_root: Path) -> int:
    """Remove staging and old folders of builds whose process is gone."""
    from ..store.local import pid_alive

    removed = 0
    for p in out_root.glob(".staging-*") if out_root.is_dir() else []:
        removed += _sweep_one(p, pid_alive)
    for p in out_root.glob(".old-*") if out_root.is_dir() else []:
        removed += _sweep_one(p, pid_alive)
    return removed


def _sweep_one(p: Path, alive: Any) -> int:
    parts = p.name.split("-")
    if len(parts) > 2 and parts[1].isdigit() and alive(int(parts[1])):
        return 0  # a live build's (this process's other materializations included)
    shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
    return 1


def _provenance(plan: Plan, target: str, store: Store) -> dict[str, Any]:
    from .. import __version__

    by_id = plan.by_id
    steps = []
    for sid in plan.closure(target):
        s = by_id[sid]
        entry = store.lookup(s.key)
        steps.append({
            "id": sid,
            "kind": s.node.kind,
            "key": s.key,
            "material": s.material,
            "duration_s": entry.duration_s if entry else None,
            "outputs": entry.outputs if entry else {},
        })
    return {
        "target": target,
        "qeffbuild": __version__,
        "python": dist_version("python"),
        "materialized_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "outputs": plan.graph.outputs[target],
        "steps": steps,
    }
