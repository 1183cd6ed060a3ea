"""Plug-ins: registries refuse unknown names; a backend installed as an entry point works end to end."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from qeffbuild.core.plugins import Plugins, plugins, submodule_names
from qeffbuild.core.registry import Registry
from qeffbuild.errors import UnknownNameError

from ..helpers import ProjectDir

PLUGIN = '''
"""A third-party compile backend: copies the ONNX model (stands in for a vendor compiler)."""
import shutil
from typing import ClassVar
from qeffbuild.core.plugins import Backend, Metric, Runtime
from qeffbuild.core.tables import Table


class CopyOptions(Table):
    level: int = 1


class CopyBackend(Backend):
    name = "copy"
    description = "copies the ONNX model"
    consumes = "onnx"
    devices = ("cpu",)
    toolchain = ()
    compile = "copy_plugin:compile_model"
    session = "qeffbuild.backends.ort:OrtSession"
    options: ClassVar = CopyOptions


def compile_model(ctx):
    shutil.copy(ctx.inputs["onnx"] / "model.onnx", ctx.out / "model.onnx")


def rmse(ref, got):
    import numpy as np

    return float(np.sqrt(((np.asarray(ref, np.float64) - np.asarray(got, np.float64)) ** 2).mean()))


def register(plugins):
    plugins.backends.add("copy", CopyBackend())
    plugins.runtimes.add("copy-runtime", Runtime("copy-runtime", "ONNX Runtime on the copy", "copy"))
    plugins.metrics.add("rmse", Metric("rmse", "tensor", False, "root mean square error", "copy_plugin:rmse"))
'''

MANIFEST = """
[project]
name = "p"

[models.m]
source = { random = "BertModel", config = { hidden_size = 8, num_attention_heads = 2, num_hidden_layers = 2 } }
task = "embedding"

[specializations.s]
model = "m"
seq_len = [8]
compile = ["copy"]

