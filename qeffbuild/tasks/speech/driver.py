"""The speech driver: audio → features → encoder side → greedy decoder steps, on any runtime.

One decode loop (the decoding core's, ``qeffbuild.decoding``) serves every runtime and architecture: the
encoder session returns each layer's cross-attention keys/values (and their mask), the decoder session
takes the retained state (past keys/values of fixed ``ctx_len``) and returns it updated. Logits
processing follows the model's generation config (suppress_tokens, begin_suppress_tokens, Whisper's
timestamp rules) as ``generate`` does.

Inputs go to the smallest compiled audio length that fits (Speech2Text and encoder-decoders; a
Whisper has one window), batched by that length; a batch short of ``batch_size`` is filled with
copies of a real row, whose results are dropped.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...decoding.greedy import Decoded, greedy
from ...decoding.rules import LogitRules, Timestamps
from ...errors import InputError
from ...pipeline.audio import SAMPLE_RATE, Utterance, decode_audio, load_audio, load_dataset, load_rows
from ...runtimes import Session
from .families import named

__all__ = ["Decoded", "Utterance", "decode_audio", "load_audio", "load_dataset", "load_rows"]  # callers' home

@dataclass(frozen=True)
class DecodeConfig:
    """What the decode loop needs to know about a model, read from its saved folder."""

    arch: str
    prompt: list[int]
    eos: int
    suppress: list[int] = field(default_factory=list)
    begin_suppress: list[int] = field(default_factory=list)
    timestamps: Timestamps | None = None  # Whisper with timestamp tokens in its vocabulary: for long-form decoding
    language: str | None = None  # multilingual Whisper: the language code its prompt names
    prev_sot: int | None = None  # Whisper: <|startofprev|>, before the previous window's text
    decoder_positions: int = 448

    def rules(self, with_timestamps: bool = False) -> LogitRules:
        """The logits rules of this model's greedy decoding (with its timestamp rules: long-form Whisper)."""
        return LogitRules(self.eos, tuple(self.suppress), tuple(self.begin_suppress),
                          self.timestamps if with_timestamps else None)

    def timestamp_prompt(self) -> list[int]:
        """The prompt of a decode with timestamps: the same, without <|notimestamps|>."""
        nots = self.timestamps.no_timestamps if self.timestamps else None
        return [t for t in self.prompt if t != nots]

    @classmethod
    def from_model_dir(cls, model_dir: Path, language: str | None, arch: str,
                       task: str | None = None) -> DecodeConfig:
        cfg = json.loads((model_dir / "config.json").read_text())
        gen_path = model_dir / "generation_config.json"
        gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}

        def pick(name: str) -> Any:
            value = gen.get(name, cfg.get(name))
            return value[0] if isinstance(value, list) and value else value

        start, eos = pick("decoder_start_token_id"), pick("eos_token_id")
        if start is None or eos is None:
            raise InputError(f"{model_dir}: the model has no decoder_start_token_id or eos_token_id; set them in "
                             "its [models.NAME] table")
        a = named(arch)
        prompt = [int(start), *a.prompt_after_start(gen, language, task or "transcribe")]
        nots = gen.get("no_timestamps_token_id")
        stamps, prev_sot = None, None
        suppress = list(gen.get("suppress_tokens") or cfg.get("suppress_tokens") or [])
        if a.whisper_tokens and isinstance(nots, int) and nots + 1 < int(cfg.get("vocab_size") or 0):
            initial = gen.get("max_initial_timestamp_index")
            stamps = Timestamps(nots + 1, nots, int(initial) if isinstance(initial, int) else None)
            prev_sot = gen.get("prev_sot_token_id")  # HF's fallback when absent: the second-last suppressed token
            prev_sot = prev_sot if isinstance(prev_sot, int) else (suppress[-2] if len(suppress) >= 2 else None)
        multilingual = a.whisper_tokens and bool(gen.get("lang_to_id"))
        return cls(arch, prompt, int(eos), suppress,
                   list(gen.get("begin_suppress_tokens") or cfg.get("begin_suppress_tokens") or []), stamps,
                   (language or "en") if multilingual else None, prev_sot,
                   int(cfg.get("max_target_positions") or 448))


class Frontend:
    """The model's feature extractor and tokenizer: audio → encoder inputs, tokens → text."""

    def __init__(self, model_dir: Path, arch: str) -> None:
        from ...pipeline import preprocessors

        self.arch = named(arch)
        self.model_dir = model_dir
        # the processor's two halves, loaded apart (AutoProcessor imports the image and video processing stacks
        # too), and without transformers where the folder's are ones qeffbuild computes itself (preprocessors)
        self.fe = preprocessors.feature_extractor(model_dir)
        self.tokenizer = preprocessors.tokenizer(model_dir)

    @functools.cached_property
    def hf_fe(self) -> Any:
        """transformers' own feature extractor, for the reference model's own calls (torch tensors, masks)."""
        from ...pipeline import preprocessors

        return preprocessors.hf_feature_extractor(self.model_dir)

    def features(self, audios: list[Any], samples: int) -> dict[str, Any]:
        """Encoder inputs for audio padded (or cut) to ``samples`` samples, named as the graphs name them."""
        kw: dict[str, Any] = {"sampling_rate": SAMPLE_RATE, "return_tensors": "np", "padding": "max_length",
                              "truncation": True}
        return self.arch.features(self.fe, audios, samples, kw)

    def long_features(self, audio: Any) -> Any:
        """Whisper: the log-mel of the whole audio, unpadded ([mel bins, frames]), as HF's long-form reads it."""
        out = self.fe(audio, sampling_rate=SAMPLE_RATE, return_tensors="np", truncation=False, padding="longest")
        return out["input_features"][0].astype("float32")

    def text(self, tokens: list[int], eos: int, timestamp_begin: int | None = None) -> str:
        """The text of ``tokens`` up to EOS; with ``timestamp_begin``, timestamp tokens are left out."""
        kept = until_eos(tokens, eos)
        if timestamp_begin is not None:
            kept = [t for t in kept if t < timestamp_begin]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return str(text).strip()


