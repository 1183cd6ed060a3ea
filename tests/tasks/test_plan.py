"""Plan-time facts of the families (no builds): support matrix, position limits, dtype × backend, sources."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from qeffbuild.errors import BackendUnavailable, ManifestError

from ..helpers import DATA, ProjectDir

GPT2 = """
[project]
name = "g"

[models.gpt]
task = "embedding"
pooling = "last"
source.random = "GPT2Model"
source.config = {{ n_embd = 32, n_layer = 2, n_head = 2, n_positions = 64, vocab_size = 500 }}

[specializations.gpt-b2]
model = "gpt"
batch_size = 2
seq_len = [{seq}]
dtype = "{dtype}"
compile = ["{backend}"]
"""


def _plan_error(project: ProjectDir, target: str) -> str:
    with pytest.raises((ManifestError, BackendUnavailable)) as err:
        project.api().plan([target])
    return str(err.value)


def test_a_gpt2_position_limit_comes_from_its_own_config_name(project: ProjectDir) -> None:
    project.manifest(GPT2.format(seq="16, 128", dtype="float32", backend="ort"))
    assert "manifests/project.toml:13: [specializations.gpt-b2] seq_len: seq_len 128 exceeds the model's position " \
           "limit (64, from its config)" in _plan_error(project, "gpt-b2")
    project.manifest(GPT2.format(seq="16, 64", dtype="float32", backend="ort"))
    assert [s.id for s in project.api().plan(["gpt-b2"]).steps] == [
        "load:gpt", "transform:gpt:float32", "export:gpt:float32:opset18", "onnx-pass:ort-fusions:gpt:float32:opset18",
        "compile:ort:gpt-b2:seq16", "compile:ort:gpt-b2:seq64"]


def test_bfloat16_on_ort_is_refused_before_anything_runs(project: ProjectDir) -> None:
    project.manifest(GPT2.format(seq="16", dtype="bfloat16", backend="ort"))
    with pytest.raises(ManifestError) as err:
        project.api().plan(["gpt-b2"])
    assert "compile[0]: backend 'ort' cannot compile bfloat16: ONNX Runtime has no bfloat16 kernels" in str(err.value)


@pytest.mark.parametrize("backend", ["aoti", "inductor"])
def test_int8_on_a_torch_backend_is_refused_with_the_reason(project: ProjectDir, backend: str) -> None:
    project.manifest(GPT2.format(seq="16", dtype="int8", backend=backend))
    said = _plan_error(project, "gpt-b2")
    assert f"compile[0]: backend '{backend}' cannot compile int8" in said and "ort" in said, said


def test_a_validation_running_a_torch_backend_on_an_int8_specialization_is_refused_at_plan_time(
        project: ProjectDir) -> None:
    """A validation compiles each of its specializations for each of its runtimes: `aoti` on an int8 one (compiled
    with `ort` only) is the manifest's mistake, said before anything runs, not a compile step's traceback."""
    project.manifest(GPT2.format(seq="16", dtype="int8", backend="ort") + """
[specializations.gpt-f32]
model = "gpt"
batch_size = 2
seq_len = [16]
compile = ["aoti"]

[validations.gpt-parity]
model = "gpt"
specializations = ["gpt-f32", "gpt-b2"]
runtimes = ["pytorch", "onnxruntime", "aoti"]
inputs = "sentences.txt"
""")
    project.write("manifests/sentences.txt", "one sentence\nanother one\n")
    said = _plan_error(project, "gpt-parity")
    assert "[specializations.gpt-b2] dtype: a validation runs it on runtime 'aoti', but backend 'aoti' cannot " \
           "compile int8" in said and "without 'aoti'" in said, said


def test_int8_on_ort_adds_the_quantization_pass_as_its_own_cached_step(project: ProjectDir) -> None:
    project.manifest(GPT2.format(seq="16", dtype="int8", backend="ort"))
    ids = [s.id for s in project.api().plan(["gpt-b2"]).steps]
    passes = [i for i in ids if i.startswith("onnx-pass:")]
    assert passes and "int8-dynamic" in passes[-1], ids
    assert ids[-1].startswith("compile:ort:gpt-b2"), ids
    # the float32 export is shared: int8 is a pass after it, not a second export of the model
    assert [i for i in ids if i.startswith("export:")] == ["export:gpt:float32:opset18"], ids


def test_ort_int8_float_layers_is_its_own_pass_step_and_only_for_int8(project: ProjectDir) -> None:
    """[specializations.X.ort] int8_float_layers = "none" quantizes every linear layer: the pass's params (and so
    its step and key) change, beside the backend's default pass the same export may feed (written out here: an
    embedding model's int8 has defaults of its own); on float32 it is an error."""
    both = GPT2.format(seq="16", dtype="int8", backend="ort") + \
        'ort = { int8_float_layers = "down-projections", int8_activations = "per-tensor" }\n' + """
[specializations.gpt-all]
model = "gpt"
batch_size = 2
seq_len = [16]
dtype = "int8"
compile = ["ort"]
ort = { int8_float_layers = "none", int8_activations = "per-tensor" }
"""
    project.manifest(both)
    plan = project.api().plan(["gpt-b2", "gpt-all"])
    passes = {s.id: s for s in plan.steps if s.id.startswith("onnx-pass:")}
    assert sorted(passes) == ["onnx-pass:int8-dynamic.keep_float-none:ort-fusions:gpt:float32:opset18",
                              "onnx-pass:int8-dynamic:ort-fusions:gpt:float32:opset18",
                              "onnx-pass:ort-fusions:gpt:float32:opset18"], sorted(passes)
    project.manifest(GPT2.format(seq="16", dtype="float32", backend="ort") +
                     'ort = { int8_float_layers = "none" }\n')
    said = _plan_error(project, "gpt-b2")
    assert "ort.int8_float_layers" in said and "only an int8 specialization quantizes" in said, said


