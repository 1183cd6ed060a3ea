"""Audio longer than the model's window (worker side): decoded the way its reference decodes it.

**Whisper: sequential long-form decoding**, token for token what Hugging Face's
``model.generate(input_features, return_timestamps=True)`` gives on the whole, unpadded log-mel (greedy, no
temperature fallback). The log-mel of the whole audio is computed once; a window of ``2 × max_source_positions``
frames starting at ``seek`` is cut from it (zero-padded at the end, as HF pads); the decoder starts from the
prompt without ``<|notimestamps|>`` (and, with ``condition_on_previous_text``, ``<|startofprev|>`` plus the
last ``max_target_positions // 2 - 1`` tokens of the segments so far) and decodes under Whisper's timestamp
rules until EOS or the window's token budget. The tokens split into segments at each pair of consecutive
timestamps; ``seek`` moves to the last complete segment's end (the whole window when the text ends with a
single timestamp or has no pair), and the next window starts there. Words cut by a window's edge are decoded
again in the next window instead of being lost.

**Speech2Text and speech encoder–decoders: overlapping chunks.** They predict no timestamps, so the audio is
cut into chunks of the longest compiled length, each ``chunk_stride_s`` seconds of overlap apart, every chunk is
decoded to its EOS, and consecutive token sequences are merged where they overlap best (the longest run of
agreeing tokens at the seam: Hugging Face's ASR pipeline's ``_find_longest_common_sequence``).

Both return every window's tokens, so validations compare runtimes with the reference window by window, and
say when a window hit its token budget or ended without a final timestamp: never silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

INPUT_STRIDE = 2  # Whisper's two convolutions: log-mel frames per encoder position
TIME_PRECISION = 0.02  # seconds per timestamp token
FRAME_S = 0.01  # seconds per log-mel frame


@dataclass
class Segment:
    start: float
    end: float
    tokens: list[int]
    text: str = ""


@dataclass
class Window:
    """One decode of the long-form loop: where it started, what it decoded, how it ended."""

    start_s: float
    tokens: list[int]  # the generated tokens, EOS excluded
    ended: str  # "eos" | "budget": the window used all its tokens without an end of text
    final_timestamp: bool  # Whisper: the window's text ends with a timestamp


@dataclass
class LongForm:
    method: str
    tokens: list[int]  # the result's tokens (Whisper: every segment's, timestamps included)
    segments: list[Segment] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        out = []
        for k, w in enumerate(self.windows):
            if w.ended == "budget":
                out.append(f"window {k + 1} (from {w.start_s:.2f} s) used its {len(w.tokens)} tokens without an end of "
                           "text: its text may be cut (raise ctx_len, or --max-new-tokens / longform_max_new_tokens)")
            elif self.method.startswith("sequential") and not w.final_timestamp:
                out.append(f"window {k + 1} (from {w.start_s:.2f} s) ended without a final timestamp")
        return out

    @property
    def truncated(self) -> bool:
        return any(w.ended == "budget" for w in self.windows)

    @property
    def incomplete(self) -> bool:
        """A window was cut at its budget, or (sequential) ended without a final timestamp."""
        return self.truncated or (self.method.startswith("sequential") and
                                  not all(w.final_timestamp for w in self.windows))


@dataclass(frozen=True)
class Settings:
    max_new_tokens: int  # per window
    condition_on_previous_text: bool = False
    chunk_stride_s: float | None = None  # chunked families: overlap between consecutive chunks


# --- Whisper ---------------------------------------------------------------------------------------------

def previous_text(segments: list[Segment], prev_sot: int | None, ts_begin: int, cut_off: int) -> list[int]:
    """``<|startofprev|>`` and the last ``cut_off`` tokens of the segments so far (a segment ending in two
    timestamps gives only one of them), as HF conditions a window on the text before it."""
    tokens: list[int] = []
    for s in segments:
        ends_double = len(s.tokens) > 2 and s.tokens[-2] >= ts_begin
        tokens += s.tokens[:-1] if ends_double else s.tokens
    return ([prev_sot] if prev_sot is not None else []) + tokens[-cut_off:]


def split_window(seq: list[int], ts_begin: int, seek: int, seek_frames: int) -> tuple[list[Segment], int]:
    """A window's tokens as segments, and how many frames ``seek`` advances (HF's ``_retrieve_segment``)."""
    is_ts = [t >= ts_begin for t in seq]
    single_ending = is_ts[-2:] == [False, True]
    pairs = [i + 1 for i in range(len(is_ts) - 1) if is_ts[i] and is_ts[i + 1]]
    offset = seek * TIME_PRECISION / INPUT_STRIDE
    if not pairs:  # one segment: to its last timestamp (other than 0.00), else to the window's end
        stamps = [t for t, ts in zip(seq, is_ts, strict=True) if ts]
        last = int(seek_frames * FRAME_S / TIME_PRECISION)
        if stamps and stamps[-1] != ts_begin:
            last = stamps[-1] - ts_begin
        return [Segment(offset, offset + last * TIME_PRECISION, list(seq))], seek_frames
    slices = [*pairs, len(seq)] if single_ending else [*pairs[:-1], pairs[-1] + 1]
    segments, start = [], 0
    for k, end in enumerate(slices):
        toks = seq[start:end]
        last_index = -1 if k < len(slices) - 1 or single_ending else -2
        segments.append(Segment(offset + (toks[0] - ts_begin) * TIME_PRECISION,
                                offset + (toks[last_index] - ts_begin) * TIME_PRECISION, list(toks)))
        start = end
    advance = seek_frames if single_ending else (seq[start - 2] - ts_begin) * INPUT_STRIDE
    return segments, advance


class WhisperLongForm:
    """Sequential long-form decoding of many audios on one runtime, a batch of windows at a time."""

    def __init__(self, frontend: Any, encoder: Any, decoder: Any, decoder_io: dict[str, Any], dc: Any,
                 settings: Settings) -> None:
        self.frontend, self.encoder, self.decoder, self.io, self.dc = frontend, encoder, decoder, decoder_io, dc
        self.settings = settings
        self.cut_off = dc.decoder_positions // 2 - 1
        self.batch = decoder_io["shapes"]["input_ids"][0]
        self.ctx_len = next(v[2] for k, v in decoder_io["shapes"].items() if k.startswith("past_"))
        assert dc.timestamps is not None, "a long-form Whisper needs timestamp tokens"
        self.ts_begin = dc.timestamps.begin

    def run(self, audios: list[Any], window_frames: int) -> list[LongForm]:
        from ...decoding.greedy import greedy
        from .driver import encode

        feats = [self.frontend.long_features(a) for a in audios]
        seek = [0] * len(audios)
        done = [LongForm("sequential (timestamps)", []) for _ in audios]
        rules = self.dc.rules(with_timestamps=True)
        while True:
            active = [i for i in range(len(audios)) if seek[i] < feats[i].shape[-1]]
            if not active:
                return done
            prompts = {i: self._prompt(done[i]) for i in active}
            length = min(len(p) for p in prompts.values())  # rows of one batch share positions: one length
            rows = [i for i in active if len(prompts[i]) == length][: self.batch]
            padded = rows + [rows[0]] * (self.batch - len(rows))
            frames = [min(window_frames, feats[i].shape[-1] - seek[i]) for i in padded]
            window = np.stack([_cut(feats[i], seek[i], window_frames) for i in padded])
            budget = min(self.settings.max_new_tokens, self.ctx_len - length + 1)
            decoded = greedy(self.decoder, self.io, encode(self.encoder, self.decoder, {"input_features": window}),
                             np.array([prompts[i] for i in padded], dtype=np.int64), rules, budget, stop_at_eos=True)
            for k, i in enumerate(rows):
                row = [int(t) for t in decoded.tokens[k]]
                seq = row[: row.index(rules.eos)] if rules.eos in row else row
                ended = "eos" if rules.eos in row else "budget"
                segments, advance = split_window(seq, self.ts_begin, seek[i], frames[k])
                done[i].windows.append(Window(seek[i] * FRAME_S, seq, ended, bool(seq) and seq[-1] >= self.ts_begin))
                done[i].segments += segments
                done[i].tokens += [t for s in segments for t in s.tokens]
                # a window whose last complete segment ends at 0.00 would be decoded again forever (HF's loop does
                # not move then): take the whole window instead
                seek[i] += advance if advance > 0 else frames[k]

    def _prompt(self, so_far: LongForm) -> list[int]:
        prompt = self.dc.timestamp_prompt()
        if self.settings.condition_on_previous_text and so_far.segments:
            return previous_text(so_far.segments, self.dc.prev_sot, self.ts_begin, self.cut_off) + prompt
        return prompt


def hf_whisper_longform(model: Any, frontend: Any, audio: Any, dc: Any, settings: Settings, language: str | None,
                        task: str | None) -> LongForm:
    """The reference: HF's own long-form ``generate`` on the whole, unpadded log-mel (greedy, no fallback)."""
    import torch

    out = frontend.hf_fe(audio, sampling_rate=16000, return_tensors="pt", truncation=False, padding="longest",
                      return_attention_mask=True)
    kwargs: dict[str, Any] = {"return_timestamps": True, "return_segments": True, "do_sample": False, "num_beams": 1,
                              "condition_on_prev_tokens": settings.condition_on_previous_text,
                              "max_new_tokens": settings.max_new_tokens}
    if dc.language is not None:
        kwargs.update(language=dc.language, task=task or "transcribe")
    seen: list[int] = []

    def watch(progress: Any) -> None:  # a window that does not move seek would loop forever: say so instead
        seek = int(progress[0, 0])
        if seen and seek == seen[-1]:
            raise RuntimeError(f"HF's long-form generate made no progress at frame {seek} (a window whose last "
                               "segment ends at 0.00): the reference cannot decode this audio")
        seen.append(seek)

    with torch.no_grad():
        got = model.generate(out["input_features"].to(model.device, model.dtype),
                             attention_mask=out["attention_mask"].to(model.device), monitor_progress=watch, **kwargs)
    result = LongForm("sequential (timestamps)", [])
    for s in got["segments"][0]:
        tokens = [int(t) for t in s["tokens"]]
        result.segments.append(Segment(float(s["start"]), float(s["end"]), tokens))
        result.tokens += tokens
    return result


