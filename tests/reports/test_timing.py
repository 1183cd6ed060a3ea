"""Benchmark arithmetic: percentiles, how much samples vary, and the warnings a bench prints."""

from __future__ import annotations

import pytest

from qeffbuild.reports.timing import UNSTEADY, percentiles, warnings_for

IDLE = {"load_avg_1m": 0.5, "cores": 2.0}


def test_percentiles_are_unrounded_ms_and_the_spread_ignores_one_outlier() -> None:
    steady = percentiles([0.0100, 0.0101, 0.0099, 0.0100, 0.0102, 0.5])  # one 500 ms hiccup
    assert steady["p50_ms"] == pytest.approx(10.05)
    assert steady["spread"] < UNSTEADY
    noisy = percentiles([0.010, 0.014, 0.007, 0.012, 0.009, 0.016])
    assert noisy["spread"] > UNSTEADY
    assert noisy["min_ms"] == pytest.approx(7.0)


def test_a_row_that_varies_and_a_loaded_machine_are_said() -> None:
    rows = [{"runtime": "onnxruntime", "specialization": "s", "shape": "seq 16", **percentiles([0.01] * 5)},
            {"runtime": "aoti", "specialization": "s", "shape": "seq 16",
             **percentiles([0.010, 0.014, 0.007, 0.012, 0.009, 0.016])}]
    assert warnings_for(rows[:1], IDLE) == []
    said = warnings_for(rows, {"load_avg_1m": 3.2, "cores": 2.0})
    assert len(said) == 2
    assert "load average (3.2) exceeds the 2 cores" in said[0]
    assert said[1].startswith("aoti [s, seq 16]: samples vary by")
    assert "best 7 ms, p50 11 ms" in said[1]  # a bimodal host: the best sample says which mode is the call's


def test_a_spoiled_pair_is_measured_again_and_never_gives_zero() -> None:
    """T(N) ≤ T(1) on a loaded machine: no figure (not 0 ms, not negative), another pair instead, at most as many
    more as asked for."""
    from qeffbuild.reports.timing import per_step_seconds

    times = iter([0.1, 0.1, 0.2, 0.43])  # T(1), T(N) pairs: a tie (spoiled), then +0.23 s
    per, full = per_step_seconds(lambda n: next(times), 24, 1)
    assert per == pytest.approx([0.23 / 23]) and full == [0.1, 0.43]
    calls: list[int] = []
    per, _ = per_step_seconds(lambda n: calls.append(n) or 0.5, 24, 3)
    assert per == [] and calls == [1, 24] * 6


def test_samples_split_into_at_most_five_blocks_none_empty() -> None:
    from qeffbuild.reports.timing import blocks

    assert blocks(10) == [2, 2, 2, 2, 2] and blocks(7) == [2, 2, 1, 1, 1] and blocks(3) == [1, 1, 1]
    assert blocks(1) == [1] and all(sum(blocks(n)) == n for n in range(1, 40))


def test_rows_measured_apart_say_so_once() -> None:
    rows = [{"runtime": r, "specialization": s, "shape": "ctx 48", "measured_apart": "measured without the others'",
             **percentiles([0.01] * 5)} for r, s in (("generate", "a"), ("onnxruntime", "a"), ("generate", "b"))]
    assert warnings_for(rows, IDLE) == ["measured without the others'"]