def test_ort_per_token_activations_are_their_own_pass_step_and_only_for_int8(project: ProjectDir) -> None:
    """int8_activations = "per-token" keys its own pass step; the default (per tensor) keeps the key it had, so
    artifacts built before the option stay cached; on float32 it is an error naming the key."""
    per_token = 'ort = { int8_float_layers = "down-projections", int8_activations = "per-token" }\n'
    project.manifest(GPT2.format(seq="16", dtype="int8", backend="ort") + per_token)
    passes = [s.id for s in project.api().plan(["gpt-b2"]).steps if s.id.startswith("onnx-pass:int8")]
    assert passes == ["onnx-pass:int8-dynamic.activations-per-token:ort-fusions:gpt:float32:opset18"], passes
    project.manifest(GPT2.format(seq="16", dtype="float32", backend="ort") + per_token)
    said = _plan_error(project, "gpt-b2")
    assert "ort.int8_activations" in said and "only an int8 specialization quantizes" in said, said


def test_an_embedding_models_int8_defaults_to_every_layer_scaled_per_token(project: ProjectDir) -> None:
    """The embedding family's int8 recipe for `ort` (Task.option_defaults) fills the keys the manifest leaves
    unset and keys the pass and the compile as if written; a key the manifest writes wins; float32 gets none."""
    int8 = GPT2.format(seq="16", dtype="int8", backend="ort")
    project.manifest(int8)
    plan = project.api().plan(["gpt-b2"])
    passes = [s.id for s in plan.steps if s.id.startswith("onnx-pass:int8")]
    assert passes == ["onnx-pass:int8-dynamic.activations-per-token.keep_float-none:ort-fusions:gpt:float32:opset18"]
    project.manifest(int8 + 'ort = { int8_activations = "per-tensor" }\n')
    passes = [s.id for s in project.api().plan(["gpt-b2"]).steps if s.id.startswith("onnx-pass:int8")]
    assert passes == ["onnx-pass:int8-dynamic.keep_float-none:ort-fusions:gpt:float32:opset18"], passes
    project.manifest(GPT2.format(seq="16", dtype="float32", backend="ort"))
    assert not [s.id for s in project.api().plan(["gpt-b2"]).steps if "int8" in s.id]


def test_a_speech_models_int8_keeps_the_backends_defaults(project: ProjectDir) -> None:
    """No family recipe for speech: whisper's int8 on `ort` is ONNX Runtime's per-tensor quantization with the
    down-projections float32, the pass's default params (its per-token form ran its encoder 24 % slower)."""
    project.manifest("""
        [project]
        name = "w"
        [models.w]
        task = "speech-seq2seq"
        source.random = "WhisperForConditionalGeneration"
        source.config = { d_model = 16, encoder_layers = 1, decoder_layers = 1, vocab_size = 100 }
        [specializations.w-int8]
        model = "w"
        batch_size = 1
        dtype = "int8"
        compile = ["ort"]
    """)
    passes = [s.id for s in project.api().plan(["w-int8"]).steps if s.id.startswith("onnx-pass:int8")]
    assert passes and all(p.startswith("onnx-pass:int8-dynamic:ort-fusions:") for p in passes), passes


