"""The bench's arithmetic, without a model: a decode step is (T(N) − T(1)) / (N − 1), never negative or zero."""

from __future__ import annotations

import itertools

import pytest

from qeffbuild.tasks.speech import bench


def test_a_sample_where_n_tokens_took_no_longer_than_one_gives_no_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a loaded machine T(N) can come out ≤ T(1): that sample is dropped, not counted as 0 ms a token, and
    measured again (up to as many more pairs as asked for); a row with no sample left says why instead of
    printing 0 tokens/s."""
    # (T(1), T(N)) pairs: +0.23, −0.10 (dropped, measured again), +0.46, +0.23 seconds
    times = iter([0.10, 0.33, 0.50, 0.40, 0.10, 0.56, 0.10, 0.33])
    monkeypatch.setattr(bench, "_timed", lambda fn, device: next(times))
    per, full = bench._per_token(lambda n: None, 24, 3, "cpu")
    assert per == pytest.approx([0.23 / 23, 0.46 / 23, 0.23 / 23]) and full == [0.33, 0.40, 0.56, 0.33]
    spec = {"batch_size": 1, "name": "s", "dtype": "float32", "ctx_len": 48}
    row = bench._row("onnxruntime", spec, 24, [0.2], per, full, None, 2.0)
    assert row["p50_ms"] == pytest.approx(1000 * 0.23 / 23) and row["throughput_per_s"] > 0
    always_slower = itertools.cycle([0.5, 0.4])
    calls = []
    monkeypatch.setattr(bench, "_timed", lambda fn, device: calls.append(1) or next(always_slower))
    none, _ = bench._per_token(lambda n: None, 24, 2, "cpu")
    assert len(calls) == 2 * 2 * 2  # 2 pairs asked for, 2 more tried, then no figure
    empty = bench._row("onnxruntime", spec, 24, [0.2], none, [0.4, 0.4], None, 2.0)
    assert none == [] and "p50_ms" not in empty and "other work on the machine" in empty["unavailable"]
