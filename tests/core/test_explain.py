"""`explain` and `plan` name the key component that changed, as reason codes with details."""

from __future__ import annotations

import json

import pytest

from qeffbuild.core.explain import CODES, Reason, diff_material, reasons

from ..helpers import ProjectDir

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
def built(project: ProjectDir) -> ProjectDir:
    project.manifest(MANIFEST.replace("{msg}", "hi"))
    project.write("manifests/in.txt", "1\n")
    assert project.api().build(["use"]).ok
    return project


def _reasons(project: ProjectDir, step: str) -> list[dict[str, object]]:
    rows = {r["step"]: r for r in project.api().explain("use")}
    reasons_: list[dict[str, object]] = rows[step]["reasons"]
    return reasons_


def test_unchanged_after_a_build(built: ProjectDir) -> None:
    assert all(r["status"] == "unchanged" for r in built.api().explain("use"))


def test_param_change(built: ProjectDir) -> None:
    built.manifest(MANIFEST.replace("{msg}", "bye"))
    (change,) = _reasons(built, "command:gen")
    assert change["code"] == "param_changed" and change["path"] == "cmd[2]"
    assert change["old"] == "echo hi > g.txt" and change["new"] == "echo bye > g.txt"
    assert change["text"] == "param cmd[2] changed: 'echo hi > g.txt' → 'echo bye > g.txt'"
    (up,) = _reasons(built, "command:use")
    assert up["code"] == "upstream_changed" and up["step"] == "command:gen" and up["role"] == "gen/command:gen"


def test_input_file_change(built: ProjectDir) -> None:
    built.write("manifests/in.txt", "2\n")
    (change,) = _reasons(built, "command:use")
    assert change["code"] == "input_file_changed" and change["label"] == "in.txt"
    assert str(change["text"]).startswith("input file in.txt changed: content ")


def test_salt_change(built: ProjectDir) -> None:
    built.manifest(MANIFEST.replace("{msg}", "hi").replace('"one"', '"two"'))
    assert _reasons(built, "command:gen") == [
        {"code": "salt_changed", "old": "one", "new": "two", "text": "project salt changed: 'one' → 'two'"}]


def test_plan_gives_the_same_reasons_and_check_exits_1(built: ProjectDir) -> None:
    built.write("manifests/in.txt", "3\n")
    res = built.cli("plan", "use", "--json")
    steps = {s["id"]: s for s in json.loads(res.out)["steps"]}
    assert steps["command:gen"]["action"] == "cached"
    assert steps["command:use"]["action"] == "run"
    assert steps["command:use"]["reasons"][0]["code"] == "input_file_changed"
    text = built.cli("explain", "use").out
    assert "changed    command:use" in text and "1 of 2 steps differ" in text
    assert built.cli("plan", "--check", "use").code == 1
    assert built.cli("build", "use").code == 0
    assert built.cli("plan", "--check", "use").code == 0


def test_never_built(project: ProjectDir) -> None:
    project.manifest(MANIFEST.replace("{msg}", "hi"))
    project.write("manifests/in.txt", "1\n")
    assert _reasons(project, "command:gen") == [{"code": "new", "text": "never built"}]


def test_force_reruns_the_named_targets_steps_only(built: ProjectDir) -> None:
    plan = {s["id"]: s for s in built.cli("plan", "--json").json()["steps"]}
    assert all(s["action"] == "cached" for s in plan.values())
    res = built.cli("build", "--force", "use", "--json")
    steps = res.json()["steps"]
    assert steps["command:use"]["status"] == "built" and steps["command:gen"]["status"] == "cached"


BASE = {"kind": "transform", "version": 1, "params": {"a": {"b": 1}, "c": 2}, "files": {"f": "d1" * 32},
        "deps": {"model": "k1" * 32}, "toolchain": {"torch": "2.0"}, "salt": ""}


def test_every_component_has_its_code() -> None:
    new = {**BASE, "version": 2, "params": {"a": {"b": 2}, "x": 1}, "files": {"g": "d2" * 32},
           "deps": {"model": "k2" * 32}, "toolchain": {"torch": "2.1"}, "salt": "s"}
    codes = [r.code for r in diff_material(BASE, new, {"model": "load:m"})]
    assert codes == ["version_changed", "param_changed", "param_removed", "param_added", "input_file_removed",
                     "input_file_added", "upstream_changed", "toolchain_changed", "salt_changed"]
    assert [r.code for r in reasons(None, True, BASE)] == ["entry_gone"]
    assert [r.code for r in reasons(BASE, True, BASE)] == ["same_material"]
    assert [r.code for r in reasons(None, False, BASE)] == ["new"]


@pytest.mark.parametrize("code", CODES)
def test_every_code_renders_text(code: str) -> None:
    detail = {"old": "a" * 20, "new": "b" * 20, "path": "p", "label": "l", "role": "r", "step": "s", "tool": "t",
              "why": "w"}
    assert Reason.of(code, **detail).text()
