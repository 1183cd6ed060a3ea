"""CUDA: the `inductor` backend (Inductor's precompiled step, CUDA graphs of whole decode steps) validated
against the CPU float32 reference, device-resident decoding, and AOTInductor's load probe.

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
compile = ["inductor"]
device = "cuda"

[specializations.tb-cuda-fp16]
model = "tb"
batch_size = 4
seq_len = [16, 64]
dtype = "float16"
compile = ["inductor"]
device = "cuda"

[validations.tb-cuda-parity]
model = "tb"
specializations = ["tb-cuda", "tb-cuda-fp16"]
runtimes = ["pytorch", "pytorch-transformed", "inductor"]
inputs = "data/sentences.txt"
"""


def _build_ok(project: ProjectDir, target: str) -> None:
    res = project.cli("build", target, "--json")
    failures = {k: v["message"][-3000:] for k, v in json.loads(res.out)["steps"].items() if v["message"]}
    assert res.code == 0, json.dumps(failures, indent=1)


def _project(project: ProjectDir, manifest: str = MANIFEST) -> None:
    project.manifest(manifest)
    shutil.copytree(REPO / "manifests" / "data" / "bert-tokenizer", project.root / "manifests" / "bert-tokenizer")
    project.write("manifests/data/sentences.txt", (REPO / "manifests" / "data" / "sentences.txt").read_text())


@gpu
@pytest.mark.gpu
def test_inductor_cuda_embedding_parity(project: ProjectDir) -> None:
    _project(project)
    _build_ok(project, "tb-cuda-parity")
    report = json.loads((project.root / "out" / "tb-cuda-parity" / "report.json").read_text())
    assert report["ok"], report
    rows = {(r["runtime"], r.get("specialization")): r for r in report["rows"]}
    fp32, fp16 = rows[("inductor", "tb-cuda")], rows[("inductor", "tb-cuda-fp16")]
    assert set(fp32["batches_per_seq_len"]) == {"16", "64"}
    assert fp32["mad"] <= 1e-5 and fp16["mad"] <= 2e-3 and fp16["cosine"] >= 0.999
    facts = json.loads((project.root / "out" / "tb-cuda-parity" / "provenance.json").read_text())
    assert "compute_capability" in json.dumps(facts)  # the GPU kind is part of the compile key
    print(json.dumps({str(k): {m: r.get(m) for m in ("mad", "max_abs", "cosine")} for k, r in rows.items()}))


@gpu
@pytest.mark.gpu
def test_aoti_cuda_packages_are_probed_before_they_are_cached(project: ProjectDir) -> None:
    """AOTInductor CUDA packages segfault on load on our GPU machine: the compile step loads the package in a
    child process first, so a broken toolchain is a clear step failure naming `inductor`, never a crash
    later; where packages load, the build is validated like any other."""
    _project(project, MANIFEST.replace('compile = ["inductor"]\ndevice = "cuda"\n\n[specializations.tb-cuda-fp16]',
                                       'compile = ["aoti"]\ndevice = "cuda"\n\n[specializations.tb-cuda-fp16]')
             .replace('specializations = ["tb-cuda", "tb-cuda-fp16"]\nruntimes = ["pytorch", "pytorch-transformed", '
                      '"inductor"]', 'specializations = ["tb-cuda"]\nruntimes = ["pytorch", "aoti"]'))
    res = project.cli("build", "tb-cuda-parity")
    assert res.code in (0, 1) and "internal error" not in res.err, res.err  # a step's failure, never a crash
    if res.code == 0:
        print("AOTInductor CUDA packages load on this machine")
        return
    assert res.code == 1, res.err
    assert "an AOTInductor CUDA package cannot be loaded on this machine (the load probe" in res.err, res.err
    assert 'compile = ["inductor"]' in res.err


@pytest.mark.skipif(_cuda_ready(), reason="this machine has a GPU")
def test_cuda_specialization_is_refused_at_plan_time_without_a_gpu(project: ProjectDir) -> None:
    _project(project)
    res = project.cli("plan", "tb-cuda-parity")
    assert res.code == 2
    assert "[specializations.tb-cuda] device 'cuda': no NVIDIA GPU on this machine" in res.err
    assert "Traceback" not in res.err


def test_qaic_reports_itself_unavailable_with_the_reason(project: ProjectDir) -> None:
    _project(project, MANIFEST.replace('compile = ["inductor"]\ndevice = "cuda"', 'compile = ["qaic"]'))
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
compile = ["inductor"]
device = "cuda"

