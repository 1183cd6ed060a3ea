"""The speech seq2seq driver: audio → log-mel features → encoder → greedy decoder steps.

One decode loop serves every runtime: the decoder is a session taking the retained state
(past keys/values of fixed ctx_len) and returning it updated. Logits processing follows
the model's generation config (suppress_tokens, begin_suppress_tokens) as ``generate`` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import InputError
from ...runtimes import Session
from .model import cache_names

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Utterance:
    name: str
    audio: Any  # float32 mono at 16 kHz
    transcript: str | None
    note: str = ""  # e.g. resampling done


def load_audio(path: Path) -> tuple[Any, str]:
    """A WAV file as float32 mono 16 kHz, and a note of any conversion made."""
    import numpy as np
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise InputError(f"{path}: cannot read audio ({e}); expected an audio file soundfile reads (WAV, FLAC, "
                         "OGG, MP3 …)") from e
    notes = []
    if data.shape[1] > 1:
        notes.append(f"mixed {data.shape[1]} channels down to mono")
    audio = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        import soxr

        audio = soxr.resample(audio, int(rate), SAMPLE_RATE, quality="HQ").astype(np.float32)
        notes.append(f"resampled from {rate} Hz to {SAMPLE_RATE} Hz")
    if audio.size == 0:
        raise InputError(f"{path}: the audio is empty")
    return audio.astype(np.float32), "; ".join(notes)


def load_dataset(paths: list[Path]) -> list[Utterance]:
    """Audio files, in the order given, with their optional .txt transcripts beside them."""
    out = []
    for p in paths:
        audio, note = load_audio(p)
        txt = p.with_suffix(".txt")
        out.append(Utterance(p.name, audio, txt.read_text().strip() if txt.is_file() else None, note))
    return out


@dataclass(frozen=True)
class DecodeConfig:
    """What the decode loop needs to know about a model, read from its saved folder."""

    prompt: list[int]
    eos: int
    suppress: list[int]
    begin_suppress: list[int]
    n_layers: int
    heads: int
    head_dim: int
    encoder_ctx_len: int
    num_mel_bins: int

    @classmethod
    def from_model_dir(cls, model_dir: Path, language: str | None) -> DecodeConfig:
        cfg = json.loads((model_dir / "config.json").read_text())
        gen_path = model_dir / "generation_config.json"
        gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
        start = gen.get("decoder_start_token_id", cfg.get("decoder_start_token_id"))
        prompt = [int(start)]
        lang_to_id = gen.get("lang_to_id") or {}
        if lang_to_id and language:
            token = f"<|{language}|>"
            if token not in lang_to_id:
                raise InputError(f"language {language!r} is not one of the model's languages "
                                 f"({', '.join(sorted(k.strip('<|>') for k in lang_to_id)[:20])} …)")
            prompt.append(int(lang_to_id[token]))
        if (gen.get("task_to_id") or {}).get("transcribe") is not None:
            prompt.append(int(gen["task_to_id"]["transcribe"]))
        if gen.get("no_timestamps_token_id") is not None:
            prompt.append(int(gen["no_timestamps_token_id"]))
        eos = gen.get("eos_token_id", cfg.get("eos_token_id"))
        eos = eos[0] if isinstance(eos, list) else eos
        heads = int(cfg["decoder_attention_heads"])
        return cls(
            prompt=prompt, eos=int(eos),
            suppress=list(gen.get("suppress_tokens") or cfg.get("suppress_tokens") or []),
            begin_suppress=list(gen.get("begin_suppress_tokens") or cfg.get("begin_suppress_tokens") or []),
            n_layers=int(cfg["decoder_layers"]), heads=heads, head_dim=int(cfg["d_model"]) // heads,
            encoder_ctx_len=int(cfg["max_source_positions"]), num_mel_bins=int(cfg["num_mel_bins"]),
        )


def features(processor: Any, utterances: list[Utterance], encoder_ctx_len: int) -> Any:
    """Log-mel features [N, mels, 2 × encoder_ctx_len], padded or cut to the encoder's length."""
    fe = processor.feature_extractor
    n_samples = 2 * encoder_ctx_len * fe.hop_length
    out = fe([u.audio for u in utterances], sampling_rate=SAMPLE_RATE, return_tensors="np",
             padding="max_length", max_length=n_samples, truncation=True)
    return out["input_features"].astype("float32")


