"""What a random Whisper's preprocessing must hold (worker side): its prompt tokens, and a feature extractor
with as many mel bins as the model reads."""

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


def matched_processor(tokenizer_dir: Path, mel_bins: int, dest: Path) -> Path:
    """The tokenizer folder's processor, its feature extractor making ``mel_bins`` bins (whisper-large-v3's
    config reads 128; a tokenizer folder's extractor may make 80): a copy in ``dest``, or the folder itself
    when they already agree."""
    from transformers import AutoProcessor, WhisperFeatureExtractor

    processor = AutoProcessor.from_pretrained(tokenizer_dir)
    fe = processor.feature_extractor
    if fe.feature_size == mel_bins:
        return tokenizer_dir
    processor.feature_extractor = WhisperFeatureExtractor(
        feature_size=mel_bins, sampling_rate=fe.sampling_rate, hop_length=fe.hop_length, chunk_length=fe.chunk_length,
        n_fft=fe.n_fft, padding_value=fe.padding_value)
    processor.save_pretrained(dest)
    return dest
