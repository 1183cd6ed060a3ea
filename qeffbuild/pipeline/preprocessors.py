"""A saved model folder's feature extractor and tokenizer, for a transcriber's start-up.

Importing transformers costs a transcriber 2.5–3 s of its start-up on our GPU host (its import scans every
installed distribution's files, and the auto classes import the generation stack, scikit-learn and
scipy.stats), where a built artifact needs two small things from it: log-mel features and token ids
turned into text. So:

- Whisper's log-mel (``WhisperFeatureExtractor``, no dither, no normalization) is computed here, op for op
  as transformers' torch path computes it (:class:`WhisperLogMel`; tests hold it equal to transformers'),
  and text comes from the folder's ``tokenizer.json`` through the ``tokenizers`` library for the
  tokenizer classes whose decode is exactly that (:data:`PLAIN_DECODE`, also tested against transformers).
- Any other folder gets transformers' class, the one the folder names (``feature_extractor_type``,
  ``tokenizer_class``) imported alone, or the Auto class where it names none.

The reference model keeps transformers' own feature extractor (:func:`hf_feature_extractor`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Tokenizer classes whose decode(ids, skip_special_tokens=True) is tokenizer.json's own decode when the folder
# asks for no clean-up of tokenization spaces (tests/pipeline/test_preprocessors.py holds each to transformers'),
# with the class's prompt rule: ids that start with the first token lose everything before the second (all of
# them, without it), as WhisperTokenizer drops a previous-text prompt.
PLAIN_DECODE: dict[str, tuple[str, str] | None] = {"WhisperTokenizer": ("<|startofprev|>", "<|startoftranscript|>")}


def feature_extractor(model_dir: Path) -> Any:
    """What turns audio into the model's inputs, called as transformers' extractors are."""
    config = _feature_extractor_config(model_dir)
    if WhisperLogMel.computes(config):
        return WhisperLogMel(config)
    return hf_feature_extractor(model_dir)


def hf_feature_extractor(model_dir: Path) -> Any:
    import transformers

    name = _feature_extractor_config(model_dir).get("feature_extractor_type")
    cls = _named(transformers, name) or transformers.AutoFeatureExtractor
    return cls.from_pretrained(model_dir)


def tokenizer(model_dir: Path) -> Any:
    """What turns token ids into text (``decode``)."""
    config = _json(model_dir / "tokenizer_config.json")
    if config.get("tokenizer_class") in PLAIN_DECODE and not config.get("clean_up_tokenization_spaces") and \
            (model_dir / "tokenizer.json").is_file():
        return TokenizerJson(model_dir / "tokenizer.json", PLAIN_DECODE[config["tokenizer_class"]])
    import transformers

    cls = _named(transformers, config.get("tokenizer_class"))
    return (cls or transformers.AutoTokenizer).from_pretrained(model_dir)


class TokenizerJson:
    """A tokenizer.json's decode, through the ``tokenizers`` library alone."""

    def __init__(self, path: Path, prompt: tuple[str, str] | None = None) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(path))
        self._prompt = tuple(self._tokenizer.token_to_id(t) for t in prompt) if prompt else None

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids]
        if skip_special_tokens and self._prompt and ids and ids[0] == self._prompt[0]:
            ids = ids[ids.index(self._prompt[1]):] if self._prompt[1] in ids else []
        return str(self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens))


