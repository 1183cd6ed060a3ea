"""Conformance of every registered model family (task plug-in): its declarations hold together, and it ships a
tiny default validation that plans, builds and validates like every other family's.

A new family passes this suite by being registered and checked in with a default validation target; nothing
here names a family.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qeffbuild.core.loader import load
from qeffbuild.core.plugins import load_attr, plugins

from ..helpers import REPO, ProjectDir, checkout

FAMILIES = plugins().tasks.names()
NUMERIC = ("reference", "same-program", "compiled", "library", "accelerator")


def default_validation(family: str) -> str:
    """The family's checked-in default validation (the first in the manifests' default lists)."""
    ws = load([REPO / "manifests"])
    for name in ws.defaults():
        ref = ws.targets[name]
        if ref.table == "validations" and ws.task_of(ref).name == family:
            return name
    raise AssertionError(f"family {family!r} ships no default validation in manifests/; add a tiny one")


@pytest.mark.parametrize("family", FAMILIES)
def test_declarations_hold_together(family: str) -> None:
    task = plugins().tasks.get(family)
    metrics = plugins().metrics
    assert task.metrics, "a family reports at least one metric"
    for name in task.metrics:
        assert metrics.get(name).kind in task.evidence, f"{name} is computed from evidence {family} does not gather"
    for numeric in NUMERIC:
        for dtype in ("float32", "float16", "bfloat16"):
            bounds = task.default_checks(numeric, dtype)  # type: ignore[arg-type]
            assert set(bounds) <= set(task.metrics), (numeric, dtype, bounds)
            assert (numeric == "reference") == (not bounds), "only the reference itself goes unbounded"
    for attr in ("run_render", "report_html"):
        if getattr(task, attr):
            assert callable(load_attr(getattr(task, attr)))
    for table in (task.model_table, task.specialization_table, task.validation_table):
        assert table.model_config.get("frozen"), f"{table.__name__}: manifest tables are frozen"
    # its defaults for a backend's options name a registered backend's table and are values that table takes
    options = {b.options_table(): b.options for b in map(plugins().backends.get, plugins().backends.names())}
    for (table_name, dtype), values in task.option_defaults.items():
        assert options.get(table_name) is not None and dtype in ("float32", "float16", "bfloat16", "int8"), table_name
        options[table_name].model_validate(values)  # type: ignore[union-attr]
    assert default_validation(family)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_validation_step_runs_alone(family: str) -> None:
    """A validation times the runtimes it checks (its report's speed columns): its step is exclusive, so the
    executor runs no other step beside it."""
    from qeffbuild.core.graph import expand

    graph = expand(load([REPO / "manifests"]), [default_validation(family)])
    validations = [n for n in graph.nodes.values() if n.kind == "validate"]
    assert validations and all(n.exclusive for n in validations)
    assert not [n.id for n in graph.nodes.values() if n.kind != "validate" and n.exclusive]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> ProjectDir:
    project = checkout(tmp_path_factory.mktemp("conformance"), shared_cache)
    res = project.cli("build", *(default_validation(f) for f in FAMILIES))
    assert res.code == 0, res.err + res.out
    return project


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_the_default_validation_plans_builds_and_validates(built: ProjectDir, family: str) -> None:
    target = default_validation(family)
    report: dict[str, Any] = json.loads((built.root / "out" / target / "report.json").read_text())
    task = plugins().tasks.get(family)
    assert report["task"] == family and report["ok"] is True
    assert isinstance(report["random_weights"], bool)
    assert report["rows"][0]["runtime"] == "pytorch"
    compared = [r for r in report["rows"] if r["runtime"] != "pytorch"]
    assert {"onnxruntime"} <= {r["runtime"] for r in compared}, "every family runs on ONNX Runtime"
    for row in compared:
        assert row["ok"] and row["failures"] == [] and row["bounds"], row["runtime"]
        assert set(row["bounds"]) <= set(row), "every bounded metric was measured"
        assert any(m in row for m in task.metrics)
    for name in ("report.txt", "report.html"):
        assert (built.root / "out" / target / name).stat().st_size > 0
    plan = built.cli("plan", target, "--json").json()
    assert plan["to_run"] == 0, "a second build of an unchanged family is a no-op"
