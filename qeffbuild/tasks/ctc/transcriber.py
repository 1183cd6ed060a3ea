"""Transcription with a built CTC specialization: ``qeffbuild run`` and the ``Transcriber`` API.

A CTC model reads a whole utterance at once: audio up to the longest compiled length is recognized in one pass
(argmax per frame, CTC collapse); longer audio in overlapping chunks of that length, as transformers' ASR pipeline
reads it with ``chunk_length_s`` (``driver.Chunking``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...core.plugins import plugins
from ...errors import UsageError
from ...transcribe import BuiltTranscriber


class CTCTranscriber(BuiltTranscriber):
    """Greedy (argmax) CTC transcription on one runtime of a built specialization."""

    task = "ctc"

    def __init__(self, folder: Path, runtime: str = "onnxruntime", device: str = "cpu", verify: bool = True) -> None:
        from .driver import Frontend

        super().__init__(folder, runtime, device, verify)
        info = plugins().runtimes.get(runtime)
        if info.opens == "reference":
            raise UsageError(f"runtime {runtime!r} is the reference; transcribe with a built artifact "
                             "(pytorch-transformed, onnxruntime, aoti …)")
        if not (self.folder / "model" / "config.json").is_file():
            raise UsageError(f"{self.folder} is not a built CTC specialization (no model/config.json); build it with "
                             "`qeffbuild build SPECIALIZATION`")
        self.frontend = Frontend(self.folder / "model")
        self._open(info.opens)

    def _open(self, opens: str) -> None:
        from ...runtimes import open_session

        base = self.folder if opens == "program" else self.folder / opens
        prefix = "transform-" if opens == "program" else ""
        dirs = sorted(d for d in base.glob(f"{prefix}audio-*") if d.is_dir())
        if not dirs:
            raise UsageError(f"{self.folder} has no {opens!r} artifacts; add that backend to the specialization's "
                             "compile list")
        self.sessions: dict[str, Any] = {}
        self.graphs: dict[str, int] = {}
        for d in dirs:
            io = json.loads((d / "io.json").read_text())
            name = d.name.removeprefix(prefix)
            self.graphs[name] = int(io["samples"])
            self.batch_size = int(io["shapes"]["input_values"][0])
            self.sessions[name] = open_session(plugins(), self.runtime, d, self.device)

    def transcribe(self, paths: list[Path]) -> list[str]:
        return [row["text"] for row in self.transcribe_detailed(paths)]

    def transcribe_detailed(self, paths: list[Path]) -> list[dict[str, Any]]:
        """One row per file, in the order given: its text, the argmax ids of its frames and any notes."""
        from ...pipeline.audio import load_dataset
        from .driver import recognize

        utts = load_dataset([Path(p) for p in paths])
        if not utts:
            raise UsageError("no audio files given")
        got = recognize(self.sessions, self.frontend, utts, self.graphs, self.batch_size)
        return [{"input": u.name, "text": self.frontend.text(ids), "ids": ids, "seconds": round(u.seconds, 3),
                 "chunks": chunks, "notes": [u.note] if u.note else []}
                for u, ids, chunks in zip(utts, got.ids, got.chunks, strict=True)]


def run(folder: Path, spec: dict[str, Any], runtime: str, inputs: list[str],
        options: dict[str, Any]) -> list[dict[str, Any]]:
    """`qeffbuild run` for CTC: transcribe audio files in the order given."""
    from ...pipeline.datasets import DataError, check_audio_file

    for a in inputs:
        try:
            check_audio_file(Path(a), "no such audio file" if not Path(a).exists() else a, "check the path",
                             "leave it out")
        except DataError as e:
            raise UsageError(str(e)) from None
    rows = CTCTranscriber(folder, runtime, spec["device"], verify=False).transcribe_detailed([Path(a) for a in inputs])
    return [{**row, "input": a} for a, row in zip(inputs, rows, strict=True)]


def render(rows: list[dict[str, Any]], fmt: str) -> list[str]:
    from ...reports import printable

    return [f"{printable(r['input'])}: {printable(r['text'])}" for r in rows]
