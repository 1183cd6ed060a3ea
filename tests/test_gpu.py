"""CUDA: AOTInductor packages compiled for the GPU, validated against the CPU reference.

Skipped where there is no CUDA GPU with its toolchain (CI never has one). On a machine
without a GPU, the plan-time refusal is tested instead.
"""

from __future__ import annotations

import json
import shutil

import pytest

from .helpers import REPO, ProjectDir


def _cuda_ready() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available()) and shutil.which("nvcc") is not None


gpu = pytest.mark.skipif(not _cuda_ready(), reason="needs a CUDA GPU and nvcc")

MANIFEST = """
[project]
name = "gpu"

[models.tb]
task = "embedding"
normalize = true

[models.tb.source]
random = "BertModel"
seed = 0
tokenizer = { path = "bert-tokenizer" }
config = { hidden_size = 64, num_hidden_layers = 2, num_attention_heads = 4, intermediate_size = 128 }

[specializations.tb-cuda]
model = "tb"
batch_size = 4
seq_len = [16, 64]
compile = ["aoti"]
device = "cuda"

[validations.tb-cuda-parity]
model = "tb"
specializations = ["tb-cuda"]
runtimes = ["pytorch", "pytorch-transformed", "aoti"]
inputs = "data/sentences.txt"
"""


def _build_ok(project: ProjectDir, target: str) -> None:
    res = project.cli("build", target, "--json")
    failures = {k: v["message"][-3000:] for k, v in json.loads(res.out)["steps"].items() if v["message"]}
    assert res.code == 0, json.dumps(failures, indent=1)


def _project(project: ProjectDir, manifest: str = MANIFEST) -> None:
    project.manifest(manifest)
    shutil.copytree(REPO / "tests" / "fixtures" / "bert-tokenizer", project.root / "manifests" / "bert-tokenizer")
    project.write("manifests/data/sentences.txt", (REPO / "manifests" / "data" / "sentences.txt").read_text())


@gpu
@pytest.mark.gpu
def test_aoti_cuda_embedding_parity(project: ProjectDir) -> None:
    _project(project)
    _build_ok(project, "tb-cuda-parity")
    report = json.loads((project.root / "out" / "tb-cuda-parity" / "report.json").read_text())
    rows = {r["runtime"]: r for r in report["rows"]}
    assert report["ok"], report
    assert set(rows["aoti"]["batches_per_seq_len"]) == {"16", "64"}
    print(json.dumps({k: {m: rows[k].get(m) for m in ("mad", "max_abs", "cosine")} for k in rows}))


@pytest.mark.skipif(_cuda_ready(), reason="this machine has a GPU")
def test_cuda_specialization_is_refused_at_plan_time_without_a_gpu(project: ProjectDir) -> None:
    _project(project)
    res = project.cli("plan", "tb-cuda-parity")
    assert res.code == 2
    assert "[specializations.tb-cuda] device 'cuda': no NVIDIA GPU on this machine" in res.err
    assert "Traceback" not in res.err


def test_qaic_reports_itself_unavailable_with_the_reason(project: ProjectDir) -> None:
    _project(project, MANIFEST.replace('compile = ["aoti"]\ndevice = "cuda"', 'compile = ["qaic"]'))
    res = project.cli("build", "tb-cuda")
    assert res.code == 2
    assert "cannot compile with 'qaic' here" in res.err and "qaic-compile" in res.err


SPEECH = """
[project]
name = "gpu-speech"

[models.w]
task = "speech-seq2seq"

[models.w.source]
random = "WhisperForConditionalGeneration"
seed = 1
tokenizer = { path = "data/whisper-tokenizer" }

[models.w.source.config]
vocab_size = 401
d_model = 64
encoder_layers = 2
decoder_layers = 2
encoder_attention_heads = 2
decoder_attention_heads = 2
encoder_ffn_dim = 128
decoder_ffn_dim = 128
max_source_positions = 200
max_target_positions = 64
init_std = 0.3
decoder_start_token_id = 393
eos_token_id = 392
pad_token_id = 392
bos_token_id = 392

[specializations.w-cuda]
model = "w"
ctx_len = 32
compile = ["aoti"]
device = "cuda"

[validations.w-cuda-parity]
model = "w"
specializations = ["w-cuda"]
runtimes = ["pytorch", "pytorch-transformed", "aoti"]
inputs = "data/speech"
"""


@gpu
@pytest.mark.gpu
def test_aoti_cuda_whisper_decodes_the_reference_tokens(project: ProjectDir) -> None:
    project.manifest(SPEECH)
    shutil.copytree(REPO / "manifests" / "data", project.root / "manifests" / "data")
    _build_ok(project, "w-cuda-parity")
    report = json.loads((project.root / "out" / "w-cuda-parity" / "report.json").read_text())
    rows = {r["runtime"]: r for r in report["rows"]}
    assert rows["aoti"]["token_agreement"] == 1.0 and rows["pytorch-transformed"]["token_agreement"] == 1.0
    bench = project.cli("bench", "w-cuda-parity", "-n", "5", "--json")
    assert bench.code == 0, bench.err
    print(json.dumps(json.loads(bench.out)))
