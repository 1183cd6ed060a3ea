"""Text normalizers for WER and CER, as the Whisper evaluations use them.

    whisper-english   transformers' EnglishTextNormalizer (Whisper's: numbers and currencies spelled
                      out or in, "mister" for "Mr", British spellings mapped to American with the
                      model's normalizer.json when it ships one), for English
    whisper-basic     transformers' BasicTextNormalizer (lower case, punctuation and marks removed),
                      for other languages
    simple            lower case, punctuation except apostrophes removed (qeffbuild.checks.text)

The default is whisper-english when the validation's language is English (or unset), else
whisper-basic; a manifest may choose with ``normalizer = "…"``. This module is read at plan time
(torch-free); the worker builds one with ``normalizers.make_normalizer``.
"""

from __future__ import annotations

NORMALIZERS = ("whisper-english", "whisper-basic", "simple")


def default_normalizer(language: str | None) -> str:
    return "whisper-english" if language in (None, "en") else "whisper-basic"
