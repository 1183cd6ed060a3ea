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


class Architecture:
    """One speech architecture's knowledge, as data and small methods: the only place its name decides anything.

    Plan-time facts (lengths, positions) are torch-free; the worker-side methods (features, encoder, decoder,
    head, ``generate`` settings) import what they need when called. Subclasses are registered by
    :func:`register` (as optimum registers one config class per architecture); adding an architecture is adding
    a subclass here, and no code elsewhere names it.
    """

    name: str
    model_types: tuple[str, ...]
    class_prefixes: tuple[str, ...]
    inputs: str  # "fixed-log-mel" | "log-mel" | "waveform"
    auto_class: str  # the transformers class that loads a saved model
    encoder_inputs: tuple[str, ...]  # the encoder graph's inputs, in order
    # Whisper's special tokens: language and task tokens in the prompt, timestamp tokens (sequential long-form)
    whisper_tokens: bool = False
    # a composed model (any audio encoder + any text decoder): its tokenizer and feature extractor are saved
    # apart, and it has no decoder_start_token_id of its own
    composed: bool = False
    feature_axes: tuple[str | None, ...] = ("batch_size", "feature_len")  # named axes of the first encoder input
    ctranslate2: bool = False  # CTranslate2 (faster-whisper's engine) converts it: a baseline for `bench`
    # submodules whose q_proj/k_proj/v_proj project one input (self-attention): fused into one matmul by the
    # transform (``decoding/fuse.py``); a cross-attention is left out (its query and keys read different inputs)
    self_attention: tuple[str, ...] = ("self_attn",)

    @property
    def bucketed(self) -> bool:
        return self.inputs != "fixed-log-mel"

    @property
    def has_mask(self) -> bool:
        return "attention_mask" in self.encoder_inputs

    def matches(self, architecture: str | None, model_type: str | None) -> bool:
        return model_type in self.model_types or (architecture or "").startswith(self.class_prefixes)

    # --- lengths ------------------------------------------------------------------------------
    def window_samples(self, cfg: dict[str, Any]) -> int:
        """Whisper: the one window every input is padded or cut to."""
        return _int(cfg, "max_source_positions", 1500) * 2 * HOP

    def encoder_length(self, cfg: dict[str, Any], samples: int) -> int:
        """Encoder output positions for an input of ``samples`` samples."""
        raise NotImplementedError

    def max_encoder_positions(self, cfg: dict[str, Any]) -> int | None:
        return None

    def decoder_positions(self, cfg: dict[str, Any]) -> int:
        return _int(cfg, "max_target_positions", 448)

    # --- worker side: prompt, features, the model's own modules -------------------------------
    def prompt_after_start(self, gen: dict[str, Any], language: str | None, task: str) -> list[int]:
        """The prompt tokens after the decoder start token (a checkpoint's forced BOS, where it has one)."""
        bos = gen.get("forced_bos_token_id")
        return [int(bos)] if bos is not None else []

    def features(self, fe: Any, audios: list[Any], samples: int, kw: dict[str, Any]) -> dict[str, Any]:
        """Encoder inputs for audio padded (or cut) to ``samples`` samples, named as the graphs name them."""
        out = fe(audios, max_length=samples, return_attention_mask=True, **kw)
        return {"input_values": out["input_values"].astype("float32"),
                "attention_mask": out["attention_mask"].astype("int64")}

    def example_inputs(self, cfg: Any, batch: int, samples: int, gen: Any) -> dict[str, Any]:
        """Random encoder inputs for an export (float32 on the CPU; the caller moves them)."""
        import torch

        return {"input_values": torch.randn(batch, samples, generator=gen) * 0.1,
                "attention_mask": torch.ones(batch, samples, dtype=torch.long)}

    def encoder(self, model: Any) -> Any:
        return model.model.encoder

    def decoder(self, model: Any) -> Any:
        return model.model.decoder

    def run_encoder(self, model: Any, feeds: dict[str, Any]) -> Any:
        """The unmodified encoder on named inputs (its output object)."""
        return self.encoder(model)(**{k: feeds[k] for k in self.encoder_inputs})

    def encode(self, model: Any, *inputs: Any) -> tuple[Any, Any]:
        """(encoder hidden states as the decoder sees them, their attention mask or None)."""
        hidden = self.run_encoder(model, dict(zip(self.encoder_inputs, inputs, strict=True))).last_hidden_state
        return hidden, self.encoder_mask(model, hidden, inputs)

    def encoder_mask(self, model: Any, hidden: Any, inputs: tuple[Any, ...]) -> Any:
        return None

    def logits(self, model: Any, decoder_out: Any) -> Any:
        """The LM head over the decoder's output."""
        return model.lm_head(decoder_out.last_hidden_state)

    def generate_kwargs(self, model: Any, dc: Any) -> dict[str, Any]:
        """``generate`` settings that make it the greedy decode our loop is: no beam, penalty or n-gram settings
        a checkpoint may carry."""
        from transformers import GenerationConfig

        return {"generation_config": GenerationConfig(
            decoder_start_token_id=dc.prompt[0], eos_token_id=dc.eos, pad_token_id=model.config.pad_token_id,
            suppress_tokens=dc.suppress or None, begin_suppress_tokens=dc.begin_suppress or None)}


