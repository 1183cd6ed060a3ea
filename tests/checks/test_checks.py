"""The checks room: metric values on known cases, bound directions, shape mismatches as failures."""

from __future__ import annotations

import numpy as np
import pytest

from qeffbuild.checks import Evidence, TextEvidence, builtin_metrics, check, measure
from qeffbuild.checks.tensor import ShapeMismatch, per_row
from qeffbuild.checks.text import cer, normalize_text, wer
from qeffbuild.checks.tokens import first_mismatch

TENSOR = ("mad", "max_abs", "cosine")


def compare(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    return measure(TENSOR, Evidence(tensor=(ref, got)))


@pytest.mark.parametrize(("refs", "hyps", "expected"), [
    (["the cat sat"], ["the cat sat"], 0.0),
    (["the cat sat"], ["the cat sit"], 1 / 3),  # one substitution
    (["the cat sat"], ["the sat"], 1 / 3),  # one deletion
    (["the cat sat"], ["the big cat sat down"], 2 / 3),  # two insertions
    (["a b", "c d e f"], ["a x", "c d e f"], 1 / 6),  # pooled over the set, not averaged per utterance
    (["Hello, World!"], ["hello world"], 0.0),  # normalization: case and punctuation
    ([""], ["extra words"], 2.0),  # an empty reference: every hypothesis word is an insertion
])
def test_wer_known_cases(refs: list[str], hyps: list[str], expected: float) -> None:
    assert wer(refs, hyps) == pytest.approx(expected)


def test_cer_known_cases() -> None:
    assert cer(["abcd"], ["abcd"]) == 0.0
    assert cer(["abcd"], ["abxd"]) == pytest.approx(1 / 4)
    assert cer(["kitten"], ["sitting"]) == pytest.approx(3 / 6)  # the classic edit distance 3
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])


def test_normalization_is_documented_behaviour() -> None:
    assert normalize_text("  It's   a TEST, isn't it?  ") == "it's a test isn't it"


def test_bounds_read_the_metrics_direction() -> None:
    assert check({"mad": 1e-6, "cosine": 0.99999}, {"mad": 1e-5, "cosine": 0.9999}) == []
    assert check({"mad": 1e-4}, {"mad": 1e-5}) == ["mad = 0.0001, expected ≤ 1e-05"]
    assert check({"cosine": 0.9}, {"cosine": 0.99}) == ["cosine = 0.9, expected ≥ 0.99"]
    assert check({"token_agreement": 0.5}, {"token_agreement": 1.0}) == ["token_agreement = 0.5, expected ≥ 1"]
    assert check({"mad": float("nan")}, {"mad": 1.0}) == ["mad = nan, expected ≤ 1"]  # NaN never passes
    assert check({}, {"wer": 0.5}) == ["wer was not measured, expected ≤ 0.5"]  # a check that did not run fails
    assert {m.name: m.higher_is_better for m in builtin_metrics()} == {
        "mad": False, "max_abs": False, "cosine": True, "token_agreement": True, "wer": False, "cer": False,
        "wer_delta": False, "divergence_gap": False}


def test_the_divergence_gap_is_the_largest_reference_gap_and_zero_when_nothing_differs() -> None:
    assert measure(["divergence_gap"], Evidence(divergence=[0.01, 0.3, 0.002])) == {"divergence_gap": 0.3}
    assert measure(["divergence_gap"], Evidence(divergence=[])) == {"divergence_gap": 0.0}
    assert measure(["divergence_gap"], Evidence()) == {}  # not gathered: a bound on it then fails as not measured
    assert check({"divergence_gap": 0.3}, {"divergence_gap": 0.25}) == ["divergence_gap = 0.3, expected ≤ 0.25"]


def test_tensor_metrics_and_shape_mismatch() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 2.0]])
    got = np.array([[1.0, 0.1], [0.0, 2.0]])
    m = compare(ref, got)
    assert m["mad"] == pytest.approx(0.025) and m["max_abs"] == pytest.approx(0.1)
    assert m["cosine"] == pytest.approx(1 / np.sqrt(1.01))
    assert [round(r["max_abs"], 6) for r in per_row(ref, got)] == [0.1, 0.0]
    with pytest.raises(ShapeMismatch, match=r"output shape \[2, 3\] differs from the reference's \[2, 2\]"):
        compare(ref, np.zeros((2, 3)))
    with pytest.raises(ShapeMismatch):  # same element count, other shape: never reshaped into agreement
        compare(np.zeros((4, 2)), np.zeros((2, 4)))


def test_token_metrics() -> None:
    def agreement(ref: list[list[int]], got: list[list[int]]) -> float:
        return measure(["token_agreement"], Evidence(tokens=(ref, got)))["token_agreement"]

    assert agreement([[1, 2, 3, 4]], [[1, 2, 9, 4]]) == 0.75
    assert agreement([[1, 2, 3], [5]], [[1, 2], [5]]) == 0.75  # a sequence cut short counts against it
    assert first_mismatch([1, 2, 3], [1, 2, 3]) is None
    assert first_mismatch([1, 2, 3], [1, 5, 3]) == 1
    assert first_mismatch([1, 2], [1, 2, 3]) == 2


def test_metrics_are_computed_from_the_evidence_a_row_gathered() -> None:
    text = TextEvidence(["the cat sat"], ["the cat sit"], ["the cat sat"])
    values = measure(["wer", "cer", "wer_delta", "token_agreement"], Evidence(text=text))
    assert values == pytest.approx({"wer": 1 / 3, "cer": 1 / 11, "wer_delta": 1 / 3})  # no tokens: not measured
    own = measure(["wer", "wer_delta"], Evidence(text=TextEvidence(["a"], ["a"])))  # the reference's own row
    assert own == {"wer": 0.0}
    assert check(own, {"wer_delta": 0.01}) == ["wer_delta was not measured, expected ≤ 0.01"]
