"""The bench's arithmetic, without a model: a decode step is (T(N) − T(1)) / (N − 1), never negative or zero."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from qeffbuild.tasks.speech import bench


def test_a_sample_where_n_tokens_took_no_longer_than_one_gives_no_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a loaded machine T(N) can come out ≤ T(1): that sample is dropped, not counted as 0 ms a token, and
    measured once more; a row with no sample left says why instead of printing 0 tokens/s."""
    # (T(1), T(N)) pairs: +0.23, −0.10 (dropped, measured again), +0.46, +0.23 seconds
    times = iter([0.10, 0.33, 0.50, 0.40, 0.10, 0.56, 0.10, 0.33])
    monkeypatch.setattr(bench, "_timed", lambda fn, device: next(times))
    samples = bench._step_samples(lambda n: None, 24, "cpu")
    assert [samples.take() for _ in range(3)] == [True, True, True]
    assert samples.per == pytest.approx([0.23 / 23, 0.46 / 23, 0.23 / 23])
    assert samples.full == [0.33, 0.40, 0.56, 0.33]
    spec = {"batch_size": 1, "name": "s", "dtype": "float32", "ctx_len": 48}
    row = bench._row("onnxruntime", spec, 24, [0.2], samples.per, samples.full, None, 2.0)
    assert row["p50_ms"] == pytest.approx(1000 * 0.23 / 23) and row["throughput_per_s"] > 0
    always_slower = itertools.cycle([0.5, 0.4])
    calls = []
    monkeypatch.setattr(bench, "_timed", lambda fn, device: calls.append(1) or next(always_slower))
    spoiled = bench._step_samples(lambda n: None, 24, "cpu")
    assert [spoiled.take() for _ in range(2)] == [False, False]
    assert len(calls) == 2 * 2 * 2  # 2 samples asked for, each tried twice, then no figure
    empty = bench._row("onnxruntime", spec, 24, [0.2], spoiled.per, [0.4, 0.4], None, 2.0)
    assert spoiled.per == [] and "p50_ms" not in empty and "other work on the machine" in empty["unavailable"]


def test_rows_are_measured_round_robin_and_each_block_opens_untimed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two rows benched side by side: their samples alternate in blocks (a slow minute of the machine lands on
    both), each block starts with the row's own untimed call, and each row still gets every sample asked for."""
    from qeffbuild.reports.timing import interleave

    log: list[str] = []
    clock = itertools.count(1)
    monkeypatch.setattr(bench, "_timed", lambda fn, device: fn() or float(next(clock)))
    spec = {"batch_size": 1, "name": "s", "dtype": "float32", "ctx_len": 48}

    def probe(name: str) -> bench._Probe:
        return bench._Probe(name, spec, 2.0, "cpu", bench._step_samples(lambda n: log.append(f"{name}:{n}"), 24,
                                                                         "cpu"),
                            {"utterance": lambda: log.append(f"{name}:whole")},
                            opening=lambda: log.append(f"{name}:open"))

    a, b = probe("a"), probe("b")
    interleave([a, b], 7)
    assert len(a.steps.per) == len(b.steps.per) == 7 and len(a.samples["utterance"]) == 7
    opens = [entry for entry in log if entry.endswith(":open")]
    assert opens == ["a:open", "b:open"] * 5  # 7 samples in 5 blocks each, alternating
    first_b = log.index("b:open")
    assert log[:first_b] == ["a:open", "a:1", "a:24", "a:whole", "a:1", "a:24", "a:whole"]  # 2 + 2 + 1 + 1 + 1


def test_specializations_whose_sessions_do_not_fit_together_are_measured_one_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench opens every row before it measures any; where the CPU sessions of all specializations (about twice
    their artifacts' bytes each) and the reference models would not fit in the free memory, each specialization is
    measured on its own, and the rows say so. (whisper-large-v3's dims on 24 GB: killed by the out-of-memory killer,
    nothing said.) GPU sessions live on the device and do not count."""
    root = tmp_path
    inputs = {}
    for name in ("a", "b"):
        for part in ("decoder", "audio-30s"):
            folder = root / "ort" / name / part
            folder.mkdir(parents=True)
            (folder / "model.onnx").write_bytes(b"\0" * (5 << 20))
            inputs[f"ort/{name}/{part}"] = folder
    model_dir = root / "model"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"\0" * (4 << 20))
    specs = [{"name": n, "device": "cpu", "dtype": "float32"} for n in ("a", "b")]
    runtimes = {"pytorch": "reference", "onnxruntime": "ort", "aoti": "aoti"}  # no aoti artifacts: 0 bytes
    # each specialization: 2.5 × 10 MB of sessions; all together 50 MB and the model's 4 MB (the bench uses 70 %)
    monkeypatch.setattr(bench, "available_memory", lambda: 100 << 20)
    assert bench._memory_groups(specs, runtimes, inputs, model_dir) == ([[(s, runtimes) for s in specs]], "")
    monkeypatch.setattr(bench, "available_memory", lambda: 60 << 20)
    groups, why = bench._memory_groups(specs, runtimes, inputs, model_dir)
    assert groups == [[(specs[0], runtimes)], [(specs[1], runtimes)]]
    assert why.startswith("each specialization's rows were measured without the others'") and "GB is free" in why
    monkeypatch.setattr(bench, "available_memory", lambda: 30 << 20)
    groups, why = bench._memory_groups(specs, runtimes, inputs, model_dir)
    assert groups == [[(s, {rt: runtimes[rt]})] for s in specs for rt in ("onnxruntime", "aoti")]
    assert why.startswith("each runtime's rows were measured on their own")
    on_gpu = [{**s, "device": "cuda"} for s in specs]
    assert bench._memory_groups(on_gpu, runtimes, inputs, model_dir)[1] == ""