def fit(seconds: float, graphs: dict[str, int]) -> str | None:
    """The smallest graph whose length holds ``seconds`` of audio (None: longer than all)."""
    for name, samples in sorted(graphs.items(), key=lambda kv: kv[1]):
        if samples >= round(seconds * SAMPLE_RATE) - 1:
            return name
    return None


def batches(utts: list[Utterance], graphs: dict[str, int], batch: int) -> list[tuple[str, list[int]]]:
    """(graph, rows) pairs: rows (utterance indices) of one graph, at most ``batch`` a time, shortest first."""
    groups: dict[str, list[int]] = {}
    for i, u in sorted(enumerate(utts), key=lambda iu: (len(iu[1].audio), iu[0])):
        name = fit(u.seconds, graphs)
        if name is None:
            longest = max(graphs.values()) / SAMPLE_RATE
            raise InputError(f"{u.name} is {u.seconds:.2f} s long, longer than every compiled audio length "
                             f"({longest:g} s); add a longer audio_len_s or split the audio")
        groups.setdefault(name, []).append(i)
    return [(name, rows[k:k + batch]) for name, rows in groups.items() for k in range(0, len(rows), batch)]


def pad_rows(rows: list[int], batch: int) -> list[int]:
    return rows + [rows[0]] * (batch - len(rows))


def encode(encoder: Any, decoder: Any, enc_feeds: dict[str, Any]) -> list[Any]:
    """The encoder side's outputs, where the decoder will read them: on the device for torch sessions (the
    device loop), as numpy arrays otherwise."""
    if hasattr(encoder, "run_tensors") and hasattr(decoder, "run_tensors"):
        from ...decoding.device import to_device

        return list(encoder.run_tensors(to_device(enc_feeds, encoder.io["inputs"], encoder.device)))
    return list(encoder.run(enc_feeds))


def greedy_decode(encoder: Session, decoder: Session, enc_feeds: dict[str, Any], dc: DecodeConfig, steps: int,
                  decoder_io: dict[str, Any], stop_at_eos: bool = False, min_steps: int = 0) -> Decoded:
    """Up to ``steps`` greedy tokens per row after the model's prompt (short-form: no timestamps); see
    :func:`qeffbuild.decoding.greedy.greedy` for EOS and ``min_steps``."""
    import numpy as np

    b = decoder_io["shapes"]["input_ids"][0]
    prompts = np.array([dc.prompt] * b, dtype=np.int64)
    return greedy(decoder, decoder_io, encode(encoder, decoder, enc_feeds), prompts, dc.rules(), steps, stop_at_eos,
                  min_steps)


def to_torch(feeds: dict[str, Any], model: Any = None) -> dict[str, Any]:
    """Numpy feeds as tensors; with ``model``, on its device and with float inputs in its dtype."""
    import torch

    out = {k: torch.from_numpy(v) for k, v in feeds.items()}
    if model is not None:
        out = {k: v.to(model.device, model.dtype if v.is_floating_point() else v.dtype) for k, v in out.items()}
    return out


def reference_encoder(model: Any, arch: str, feeds: dict[str, Any]) -> Any:
    """The unmodified model's encoder outputs for ``feeds`` (torch)."""
    return named(arch).run_encoder(model, feeds)


def reference_decode(model: Any, arch: str, feeds: dict[str, Any], dc: DecodeConfig, steps: int) -> Any:
    """The unmodified HF model, greedy, recomputing the whole sequence each step (no cache)."""
    import numpy as np
    import torch

    t = to_torch(feeds, model)
    first = next(iter(t.values()))
    seq = torch.tensor([dc.prompt] * first.shape[0], device=model.device)
    rules = None
    with torch.no_grad():
        enc = reference_encoder(model, arch, t)
        extra = {"attention_mask": t["attention_mask"]} if "attention_mask" in t else {}
        for i in range(steps):
            logits = model(encoder_outputs=enc, decoder_input_ids=seq, use_cache=False, **extra).logits[:, -1, :]
            if rules is None:
                rules = dc.rules().state(seq.shape[0], logits.shape[-1], "cpu")
            nxt = rules.apply(logits.float().cpu(), first=i == 0).argmax(-1)
            seq = torch.cat([seq, nxt[:, None].to(model.device)], dim=1)
    return seq[:, len(dc.prompt):].cpu().numpy().astype(np.int64)


def hf_generate(model: Any, arch: str, feeds: dict[str, Any], dc: DecodeConfig, steps: int,
                min_new_tokens: int = 0) -> list[list[int]]:
    """``model.generate``, greedy, same prompt: the tokens up to (not including) EOS."""
    import torch

    t = to_torch(feeds, model)
    a = named(arch)
    first = t.pop(a.encoder_inputs[0])
    prompt = torch.tensor([dc.prompt] * first.shape[0], device=model.device)
    kwargs: dict[str, Any] = {"max_new_tokens": steps, "do_sample": False, "num_beams": 1, **t,
                              **a.generate_kwargs(model, dc)}
    if min_new_tokens:
        kwargs["min_new_tokens"] = min_new_tokens
    with torch.no_grad():
        out = model.generate(first, decoder_input_ids=prompt, **kwargs)
    rows = []
    for row in out.tolist():
        if row[: len(dc.prompt)] == dc.prompt:  # some versions return the prompt too
            row = row[len(dc.prompt):]
        rows.append(until_eos(row, dc.eos))
    return rows


def until_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos)] if eos in tokens else tokens
