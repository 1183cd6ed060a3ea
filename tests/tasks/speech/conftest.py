"""The generated evaluation set (short utterances and long recordings), made once per test session."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ...helpers import REPO, ProjectDir


@pytest.fixture(scope="session")
def eval_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``scripts/make_eval_set.py``'s output, as CI makes it (espeak-ng and sox)."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run `sh scripts/system-deps.sh` (the README's set-up does)")
    out = tmp_path_factory.mktemp("evalset") / "eval"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "make_eval_set.py"), str(out)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    return out


def with_eval(p: ProjectDir, eval_set: Path) -> Path:
    """The evaluation set where the checked-in manifests look for it (data/eval)."""
    dest = p.root / "manifests" / "data" / "eval"
    shutil.copytree(eval_set, dest, dirs_exist_ok=True)
    return dest