def _cut(features: Any, seek: int, frames: int) -> Any:
    """``frames`` log-mel frames from ``seek``, zero-padded at the end (HF pads the log-mel, not the audio)."""
    window = features[:, seek:seek + frames]
    if window.shape[-1] < frames:
        window = np.pad(window, ((0, 0), (0, frames - window.shape[-1])))
    return window.astype(np.float32)


# --- chunked families ------------------------------------------------------------------------------------

def chunk_starts(samples: int, chunk: int, overlap: int) -> list[int]:
    """Where each chunk of ``chunk`` samples starts, ``overlap`` samples over the previous one."""
    step = chunk - overlap
    starts = [0]
    while starts[-1] + chunk < samples:
        starts.append(starts[-1] + step)
    return starts


def chunked_longform(frontend: Any, encoder: Any, decoder: Any, decoder_io: dict[str, Any], dc: Any,
                     audios: list[Any], chunk: int, overlap: int, budget: int,
                     reference: Any = None) -> list[LongForm]:
    """Chunks of ``chunk`` samples (``overlap`` apart), each decoded to its EOS, merged per audio; a batch of
    chunks at a time on a runtime, or one at a time by ``reference(features) -> tokens`` (the reference model)."""
    from .driver import greedy_decode, until_eos

    pieces = [(n, s) for n, a in enumerate(audios) for s in chunk_starts(len(a), chunk, overlap)]
    tokens: dict[tuple[int, int], list[int]] = {}
    ended: dict[tuple[int, int], bool] = {}
    batch = decoder_io["shapes"]["input_ids"][0] if reference is None else 1
    for k in range(0, len(pieces), batch):
        rows = pieces[k:k + batch]
        padded = rows + [rows[0]] * (batch - len(rows))
        feeds = frontend.features([audios[n][s:s + chunk] for n, s in padded], chunk)
        if reference is not None:
            got, done = [reference(feeds, budget)], [None]
        else:
            decoded = greedy_decode(encoder, decoder, feeds, dc, budget, decoder_io, stop_at_eos=True)
            got, done = [list(map(int, t)) for t in decoded.tokens], list(decoded.finished)
        for j, key in enumerate(rows):
            tokens[key] = until_eos(got[j], dc.eos)
            ended[key] = bool(done[j]) if done[j] is not None else dc.eos in got[j]
    out = []
    for n, audio in enumerate(audios):
        keys = [(n, s) for s in chunk_starts(len(audio), chunk, overlap)]
        result = LongForm(f"chunked ({chunk / 16000:g} s chunks, {overlap / 16000:g} s overlap)",
                          merge_overlapping([tokens[key] for key in keys]))
        result.windows = [Window(s / 16000, tokens[(n, s)], "eos" if ended[(n, s)] else "budget", False)
                          for _, s in keys]
        out.append(result)
    return out


def merge_overlapping(sequences: list[list[int]]) -> list[int]:
    """Token sequences of overlapping chunks as one: each next one joins where its start best matches the
    end so far (HF's ``_find_longest_common_sequence``: most agreeing tokens, ties to the longer overlap)."""
    merged = list(sequences[0]) if sequences else []
    for new in sequences[1:]:
        index, best = 0, 0.0
        for i in range(1, len(new) + 1):
            tail = np.array(merged[-i:])
            head = np.array(new[:i])
            if len(tail) != len(head):
                continue
            matches = int(np.sum(tail == head))
            score = matches / i + i / 10000.0
            if matches > 1 and score > best:
                index, best = i, score
        merged.extend(new[index:])
    return merged
