"""Prompt tokens of a speech model (worker side): what a random Whisper's generation config must hold."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


def random_generation_config(model: Any, tokenizer_dir: Path) -> None:
    """A random Whisper gets the prompt tokens its tokenizer defines, as real checkpoints ship them."""
    from transformers import AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    vocab = tok.get_vocab()
    gc = GenerationConfig.from_model_config(model.config)
    langs = {t: i for t, i in vocab.items() if re.fullmatch(r"<\|[a-z]{2,3}\|>", t)}
    tasks = {name: vocab[f"<|{name}|>"] for name in ("transcribe", "translate") if f"<|{name}|>" in vocab}
    # Whisper's generation-config fields: GenerationConfig keeps unknown attributes as given.
    extra = {"lang_to_id": langs or None, "task_to_id": tasks or None,
             "no_timestamps_token_id": vocab.get("<|notimestamps|>"), "prev_sot_token_id": vocab.get("<|startofprev|>"),
             "is_multilingual": bool(langs)}
    for name, value in extra.items():
        if value is not None:
            setattr(gc, name, value)
    gc._from_model_config = False  # an explicit config: loaders must not rebuild it from the model config
    model.generation_config = gc
