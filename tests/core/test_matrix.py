"""A matrix in a manifest: rows, substitution, located mistakes, and the expanded targets end to end."""

from __future__ import annotations

import json

import pytest

from qeffbuild.core.matrix import MatrixError, rows_of, substitute

from ..helpers import ProjectDir


def test_rows_are_the_cross_product_less_excludes_plus_includes() -> None:
    rows = rows_of({"model": ["a", "b"], "batch": [1, 4], "exclude": [{"model": "b", "batch": 1}],
                    "include": [{"model": "c", "batch": 8}, {"model": "a", "batch": 1}]})
    assert rows == [{"model": "a", "batch": 1}, {"model": "a", "batch": 4}, {"model": "b", "batch": 4},
                    {"model": "c", "batch": 8}]  # an include row already present is not added twice


@pytest.mark.parametrize(("matrix", "key", "message"), [
    ({"batch": 4}, "matrix.batch", "axis 'batch' must be a non-empty list of values, got 4"),
    ({"batch": []}, "matrix.batch", "must be a non-empty list"),
    ({"batch": [1, 1]}, "matrix.batch", "lists a value twice"),
    ({"batch": [{"x": 1}]}, "matrix.batch[0]", "axis values are strings, numbers or booleans"),
    ({"include": [{"batch": 1}]}, "matrix", "matrix has no axes"),
    ({"batch": [1], "exclude": [{"btach": 1}]}, "matrix.exclude[0]", "exclude names 'btach', not an axis"),
    ({"a": [1], "b": [2], "include": [{"a": 3}]}, "matrix.include[0]", "an include row names every axis; add b"),
    ({"batch": [1], "exclude": [{"batch": 1}]}, "matrix.exclude", "exclude removes every row"),
    ({"a": list(range(1000)), "b": list(range(1000))}, "matrix", "matrix has 1000000 rows, more than 100000"),
    ("1, 2", "matrix", "matrix must be a table of axes"),
])
def test_mistakes_are_located(matrix: object, key: str, message: str) -> None:
    with pytest.raises(MatrixError) as err:
        rows_of(matrix)
    assert err.value.key == key and message in str(err.value)


def test_substitution_keeps_types_where_a_value_is_one_reference() -> None:
    row = {"model": "minilm", "batch": 4, "fp16": True}
    body = {"batch_size": "${matrix.batch}", "name": "${matrix.model}-b${matrix.batch}", "flag": "${matrix.fp16}",
            "list": ["x-${matrix.fp16}", "${matrix.model}"], "plain": "{out}/${nothing"}
    assert substitute(body, row, "") == {"batch_size": 4, "name": "minilm-b4", "flag": True,
                                         "list": ["x-true", "minilm"], "plain": "{out}/${nothing"}
    with pytest.raises(MatrixError, match=r"unknown matrix axis 'bach' in '\$\{matrix.bach\}' \(axes: model, batch"):
        substitute({"k": "${matrix.bach}"}, row, "")


MANIFEST = """
[project]
name = "m"
default = []

[steps."echo-${matrix.word}-${matrix.n}"]
matrix = { word = ["hello", "world"], n = [1, 2, 3], exclude = [{ word = "world", n = 3 }] }
cmd = ["sh", "-c", "echo ${matrix.word} ${matrix.n} > {out}/said.txt"]
outputs = ["said.txt"]
"""


def test_expanded_targets_build_list_and_keep_their_line(project: ProjectDir) -> None:
    project.manifest(MANIFEST)
    rows = {r["name"]: r for r in project.cli("ls", "--json").json()}
    assert sorted(rows) == ["echo-hello-1", "echo-hello-2", "echo-hello-3", "echo-world-1", "echo-world-2"]
    assert {r["line"] for r in rows.values()} == {5}  # the matrix table's header
    assert rows["echo-world-2"]["file"].endswith("project.toml")
    res = project.cli("build", "echo-*", "--json")
    assert res.code == 0, res.err
    assert (project.root / "out" / "echo-world-2" / "said.txt").read_text() == "world 2\n"
    assert json.loads(res.out)["ok"] is True


@pytest.mark.parametrize(("body", "expect"), [
    ('matrix = { n = [1, 2] }\ncmd = ["true"]\noutputs = []', ":5: [steps.echo-${matrix.word}-${matrix.n}]: "
     "unknown matrix axis 'word' in 'echo-${matrix.word}-${matrix.n}' (axes: n)"),
    ('matrix = { word = ["a"], n = [1, 2], include = [{ word = "b" }] }\ncmd = ["true"]',
     ":6: [steps.echo-${matrix.word}-${matrix.n}] matrix.include[0]: an include row names every axis; add n"),
    ('matrix = { word = ["a"], n = [1] }\ncmd = ["${matrix.nn}"]', "[steps.echo-${matrix.word}-${matrix.n}] cmd[0]: "
     "unknown matrix axis 'nn'"),
    ('matrix = { word = ["a", "b"], n = [1] }\ncmd = ["true"]\noutputs = ["../${matrix.word}"]',
     ":8: [steps.echo-a-1] outputs[0]: output '../a' must be a relative path inside the step's output folder "
     "(matrix row word=a, n=1)"),
])
def test_a_mistake_in_a_matrix_names_its_line_and_row(project: ProjectDir, body: str, expect: str) -> None:
    head = MANIFEST.split("matrix =")[0]
    project.manifest(head + body + "\n")
    res = project.cli("plan", "echo-a-1")
    assert res.code == 2 and "Traceback" not in res.err
    assert expect in res.err, res.err


def test_two_rows_with_one_name_are_refused(project: ProjectDir) -> None:
    project.manifest(MANIFEST.replace('[steps."echo-${matrix.word}-${matrix.n}"]', '[steps."echo-${matrix.word}"]'))
    res = project.cli("ls")
    assert res.code == 2
    assert "both give the name 'echo-hello'" in res.err and ":6:" in res.err, res.err


def test_the_schema_describes_the_matrix(project: ProjectDir) -> None:
    import tomllib

    import jsonschema

    from ..helpers import REPO

    schema = project.cli("schema").json()
    jsonschema.validate(tomllib.loads((REPO / "manifests" / "nightly.toml").read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"project": {"name": "x"}, "steps": {"s": {"matrix": {"a": 1}, "cmd": ["true"]}}},
                            schema)
