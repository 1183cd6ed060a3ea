"""Shared fixtures: isolated projects on disk and a CLI runner that runs the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class ProjectDir:
    """A throwaway checkout: manifests/ plus out/ under one folder."""

    root: Path

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def manifest(self, text: str, name: str = "project.toml") -> Path:
        return self.write(f"manifests/{name}", text)

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 900) -> Result:
        return run_cli(self.root, *args, env=env, timeout=timeout)

    def popen(self, *args: str, **kw: object) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "qeffbuild", *args], cwd=self.root, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]


def noop_build(root: Path, target: str) -> dict[str, object]:
    """Build ``target`` again in a fresh process: its step counts, and whether torch got imported."""
    code = ("import sys, json\nfrom qeffbuild.api import Project\n"
            "r = Project().build([sys.argv[1]])\n"
            "print(json.dumps({'counts': r.counts(), 'torch': 'torch' in sys.modules}))\n")
    out = subprocess.run([sys.executable, "-c", code, target], cwd=root, capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def run_cli(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 900) -> Result:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "qeffbuild", *args], cwd=cwd, capture_output=True, text=True,
                          env=full_env, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def project(tmp_path: Path) -> ProjectDir:
    return ProjectDir(tmp_path)
