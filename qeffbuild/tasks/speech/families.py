"""The speech architectures one retained-state rewrite serves, described without torch.

Each architecture says what its encoder takes (a fixed log-mel window, log-mel filter banks
of any length, or a raw waveform of any length), how long its encoder output is for an input
of a given length (from its config: the plan knows every shape before anything runs), how many
positions its decoder has, and how its prompt is made. Lengths follow the transformers code:
Speech2Text's two stride-2 convolutions, Wav2Vec2's convolutional feature encoder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLE_RATE = 16000
HOP = 160  # 10 ms frames for every log-mel front end here
WINDOW = 400  # 25 ms


class FactError(ValueError):
    """A config value the plan needs is missing or not what it must be."""


def _int(cfg: dict[str, Any], name: str, default: int | None = None) -> int:
    value = cfg.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FactError(f"config {name} must be a positive integer, got {value!r}")
    return value


def _ints(cfg: dict[str, Any], name: str, default: list[int]) -> list[int]:
    value = cfg.get(name, default)
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and v > 0 for v in value):
        raise FactError(f"config {name} must be a list of positive integers, got {value!r}")
    return value


@dataclass(frozen=True)
class Architecture:
    name: str
    model_types: tuple[str, ...]
    class_prefixes: tuple[str, ...]
    inputs: str  # "fixed-log-mel" | "log-mel" | "waveform"
    auto_class: str

    @property
    def bucketed(self) -> bool:
        return self.inputs != "fixed-log-mel"

    def matches(self, architecture: str | None, model_type: str | None) -> bool:
        return model_type in self.model_types or (architecture or "").startswith(self.class_prefixes)

    # --- lengths ------------------------------------------------------------------------------
    def window_samples(self, cfg: dict[str, Any]) -> int:
        """Whisper: the one window every input is padded or cut to."""
        return _int(cfg, "max_source_positions", 1500) * 2 * HOP

    def encoder_length(self, cfg: dict[str, Any], samples: int) -> int:
        """Encoder output positions for an input of ``samples`` samples."""
        if self.inputs == "fixed-log-mel":
            return _int(cfg, "max_source_positions", 1500)
        if self.inputs == "log-mel":
            length = max(1, 1 + (samples - WINDOW) // HOP)
            for k in _ints(cfg, "conv_kernel_sizes", [5, 5]):
                length = (length + 2 * (k // 2) - k) // 2 + 1
            return length
        enc = cfg.get("encoder", cfg)
        length = samples
        kernels = _ints(enc, "conv_kernel", [10, 3, 3, 3, 3, 2, 2])
        for k, s in zip(kernels, _ints(enc, "conv_stride", [5, 2, 2, 2, 2, 2, 2]), strict=False):
            length = (length - k) // s + 1
        if length < 1:
            raise FactError(f"{samples} samples are too short for the encoder's convolutions")
        return length

    def max_encoder_positions(self, cfg: dict[str, Any]) -> int | None:
        if self.inputs == "log-mel":
            return _int(cfg, "max_source_positions", 6000)
        return None

    def decoder_positions(self, cfg: dict[str, Any]) -> int:
        if self.inputs != "waveform":
            return _int(cfg, "max_target_positions", 448)
        dec = cfg.get("decoder", {})
        for name in ("max_position_embeddings", "n_positions", "max_target_positions", "n_ctx"):
            if name in dec:
                return _int(dec, name)
        return 512


WHISPER = Architecture("whisper", ("whisper",), ("Whisper",), "fixed-log-mel", "AutoModelForSpeechSeq2Seq")
SPEECH2TEXT = Architecture("speech2text", ("speech_to_text",), ("Speech2Text",), "log-mel", "AutoModelForSpeechSeq2Seq")
ENCODER_DECODER = Architecture("speech-encoder-decoder", ("speech-encoder-decoder",), ("SpeechEncoderDecoder",),
                               "waveform", "SpeechEncoderDecoderModel")
ARCHITECTURES = (WHISPER, SPEECH2TEXT, ENCODER_DECODER)


def architecture_of(architecture: str | None, model_type: str | None) -> Architecture | None:
    return next((a for a in ARCHITECTURES if a.matches(architecture, model_type)), None)


# --- prompts, known before anything runs -----------------------------------------------------------
@dataclass(frozen=True)
class PromptFacts:
    length: int
    languages: tuple[str, ...] | None  # None: unknown (the model decides); (): English-only / no language token
    tasks: tuple[str, ...] | None = None  # "transcribe", "translate" tokens it has (None: unknown)


def whisper_prompt(folder: Path | None, tokenizer: Path | None, language: str | None) -> PromptFacts:
    """The prompt of a Whisper: start, language (multilingual models), task, no-timestamps."""
    gen = _json(folder / "generation_config.json") if folder else {}
    if gen:
        langs = tuple(sorted(k.strip("<|>") for k in (gen.get("lang_to_id") or {})))
        tasks = tuple(sorted(t for t, i in (gen.get("task_to_id") or {}).items() if i is not None))
        has_nots = gen.get("no_timestamps_token_id") is not None
    elif tokenizer is not None:
        vocab = _added_tokens(tokenizer)
        if vocab is None:
            return PromptFacts(4, None)
        langs = tuple(sorted(t.strip("<|>") for t in vocab if re.fullmatch(r"<\|[a-z]{2,3}\|>", t)))
        tasks = tuple(t for t in ("transcribe", "translate") if f"<|{t}|>" in vocab)
        has_nots = "<|notimestamps|>" in vocab
    else:
        return PromptFacts(1, (), ())
    has_task = bool(tasks)
    return PromptFacts(1 + (1 if langs else 0) + has_task + has_nots, langs, tasks)  # multilingual: a language token


def feature_bins(folder: Path) -> tuple[int, str] | None:
    """The mel bins a saved Whisper feature extractor makes, and the file that says so (None: none found)."""
    for name, path in (("preprocessor_config.json", ()), ("processor_config.json", ("feature_extractor",))):
        data: Any = _json(folder / name)
        for key in path:
            data = data.get(key, {}) if isinstance(data, dict) else {}
        if isinstance(data, dict) and isinstance(data.get("feature_size"), int):
            return int(data["feature_size"]), name
    return None


def _added_tokens(folder: Path) -> set[str] | None:
    data = _json(folder / "tokenizer.json")
    if data:
        return {t["content"] for t in data.get("added_tokens", []) if isinstance(t, dict) and "content" in t}
    vocab = _json(folder / "added_tokens.json")
    return set(vocab) if vocab else None


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
