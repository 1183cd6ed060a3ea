"""Token agreement: the fraction of generated tokens equal to the reference's, position by position."""

from __future__ import annotations

from ..core.plugins import Metric

METRICS = (
    Metric("token_agreement", "tokens", True, "fraction of generated tokens equal to the reference's",
           "qeffbuild.checks.tokens:sequence_agreement", highest=1.0),
    Metric("divergence_gap", "divergence", False, "where a runtime's tokens first leave the reference's, the gap "
           "between the two tokens in the float32 reference's own logits (the largest over the inputs; 0 when every "
           "token agrees): rounding flips near ties, a wrong kernel picks a token the reference ranks far below",
           "qeffbuild.checks.tokens:largest_gap"),
)


def largest_gap(gaps: list[float]) -> float:
    return max(gaps, default=0.0)


def sequence_agreement(ref: list[list[int]], got: list[list[int]]) -> float:
    """Token agreement over sequences of any length (long-form transcripts): equal positions over every position
    of the longer of each pair, so a sequence cut short or run long counts against it."""
    total = sum(max(len(r), len(g)) for r, g in zip(ref, got, strict=True))
    equal = sum(a == b for r, g in zip(ref, got, strict=True) for a, b in zip(r, g, strict=False))
    return equal / total if total else 1.0


def first_mismatch(ref: list[int], got: list[int]) -> int | None:
    """The first step at which two token sequences differ (None when equal)."""
    for i, (a, b) in enumerate(zip(ref, got, strict=False)):
        if a != b:
            return i
    return None if len(ref) == len(got) else min(len(ref), len(got))
