"""Text normalizers for WER and CER (worker side), as the Whisper evaluations use them.

    whisper-english   transformers' EnglishTextNormalizer (Whisper's: numbers and currencies spelled
                      out or in, "mister" for "Mr", British spellings mapped to American with the
                      model's normalizer.json when it ships one), for English
    whisper-basic     transformers' BasicTextNormalizer (lower case, punctuation and marks removed),
                      for other languages
    simple            lower case, punctuation except apostrophes removed (qeffbuild.checks.text)

The default is whisper-english when the validation's language is English (or unset), else
whisper-basic; a manifest may choose with ``normalizer = "…"``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

NORMALIZERS = ("whisper-english", "whisper-basic", "simple")


def default_normalizer(language: str | None) -> str:
    return "whisper-english" if language in (None, "en") else "whisper-basic"


def make(name: str, model_dir: Path | None = None) -> Callable[[str], str]:
    if name == "simple":
        from ...checks.text import normalize_text

        return normalize_text
    if name == "whisper-basic":
        from transformers.models.whisper.english_normalizer import BasicTextNormalizer

        return BasicTextNormalizer()
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    spelling: dict[str, str] = {}
    path = model_dir / "normalizer.json" if model_dir else None
    if path is not None and path.is_file():
        spelling = json.loads(path.read_text())
    return EnglishTextNormalizer(spelling)