[specializations.s.copy]
level = %d
"""


def _install(root: Path, source: str, name: str = "copy_plugin") -> dict[str, str]:
    site = root / "site"
    dist = site / f"{name}-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / f"{name}.py").write_text(textwrap.dedent(source))
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[qeffbuild.plugins]\n{name} = {name}:register\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_registry_refuses_unknown_names_with_the_known_ones() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("alpha", 1)
    with pytest.raises(UnknownNameError, match=r"unknown widget 'alpah'; did you mean 'alpha'\? \(known: alpha\)"):
        reg.get("alpah")
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("alpha", 2)


def test_builtin_plugins_fill_every_registry() -> None:
    p = plugins()
    assert {"causal-lm", "embedding", "speech-seq2seq"} <= set(p.tasks.names())
    assert len(p.tasks) == len(submodule_names("qeffbuild.tasks"))  # every family package registers itself
    assert {"ort", "aoti", "qaic"} <= set(p.backends.names())
    assert {"pytorch", "pytorch-transformed", "onnxruntime", "aoti", "sentence-transformers"} <= set(p.runtimes)
    assert {"mad", "max_abs", "cosine", "token_agreement", "wer", "cer", "wer_delta", "divergence_gap"} \
        <= set(p.metrics)
    fresh = Plugins()
    fresh.load("qeffbuild.checks")
    assert fresh.metrics.names() == sorted(["mad", "max_abs", "cosine", "token_agreement", "wer", "cer", "wer_delta",
                                            "divergence_gap"])


def test_an_entry_point_backend_with_options_plans_and_keys(project: ProjectDir) -> None:
    env = _install(project.root, PLUGIN)
    project.manifest(MANIFEST % 1)
    info = project.cli("env", "--json", env=env).json()
    assert "entry point copy_plugin (copy_plugin:register)" in info["plugins"]
    assert "copy" in {b["name"] for b in info["backends"]} and "rmse" in {m["name"] for m in info["metrics"]}
    plan1 = {s["id"]: s for s in project.cli("plan", "s", "--json", env=env).json()["steps"]}
    assert "compile:copy:s:seq8" in plan1
    project.manifest(MANIFEST % 2)
    plan2 = {s["id"]: s for s in project.cli("plan", "s", "--json", env=env).json()["steps"]}
    changed = sorted(k for k in plan1 if plan1[k]["key"] != plan2[k]["key"])
    assert changed == ["compile:copy:s:seq8"]  # its option is part of its key, and nothing else's
    schema = json.loads(project.cli("schema", env=env).out)
    assert any("copy" in d.get("properties", {}) for d in schema["$defs"].values())


def test_a_backend_option_typo_is_a_manifest_error(project: ProjectDir) -> None:
    env = _install(project.root, PLUGIN)
    project.manifest((MANIFEST % 1).replace("level = 1", "levle = 1"))
    res = project.cli("plan", "s", env=env)
    assert res.code == 2
    assert "[specializations.s] copy.levle: unknown key 'levle'; did you mean 'level'? (expected one of: level)" \
        in res.err


def test_a_broken_plugin_breaks_only_what_needs_it(project: ProjectDir) -> None:
    """A third-party plug-in that raises while registering: `ls` and the built-in families still work, the
    plug-in is named with its error and the fix, and a target that needs its backend says where it went."""
    env = _install(project.root, "def register(plugins):\n    raise RuntimeError('boom')\n", "broken_plugin")
    project.manifest((MANIFEST % 1).replace('compile = ["copy"]', 'compile = ["ort"]')
                     .replace("[specializations.s.copy]\nlevel = 1\n", ""))
    project.manifest(MANIFEST.replace('name = "p"', 'name = "q"').replace("[models.m]", "[models.m2]")
                     .replace('model = "m"', 'model = "m2"').replace("[specializations.s]", "[specializations.s2]")
                     .replace("[specializations.s.copy]\nlevel = %d\n", ""), "copy.toml")
    warning = ("warning: the qeffbuild plug-in 'broken_plugin' (broken_plugin:register) failed to load "
               "(RuntimeError: boom); fix or uninstall its package")
    res = project.cli("ls", "-m", "manifests/project.toml", env=env)
    assert res.code == 0, res.err
    assert "s " in res.out and warning in res.err
    assert project.cli("plan", "-m", "manifests/project.toml", "s", env=env).code == 0
    info = project.cli("env", "--json", env=env).json()
    assert info["broken_plugins"] and "broken_plugin" in info["broken_plugins"][0]
    res = project.cli("plan", "-m", "manifests/copy.toml", "s2", env=env)
    assert res.code == 2 and "Traceback" not in res.err
    assert "unknown compile backend 'copy'" in res.err and "it may belong to the qeffbuild plug-in " \
           "'broken_plugin'" in res.err, res.err


def test_a_family_package_that_fails_to_import_leaves_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def failing(name: str, package: str | None = None) -> object:
        if name == "qeffbuild.tasks.embedding":
            raise ImportError("simulated: a missing dependency")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", failing)
    fresh = Plugins()
    fresh.load("qeffbuild.checks")
    fresh.load("qeffbuild.backends")
    fresh.load("qeffbuild.runtimes")
    fresh.load("qeffbuild.tasks")
    assert "embedding" not in fresh.tasks and "speech-seq2seq" in fresh.tasks and "causal-lm" in fresh.tasks
    assert fresh.broken == ["qeffbuild.tasks.embedding failed to load (ImportError: simulated: a missing "
                            "dependency); fix qeffbuild.tasks.embedding or remove it"]
    with pytest.raises(UnknownNameError, match=r"it may belong to qeffbuild\.tasks\.embedding failed to load"):
        fresh.tasks.get("embedding")


@pytest.mark.slow
def test_a_plugin_backend_and_runtime_build_and_validate(project: ProjectDir) -> None:
    """A backend and its runtime from one third-party file: compiled, opened and checked like the built-ins."""
    import shutil

    from ..helpers import REPO

    env = _install(project.root, PLUGIN)
    shutil.copytree(REPO / "manifests" / "data" / "bert-tokenizer", project.root / "manifests" / "tok")
    shutil.copy(REPO / "manifests" / "data" / "sentences.txt", project.root / "manifests" / "s.txt")
    project.manifest((MANIFEST % 1).replace("config = {", 'tokenizer = { path = "tok" }, config = {').replace(
        "seq_len = [8]", "seq_len = [64]") + """
[validations.v]
model = "m"
specializations = ["s"]
runtimes = ["pytorch", "copy-runtime"]
inputs = "s.txt"
checks = { copy-runtime = { rmse = 1e-5 } }   # the plug-in's own metric, bounded like a built-in one
""")
    res = project.cli("build", "v", "--json", env=env)
    assert res.code == 0, res.err
    report = json.loads((project.root / "out" / "v" / "report.json").read_text())
    row = next(r for r in report["rows"] if r["runtime"] == "copy-runtime")
    assert row["ok"] and row["mad"] <= 1e-5 and row["bounds"] == {"mad": 1e-5, "cosine": 0.99999, "rmse": 1e-5}
    assert 0 <= row["rmse"] <= 1e-5  # computed through the registry: no family code names it
