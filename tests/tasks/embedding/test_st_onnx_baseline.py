"""sentence-transformers' ONNX baseline runs in a child process of whichever Python has it; without one, each
of its rows says why and how to get it, and nothing is dropped or raised."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from qeffbuild.tasks.embedding import bench, st_onnx_child


def test_a_missing_interpreter_is_an_error_answer_not_an_exception(tmp_path: Path) -> None:
    got = bench._run_st_onnx_child(str(tmp_path / "no-python"), {"jobs": []})
    assert got["error"].startswith("cannot run ")


def test_a_child_that_crashes_reports_its_last_line(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'Traceback: boom' >&2\nexit 3\n")
    fake.chmod(0o755)
    got = bench._run_st_onnx_child(str(fake), {"jobs": []})
    assert got == {"error": "the sentence-transformers ONNX child exited 3: Traceback: boom"}


def test_without_optimum_every_row_says_why_and_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sentence_transformers")
    try:
        import optimum.onnxruntime  # noqa: F401
        pytest.skip("optimum is installed here: the baseline would run")
    except ImportError:
        pass
    monkeypatch.setenv(bench.ST_ONNX_PYTHON, sys.executable)
    specs = [{"name": "e-b4", "device": "cpu", "dtype": "float32", "batch_size": 4, "seq_len": [16, 64]},
             {"name": "e-int8", "device": "cpu", "dtype": "int8", "batch_size": 8, "seq_len": [64]}]
    p = {"specializations": specs, "pooling": "mean", "normalize": True}
    rows = bench._st_onnx_rows(tmp_path / "unused-model", p, ["a sentence"], iters=1, warmup=0)
    assert [(r["runtime"], r["specialization"], r["shape"]) for r in rows] == [
        (bench.ST_ONNX, "e-b4", "seq 16"), (bench.ST_ONNX, "e-b4", "seq 64"), (bench.ST_ONNX_INT8, "e-int8", "seq 64")]
    for r in rows:
        assert "optimum" in r["unavailable"] and bench.ST_ONNX_PYTHON in r["unavailable"]
        assert "p50_ms" not in r


def test_the_int8_configuration_follows_the_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    real_read = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: real_read(cpuinfo if str(self) == "/proc/cpuinfo"
                                                                            else self, *a, **k))
    for flags, want in (("fpu avx2 avx512f avx512_vnni", "avx512_vnni"), ("avx2 avx512f", "avx512"),
                        ("sse avx2", "avx2"), ("neon asimd", "arm64")):
        cpuinfo.write_text(f"flags\t\t: {flags}\n")
        assert st_onnx_child.quantization_config() == want


def test_the_texts_fill_the_length_once_truncated() -> None:
    texts = st_onnx_child.texts(3, 16)
    assert len(texts) == 3 and len(set(texts)) == 3 and all(len(t.split()) == 33 for t in texts)
