"""The CLI: ls, graph, schema, init, cache, env, clean, --json errors, env vars, project discovery."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qeffbuild.core.plugins import plugins

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
    assert all(r["default"] for r in rows)  # no default list: everything is built


def test_ls_aligns_long_names_and_marks_the_defaults(project: ProjectDir) -> None:
    long = "a-very-long-target-name-that-is-wider-than-any-fixed-column-would-be"
    project.manifest(STEPS.replace('name = "c"', 'name = "c"\ndefault = ["b"]').replace("[steps.a]", f"[steps.{long}]")
                     .replace("{dep:a}", f"{{dep:{long}}}").replace('deps = ["a"]', f'deps = ["{long}"]'))
    lines = project.cli("ls").out.splitlines()
    header, rows = lines[0], lines[2:4]
    where = header.index("where")
    assert all(len(r) > where and r[where - 2:where] == "  " for r in rows)  # one column, whatever the names
    assert rows[0].startswith(" ") and rows[1].startswith("*") and rows[1].split()[1] == "b"
    assert "* built by `qeffbuild build`" in lines[-1]


def test_project_options_work_after_the_subcommand_too(project: ProjectDir, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text(STEPS)
    res = project.cli("build", "-m", str(elsewhere), "--out-dir", str(tmp_path / "o"), "--cache-dir",
                      str(tmp_path / "c"), "b", "-q")
    assert res.code == 0, res.err
    assert (tmp_path / "o" / "b" / "b.txt").read_text() == "a\n" and (tmp_path / "c").is_dir()
    assert project.cli("-m", str(elsewhere), "ls", "--json").json() == project.cli("ls", "-m", str(elsewhere),
                                                                                   "--json").json()


def test_one_version_everywhere(project: ProjectDir) -> None:
    import qeffbuild

    project.manifest(STEPS)
    assert project.cli("--version").out.strip() == f"qeffbuild, version {qeffbuild.__version__}"
    assert project.cli("env", "--json").json()["qeffbuild"] == qeffbuild.__version__
    from importlib.metadata import version

    assert version("qeffbuild") == qeffbuild.__version__  # what pip installed: pyproject reads __init__


def test_a_fresh_out_dir_says_restored_not_up_to_date(project: ProjectDir, tmp_path: Path) -> None:
    project.manifest(STEPS)
    assert "(up to date)" not in project.cli("build").out
    assert "(up to date)" in project.cli("build").out
    fresh = project.cli("build", "--out-dir", str(tmp_path / "fresh"), "--cache-dir", str(project.root / "out/.cache"))
    assert "(restored from the cache)" in fresh.out and (tmp_path / "fresh" / "b" / "b.txt").is_file()
    assert project.cli("build", "--json").json()["targets"]["b"]["materialized"] is False


def test_a_script_beside_a_checkout_named_qeffbuild_imports_the_package(tmp_path: Path) -> None:
    """A folder named like the package (a checkout) beside a script must not shadow the installed package."""
    (tmp_path / "qeffbuild").mkdir()
    (tmp_path / "qeffbuild" / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    (tmp_path / "script.py").write_text("from qeffbuild import Project\nprint(Project.__module__)\n")
    out = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "qeffbuild.api", out.stderr


def test_system_deps_waits_for_the_dpkg_lock(tmp_path: Path) -> None:
    """scripts/system-deps.sh asks apt to wait for another apt's lock instead of failing at once."""
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("id", "sh"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    log = tmp_path / "apt.log"
    (bin_dir / "apt-get").write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    (bin_dir / "apt-get").chmod(0o755)
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    (bin_dir / "sudo").chmod(0o755)
    (bin_dir / "env").symlink_to(shutil.which("env") or "/usr/bin/env")
    out = subprocess.run(["sh", str(REPO / "scripts" / "system-deps.sh")], capture_output=True, text=True,
                         env={"PATH": str(bin_dir)})
    assert out.returncode == 0, out.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and all("DPkg::Lock::Timeout=" in c for c in calls)
    assert "install" in calls[1] and "espeak-ng" in calls[1]


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


def test_schema_is_json_schema_of_the_manifest_with_every_familys_fields() -> None:
    schema = json.loads(run_cli(REPO, "schema").out)
    assert set(schema["properties"]) == {"project", "models", "specializations", "validations", "steps"}
    assert schema["required"] == ["project"]
    defs = schema["$defs"]
    spec = next(v for k, v in defs.items() if k.endswith("Specialization") and "seq_len" in v["properties"])
    assert {"seq_len", "ctx_len", "encoder_ctx_len", "batch_size", "compile"} <= set(spec["properties"])
    models = schema["properties"]["models"]["additionalProperties"]
    assert set(models["discriminator"]["mapping"]) == set(plugins().tasks.names())


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
    assert list((project.root / "out" / ".cache" / "locks").glob("*/*.lock"))  # one per step that ran
    gc = json.loads(project.cli("cache", "gc").out)
    assert gc["entries_dropped"] == 2  # the old a and b; the current ones stay
    assert not list((project.root / "out" / ".cache" / "locks").glob("*/*.lock"))  # gc sweeps per-key locks
    assert json.loads(project.cli("build", "--json").out)["counts"] == {"cached": 2}


def test_cache_gc_collects_around_targets_that_cannot_be_planned_here(project: ProjectDir) -> None:
    """A target this machine cannot plan (a backend whose toolchain is not installed here, as every GPU
    specialization on a host without a GPU, or a validation whose data set is not made yet) no longer stops
    `cache gc`: the rest is collected as usual and the JSON names the target and why; what this project's last
    build needed is kept, as the skipped target's entries cannot be told apart."""
    shutil.copytree(REPO / "manifests" / "data" / "bert-tokenizer", project.root / "manifests" / "bert-tokenizer")
    unplannable = """
[models.tb]
task = "embedding"

[models.tb.source]
random = "BertModel"
seed = 0
tokenizer = { path = "bert-tokenizer" }
config = { hidden_size = 32, num_hidden_layers = 1, num_attention_heads = 2, intermediate_size = 64 }

[specializations.tb-ai100]
model = "tb"
batch_size = 1
seq_len = [8]
compile = ["qaic"]
"""
    project.manifest(STEPS + unplannable)
    assert project.cli("build", "b").code == 0
    project.manifest(STEPS.replace("echo a", "echo A") + unplannable)
    assert project.cli("build", "b").code == 0
    res = project.cli("cache", "gc")
    assert res.code == 0, res.err
    gc = json.loads(res.out)
    assert gc["entries_dropped"] == 2  # the old a and b
    assert [t["target"] for t in gc["not_planned"]] == ["tb-ai100"]
    assert "cannot compile with 'qaic' here" in gc["not_planned"][0]["why"]
    assert json.loads(project.cli("build", "b", "--json").out)["counts"] == {"cached": 2}


def test_planning_model_targets_imports_no_heavy_modules(project: ProjectDir) -> None:
    """Planning the checked-in manifests' model targets must not import torch, transformers or onnx."""
    code = (
        "import json, sys\n"
        "from qeffbuild.api import Project\n"
        "plan = Project(manifests=[__import__('pathlib').Path(sys.argv[1])]).plan()\n"
        "heavy = [m for m in ('torch', 'transformers', 'onnx', 'onnxruntime', 'networkx') if m in sys.modules]\n"
        "print(json.dumps({'steps': len(plan.steps), 'heavy': heavy}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "manifests")], cwd=project.root,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["steps"] >= 18 and result["heavy"] == []


def test_json_commands_print_json_errors_on_stdout(project: ProjectDir) -> None:
    project.manifest('[project]\nname = "j"\n[steps.s]\ncmd = ["true"]\noutputs = ["o"]\nbogus = 1\n')
    for args in (("build", "--json"), ("plan", "--json"), ("ls", "--json")):
        res = project.cli(*args)
        assert res.code == 2
        err = res.json()["error"]
        assert err["type"] == "ManifestError" and err["problems"][0]["key"] == "bogus"
        assert err["problems"][0]["line"] == 6


def test_build_json_has_per_target_status_and_the_summary_counts_failed_targets(project: ProjectDir) -> None:
    project.manifest("""
        [project]
        name = "t"
        [steps.ok1]
        cmd = ["sh", "-c", "echo 1 > o"]
        outputs = ["o"]
        [steps.ok2]
        cmd = ["sh", "-c", "echo 2 > o"]
        outputs = ["o"]
        [steps.bad]
        cmd = ["false"]
        outputs = ["o"]
        [steps.after]
        cmd = ["cp", "{dep:bad}/o", "o"]
        outputs = ["o"]
        deps = ["bad"]
    """)
    res = project.cli("build", "-k", "--json")
    assert res.code == 1
    targets = res.json()["targets"]
    assert {t: v["status"] for t, v in targets.items()} == {"ok1": "ok", "ok2": "ok", "bad": "failed",
                                                            "after": "failed"}
    assert targets["after"]["failed_steps"] == ["command:bad"]
    human = project.cli("build", "-k")
    assert "FAILED: 2 of 4 targets (bad, after)" in human.err


def test_project_is_found_from_a_subfolder_and_env_vars_set_defaults(project: ProjectDir, tmp_path: Path) -> None:
    project.manifest(STEPS)
    sub = project.root / "deep" / "er"
    sub.mkdir(parents=True)
    res = project.cli("build", "b", "--json", cwd=sub)
    assert res.code == 0, res.err
    assert (project.root / "out" / "b" / "b.txt").read_text() == "a\n"
    other = tmp_path / "other-out"
    res = project.cli("build", "b", "--json", env={"QEFFBUILD_OUT_DIR": str(other), "QEFFBUILD_JOBS": "1"})
    assert res.code == 0 and (other / "b" / "b.txt").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = run_cli(elsewhere, "ls", "--json", env={"QEFFBUILD_MANIFESTS": str(project.root / "manifests")})
    assert [r["name"] for r in res.json()] == ["a", "b"]
    helptext = project.cli("build", "--help").out
    assert "QEFFBUILD_JOBS" in helptext
    assert "QEFFBUILD_MANIFESTS" in project.cli("--help").out


def test_clean_removes_outputs_and_optionally_the_cache(project: ProjectDir) -> None:
    project.manifest(STEPS)
    assert project.cli("build").code == 0
    res = project.cli("clean", "a", "--json")
    assert res.json()["removed"] == [str(project.root / "out" / "a")]
    assert not (project.root / "out" / "a").exists() and (project.root / "out" / "b").exists()
    assert project.cli("build", "--json").json()["counts"] == {"cached": 2}
    assert (project.root / "out" / "a" / "a.txt").is_file()  # restored from the cache, nothing ran
    project.cli("clean", "--cache")
    assert not (project.root / "out" / ".cache").exists()
    assert project.cli("build", "--json").json()["counts"] == {"built": 2}


def test_env_says_what_can_run_here(project: ProjectDir) -> None:
    project.manifest(STEPS)
    info = project.cli("env", "--json").json()
    backends = {b["name"]: b["devices"] for b in info["backends"]}
    assert backends["ort"]["cpu"] is None and backends["aoti"]["cpu"] is None
    assert "qaic-compile" in backends["qaic"]["cpu"]
    assert {t["name"] for t in info["tasks"]} == set(plugins().tasks.names())
    assert info["versions"]["torch"].startswith("2.")
    assert "ort" in project.cli("env").out


def test_shell_completion_script_and_target_completion(project: ProjectDir) -> None:
    project.manifest(STEPS)
    script = project.cli(env={"_QEFFBUILD_COMPLETE": "bash_source"})
    assert script.code == 0 and "complete" in script.out and "_QEFFBUILD_COMPLETE" in script.out
    res = project.cli(env={"_QEFFBUILD_COMPLETE": "bash_complete", "COMP_WORDS": "qeffbuild build ", "COMP_CWORD": "2"})
    assert "plain,a" in res.out and "plain,b" in res.out


def test_a_closed_pipe_ends_the_command_quietly(project: ProjectDir) -> None:
    """`qeffbuild ls | head`: the reader leaves early; no "internal error", no traceback (exit 141, as a shell's)."""
    steps = "".join(f'[steps.s{i:04d}]\ncmd = ["true"]\noutputs = []\n\n' for i in range(3000))
    project.manifest('[project]\nname = "many"\n\n' + steps)
    proc = subprocess.run(f"{sys.executable} -m qeffbuild ls | head -c 100 >/dev/null", shell=True, cwd=project.root,
                          capture_output=True, text=True)
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_bench_rows_show_a_baselines_own_accuracy() -> None:
    """sentence-transformers' int8 row carries its worst cosine against float32: the table says it beside the
    speed, so a faster baseline that is less exact reads as such."""
    from qeffbuild.cli.use import _more

    row = {"speedup_vs_sentence_transformers": 2.1, "min_cosine_vs_float32": 0.98212}
    assert _more(row) == "×2.10 vs sentence-transformers; worst cosine 0.9821 vs float32"
    assert _more({}) == "-"


@pytest.mark.parametrize("error", [RuntimeError("Error generating temporary directory: No space left on device"),
                                   OSError(28, "No space left on device")])
def test_a_full_disk_is_an_error_with_its_fix_not_an_internal_error(project: ProjectDir, error: Exception,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk met outside a step (torch's AOTInductor loader, unpacking a 3.3 GB package into /tmp for
    `qeffbuild bench`) is the machine's state, not a bug: the message says so and where to make room (exit 1), where
    it said "internal error (a bug in qeffbuild)" (exit 70)."""
    from click.testing import CliRunner

    from qeffbuild.cli.app import main
    from qeffbuild.store.maintenance import Maintenance

    def full(self: Maintenance) -> None:
        raise error

    project.manifest(STEPS)
    monkeypatch.chdir(project.root)
    monkeypatch.setattr(Maintenance, "stats", full)
    res = CliRunner().invoke(main, ["cache", "stats"])
    assert res.exit_code == 1, res.output
    assert "error: no space left on the device" in res.output and "internal error" not in res.output
    assert "point TMPDIR or QEFFBUILD_CACHE_DIR at a larger disk" in res.output
