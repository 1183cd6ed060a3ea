"""Test helpers: isolated projects on disk and a CLI runner that runs the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "manifests" / "data"

# Limits on how long a test waits for a child only catch hangs: a slow or loaded machine must never
# trip them. Building every model a test module needs takes ~3 min on an idle 2-core machine, so
# 40 min means "stuck", not "slow". No test asserts on how fast anything ran.
HANG_S = float(os.environ.get("QEFFBUILD_TEST_HANG_S", 2400))


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class ProjectDir:
    """A throwaway checkout: manifests/ plus out/ under one folder (``env`` applies to every command)."""

    root: Path
    env: dict[str, str] | None = None

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def manifest(self, text: str, name: str = "project.toml") -> Path:
        return self.write(f"manifests/{name}", text)

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = HANG_S,
            cwd: Path | None = None) -> Result:
        return run_cli(cwd or self.root, *args, env={**(self.env or {}), **(env or {})}, timeout=timeout)

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "qeffbuild", *args], cwd=self.root, text=True,
                                env={**os.environ, **(self.env or {})},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)

    def api(self) -> Any:
        """A Project over this checkout, in this process (cache as the CLI would pick it)."""
        from qeffbuild.api import Project

        cache = (self.env or {}).get("QEFFBUILD_CACHE_DIR")
        return Project(manifests=[self.root / "manifests"], out_dir=self.root / "out",
                       cache_dir=Path(cache) if cache else None)


def noop_build(root: Path, target: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """Build ``target`` again in a fresh process: its step counts, and whether torch got imported."""
    code = ("import sys, json\nfrom qeffbuild.api import Project\n"
            "r = Project().build([sys.argv[1]])\n"
            "print(json.dumps({'counts': r.counts(), 'torch': 'torch' in sys.modules}))\n")
    out = subprocess.run([sys.executable, "-c", code, target], cwd=root, capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def run_cli(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = HANG_S) -> Result:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "qeffbuild", *args], cwd=cwd, capture_output=True, text=True,
                          env=full_env, timeout=timeout, stdin=subprocess.DEVNULL)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def checkout(root: Path, cache: Path | None = None) -> ProjectDir:
    """A copy of the checked-in manifests under ``root`` (using ``cache`` when given)."""
    import shutil

    shutil.copytree(REPO / "manifests", root / "manifests")
    return ProjectDir(root, {"QEFFBUILD_CACHE_DIR": str(cache)} if cache else None)


def alive(pid: int, started: str | None = None) -> bool:
    """Whether process ``pid`` still runs (a zombie awaiting its parent does not count); with ``started`` (its
    ``start_time``), only if it is still that process and not a new one given the same pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    try:
        if status.exists() and "zombie" in status.read_text():
            return False
    except OSError:  # gone while we looked
        return False
    return started is None or start_time(pid) == started


def start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, /proc/PID/stat field 22): with the pid, it names
    one process even after the pid is reused (a busy machine wraps a small pid space within a test run)."""
    from qeffbuild.store.local import proc_stat

    fields = proc_stat(pid)
    return fields[19] if fields else None