ARCHITECTURES: dict[str, Architecture] = {}


def register(cls: type[Architecture]) -> type[Architecture]:
    ARCHITECTURES[cls.name] = cls()
    return cls


@register
class Whisper(Architecture):
    name = "whisper"
    model_types = ("whisper",)
    class_prefixes = ("Whisper",)
    inputs = "fixed-log-mel"
    auto_class = "AutoModelForSpeechSeq2Seq"
    encoder_inputs = ("input_features",)
    whisper_tokens = True
    feature_axes = ("batch_size", None, "feature_len")
    ctranslate2 = True

    def encoder_length(self, cfg: dict[str, Any], samples: int) -> int:
        return _int(cfg, "max_source_positions", 1500)

    def prompt_after_start(self, gen: dict[str, Any], language: str | None, task: str) -> list[int]:
        return whisper_prompt_tokens(gen, language, task)

    def features(self, fe: Any, audios: list[Any], samples: int, kw: dict[str, Any]) -> dict[str, Any]:
        return {"input_features": fe(audios, max_length=samples, **kw)["input_features"].astype("float32")}

    def example_inputs(self, cfg: Any, batch: int, samples: int, gen: Any) -> dict[str, Any]:
        import torch

        frames = 2 * int(cfg.max_source_positions)
        return {"input_features": torch.randn(batch, int(cfg.num_mel_bins), frames, generator=gen)}

    def logits(self, model: Any, decoder_out: Any) -> Any:
        return model.proj_out(decoder_out.last_hidden_state)

    def generate_kwargs(self, model: Any, dc: Any) -> dict[str, Any]:
        # the checkpoint's own generation config (its prompt rules); one window, one call: a random Whisper emits
        # timestamp tokens after <|notimestamps|>, and HF's short-form generate would then seek into the window and
        # decode it again (a trained model never does; this keeps generate the model's greedy decode of the window)
        return {"force_unique_generate_call": True}


