"""The text normalizers of ``normalize.py``, built in the worker (Whisper's come from transformers)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def make_normalizer(name: str, model_dir: Path | None = None) -> Callable[[str], str]:
    """The named normalizer (see normalize.py); Whisper's English one reads the model's normalizer.json."""
    if name == "simple":
        from ..checks.text import normalize_text

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
