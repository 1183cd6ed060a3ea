"""The chaos harness: kills, concurrent builders, gc beside builds, corruptions, fuzzed manifests.

Shared by the short suite (``tests/chaos/test_chaos.py``, in CI) and the long form
(``benchmarks/chaos.py --kills 200 --corruptions 250 --fuzz 3000``). Every scenario runs the
real CLI on a generated project of command steps whose outputs are known in advance, and
counts what must never happen: a wrong output with exit 0, a traceback, a write outside out/
and the cache, a staging folder left behind, a committed step run twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..helpers import HANG_S

BAD_WORDS = ("Traceback", "internal error")


@dataclass
class Tally:
    """What the scenarios saw; everything but ``runs`` must stay zero (or empty)."""

    runs: Counter[str] = field(default_factory=Counter)
    wrong_with_exit_0: list[str] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    outside_writes: list[str] = field(default_factory=list)
    leftover_staging: list[str] = field(default_factory=list)
    reruns_of_committed: list[str] = field(default_factory=list)
    concurrent_duplicates: list[str] = field(default_factory=list)
    failed_to_heal: list[str] = field(default_factory=list)
    exit_70: list[str] = field(default_factory=list)
    sandbox_escapes: list[str] = field(default_factory=list)

    def problems(self) -> dict[str, list[str]]:
        return {k: v for k, v in vars(self).items() if k != "runs" and v}

    def summary(self) -> dict[str, Any]:
        return {k: len(v) for k, v in vars(self).items() if k != "runs"} | {"scenarios": sum(self.runs.values())}


class ChaosProject:
    """A generated DAG of command steps; each output is a known function of its inputs."""

    def __init__(self, root: Path, n: int = 12, seed: int = 0, sleep: float = 0.15,
                 env: dict[str, str] | None = None) -> None:
        self.root = root
        self.env = {**os.environ, **(env or {})}
        self.rng = random.Random(seed)
        self.n = n
        self.deps = {i: sorted(self.rng.sample(range(i), k=min(i, self.rng.randint(0, 2)))) for i in range(n)}
        (root / "manifests" / "data").mkdir(parents=True, exist_ok=True)
        (root / ".runs").mkdir(exist_ok=True)
        lines = ['[project]\nname = "chaos"\n']
        for i in range(n):
            (root / "manifests" / "data" / f"in{i}.txt").write_text(f"input {i}\n")
            cats = " ".join(f"{{dep:s{d}}}/o.txt" for d in self.deps[i])
            cmd = (f"echo x >> {{root}}/../.runs/s{i}; sleep {sleep}; "  # a missing input fails the step (no pipe)
                   f"cat {cats} {{root}}/data/in{i}.txt > all && sha256sum < all > o.txt && rm all")
            deps = ", ".join(f'"s{d}"' for d in self.deps[i])
            lines.append(f'[steps.s{i}]\ncmd = ["sh", "-c", "{cmd}"]\ninputs = ["data/in{i}.txt"]\n'
                         f'outputs = ["o.txt"]\ndeps = [{deps}]\n')
        (root / "manifests" / "chaos.toml").write_text("\n".join(lines))
        self.expected = self._expected()

    def _expected(self) -> dict[str, bytes]:
        out: dict[int, bytes] = {}
        for i in range(self.n):
            data = b"".join(out[d] for d in self.deps[i]) + f"input {i}\n".encode()
            out[i] = f"{hashlib.sha256(data).hexdigest()}  -\n".encode()
        return {f"s{i}": v for i, v in out.items()}

    # --- running ------------------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = HANG_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "qeffbuild", *args], cwd=self.root, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=self.env)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "qeffbuild", *args], cwd=self.root, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=self.env)

    def run_counts(self) -> Counter[str]:
        return Counter({p.name: len(p.read_text().splitlines()) for p in (self.root / ".runs").iterdir()})

    def cached_steps(self) -> set[str]:
        res = self.cli("plan", "--json")
        if res.returncode != 0:
            return set()
        return {s["id"].split(":", 1)[1] for s in json.loads(res.stdout)["steps"] if s["action"] == "cached"}

    def snapshot_outside(self) -> dict[str, tuple[int, int]]:
        """Every path outside out/ and .runs/ with its size and mtime (the cache lives in out/.cache)."""
        snap = {}
        for p in self.root.rglob("*"):
            rel = p.relative_to(self.root)
            if rel.parts[0] in ("out", ".runs"):
                continue
            st = p.lstat()
            snap[rel.as_posix()] = (st.st_size, st.st_mtime_ns)
        return snap

    # --- checks -----------------------------------------------------------------------------------
    def check(self, tally: Tally, what: str, res: subprocess.CompletedProcess[str] | None,
              before: dict[str, tuple[int, int]]) -> None:
        """After a command: tracebacks, outputs (when it exited 0), writes outside, staging left."""
        text = (res.stderr + res.stdout) if res is not None else ""
        if any(w in text for w in BAD_WORDS):
            tally.tracebacks.append(f"{what}: {text[-600:]}")
        if res is not None and res.returncode == 70:
            tally.exit_70.append(f"{what}: {text[-300:]}")
        if res is not None and res.returncode == 0:
            wrong = self.wrong_outputs()
            if wrong:
                tally.wrong_with_exit_0.append(f"{what}: {wrong}")
        after = self.snapshot_outside()
        if after != before:
            changed = sorted(set(after) ^ set(before) | {k for k in after if before.get(k) != after[k]})
            tally.outside_writes.append(f"{what}: {changed[:5]}")
        out = self.root / "out"
        left = [p.name for p in out.glob(".staging-*")] + [p.name for p in out.glob(".old-*")] if out.is_dir() else []
        if left:
            tally.leftover_staging.append(f"{what}: {left}")

    def wrong_outputs(self) -> list[str]:
        wrong = []
        for name, want in self.expected.items():
            f = self.root / "out" / name / "o.txt"
            try:
                if f.read_bytes() != want:
                    wrong.append(name)
            except OSError:
                wrong.append(name)
        return wrong


# --- scenarios ---------------------------------------------------------------------------------------
def kill_scenario(p: ChaosProject, tally: Tally, rng: random.Random, what: str) -> None:
    """SIGKILL a -j2 build at a random moment; the next build must finish, re-running nothing committed."""
    before = p.snapshot_outside()
    proc = p.popen("build", "-j2", "-q")
    time.sleep(rng.uniform(0.0, 1.2))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    committed = p.cached_steps()
    runs_before = p.run_counts()
    res = p.cli("build", "-j2", "-q")
    if res.returncode != 0:
        tally.failed_to_heal.append(f"{what}: exit {res.returncode}: {res.stderr[-300:]}")
    ran = p.run_counts() - runs_before
    again = sorted(s for s in committed if ran.get(s))
    if again:
        tally.reruns_of_committed.append(f"{what}: {again}")
    p.check(tally, what, res, before)
    tally.runs["kill"] += 1


def concurrent_scenario(p: ChaosProject, tally: Tally, builders: int, what: str, with_gc: bool = False) -> None:
    """``builders`` builds of a clean project at once (and gc beside them): each step runs once."""
    shutil.rmtree(p.root / "out", ignore_errors=True)
    for f in (p.root / ".runs").iterdir():
        f.unlink()
    before = p.snapshot_outside()
    procs = [p.popen("build", "-j2", "-q") for _ in range(builders)]
    gcs = [p.popen("cache", "gc") for _ in range(2)] if with_gc else []
    results = []
    for proc in procs + gcs:
        out, err = proc.communicate(timeout=HANG_S)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    for res in results:
        if res.returncode != 0:
            tally.failed_to_heal.append(f"{what}: exit {res.returncode}: {res.stderr[-300:]}")
        p.check(tally, what, res, before)
    dup = sorted(s for s, n in p.run_counts().items() if n != 1)
    if dup and not with_gc:
        tally.concurrent_duplicates.append(f"{what}: {dup}")
    final = p.cli("build", "-q")
    p.check(tally, f"{what} (after)", final, before)
    tally.runs["concurrent"] += 1


CORRUPTIONS = (
    "flip_blob", "truncate_blob", "delete_blob", "garbage_entry", "traversal_entry", "wrong_shape_entry",
    "bad_digest_entry", "delete_entry", "edit_tree", "extra_tree_file", "symlink_tree", "edit_out",
    "delete_out", "symlink_out", "dir_out", "garbage_stamp", "garbage_state_db", "truncate_state_db",
    "garbage_root", "garbage_lock", "lying_entry", "media_rot",
)


def corrupt(p: ChaosProject, kind: str, rng: random.Random) -> str:
    """Apply one corruption; returns what it touched."""
    cache = p.root / "out" / ".cache"
    blobs = sorted(cache.glob("cas/*/*"))
    entries = sorted(cache.glob("ac/*/*.json"))
    trees = sorted(f for f in cache.glob("trees/*/**/*") if f.is_file())
    outs = sorted(p.root.glob("out/s*/o.txt"))
    pick = rng.choice
    if kind in ("flip_blob", "truncate_blob", "delete_blob") and blobs:
        b = pick(blobs)
        st = b.stat()
        b.chmod(0o644)
        if kind == "flip_blob":
            data = bytearray(b.read_bytes())
            data[rng.randrange(len(data))] ^= 0x20
            b.write_bytes(bytes(data))
            os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: only ctime tells
        elif kind == "truncate_blob":
            b.write_bytes(b.read_bytes()[: st.st_size // 2])
        else:
            b.unlink()
        return b.name
    if kind.endswith("_entry") and entries:
        e = pick(entries)
        data = json.loads(e.read_text())
        if kind == "garbage_entry":
            e.write_bytes(os.urandom(64))
        elif kind == "traversal_entry":
            data["outputs"] = {"../../../../outside.txt": next(iter(data["outputs"].values()))}
            e.write_text(json.dumps(data))
        elif kind == "wrong_shape_entry":
            e.write_text(json.dumps({"key": data["key"], "outputs": [1, 2, 3]}))
        elif kind == "bad_digest_entry":
            data["outputs"] = {k: "../" + v[3:] for k, v in data["outputs"].items()}
            e.write_text(json.dumps(data))
        else:
            e.unlink()
        return e.name
    if kind in ("edit_tree", "extra_tree_file", "symlink_tree") and trees:
        t = pick(trees)
        if kind == "edit_tree":
            t.unlink()
            t.write_text("edited tree file\n")
        elif kind == "extra_tree_file":
            (t.parent / "extra.txt").write_text("extra\n")
        else:
            t.unlink()
            t.symlink_to("/etc/hostname")
        return str(t.relative_to(cache))
    if kind in ("edit_out", "delete_out", "symlink_out", "dir_out") and outs:
        o = pick(outs)
        st = o.stat()
        if kind == "edit_out":
            o.write_bytes(o.read_bytes()[:-2] + b"X\n")
            os.utime(o, ns=(st.st_atime_ns, st.st_mtime_ns))
        elif kind == "delete_out":
            o.unlink()
        elif kind == "symlink_out":
            o.unlink()
            o.symlink_to("/etc/hostname")
        else:
            o.unlink()
            o.mkdir()
        return str(o.relative_to(p.root))
    if kind == "garbage_stamp" and outs:
        stamp = pick(outs).parent / ".qeffbuild-stamp"
        stamp.write_bytes(b'{"stamp": 1, "files": [')
        return str(stamp.relative_to(p.root))
    if kind in ("garbage_state_db", "truncate_state_db"):
        db = cache / "state.sqlite"
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        db.write_bytes(os.urandom(4096) if kind == "garbage_state_db" else db.read_bytes()[:100])
        return db.name
    if kind == "garbage_root":
        roots = sorted(cache.glob("roots/*.json"))
        if roots:
            pick(roots).write_text('{"owner": 5, "keys": "nope"}')
            return "roots"
    if kind == "lying_entry" and len(entries) > 1:  # names another step's valid blob; key material untouched
        liar, other = rng.sample(entries, 2)
        data, theirs = json.loads(liar.read_text()), json.loads(other.read_text())
        data["outputs"] = {rel: next(iter(theirs["outputs"].values())) for rel in data["outputs"]}
        liar.chmod(0o644)
        liar.write_text(json.dumps(data))
        return liar.name
    if kind == "media_rot" and blobs:  # one byte flipped; size, mtime, ctime and inode all as the stat cache has them
        b = pick(blobs)
        rot_in_place(cache, b, rng)
        return b.name
    if kind == "garbage_lock":
        lock = cache / "locks" / "store.lock"
        if lock.exists():
            lock.write_bytes(os.urandom(32))
            return lock.name
    return "nothing to corrupt"


def rot_in_place(cache: Path, blob: Path, rng: random.Random) -> None:
    """What a failing disk does: a byte changes, nothing else. The stat cache's row is set to the blob's new
    ctime (userland cannot keep a ctime), so only a full read can tell."""
    import sqlite3

    st = blob.stat()
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[rng.randrange(len(data))] ^= 0x20
    blob.write_bytes(bytes(data))
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    blob.chmod(0o444)
    now = blob.stat()
    with sqlite3.connect(cache / "state.sqlite") as db:
        db.execute("UPDATE file_digests SET ctime_ns = ? WHERE path = ?", (now.st_ctime_ns, str(blob)))


def corruption_scenario(p: ChaosProject, tally: Tally, kind: str, rng: random.Random, what: str) -> None:
    """A clean build, one corruption, then `cache verify` (sometimes) and a build: right bytes or a clear error.

    A lying entry (another step's valid blob) is what `cache verify --rebuild` exists for: the local cache trusts
    its own disk as Nix's store does, so that scenario always runs it before the build (a shared cache refuses
    such an entry by its signature: remote_lie_scenario)."""
    first = p.cli("build", "-q")
    if first.returncode != 0:
        tally.failed_to_heal.append(f"{what}: the clean build failed: {first.stderr[-300:]}")
        return
    before = p.snapshot_outside()
    touched = corrupt(p, kind, rng)
    if kind == "lying_entry":  # a missed lie shows as wrong bytes in the build below (an old key's entry: no harm)
        check = p.cli("cache", "verify", "--rebuild")
        if any(w in check.stderr for w in BAD_WORDS):
            tally.tracebacks.append(f"{what} verify --rebuild: {check.stderr[-400:]}")
        p.check(tally, f"{what} verify --rebuild", None, before)
    if rng.random() < 0.3:
        verify = p.cli("cache", "verify")  # it does not build: only tracebacks and outside writes count
        p.check(tally, f"{what} verify", None, before)
        if any(w in verify.stderr for w in BAD_WORDS):
            tally.tracebacks.append(f"{what} verify: {verify.stderr[-400:]}")
    if rng.random() < 0.5:  # make the store serve every output again: out/ cannot hide a bad blob
        for folder in (p.root / "out").glob("s*"):
            shutil.rmtree(folder)
    res = p.cli("build", "-q")
    if res.returncode != 0:
        tally.failed_to_heal.append(f"{what} ({touched}): exit {res.returncode}: {res.stderr[-300:]}")
    p.check(tally, f"{what} ({touched})", res, before)
    if (p.root / "outside.txt").exists() or (p.root.parent / "outside.txt").exists():
        tally.outside_writes.append(f"{what}: outside.txt written")
    tally.runs[f"corrupt:{kind}"] += 1


@contextmanager
def read_only(folder: Path) -> Iterator[bool]:
    """``folder`` read-only: a read-only bind mount as root (root ignores permission bits), else mode 0555.
    Yields False where neither can be done here."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield True
        finally:
            folder.chmod(0o755)
        return
    done = subprocess.run(["sh", "-c", f"mount --bind '{folder}' '{folder}' && mount -o remount,bind,ro '{folder}'"],
                          capture_output=True)
    if done.returncode != 0:
        subprocess.run(["umount", str(folder)], capture_output=True)
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def read_only_scenario(p: ChaosProject, tally: Tally, rng: random.Random, what: str) -> None:
    """A step must run again (its entry is gone) while out/ and the cache in it are read-only: a clear error
    (exit 1 or 2), no traceback, no exit 70, nothing half-written; writable again, the next build heals."""
    first = p.cli("build", "-q")
    if first.returncode != 0:
        tally.failed_to_heal.append(f"{what}: the clean build failed: {first.stderr[-300:]}")
        return
    before = p.snapshot_outside()
    entries = sorted((p.root / "out" / ".cache").glob("ac/*/*.json"))
    rng.choice(entries).unlink()
    command = rng.choice([("build", "-q"), ("clean",), ("cache", "gc", "--all"), ("build", "-q", "--force")])
    with read_only(p.root / "out") as done:
        if not done:
            return
        res = p.cli(*command)
        if res.returncode not in (1, 2):
            tally.failed_to_heal.append(f"{what} {command}: exit {res.returncode} on a read-only out/")
        p.check(tally, f"{what} {command}", res, before)
    res = p.cli("build", "-q")
    if res.returncode != 0:
        tally.failed_to_heal.append(f"{what}: exit {res.returncode} once writable: {res.stderr[-300:]}")
    p.check(tally, f"{what} (writable again)", res, before)
    tally.runs["read-only"] += 1


