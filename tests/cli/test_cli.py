"""The CLI's other commands: ls, graph, schema, init, cache, and importing no heavy modules."""

from __future__ import annotations

import json
import subprocess
import sys

from ..helpers import REPO, ProjectDir, run_cli

STEPS = """
[project]
name = "c"

[steps.a]
cmd = ["sh", "-c", "echo a > a.txt"]
outputs = ["a.txt"]

[steps.b]
cmd = ["sh", "-c", "cat {dep:a}/a.txt > b.txt"]
outputs = ["b.txt"]
deps = ["a"]
"""


def test_ls_lists_targets_with_their_place(project: ProjectDir) -> None:
    project.manifest(STEPS)
    rows = json.loads(project.cli("ls", "--json").out)
    assert [(r["name"], r["kind"], r["line"]) for r in rows] == [("a", "step", 4), ("b", "step", 8)]


def test_graph_formats(project: ProjectDir) -> None:
    project.manifest(STEPS)
    dot = project.cli("graph", "b", "--format", "dot").out
    assert '"command:a" -> "command:b" [label="a/command:a"];' in dot
    mermaid = project.cli("graph", "b", "--format", "mermaid").out
    assert mermaid.startswith("flowchart LR") and "-->" in mermaid
    data = json.loads(project.cli("graph", "b", "--format", "json").out)
    order = data["topological_order"]
    assert order.index("command:a") < order.index("command:b") < order.index("target:b")


def test_model_graph_has_one_compile_per_seq_len(project: ProjectDir) -> None:
    project.manifest("""
        [project]
        name = "g"
        [models.m]
        source = { random = "BertModel", config = { hidden_size = 8 } }
        task = "embedding"
        [specializations.s]
        model = "m"
        seq_len = [8, 32, 64]
        compile = ["ort", "aoti"]
    """)
    data = json.loads(project.cli("graph", "s", "--format", "json").out)
    nodes = {n["id"] for n in data["nodes"]}
    compiles = sorted(n for n in nodes if n.startswith("compile:"))
    assert compiles == [f"compile:{b}:s:seq{n}" for b in ("aoti", "ort") for n in (32, 64, 8)]
    assert {"load:m", "transform:m:float32", "export:m:float32:opset18"} <= nodes


def test_schema_is_json_schema_of_the_manifest() -> None:
    schema = json.loads(run_cli(REPO, "schema").out)
    assert set(schema["properties"]) == {"project", "models", "specializations", "validations", "steps"}
    assert schema["required"] == ["project"]


def test_init_scaffolds_a_loadable_project(project: ProjectDir) -> None:
    res = project.cli("init", "--name", "Demo Project")
    assert res.code == 0
    listed = json.loads(project.cli("ls", "--json").out)
    assert {r["name"] for r in listed} == {"tiny-bert", "tiny-bert-b4", "tiny-bert-parity", "tiny-bert-count"}
    assert project.cli("build", "tiny-bert-count").code == 0
    assert (project.root / "out" / "tiny-bert-count" / "count.txt").read_text().strip() == "5"
    again = project.cli("init")
    assert again.code == 2 and "--force" in again.err


def test_cache_stats_and_gc(project: ProjectDir) -> None:
    project.manifest(STEPS)
    project.cli("build")
    stats = json.loads(project.cli("cache", "stats").out)
    assert stats["entries"] == 2
    project.manifest(STEPS.replace("echo a", "echo A"))
    project.cli("build")
    gc = json.loads(project.cli("cache", "gc").out)
    assert gc["entries_dropped"] == 2  # the old a and b; the current ones stay
    assert json.loads(project.cli("build", "--json").out)["counts"] == {"cached": 2}


def test_planning_and_noop_builds_import_no_heavy_modules(project: ProjectDir) -> None:
    """A fully cached build of model targets must not import torch, transformers or onnx."""
    project.manifest(STEPS)
    project.cli("build")
    code = (
        "import sys\n"
        "from qeffbuild.cli import main\n"
        "sys.argv = ['qeffbuild', '-m', sys.argv[1], 'plan']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'onnx', 'onnxruntime', 'networkx') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "manifests")], cwd=project.root,
                         capture_output=True, text=True).stdout
    assert "HEAVY []" in out
