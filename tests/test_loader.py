"""Manifest loading: golden error messages for bad manifests, and what good ones load into."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qeffbuild.errors import ManifestError
from qeffbuild.loader import load

from .conftest import REPO, ProjectDir, run_cli

BAD = REPO / "tests" / "fixtures" / "bad"
CASES = sorted(p.stem for p in BAD.glob("*.toml"))


def test_there_are_enough_golden_cases() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", CASES)
def test_bad_manifest_golden_message(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each bad manifest gives exactly its golden message: file, line, table, key, fix."""
    monkeypatch.chdir(REPO)
    with pytest.raises(ManifestError) as err:
        load([BAD / f"{case}.toml"])
    golden = BAD / f"{case}.expected"
    if os.environ.get("QEFFBUILD_UPDATE_GOLDEN"):
        golden.write_text(str(err.value) + "\n")
    assert str(err.value) + "\n" == golden.read_text()


def test_cli_reports_manifest_errors_with_exit_2_and_no_traceback() -> None:
    res = run_cli(REPO, "-m", str(BAD / "unknown_key.toml"), "build")
    assert res.code == 2
    assert "Traceback" not in res.err
    assert "did you mean 'pooling'?" in res.err


def test_errors_of_several_files_are_reported_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    with pytest.raises(ManifestError) as err:
        load([BAD / "unknown_key.toml", BAD / "cycle.toml", BAD / "bad_dtype.toml"])
    files = {p.file for p in err.value.problems}
    assert len(files) == 3
    assert str(err.value).endswith("3 errors in 3 manifests")


def test_duplicate_names_across_files_name_both_places(project: ProjectDir) -> None:
    project.manifest('[project]\nname = "a"\n[steps.x]\ncmd = ["true"]\noutputs = ["o"]\n', "a.toml")
    project.manifest('[project]\nname = "b"\n\n[steps.x]\ncmd = ["true"]\noutputs = ["o"]\n', "b.toml")
    res = project.cli("ls")
    assert res.code == 2
    assert "manifests/b.toml:4: [steps.x]: duplicate target name 'x', already defined as [steps.x] at " \
           "manifests/a.toml:3" in res.err


def test_good_manifest_loads_every_table(project: ProjectDir) -> None:
    project.write("manifests/data/s.txt", "hello\n")
    project.manifest("""
        [project]
        name = "ok"
        default = ["v"]

        [models.m]
        source = { random = "BertModel", config = { hidden_size = 8 }, seed = 3 }
        task = "embedding"
        pooling = "cls"

        [specializations.s]
        model = "m"
        seq_len = 16

        [validations.v]
        model = "m"
        specializations = ["s"]
        runtimes = ["pytorch", "onnxruntime"]
        inputs = "data/s.txt"

        [steps.c]
        cmd = ["true"]
        outputs = ["o"]
    """)
    ws = load([project.root / "manifests"])
    assert sorted(ws.targets) == ["c", "m", "s", "v"]
    assert ws.defaults() == ["v"]
    spec = ws.targets["s"].spec
    assert spec.seq_len == [16]  # a single int is a one-entry list
    assert ws.targets["m"].spec.source.seed == 3
    with pytest.raises(Exception):  # noqa: B017 - frozen pydantic model
        spec.batch_size = 2  # type: ignore[misc]


def test_no_manifests_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    res = run_cli(tmp_path, "build")
    assert res.code == 2
    assert "no *.toml manifests found" in res.err and "qeffbuild init" in res.err
