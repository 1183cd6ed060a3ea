"""`explain` and `plan` name the key component that changed, for each kind of change."""

from __future__ import annotations

import dataclasses
import json

import pytest

from qeffbuild import keys
from qeffbuild.api import Project
from qeffbuild.steps import STEP_KINDS

from .conftest import ProjectDir

MANIFEST = """
[project]
name = "x"
salt = "one"

[steps.gen]
cmd = ["sh", "-c", "echo {msg} > g.txt"]
outputs = ["g.txt"]

[steps.use]
cmd = ["sh", "-c", "cat {dep:gen}/g.txt {root}/in.txt > u.txt"]
inputs = ["in.txt"]
outputs = ["u.txt"]
deps = ["gen"]
"""


@pytest.fixture
def built(project: ProjectDir, monkeypatch: pytest.MonkeyPatch) -> ProjectDir:
    project.manifest(MANIFEST.replace("{msg}", "hi"))
    project.write("manifests/in.txt", "1\n")
    monkeypatch.chdir(project.root)
    assert Project().build(["use"]).ok
    return project


def _changes(step: str) -> list[str]:
    rows = {r["step"]: r for r in Project().explain("use")}
    return rows[step]["changes"]


def test_unchanged_after_a_build(built: ProjectDir) -> None:
    assert all(r["status"] == "unchanged" for r in Project().explain("use"))


def test_param_change(built: ProjectDir) -> None:
    built.manifest(MANIFEST.replace("{msg}", "bye"))
    (change,) = _changes("command:gen")
    assert change.startswith("param cmd[2]") or change.startswith("param cmd changed")
    assert "echo hi" in change and "echo bye" in change
    assert "input gen/command:gen (command:gen) changed" in _changes("command:use")[0]


def test_input_file_change(built: ProjectDir) -> None:
    built.write("manifests/in.txt", "2\n")
    assert _changes("command:use")[0].startswith("input file in.txt changed: content ")


def test_salt_change(built: ProjectDir) -> None:
    built.manifest(MANIFEST.replace("{msg}", "hi").replace('"one"', '"two"'))
    assert _changes("command:gen") == ["project salt changed: 'one' → 'two'"]


def test_step_version_change(built: ProjectDir, monkeypatch: pytest.MonkeyPatch) -> None:
    kind = STEP_KINDS.get("command")
    monkeypatch.setitem(STEP_KINDS._items, "command", dataclasses.replace(kind, version=kind.version + 1))
    assert _changes("command:gen")[0] == "step version changed: 1 → 2 (qeffbuild changed how it runs)"


def test_toolchain_change(project: ProjectDir, monkeypatch: pytest.MonkeyPatch) -> None:
    kind = STEP_KINDS.get("command")
    monkeypatch.setitem(STEP_KINDS._items, "command", dataclasses.replace(kind, toolchain=("click",)))
    project.manifest(MANIFEST.replace("{msg}", "hi"))
    project.write("manifests/in.txt", "1\n")
    monkeypatch.chdir(project.root)
    assert Project().build(["use"]).ok
    real = keys.dist_version("click")
    monkeypatch.setattr(keys, "dist_version", lambda d: "99.0" if d == "click" else real)
    assert _changes("command:gen") == [f"toolchain click changed: {real} → 99.0"]


def test_plan_gives_the_same_reasons(built: ProjectDir) -> None:
    built.write("manifests/in.txt", "3\n")
    res = built.cli("plan", "use", "--json")
    steps = {s["id"]: s for s in json.loads(res.out)["steps"]}
    assert steps["command:gen"]["action"] == "cached"
    assert steps["command:use"]["action"] == "run"
    assert steps["command:use"]["reasons"][0].startswith("input file in.txt changed")
    text = built.cli("explain", "use").out
    assert "changed    command:use" in text and "1 of 2 steps differ" in text


def test_never_built(project: ProjectDir, monkeypatch: pytest.MonkeyPatch) -> None:
    project.manifest(MANIFEST.replace("{msg}", "hi"))
    project.write("manifests/in.txt", "1\n")
    monkeypatch.chdir(project.root)
    assert _changes("command:gen") == ["never built"]