TEMPLATE_ESCAPES = (
    '{{ lipsum.__globals__["os"].system("touch MARKER") }}',
    '{{ cycler.__init__.__globals__.__builtins__["open"]("MARKER", "w").write("x") }}',
    "{{ name.__class__.__mro__[1].__subclasses__() }}",
    '{{ "{0.__class__.__init__.__globals__}".format(name) }}',
    "{% set x = [] %}{{ x.append(1) }}{{ self.__init__.__globals__ }}",
    '{{ joiner.__init__.__globals__["os"].system("touch MARKER") }}',
    '{{ namespace.__init__.__globals__["os"].system("touch MARKER") }}',
)


def template_scenario(root: Path, tally: Tally, rng: random.Random, what: str) -> None:
    """A checked-out project template that tries to run code during `qeffbuild init`: refused, nothing run."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "templates").mkdir(parents=True)
    escape = rng.choice(TEMPLATE_ESCAPES)
    (root / "templates" / "project.toml.j2").write_text(f'[project]\nname = "{{{{ name }}}}"\n{escape}\n')
    res = subprocess.run([sys.executable, "-m", "qeffbuild", "init"], cwd=root, capture_output=True, text=True,
                         timeout=HANG_S, stdin=subprocess.DEVNULL)
    if (root / "MARKER").exists():
        tally.sandbox_escapes.append(f"{what}: {escape}")
    if res.returncode != 2 or any(w in res.stderr for w in BAD_WORDS):
        tally.tracebacks.append(f"{what}: exit {res.returncode}: {res.stderr[-300:]}")
    tally.runs["template"] += 1


def remote_lie_scenario(writer: ChaosProject, reader: ChaosProject, fs: Any, prefix: str, tally: Tally,
                        rng: random.Random, what: str) -> None:
    """Someone who can write the bucket swaps an entry's outputs, adds a file or strips its signature: a reader
    trusting only the team's key never serves it (it builds that step itself)."""
    res = writer.cli("build", "-q")
    if res.returncode != 0:
        tally.failed_to_heal.append(f"{what}: the writer's build failed: {res.stderr[-300:]}")
        return
    entries = sorted(fs.find(f"{prefix}/ac"))
    victim, other = rng.sample(entries, 2)
    data, theirs = json.loads(fs.cat_file(victim)), json.loads(fs.cat_file(other))
    how = rng.choice(["swap", "extra", "unsigned", "resign"])
    if how == "swap":
        data["outputs"] = {rel: next(iter(theirs["outputs"].values())) for rel in data["outputs"]}
    elif how == "extra":
        data["outputs"]["evil.sh"] = next(iter(theirs["outputs"].values()))
    elif how == "unsigned":
        data["outputs"] = {rel: next(iter(theirs["outputs"].values())) for rel in data["outputs"]}
        data.pop("signatures", None)
    else:  # another step's valid signature pasted on
        data["outputs"] = theirs["outputs"]
        data["signatures"] = theirs.get("signatures", [])
    fs.pipe_file(victim, json.dumps(data).encode())
    shutil.rmtree(reader.root / "out", ignore_errors=True)
    before = reader.snapshot_outside()
    res = reader.cli("build", "-q", "--no-remote-upload")
    reader.check(tally, f"{what} ({how})", res, before)
    if res.returncode != 0:
        tally.failed_to_heal.append(f"{what} ({how}): exit {res.returncode}: {res.stderr[-300:]}")
    if any((reader.root / "out").glob("*/evil.sh")):
        tally.wrong_with_exit_0.append(f"{what}: an extra file was served")
    tally.runs["remote-lie"] += 1