@register
class Speech2Text(Architecture):
    name = "speech2text"
    model_types = ("speech_to_text",)
    class_prefixes = ("Speech2Text",)
    inputs = "log-mel"
    auto_class = "AutoModelForSpeechSeq2Seq"
    encoder_inputs = ("input_features", "attention_mask")
    feature_axes = ("batch_size", "feature_len", None)

    def encoder_length(self, cfg: dict[str, Any], samples: int) -> int:
        length = max(1, 1 + (samples - WINDOW) // HOP)
        for k in _ints(cfg, "conv_kernel_sizes", [5, 5]):
            length = (length + 2 * (k // 2) - k) // 2 + 1
        return length

    def max_encoder_positions(self, cfg: dict[str, Any]) -> int | None:
        return _int(cfg, "max_source_positions", 6000)

    def features(self, fe: Any, audios: list[Any], samples: int, kw: dict[str, Any]) -> dict[str, Any]:
        frames = max(1, 1 + (samples - WINDOW) // HOP)
        out = fe(audios, max_length=frames, return_attention_mask=True, **kw)
        return {"input_features": out["input_features"].astype("float32"),
                "attention_mask": out["attention_mask"].astype("int64")}

    def example_inputs(self, cfg: Any, batch: int, samples: int, gen: Any) -> dict[str, Any]:
        import torch

        frames = max(1, 1 + (samples - WINDOW) // HOP)
        dim = int(cfg.input_feat_per_channel) * int(cfg.input_channels)
        return {"input_features": torch.randn(batch, frames, dim, generator=gen),
                "attention_mask": torch.ones(batch, frames, dtype=torch.long)}

    def encoder_mask(self, model: Any, hidden: Any, inputs: tuple[Any, ...]) -> Any:
        return model.model._get_feature_vector_attention_mask(hidden.shape[1], inputs[1])


@register
class SpeechEncoderDecoder(Architecture):
    """Any audio encoder (Wav2Vec2, HuBERT …) composed with any text decoder (BERT, GPT-2 …)."""

    name = "speech-encoder-decoder"
    model_types = ("speech-encoder-decoder",)
    class_prefixes = ("SpeechEncoderDecoder",)
    inputs = "waveform"
    auto_class = "SpeechEncoderDecoderModel"
    encoder_inputs = ("input_values", "attention_mask")
    composed = True
    self_attention = ("self_attn", "attention")  # Wav2Vec2-style encoders name theirs `attention`

    def encoder_length(self, cfg: dict[str, Any], samples: int) -> int:
        enc = cfg.get("encoder", cfg)
        length = samples
        kernels = _ints(enc, "conv_kernel", [10, 3, 3, 3, 3, 2, 2])
        for k, s in zip(kernels, _ints(enc, "conv_stride", [5, 2, 2, 2, 2, 2, 2]), strict=False):
            length = (length - k) // s + 1
        if length < 1:
            raise FactError(f"{samples} samples are too short for the encoder's convolutions")
        return length

    def decoder_positions(self, cfg: dict[str, Any]) -> int:
        dec = cfg.get("decoder", {})
        for name in ("max_position_embeddings", "n_positions", "max_target_positions", "n_ctx"):
            if name in dec:
                return _int(dec, name)
        return 512

    def encoder(self, model: Any) -> Any:
        return model.encoder

    def decoder(self, model: Any) -> Any:
        return model.decoder

    def run_encoder(self, model: Any, feeds: dict[str, Any]) -> Any:
        return model.encoder(feeds["input_values"], attention_mask=feeds["attention_mask"])

    def encode(self, model: Any, *inputs: Any) -> tuple[Any, Any]:
        hidden, mask = super().encode(model, *inputs)
        if getattr(model, "enc_to_dec_proj", None) is not None and \
                model.encoder_output_dim != model.decoder.config.hidden_size and \
                model.decoder.config.cross_attention_hidden_size is None:
            hidden = model.enc_to_dec_proj(hidden)
        return hidden, mask

    def encoder_mask(self, model: Any, hidden: Any, inputs: tuple[Any, ...]) -> Any:
        return model.encoder._get_feature_vector_attention_mask(hidden.shape[1], inputs[1])

    def logits(self, model: Any, decoder_out: Any) -> Any:
        return decoder_out.logits  # the text decoder is a *ForCausalLM: it applies its own head


def compose_encoder_decoder(encoder: Any, decoder: Any) -> tuple[dict[str, Any], str, str]:
    """An audio encoder and a text decoder source joined as ``SpeechEncoderDecoderModel`` joins them: the config
    it would save, its class and model_type (from the two resolved sides' configs)."""
    a = ARCHITECTURES["speech-encoder-decoder"]
    config = {"model_type": a.model_types[0], "encoder": {"model_type": encoder.model_type, **encoder.config},
              "decoder": {"model_type": decoder.model_type, **decoder.config}}
    return config, a.class_prefixes[0] + "Model", a.model_types[0]


def architecture_of(architecture: str | None, model_type: str | None) -> Architecture | None:
    return next((a for a in ARCHITECTURES.values() if a.matches(architecture, model_type)), None)


def named(name: str) -> Architecture:
    """The architecture a plan recorded by name (``params["arch"]``, ``io.json``)."""
    return ARCHITECTURES[name]


def of_model_type(model_type: str | None) -> Architecture:
    """The architecture of a saved model's ``model_type`` (composed models when nothing else matches)."""
    return architecture_of(None, model_type) or ARCHITECTURES["speech-encoder-decoder"]


def whisper_prompt_tokens(gen: dict[str, Any], language: str | None, task: str = "transcribe") -> list[int]:
    """Whisper's prompt after its start token: language (multilingual), task, <|notimestamps|>."""
    from ...errors import InputError

    out = []
    lang_to_id = gen.get("lang_to_id") or {}
    if lang_to_id:
        token = f"<|{language or 'en'}|>"
        if token not in lang_to_id:
            raise InputError(f"language {language!r} is not one of the model's languages "
                             f"({', '.join(sorted(k.strip('<|>') for k in lang_to_id)[:20])} …)")
        out.append(int(lang_to_id[token]))
    elif language not in (None, "en"):
        raise InputError(f"the model is English-only: it has no language token for {language!r}; remove language")
    task_to_id = gen.get("task_to_id") or {}
    if task_to_id.get(task) is not None:
        out.append(int(task_to_id[task]))
    elif task != "transcribe" and task_to_id:
        raise InputError(f"the model has no <|{task}|> token; remove task or set it to 'transcribe'")
    if gen.get("no_timestamps_token_id") is not None:
        out.append(int(gen["no_timestamps_token_id"]))
    return out


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