def process_logits(logits: Any, step: int, dc: DecodeConfig) -> Any:
    import numpy as np

    logits = logits.astype(np.float32, copy=True)
    vocab = logits.shape[1]  # configs may name ids beyond a small model's vocabulary: skip those
    suppress = [t for t in dc.suppress if t < vocab]
    if suppress:
        logits[:, suppress] = -np.inf
    begin = [t for t in dc.begin_suppress if t < vocab]
    if step == 0 and begin:
        logits[:, begin] = -np.inf
    return logits


def greedy_decode(encoder: Session, decoder: Session, feats: Any, dc: DecodeConfig, steps: int,
                  ctx_len: int, stop_at_eos: bool = False) -> Any:
    """``steps`` greedy tokens per row, feeding the decoder's retained state back each step.

    For validation EOS does not stop the loop: every check compares all ``steps`` tokens, so
    a cache that goes wrong after the first step cannot pass. Transcription stops at EOS.
    """
    import numpy as np

    b = feats.shape[0]
    enc = encoder.run({"input_features": feats})[0]
    names = cache_names(dc.n_layers)
    past = {n: np.zeros((b, dc.heads, ctx_len, dc.head_dim), np.float32) for n in names}
    out = np.zeros((b, steps), np.int64)
    tok = np.full((b, 1), dc.prompt[0], np.int64)
    for pos in range(len(dc.prompt) - 1 + steps):
        res = decoder.run({"input_ids": tok, "position_ids": np.full((b, 1), pos, np.int64),
                           "encoder_hidden_states": enc, **past})
        past = dict(zip(names, res[1:], strict=True))
        i = pos - (len(dc.prompt) - 1)
        if i < 0:
            tok = np.full((b, 1), dc.prompt[pos + 1], np.int64)
            continue
        nxt = process_logits(res[0][:, -1, :], i, dc).argmax(-1)
        out[:, i] = nxt
        tok = nxt[:, None].astype(np.int64)
        if stop_at_eos and (out[:, : i + 1] == dc.eos).any(axis=1).all():
            out[:, i + 1:] = dc.eos
            break
    return out


def reference_decode(model: Any, feats: Any, dc: DecodeConfig, steps: int) -> Any:
    """The unmodified HF model, greedy, recomputing the whole sequence each step (no cache)."""
    import numpy as np
    import torch

    seq = torch.tensor([dc.prompt] * feats.shape[0])
    x = torch.from_numpy(feats)
    with torch.no_grad():
        enc = model.model.encoder(input_features=x)
        for i in range(steps):
            logits = model(encoder_outputs=enc, decoder_input_ids=seq).logits[:, -1, :].float().numpy()
            nxt = torch.from_numpy(process_logits(logits, i, dc).argmax(-1))
            seq = torch.cat([seq, nxt[:, None]], dim=1)
    return seq[:, len(dc.prompt):].numpy().astype(np.int64)


def hf_generate(model: Any, feats: Any, dc: DecodeConfig, steps: int) -> list[list[int]]:
    """``model.generate`` with greedy settings: the tokens up to (not including) EOS."""
    import torch

    with torch.no_grad():
        out = model.generate(torch.from_numpy(feats), decoder_input_ids=torch.tensor([dc.prompt] * feats.shape[0]),
                             max_new_tokens=steps, do_sample=False, num_beams=1)
    rows = []
    for row in out.tolist():
        if row[: len(dc.prompt)] == dc.prompt:  # some versions return the prompt too
            row = row[len(dc.prompt):]
        rows.append(until_eos(row, dc.eos))
    return rows


def until_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def batched(items: list[Any], size: int) -> list[list[Any]]:
    """Rows of ``size``; the last is padded with its first item (results of pads are dropped)."""
    out = []
    for start in range(0, len(items), size):
        chunk = items[start:start + size]
        out.append(chunk + [chunk[0]] * (size - len(chunk)))
    return out
