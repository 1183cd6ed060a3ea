"""A saved model folder's feature extractor and tokenizer, opened by the class the folder names.

``AutoFeatureExtractor`` / ``AutoTokenizer`` import transformers' auto-model factory, which imports its
generation stack and, where installed, scikit-learn and scipy.stats: 2–3 s of a transcriber's start-up
on our GPU host, for two objects whose class the folder already names (``feature_extractor_type`` in
preprocessor_config.json or processor_config.json, ``tokenizer_class`` in tokenizer_config.json).
The named class is imported alone; a folder that names none, or a name transformers does not export,
falls back to the Auto class, so nothing that loaded before fails now.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def feature_extractor(model_dir: Path) -> Any:
    import transformers

    cls = _named(transformers, _feature_extractor_name(model_dir)) or transformers.AutoFeatureExtractor
    return cls.from_pretrained(model_dir)


def tokenizer(model_dir: Path) -> Any:
    import transformers

    cls = _named(transformers, _json(model_dir / "tokenizer_config.json").get("tokenizer_class"))
    return (cls or transformers.AutoTokenizer).from_pretrained(model_dir)


def _feature_extractor_name(model_dir: Path) -> Any:
    name = _json(model_dir / "preprocessor_config.json").get("feature_extractor_type")
    if name:
        return name
    nested = _json(model_dir / "processor_config.json").get("feature_extractor")
    return nested.get("feature_extractor_type") if isinstance(nested, dict) else None


def _named(module: Any, name: Any) -> Any:
    if not isinstance(name, str) or not name.isidentifier():
        return None
    try:
        return getattr(module, name)
    except (AttributeError, ImportError):  # not exported by this transformers, or its backend is missing
        return None


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
