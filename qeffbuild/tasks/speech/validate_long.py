"""Long inputs in a speech validation (worker side): utterances longer than what a specialization reads at once.

They are decoded long-form (``longform.py``) by the reference and by every runtime, compared token for token —
timestamps included, window by window — on the exact subset, and scored like every other utterance. The
reference is Hugging Face's own long-form ``generate`` for Whisper, and the unmodified model on the same
chunks (greedy, no cache) for the chunked families.
"""

from __future__ import annotations

import time
from typing import Any

from .families import named
from .longform import LongForm, Settings, WhisperLongForm, chunked_longform, hf_whisper_longform


def longest(spec: dict[str, Any]) -> int:
    """The most samples a specialization reads at once (Whisper: its window; others: the longest bucket)."""
    return max(spec["graphs"].values())


def is_long(utt: Any, spec: dict[str, Any]) -> bool:
    return len(utt.audio) > longest(spec)


class LongInputs:
    """The long-form settings of one validation, its reference results (cached) and its runtime decodes."""

    def __init__(self, params: dict[str, Any], dc: Any, frontend: Any, model: Any, language: str | None,
                 task: str | None) -> None:
        self.p, self.dc, self.frontend, self.model = params, dc, frontend, model
        self.language, self.task = language, task
        self._refs: dict[tuple[str, int], LongForm] = {}
        self._seconds: dict[tuple[str, int], float] = {}  # how long each cached decode took when it ran

    def settings(self, spec: dict[str, Any]) -> Settings:
        return Settings(self.budget(spec), bool(self.p["condition_on_previous_text"]), self.p.get("chunk_stride_s"))

    def overlap(self, spec: dict[str, Any]) -> int:
        """Samples of overlap between chunks: ``chunk_stride_s``, by default a sixth of the chunk."""
        stride = self.p.get("chunk_stride_s")
        return round(float(stride) * 16000) if stride is not None else longest(spec) // 6

    def reference(self, utt: Any, spec: dict[str, Any]) -> LongForm:
        """The reference's long-form decode of ``utt`` (once per utterance and chunk length)."""
        key = self._key(utt, spec)
        if key not in self._refs:
            t0 = time.perf_counter()
            self._refs[key] = self.reference_uncached(utt, spec)
            self._seconds[key] = time.perf_counter() - t0
        return self._refs[key]

    def reference_seconds(self, utt: Any, spec: dict[str, Any]) -> float:
        """How long :meth:`reference` took to decode ``utt`` when it did (a later call is a cache lookup: timing
        that gave the reference row 54 million tokens/s)."""
        self.reference(utt, spec)
        return self._seconds[self._key(utt, spec)]

    def _key(self, utt: Any, spec: dict[str, Any]) -> tuple[str, int]:
        return utt.name, 0 if self.sequential else longest(spec)

    @property
    def sequential(self) -> bool:
        """Whisper's long-form decoding (its timestamp tokens seek through the audio), else overlapping chunks."""
        return named(self.dc.arch).whisper_tokens

    def reference_uncached(self, utt: Any, spec: dict[str, Any]) -> LongForm:
        if self.sequential:
            return hf_whisper_longform(self.model, self.frontend, utt.audio, self.dc, self.settings(spec),
                                       self.language, self.task)
        return chunked_longform(self.frontend, None, None, {}, self.dc, [utt.audio], longest(spec),
                                self.overlap(spec), self.budget(spec), self._reference_chunk)[0]

    def budget(self, spec: dict[str, Any]) -> int:
        """Tokens a window may take: ``longform_max_new_tokens`` (Whisper's default: half its positions less the
        prompt), and at most what the decoder's cache holds after the prompt (chunks: all of it)."""
        room = int(spec["ctx_len"]) - len(self.dc.prompt) + 1
        wanted = self.p.get("max_new_tokens")
        return min(int(wanted), room) if wanted else room

    def _reference_chunk(self, feeds: dict[str, Any], steps: int) -> list[int]:
        from .driver import reference_decode

        return [int(t) for t in reference_decode(self.model, self.dc.arch, feeds, self.dc, steps)[0]]

    def on_runtime(self, encoders: dict[str, Any], decoder: Any, decoder_io: dict[str, Any], audios: list[Any],
                   spec: dict[str, Any]) -> list[LongForm]:
        graph = max(spec["graphs"], key=lambda g: spec["graphs"][g])
        if self.sequential:
            frames = longest(spec) // 160
            runner = WhisperLongForm(self.frontend, encoders[graph], decoder, decoder_io, self.dc, self.settings(spec))
            return runner.run(audios, frames)
        return chunked_longform(self.frontend, encoders[graph], decoder, decoder_io, self.dc, audios, longest(spec),
                                self.overlap(spec), self.budget(spec))

    def text(self, result: LongForm) -> str:
        ts = self.dc.timestamps.begin if self.dc.timestamps is not None else None
        return self.frontend.text(result.tokens, self.dc.eos, ts)


def describe(result: LongForm, text_of: Any) -> dict[str, Any]:
    """What a report keeps of a long-form decode: the method, its windows, its segments with times, its notes."""
    return {"method": result.method, "windows": len(result.windows), "notes": result.notes,
            "truncated": result.truncated,
            "segments": [{"start": round(s.start, 2), "end": round(s.end, 2), "text": text_of(s.tokens)}
                         for s in result.segments]}
