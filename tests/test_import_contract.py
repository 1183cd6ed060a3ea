"""The import contract: the engine, store, executors, checks, CLI and each family's __init__ never import
torch, transformers, onnx, onnxruntime or Ray (import-linter, configured in pyproject.toml; the Ray
executor alone may import Ray)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .helpers import HANG_S, REPO


def _lint(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=HANG_S)


def test_the_contract_in_pyproject_is_kept() -> None:
    res = _lint()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Contracts: 5 kept, 0 broken." in res.stdout


def test_the_linter_does_catch_a_heavy_import(tmp_path: Path) -> None:
    """The same tool on the same package with a contract we know is broken (the engine imports pydantic,
    some of it inside functions): it must fail, so a kept contract means something."""
    config = tmp_path / "contract.ini"
    config.write_text(
        "[importlinter]\nroot_package = qeffbuild\ninclude_external_packages = True\n\n"
        "[importlinter:contract:probe]\nname = probe\ntype = forbidden\n"
        "source_modules =\n    qeffbuild.core\nforbidden_modules =\n    pydantic\n    jinja2\n"
    )
    res = _lint("--config", str(config))
    assert res.returncode == 1, res.stdout
    assert "probe BROKEN" in res.stdout and "qeffbuild.core" in res.stdout


def test_the_family_wildcard_matches_every_family(tmp_path: Path) -> None:
    """`qeffbuild.tasks.*` (as modules) covers each family's __init__: every one imports pydantic."""
    config = tmp_path / "contract.ini"
    config.write_text(
        "[importlinter]\nroot_package = qeffbuild\ninclude_external_packages = True\n\n"
        "[importlinter:contract:probe]\nname = probe\ntype = forbidden\nas_packages = False\n"
        "source_modules =\n    qeffbuild.tasks.*\nforbidden_modules =\n    pydantic\n"
    )
    res = _lint("--config", str(config))
    assert res.returncode == 1
    for family in ("qeffbuild.tasks.embedding", "qeffbuild.tasks.speech"):
        assert f"{family} -> pydantic" in res.stdout


def test_listing_model_targets_imports_none_of_them(tmp_path: Path) -> None:
    """At run time too: a fully cached build (here: of steps only, after one real build) stays torch-free."""
    code = ("import sys\nfrom qeffbuild.cli import main\n"
            "try:\n    main(['-m', sys.argv[1], 'ls'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print(sorted(m for m in ('torch', 'transformers', 'onnx', 'onnxruntime') if m in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", code, str(REPO / "manifests")], cwd=tmp_path, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_a_local_build_never_imports_ray(tmp_path: Path) -> None:
    """The contract lets qeffbuild.exec.ray_cluster import Ray; a local build must never load that module."""
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "s.toml").write_text(
        '[project]\nname = "p"\n\n[steps.a]\ncmd = ["sh", "-c", "echo a > a.txt"]\noutputs = ["a.txt"]\n')
    code = ("import sys\nfrom qeffbuild.cli import main\n"
            "try:\n    main(['build', 'a'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print(sorted(m for m in ('ray', 'qeffbuild.exec.ray_cluster', 'fsspec') if m in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "QEFFBUILD_CACHE_DIR": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "out" / "a" / "a.txt").read_text() == "a\n", sorted((tmp_path / "out").rglob("*"))
    assert res.stdout.strip().splitlines()[-1] == "[]"
