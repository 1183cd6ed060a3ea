"""Transcribe with a built speech specialization: the Python API behind `qeffbuild run`.

A built specialization folder (``out/<specialization>/``) is self-contained: the Hugging Face model
folder (tokenizer, feature extractor, configs), the encoder and decoder-step programs and every
compiled artifact. :class:`Transcriber` opens one runtime of it; ``save`` copies the folder and
``load`` opens a saved copy again. Texts come back in the order the files were given. Audio longer
than the longest compiled length is decoded long-form as its reference decodes it (Whisper sequentially
with timestamps, other families in overlapping chunks); a window that reaches its token budget without an
end of text is reported, never cut silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...core.plugins import plugins
from ...errors import UsageError
from ...transcribe import BuiltTranscriber


@dataclass
class Transcript:
    input: str
    text: str
    notes: list[str] = field(default_factory=list)
    truncated: bool = False
    incomplete: bool = False  # truncated, or a long-form window ended without a final timestamp
    method: str = "short-form"  # or how long audio was decoded: "sequential (timestamps)", "chunked (…)"
    segments: list[dict[str, Any]] = field(default_factory=list)  # {"start", "end", "text"}, seconds


class Transcriber(BuiltTranscriber):
    """Greedy transcription on one runtime of a built speech specialization."""

    task = "speech-seq2seq"

    def __init__(self, folder: Path, runtime: str = "onnxruntime", device: str = "cpu",
                 language: str | None = None, verify: bool = True) -> None:
        from .driver import DecodeConfig, Frontend

        super().__init__(folder, runtime, device, verify)
        info = plugins().runtimes.get(runtime)
        if not info.runs_task("speech-seq2seq"):
            raise UsageError(f"runtime {runtime!r} does not run speech models")
        if info.opens == "reference":
            raise UsageError(f"runtime {runtime!r} is the reference; transcribe with a built artifact "
                             "(pytorch-transformed, onnxruntime, aoti …)")
        self.model_dir = self.folder / "model"
        try:
            model_type = json.loads((self.model_dir / "config.json").read_text())["model_type"]
        except (OSError, ValueError, KeyError):
            raise UsageError(f"{self.folder} is not a built speech specialization (no model/config.json); build it "
                             "with `qeffbuild build SPECIALIZATION`") from None
        from .families import of_model_type

        self.arch = of_model_type(model_type).name
        self.decode_config = DecodeConfig.from_model_dir(self.model_dir, language, self.arch)
        self.frontend = Frontend(self.model_dir, self.arch)
        self._open(info.opens)

    def _open(self, opens: str) -> None:
        from ...runtimes import open_session

        base = self.folder if opens == "program" else self.folder / opens
        prefix = "transform-" if opens == "program" else ""
        decoder_dir = base / f"{prefix}decoder"
        encoder_dirs = sorted(p for p in base.glob(f"{prefix}encoder*") if p.is_dir())
        if not decoder_dir.is_dir() or not encoder_dirs:
            raise UsageError(f"{self.folder} has no {opens!r} artifacts; add that backend to the specialization's "
                             "compile list")
        self.decoder_io = json.loads((decoder_dir / "io.json").read_text())
        self.decoder = open_session(plugins(), self.runtime, decoder_dir, self.device)
        self.encoders: dict[str, Any] = {}
        self.graphs: dict[str, int] = {}
        for d in encoder_dirs:
            name = d.name.removeprefix(prefix)
            self.graphs[name] = int(json.loads((d / "io.json").read_text())["samples"])
            self.encoders[name] = open_session(plugins(), self.runtime, d, self.device)
        shapes = self.decoder_io["shapes"]
        self.batch_size = shapes["input_ids"][0]
        self.ctx_len = next(v[2] for k, v in shapes.items() if k.startswith("past_"))

    def transcribe(self, paths: list[Path], max_new_tokens: int | None = None) -> list[str]:
        return [t.text for t in self.transcribe_detailed(paths, max_new_tokens)]

    def transcribe_detailed(self, paths: list[Path], max_new_tokens: int | None = None,
                            condition_on_previous_text: bool = False) -> list[Transcript]:
        """One transcript per file, in the order given, with segments (start and end in seconds) and notes.

        Audio longer than the model reads at once is decoded long-form, as its reference decodes it: Whisper
        sequentially with timestamps, other families in overlapping chunks (``longform.py``). ``max_new_tokens``
        bounds each window's tokens."""
        from .driver import load_dataset

        utts = load_dataset([Path(p) for p in paths])
        if not utts:
            raise UsageError("no audio files given")
        out = [Transcript(u.name, "", [u.note] if u.note else []) for u in utts]
        longest = max(self.graphs.values())
        short = [i for i, u in enumerate(utts) if len(u.audio) <= longest]
        self._short([utts[i] for i in short], [out[i] for i in short], max_new_tokens)
        long = [i for i in range(len(utts)) if i not in set(short)]
        if long:
            self._long([utts[i] for i in long], [out[i] for i in long], max_new_tokens, condition_on_previous_text)
        return out

    def _room(self, prompt: int) -> int:
        return self.ctx_len - prompt + 1

    def _short(self, utts: list[Any], out: list[Transcript], max_new_tokens: int | None) -> None:
        from .driver import batches, greedy_decode, pad_rows, until_eos

        dc = self.decode_config
        room = self._room(len(dc.prompt))
        steps = min(max_new_tokens or room, room)
        if max_new_tokens and max_new_tokens > room:
            for t in out:
                t.notes.append(f"max_new_tokens {max_new_tokens} is more than ctx_len {self.ctx_len} holds after the "
                               f"{len(dc.prompt)}-token prompt; decoding at most {room} tokens")
        for graph, rows in batches(utts, self.graphs, self.batch_size):
            padded = pad_rows(rows, self.batch_size)
            feeds = self.frontend.features([utts[i].audio for i in padded], self.graphs[graph])
            decoded = greedy_decode(self.encoders[graph], self.decoder, feeds, dc, steps, self.decoder_io,
                                    stop_at_eos=True)
            for k, i in enumerate(rows):
                t = out[i]
                t.text = self.frontend.text(until_eos(decoded.tokens[k].tolist(), dc.eos), dc.eos)
                t.segments = [{"start": 0.0, "end": round(utts[i].seconds, 2), "text": t.text}]
                if not decoded.finished[k]:
                    t.truncated = t.incomplete = True
                    t.notes.append(f"decoding stopped after {steps} tokens without an end of text: the text may be cut "
                                   f"(ctx_len {self.ctx_len}; raise it, or pass --max-new-tokens)")

    def _long(self, utts: list[Any], out: list[Transcript], max_new_tokens: int | None,
              condition_on_previous_text: bool) -> None:
        from .longform import Settings, WhisperLongForm, chunked_longform

        dc = self.decode_config
        graph = max(self.graphs, key=lambda g: self.graphs[g])
        longest = self.graphs[graph]
        audios = [u.audio for u in utts]
        ts = dc.timestamps.begin if dc.timestamps is not None else None
        if dc.timestamps is not None:  # Whisper with timestamp tokens: sequential, as Whisper decodes long audio
            prompt = len(dc.timestamp_prompt())
            wanted = max_new_tokens or dc.decoder_positions // 2 - prompt
            settings = Settings(min(wanted, self._room(prompt)), condition_on_previous_text)
            results = WhisperLongForm(self.frontend, self.encoders[graph], self.decoder, self.decoder_io, dc,
                                      settings).run(audios, longest // 160)
        else:
            room = self._room(len(dc.prompt))
            results = chunked_longform(self.frontend, self.encoders[graph], self.decoder, self.decoder_io, dc, audios,
                                       longest, longest // 6, min(max_new_tokens or room, room))
        for t, u, r in zip(out, utts, results, strict=True):
            t.method, t.truncated, t.incomplete = r.method, r.truncated, r.incomplete
            t.text = self.frontend.text(r.tokens, dc.eos, ts)
            t.segments = [{"start": round(s.start, 2), "end": round(s.end, 2),
                           "text": self.frontend.text(s.tokens, dc.eos, ts)} for s in r.segments] or \
                [{"start": 0.0, "end": round(u.seconds, 2), "text": t.text}]
            t.notes.append(f"{u.seconds:.1f} s is longer than the {longest / 16000:g} s the model reads at once: "
                           f"decoded {r.method}, {len(r.windows)} windows")
            if self.sequential_family and dc.timestamps is None:
                t.notes.append("this Whisper has no timestamp tokens in its vocabulary: decoded in overlapping chunks "
                               "instead of sequentially")
            t.notes += r.notes

    @property
    def sequential_family(self) -> bool:
        from .families import named

        return named(self.arch).whisper_tokens


def run(folder: Path, spec: dict[str, Any], runtime: str, inputs: list[str],
        options: dict[str, Any]) -> list[dict[str, Any]]:
    """`qeffbuild run` for speech: transcribe audio files in the order given, with segments and notes."""
    from ...pipeline.datasets import DataError, check_audio_file

    for a in inputs:
        try:
            check_audio_file(Path(a), "no such audio file" if not Path(a).exists() else a,
                             "check the path", "leave it out")
        except DataError as e:
            raise UsageError(str(e)) from None
    t = Transcriber(folder, runtime, spec["device"], verify=False)  # Project.run checked it in full
    done = t.transcribe_detailed([Path(a) for a in inputs], options.get("max_new_tokens"),
                                 bool(options.get("condition_on_previous_text")))
    return [{"input": a, "text": tr.text, "method": tr.method, "segments": tr.segments, "notes": tr.notes,
             "truncated": tr.truncated, "incomplete": tr.incomplete} for a, tr in zip(inputs, done, strict=True)]