def frozen_remote_scenario(p: ChaosProject, server_pid: int, timeout_s: float, tally: Tally, what: str) -> float:
    """The remote server frozen (SIGSTOP): the build goes on locally; returns how long the build took."""
    shutil.rmtree(p.root / "out", ignore_errors=True)
    before = p.snapshot_outside()
    os.killpg(server_pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        res = p.cli("build", "-q")
        took = time.monotonic() - t0
    finally:
        os.killpg(server_pid, signal.SIGCONT)
    if res.returncode != 0:
        tally.failed_to_heal.append(f"{what}: exit {res.returncode} with the remote frozen: {res.stderr[-300:]}")
    p.check(tally, what, res, before)
    tally.runs["frozen-remote"] += 1
    return took


# --- fuzzed manifests --------------------------------------------------------------------------------------
SEED_MANIFESTS = ("embeddings.toml", "whisper.toml")
FUZZ_OK = ("ManifestError", "UsageError", "InputError", "BackendUnavailable", "UnknownNameError", "PluginError")


def fuzz_case(root: Path, text: str | bytes, timeout_s: float = 10.0) -> str | None:
    """Load and plan one manifest in this process; None when it ended in a qeffbuild error or a plan,
    else what went wrong (another exception, or a hang)."""
    from qeffbuild.api import Project
    from qeffbuild.errors import QeffbuildError

    folder = root / "manifests"
    for f in folder.glob("*.toml"):
        f.unlink()
    path = folder / "fuzz.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))

    def alarm(_signum: int, _frame: Any) -> None:
        raise TimeoutError("hang")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        project = Project(manifests=[folder], out_dir=root / "out")
        project.plan()
        return None
    except QeffbuildError:
        return None
    except TimeoutError:
        return "hang"
    except Exception as e:
        return f"{type(e).__name__}: {str(e)[:200]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def mutate(text: str, rng: random.Random) -> str:
    """A random edit of a valid manifest: values swapped for hostile ones, lines dropped or cut."""
    hostile = ["nan", "inf", "-inf", "1e309", "-1", "0", "99999999999999999999", '"x"', "true", "[]", "{}",
               '"' + "a" * 300 + '"', "[" * 40 + "]" * 40, '"../../etc"', '"/dev/zero"', "1.5", '""',
               '{ random = "NoSuchModel" }', '"\\u0000"', "[1, 2, 3]", '"' + "é" * 50 + '"']
    lines = text.splitlines()
    for _ in range(rng.randint(1, 4)):
        if not lines:
            break
        i = rng.randrange(len(lines))
        op = rng.random()
        if op < 0.5 and "=" in lines[i]:
            key = lines[i].split("=", 1)[0]
            lines[i] = f"{key}= {rng.choice(hostile)}"
        elif op < 0.65:
            del lines[i]
        elif op < 0.8:
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
        elif op < 0.9:
            lines.insert(i, f"[{rng.choice(['models', 'steps', 'specializations', 'validations'])}."
                            f"{'n' * rng.choice([1, 300])}]")
        else:
            lines.insert(i, f"{rng.choice(['seq_len', 'ctx_len', 'task', 'checks', 'deps', 'bogus'])} = "
                            f"{rng.choice(hostile)}")
    return "\n".join(lines) + "\n"