[specializations.w-cuda-b4]
model = "w"
ctx_len = 32
batch_size = 4
compile = ["inductor"]
device = "cuda"

[validations.w-cuda-parity]
model = "w"
specializations = ["w-cuda", "w-cuda-b4"]
runtimes = ["pytorch", "pytorch-transformed", "inductor"]
inputs = "data/speech"
"""


@gpu
@pytest.mark.gpu
def test_inductor_cuda_whisper_decodes_the_reference_tokens(project: ProjectDir) -> None:
    project.manifest(SPEECH)
    shutil.copytree(REPO / "manifests" / "data", project.root / "manifests" / "data")
    _build_ok(project, "w-cuda-parity")
    report = json.loads((project.root / "out" / "w-cuda-parity" / "report.json").read_text())
    rows = [r for r in report["rows"] if r["runtime"] != "pytorch"]
    assert len(rows) == 4 and all(r["token_agreement"] == 1.0 for r in rows), rows
    bench = project.cli("bench", "w-cuda-parity", "-n", "5", "--json")
    assert bench.code == 0, bench.err
    timed = json.loads(bench.out)
    assert {r["runtime"] for r in timed} == {"generate (HF, eager)", "pytorch-transformed", "inductor"}
    print(json.dumps(timed))


@gpu
@pytest.mark.gpu
def test_a_fresh_process_loads_the_kernels_instead_of_compiling_them(project: ProjectDir) -> None:
    """The inductor artifact carries its kernels: a new process loads every compiled graph (hits, no misses),
    traces nothing with Dynamo, autotunes nothing, and transcribes the same text as the validation."""
    import subprocess
    import sys

    project.manifest(SPEECH)
    shutil.copytree(REPO / "manifests" / "data", project.root / "manifests" / "data")
    _build_ok(project, "w-cuda-parity")
    _build_ok(project, "w-cuda")  # materialized under out/w-cuda (cached: nothing runs again)
    wav = project.root / "manifests" / "data" / "speech" / "hello.wav"
    code = ("import json, sys, time\nfrom pathlib import Path\nt0 = time.perf_counter()\n"
            "from qeffbuild.backends.inductor import count_kernel_benchmarks\n"
            "benchmarks = count_kernel_benchmarks()\n"
            "from qeffbuild.tasks.speech.transcriber import Transcriber\n"
            "from torch._dynamo.utils import counters\n"
            "import os\n"
            "def children():\n"
            "    found = []\n"
            "    for pid in filter(str.isdigit, os.listdir('/proc')):\n"
            "        try:\n"
            "            stat = open(f'/proc/{pid}/stat').read()\n"
            "        except OSError:\n"
            "            continue\n"
            "        if int(stat.rsplit(')', 1)[1].split()[1]) == os.getpid():\n"
            "            found.append(stat.split(' (', 1)[1].split(')', 1)[0])\n"
            "    return found\n"
            "t = Transcriber.load(Path(sys.argv[1]), 'inductor', 'cuda')\n"
            "text = t.transcribe([Path(sys.argv[2])], max_new_tokens=24)[0]\n"
            "print(json.dumps({'s': time.perf_counter() - t0, 'text': text,\n"
            "                  'inductor': dict(counters['inductor']), 'dynamo': dict(counters['stats']),\n"
            "                  'benchmarks': benchmarks[0], 'children': children()}))\n")
    res = subprocess.run([sys.executable, "-c", code, str(project.root / "out" / "w-cuda"), str(wav)],
                         capture_output=True, text=True, cwd=project.root)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps(got))
    assert got["inductor"].get("fxgraph_cache_hit", 0) >= 2 and got["inductor"].get("fxgraph_cache_miss", 0) == 0
    assert got["dynamo"].get("calls_captured", 0) == 0
    # each multi-config kernel runs the config the build recorded: none benchmarks its candidates again
    assert got["benchmarks"] == 0  # (Inductor's own counter replays the build's counts on a cache hit)
    # and no compile-worker pool: loading built kernels must not start processes that compete for the CPU
    assert got["children"] == [], got["children"]
    report = json.loads((project.root / "out" / "w-cuda-parity" / "report.json").read_text())
    row = next(r for r in report["rows"] if r["runtime"] == "inductor" and r.get("specialization") == "w-cuda")
    assert got["text"] == next(p["text"] for p in row["per_input"] if p["input"] == "hello.wav")