class WhisperLogMel:
    """transformers' ``WhisperFeatureExtractor`` as a transcriber calls it, without transformers: the same padding
    and truncation of the raw audio, then its torch path (STFT, power, slaney mel filters, log10, clamp to 8 below
    each row's maximum, scale), op for op, so the features are the same numbers."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.n_fft = int(config.get("n_fft", 400))
        self.hop_length = int(config.get("hop_length", 160))
        self.sampling_rate = int(config.get("sampling_rate", 16000))
        self.n_samples = int(config.get("chunk_length", 30)) * self.sampling_rate
        self.padding_value = float(config.get("padding_value", 0.0))
        self.mel_filters = mel_filter_bank(1 + self.n_fft // 2, int(config.get("feature_size", 80)),
                                           self.sampling_rate)

    @staticmethod
    def computes(config: dict[str, Any]) -> bool:
        """Whether this class gives the same numbers as the folder's extractor: Whisper's, without dither (random)
        or per-utterance normalization (neither is in a Whisper checkpoint's config)."""
        return (config.get("feature_extractor_type") == "WhisperFeatureExtractor" and not config.get("dither")
                and not config.get("do_normalize"))

    def __call__(self, audios: Any, sampling_rate: int | None = None, return_tensors: str = "np",
                 padding: str = "max_length", truncation: bool = True, max_length: int | None = None,
                 **unused: Any) -> dict[str, Any]:
        import numpy as np

        if return_tensors != "np" or unused.get("return_attention_mask"):
            raise ValueError("WhisperLogMel returns numpy features only; use hf_feature_extractor for more")
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(f"audio at {sampling_rate} Hz, the extractor reads {self.sampling_rate} Hz")
        batch = [np.asarray(a, dtype=np.float32) for a in (audios if isinstance(audios, list) else [audios])]
        length = max(len(a) for a in batch) if padding == "longest" else (max_length or self.n_samples)
        rows = np.full((len(batch), length), self.padding_value, dtype=np.float32)
        for i, a in enumerate(batch):
            kept = a[:length] if truncation or padding != "longest" else a
            rows[i, :len(kept)] = kept
        return {"input_features": self._log_mel(rows)}

    def _log_mel(self, waveform: Any) -> Any:
        import torch

        audio = torch.from_numpy(waveform).to("cpu", torch.float32)
        window = torch.hann_window(self.n_fft, device="cpu")
        stft = torch.stft(audio, self.n_fft, self.hop_length, window=window, return_complex=True)
        magnitudes = (stft[..., :-1].abs() ** 2).contiguous()
        mel_filters = torch.from_numpy(self.mel_filters).to("cpu", torch.float32)
        log_spec = torch.clamp(mel_filters.T @ magnitudes, min=1e-10).log10()
        max_val = log_spec.max(dim=2, keepdim=True)[0].max(dim=1, keepdim=True)[0]
        log_spec = torch.maximum(log_spec, max_val - 8.0)
        return ((log_spec + 4.0) / 4.0).numpy()


def mel_filter_bank(n_frequencies: int, n_mels: int, sampling_rate: int) -> Any:
    """transformers' ``mel_filter_bank`` as Whisper's extractor calls it (0–8000 Hz, slaney scale and norm), in
    float64: [frequencies, mels]."""
    import numpy as np

    def to_mel(hz: Any) -> Any:
        mels = 3.0 * hz / 200.0
        log = hz >= 1000.0
        mels[log] = 15.0 + np.log(hz[log] / 1000.0) * (27.0 / np.log(6.4))
        return mels

    def to_hz(mels: Any) -> Any:
        hz = 200.0 * mels / 3.0
        log = mels >= 15.0
        hz[log] = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mels[log] - 15.0))
        return hz

    edges = to_mel(np.array([0.0, 8000.0]))
    filter_freqs = to_hz(np.linspace(edges[0], edges[1], n_mels + 2))
    fft_freqs = np.linspace(0, sampling_rate // 2, n_frequencies)
    diff = np.diff(filter_freqs)
    slopes = np.expand_dims(filter_freqs, 0) - np.expand_dims(fft_freqs, 1)
    filters = np.maximum(np.zeros(1), np.minimum(-slopes[:, :-2] / diff[:-1], slopes[:, 2:] / diff[1:]))
    return filters * np.expand_dims(2.0 / (filter_freqs[2:n_mels + 2] - filter_freqs[:n_mels]), 0)


def _feature_extractor_config(model_dir: Path) -> dict[str, Any]:
    """The extractor's settings where transformers looks first: processor_config.json's, then
    preprocessor_config.json."""
    nested = _json(model_dir / "processor_config.json").get("feature_extractor")
    if isinstance(nested, dict) and nested.get("feature_extractor_type"):
        return nested
    return _json(model_dir / "preprocessor_config.json")


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