def test_a_task_that_does_not_fit_the_model_is_a_manifest_error(project: ProjectDir) -> None:
    project.manifest("""
        [project]
        name = "m"
        [models.b]
        source = { random = "BertModel", config = { hidden_size = 8 } }
        task = "speech-seq2seq"
        [models.w]
        source = { random = "WhisperForConditionalGeneration" }
        task = "embedding"
    """)
    text = _plan_error(project, "b")
    assert "[models.b] task: task 'speech-seq2seq' does not build BertModel (model_type None): it builds " \
           "WhisperForConditionalGeneration, Speech2TextForConditionalGeneration and SpeechEncoderDecoderModel " \
           "(model_type whisper, speech_to_text, speech-encoder-decoder); it fits task 'embedding'" in text
    text = _plan_error(project, "w")
    assert "task 'embedding' does not build WhisperForConditionalGeneration" in text and "'speech-seq2seq'" in text


def test_every_problem_of_a_plan_is_reported_together(project: ProjectDir) -> None:
    project.manifest(GPT2.format(seq="128", dtype="float32", backend="ort") + """
[models.b]
source = { random = "BertModel", config = { hidden_size = 8 } }
task = "speech-seq2seq"
""")
    with pytest.raises(ManifestError) as err:
        project.api().plan(["gpt-b2", "b"])
    assert len(err.value.problems) == 2


def test_a_path_model_is_its_content_wherever_the_manifest_sits(project: ProjectDir) -> None:
    model = project.root / "models" / "tok"
    shutil.copytree(DATA / "whisper-tokenizer", model)
    (model / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    m = '[project]\nname = "p"\n[models.x]\nsource = {{ path = "{path}" }}\ntask = "embedding"\n'
    project.manifest(m.format(path="../models/tok"))
    first = project.api().plan(["x"]).steps[0].key
    project.manifest(m.format(path="../../models/tok"), name="sub/project.toml")
    (project.root / "manifests" / "project.toml").unlink()
    assert project.api().plan(["x"]).steps[0].key == first


def test_a_second_project_in_one_process_sees_a_new_weight_file(project: ProjectDir) -> None:
    model = project.root / "manifests" / "m"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    project.manifest('[project]\nname = "p"\n[models.x]\nsource = { path = "m" }\ntask = "embedding"\n')
    before = project.api().plan(["x"]).steps[0].key
    (model / "model.safetensors").write_bytes(b"weights")
    assert project.api().plan(["x"]).steps[0].key != before


def test_a_fifo_in_a_model_folder_is_refused_not_read(project: ProjectDir) -> None:
    import os

    from qeffbuild.errors import InputError

    model = project.root / "manifests" / "m"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    os.mkfifo(model / "weights.bin")
    project.manifest('[project]\nname = "p"\n[models.x]\nsource = { path = "m" }\ntask = "embedding"\n')
    with pytest.raises(InputError, match=r"weights\.bin is not a regular file"):
        project.api().plan(["x"])


def test_non_integer_config_limits_are_located_errors(project: ProjectDir) -> None:
    project.manifest(GPT2.format(seq="16", dtype="float32", backend="ort").replace("n_positions = 64",
                                                                                   'n_positions = "lots"'))
    assert "[models.gpt] source.config: config n_positions must be a positive integer, got 'lots'" in \
        _plan_error(project, "gpt-b2")


def test_speech_specs_use_role_step_ids(project: ProjectDir) -> None:
    shutil.copytree(DATA / "speech", project.root / "manifests" / "speech")
    project.manifest("""
        [project]
        name = "s"
        [models.w]
        source = { random = "WhisperForConditionalGeneration", config = { max_target_positions = 64 } }
        task = "speech-seq2seq"
        [specializations.w-b1]
        model = "w"
        ctx_len = 32
        compile = ["ort"]
    """)
    ids = {s.id for s in project.api().plan(["w-b1"]).steps}
    assert {"transform:w-b1:encoder", "transform:w-b1:decoder", "export:w-b1:decoder:opset18",
            "compile:ort:w-b1:decoder"} <= ids


def test_every_package_and_template_goes_into_the_wheel() -> None:
    """Packages are found, not listed (a new family edits no packaging file); templates are package data."""
    import tomllib

    from setuptools import find_packages

    repo = Path(__file__).resolve().parents[2]
    setup = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(setup["packages"]) == {"find"}  # found, not listed
    found = set(find_packages(str(repo), include=setup["packages"]["find"]["include"]))
    on_disk = {".".join(p.parent.relative_to(repo).parts) for p in (repo / "qeffbuild").rglob("__init__.py")}
    assert found == on_disk
    patterns = setup["package-data"]["qeffbuild"]
    templates = {p.relative_to(repo / "qeffbuild") for p in (repo / "qeffbuild" / "templates").rglob("*.j2")}
    assert templates and all(any(t.match(pat) for pat in patterns) for t in templates)
