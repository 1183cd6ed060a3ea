"""sentence-transformers' ONNX baseline runs in a child process of whichever Python has it; without one, each
of its rows says why and how to get it, and nothing is dropped or raised."""

from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path

import pytest

from qeffbuild.tasks.embedding import bench, st_onnx_child


def test_a_missing_interpreter_is_an_error_answer_not_an_exception(tmp_path: Path) -> None:
    with bench.StOnnxChild(str(tmp_path / "no-python"), {"jobs": []}) as child:
        assert child.ready["error"].startswith("cannot run ") and child.block(0, 3) == []


def _fake_python(tmp_path: Path, body: str) -> str:
    """An interpreter stand-in that runs ``body`` (a Python script) in place of the child module."""
    script = tmp_path / "fake_child.py"
    script.write_text(body)
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    fake.chmod(0o755)
    return str(fake)


def test_a_child_that_crashes_reports_its_last_line(tmp_path: Path) -> None:
    fake = _fake_python(tmp_path, "import sys\nprint('Traceback: boom', file=sys.stderr)\nsys.exit(3)\n")
    with bench.StOnnxChild(fake, {"jobs": []}) as child:
        assert child.ready == {"error": "the sentence-transformers ONNX child exited 3: Traceback: boom"}


SERVING = """import json, sys
job = json.loads(sys.argv[2])
print("a library's chatter on stdout", flush=True)
print(json.dumps({"ready": True, "files": ["onnx/model.onnx"] * len(job["jobs"]), "embeddings": {},
                  "versions": {"sentence-transformers": "fake"}}), flush=True)
for n, line in enumerate(sys.stdin):
    ask = json.loads(line)
    if n == DIE_AT:
        print("killed mid-bench", file=sys.stderr)
        sys.exit(9)
    print(json.dumps({"samples_s": [0.01 * (ask["job"] + 1)] * ask["calls"]}), flush=True)
"""


def test_the_child_serves_blocks_interleaved_with_the_other_rows(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The baseline's samples come in blocks asked for in turn with the bench's own rows; a child that dies
    mid-bench leaves its rows saying so instead of raising or hanging."""
    from qeffbuild.reports.timing import interleave

    specs = [{"name": "e-b4", "device": "cpu", "dtype": "float32", "batch_size": 4, "seq_len": [16, 64]}]
    p = {"specializations": specs, "pooling": "mean", "normalize": True}
    for die_at, want in ((-1, 10), (3, None)):
        fake = _fake_python(tmp_path, SERVING.replace("DIE_AT", str(die_at)))
        order: list[str] = []
        monkeypatch.setenv(bench.ST_ONNX_PYTHON, fake)
        with contextlib.ExitStack() as children:
            probes = bench._st_onnx_probes(tmp_path / "unused-model", p, ["a sentence"], 0, children)
            ours = bench._Probe({"runtime": "onnxruntime", "batch_size": 4}, functools.partial(order.append, "ours"))
            seen = [_Logged(probe, order) for probe in probes]
            interleave([*seen, ours], 10)
        rows = [probe.row() for probe in probes]
        if want:
            assert [len(pr.samples) for pr in probes] == [want, want]
            assert rows[0]["p50_ms"] == pytest.approx(10) and rows[1]["p50_ms"] == pytest.approx(20)
            assert order[:4] == ["child", "child", "ours", "ours"]  # block by block: theirs, then ours, again
        else:
            assert all("exited 9: killed mid-bench" in r["unavailable"] and "p50_ms" not in r for r in rows)


class _Logged:
    def __init__(self, probe: bench._Probe, order: list[str]) -> None:
        self.probe, self.order = probe, order

    def __call__(self, k: int) -> None:
        self.order.append("child")
        self.probe(k)


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
    with contextlib.ExitStack() as children:
        rows = [probe.row() for probe in bench._st_onnx_probes(tmp_path / "unused-model", p, ["a sentence"], 0,
                                                               children)]
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
