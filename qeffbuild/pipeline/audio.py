"""Audio input shared by the families that hear: audio files and data-set bytes as float32 mono 16 kHz
utterances (no torch: data-set selection runs at plan time)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

SAMPLE_RATE = 16000  # every audio model here reads 16 kHz mono


@dataclass(frozen=True)
class Utterance:
    name: str
    audio: Any  # float32 mono at 16 kHz
    transcript: str | None
    note: str = ""  # e.g. resampling done

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def load_audio(path: Path) -> tuple[Any, str]:
    """An audio file (anything soundfile reads) as float32 mono 16 kHz, and a note of any conversion made."""
    return decode_audio(path, str(path))


def decode_audio(source: Any, where: str) -> tuple[Any, str]:
    """Audio from a path or a file-like object (a data set's bytes) as float32 mono 16 kHz, and a note."""
    import numpy as np
    import soundfile as sf

    try:
        data, rate = sf.read(source if not isinstance(source, Path) else str(source), dtype="float32",
                             always_2d=True)
    except Exception as e:
        raise InputError(f"{where}: cannot read audio ({e}); expected an audio file soundfile reads (WAV, FLAC, "
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
        raise InputError(f"{where}: the audio is empty")
    return audio.astype(np.float32), "; ".join(notes)


def load_rows(rows: list[dict[str, Any]], files: dict[str, Path]) -> list[Utterance]:
    """The selected rows of a folder, table or audiofolder (their files are the step's input files)."""
    out = []
    for r in rows:
        audio, note = load_audio(files[r["label"]])
        out.append(Utterance(r["name"], audio, r["text"] or None, note))
    return out


def read_selected(inputs: dict[str, Any], files: dict[str, Path], paths: dict[str, Path]) -> list[Utterance]:
    """A validation's selected inputs (``datasets.select``'s params and rows), read in the worker."""
    if inputs["kind"] == "hf":
        from .datasets import open_hf

        return [Utterance(name, audio, text or None) for name, audio, text in open_hf(paths["dataset"], inputs)]
    return load_rows(inputs["rows"], files)


def load_dataset(paths: list[Path]) -> list[Utterance]:
    """Audio files, in the order given, with their optional .txt transcripts beside them."""
    out = []
    for p in paths:
        audio, note = load_audio(p)
        txt = p.with_suffix(".txt")
        out.append(Utterance(p.name, audio, txt.read_text().strip() if txt.is_file() else None, note))
    return out
