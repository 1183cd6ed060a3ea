"""Word and character error rates through jiwer, after one documented normalization.

Normalization (both sides): lower case, punctuation except apostrophes becomes a space,
runs of white space become one space, ends are stripped. An empty reference with an
empty hypothesis is 0 errors; WER is errors / reference words over the whole set.
"""

from __future__ import annotations

import re

from ..core.plugins import Metric

METRICS = (
    Metric("wer", "text", False, "word error rate against the transcripts", "qeffbuild.checks.text:wer"),
    Metric("cer", "text", False, "character error rate against the transcripts", "qeffbuild.checks.text:cer"),
)


def normalize_text(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s']", " ", text.lower())).strip()


def _rate(refs: list[str], hyps: list[str], unit: str) -> float:
    import jiwer

    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    pairs = [(normalize_text(r), normalize_text(h)) for r, h in zip(refs, hyps, strict=True)]
    scored = [(r, h) for r, h in pairs if r]
    errors = sum(len(h.split() if unit == "word" else h) for r, h in pairs if not r)  # all insertions
    if scored:
        out = jiwer.process_words([r for r, _ in scored], [h for _, h in scored]) if unit == "word" else \
            jiwer.process_characters([r for r, _ in scored], [h for _, h in scored])
        errors += out.substitutions + out.deletions + out.insertions
    total = sum(len(r.split() if unit == "word" else r) for r, _ in scored)
    return errors / max(1, total)


def wer(refs: list[str], hyps: list[str]) -> float:
    return _rate(refs, hyps, "word")


def cer(refs: list[str], hyps: list[str]) -> float:
    return _rate(refs, hyps, "char")
