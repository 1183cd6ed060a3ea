"""Word and character error rates through jiwer, after a documented normalization.

The default normalization (``simple``, both sides): lower case, punctuation except apostrophes
becomes a space, runs of white space become one space, ends are stripped. A family may pass
another (speech uses Whisper's English or basic normalizer: ``tasks/speech/normalize.py``). An
empty reference with an empty hypothesis is 0 errors; WER is errors / reference words over the
whole set (so one long utterance weighs more than a short one, as in every published WER).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..core.plugins import Metric

METRICS = (
    Metric("wer", "text", False, "word error rate against the transcripts", "qeffbuild.checks.text:wer"),
    Metric("cer", "text", False, "character error rate against the transcripts", "qeffbuild.checks.text:cer"),
    Metric("wer_delta", "text", False, "WER minus the float32 reference's WER on the same data (absolute)",
           "qeffbuild.checks.text:wer_delta"),
)


def normalize_text(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s']", " ", text.lower())).strip()


def _rate(refs: list[str], hyps: list[str], unit: str, normalize: Callable[[str], str] = normalize_text) -> float:
    import jiwer

    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    pairs = [(" ".join(normalize(r).split()), " ".join(normalize(h).split())) for r, h in zip(refs, hyps, strict=True)]
    scored = [(r, h) for r, h in pairs if r]
    errors = sum(len(h.split() if unit == "word" else h) for r, h in pairs if not r)  # all insertions
    if scored:
        out = jiwer.process_words([r for r, _ in scored], [h for _, h in scored]) if unit == "word" else \
            jiwer.process_characters([r for r, _ in scored], [h for _, h in scored])
        errors += out.substitutions + out.deletions + out.insertions
    total = sum(len(r.split() if unit == "word" else r) for r, _ in scored)
    return errors / max(1, total)


# A text metric is called (references, hypotheses, reference_hyps=…, normalize=…): ``reference_hyps`` are the
# reference model's texts on the same data (None on the reference's own row).


def wer(refs: list[str], hyps: list[str], normalize: Callable[[str], str] = normalize_text,
        reference_hyps: list[str] | None = None) -> float:
    return _rate(refs, hyps, "word", normalize)


def cer(refs: list[str], hyps: list[str], normalize: Callable[[str], str] = normalize_text,
        reference_hyps: list[str] | None = None) -> float:
    return _rate(refs, hyps, "char", normalize)


def wer_delta(refs: list[str], hyps: list[str], reference_hyps: list[str] | None = None,
              normalize: Callable[[str], str] = normalize_text) -> float | None:
    """How much worse (positive) or better this runtime's WER is than the reference's on the same data."""
    if reference_hyps is None:
        return None
    return wer(refs, hyps, normalize) - wer(refs, reference_hyps, normalize)
