"""CTC recognition on any runtime (worker side): audio → padded batches → logits → argmax ids → text.

Utterances are grouped by the shortest audio length that holds them (shortest first), cut into batches of the
specialization's size (a short batch is filled with copies of a row, whose results are dropped) and padded by
the model's feature extractor. Each row keeps the argmax ids of its own frames only (the encoder's output length
for its real samples); CTC collapse (repeats merged, blanks dropped) and the tokenizer turn them into text.

Audio longer than the longest compiled length is cut into overlapping chunks of that length exactly as
transformers' ASR pipeline cuts it with ``chunk_length_s`` (``chunk_iter``: chunks ``chunk - 2 × stride`` apart,
the stride a sixth of the chunk unless set, both aligned to the model's ``inputs_to_logits_ratio``); each chunk's
ids lose the frames of its strides (``rescale_stride``; none at the audio's ends) and the rest are concatenated
before CTC collapse, so a word cut by one chunk's edge is read whole from the chunk that holds it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import InputError
from ...pipeline.audio import SAMPLE_RATE, Utterance
from . import frames, samples_per_frame


class Frontend:
    """The model's feature extractor and CTC tokenizer."""

    def __init__(self, model_dir: Path) -> None:
        from ...pipeline import preprocessors

        self.fe = preprocessors.feature_extractor(model_dir)
        self.tokenizer = preprocessors.tokenizer(model_dir)
        self.config = json.loads((model_dir / "config.json").read_text())
        self.mask = bool(getattr(self.fe, "return_attention_mask", False))

    def features(self, audios: list[Any], samples: int) -> dict[str, Any]:
        """Graph inputs for audio padded (or cut) to ``samples`` samples."""
        out = self.fe(audios, sampling_rate=SAMPLE_RATE, return_tensors="np", padding="max_length",
                      max_length=samples, truncation=True, return_attention_mask=self.mask)
        feeds = {"input_values": out["input_values"].astype("float32")}
        if self.mask:
            feeds["attention_mask"] = out["attention_mask"].astype("int64")
        return feeds

    def own_frames(self, utt: Utterance) -> int:
        return frames(self.config, len(utt.audio))

    def text(self, ids: list[int]) -> str:
        """CTC collapse (repeats merged, the blank dropped) and the tokenizer's word delimiter as spaces."""
        return str(self.tokenizer.decode(ids)).strip()


def fit(seconds: float, graphs: dict[str, int]) -> str | None:
    """The shortest graph whose length holds ``seconds`` of audio (None: longer than all)."""
    for name, samples in sorted(graphs.items(), key=lambda kv: kv[1]):
        if samples >= round(seconds * SAMPLE_RATE) - 1:
            return name
    return None


@dataclass(frozen=True)
class Piece:
    """What one graph row reads: ``samples`` samples of utterance ``utt`` from ``start``, and the frames of its
    argmax ids that are kept (``keep``: [first, end))."""

    utt: int
    start: int
    samples: int
    keep: tuple[int, int]


@dataclass(frozen=True)
class Chunking:
    """Long audio's chunks: ``chunk`` samples (the longest graph), ``stride`` samples dropped at each inner edge."""

    chunk: int
    stride: int
    align: int  # samples per output frame (the model's inputs_to_logits_ratio)

    @classmethod
    def of(cls, config: dict[str, Any], graphs: dict[str, int], stride_s: float | None = None) -> Chunking:
        align = samples_per_frame(config)
        chunk = max(graphs.values())
        seconds = stride_s if stride_s is not None else chunk / SAMPLE_RATE / 6  # the pipeline's default
        stride = round(seconds * SAMPLE_RATE / align) * align
        aligned = round(chunk / align) * align
        if aligned > chunk:  # the pipeline aligns the chunk to frames; ours must still fit the graph
            aligned -= align
        if 2 * stride >= aligned:
            raise InputError(f"a stride of {seconds:g} s on each side leaves nothing of a "
                             f"{chunk / SAMPLE_RATE:g} s chunk; set chunk_stride_s below {aligned / SAMPLE_RATE / 2:g}")
        return cls(aligned, stride, align)

    def describe(self) -> str:
        return (f"chunked as transformers' ASR pipeline chunks: {self.chunk / SAMPLE_RATE:g} s chunks, "
                f"{self.stride / SAMPLE_RATE:g} s stride on each side")

    def pieces(self, utt: int, samples: int, own: Any) -> list[Piece]:
        """transformers' ``chunk_iter`` and ``rescale_stride``, as positions (``own(n)``: frames of n samples)."""
        out = []
        step = self.chunk - 2 * self.stride
        for start in range(0, samples, step):
            n = min(self.chunk, samples - start)
            left = 0 if start == 0 else self.stride
            last = start + self.chunk >= samples
            right = 0 if last else self.stride
            if n > left:
                token_n = round(n / self.align)
                first = round(left / n * token_n)
                end = min(token_n - round(right / n * token_n), own(n))
                out.append(Piece(utt, start, n, (first, end)))
            if last:
                break
        return out


def plan_pieces(utts: list[Utterance], graphs: dict[str, int], frontend: Frontend,
                chunking: Chunking) -> list[Piece]:
    """Every row a runtime reads: an utterance that fits a graph whole, a longer one as its chunks."""
    out: list[Piece] = []
    longest = max(graphs.values())
    for i, u in enumerate(utts):
        n = len(u.audio)
        if fit(u.seconds, graphs) is not None and n <= longest:
            out.append(Piece(i, 0, n, (0, frontend.own_frames(u))))
        else:
            out += chunking.pieces(i, n, lambda k: frames(frontend.config, k))
    return out


def pieces_per_utterance(pieces: list[Piece], n: int) -> list[int]:
    """How many pieces each of ``n`` utterances was read in (1: whole)."""
    return [sum(p.utt == i for p in pieces) for i in range(n)]


def chunk_counts(utts: list[Utterance], graphs: dict[str, int], frontend: Frontend, chunking: Chunking) -> list[int]:
    return pieces_per_utterance(plan_pieces(utts, graphs, frontend, chunking), len(utts))


def batches(pieces: list[Piece], graphs: dict[str, int], batch: int) -> list[tuple[str, list[int]]]:
    """(graph, piece indices) pairs: pieces of one graph, at most ``batch`` a time, shortest first."""
    groups: dict[str, list[int]] = {}
    for k, piece in sorted(enumerate(pieces), key=lambda kp: (kp[1].samples, kp[0])):
        name = fit(piece.samples / SAMPLE_RATE, graphs)
        assert name is not None, "plan_pieces cuts every piece to the longest graph"
        groups.setdefault(name, []).append(k)
    return [(name, rows[k:k + batch]) for name, rows in groups.items() for k in range(0, len(rows), batch)]


@dataclass
class Recognized:
    """Every utterance's argmax ids (its own frames), and how long each batch took."""

    ids: list[list[int]]
    latency_s: list[dict[str, Any]] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)  # pieces per utterance (1: read whole)

    @property
    def seconds(self) -> float:
        return sum(b["seconds"] for b in self.latency_s)


def recognize(sessions: dict[str, Any], frontend: Frontend, utts: list[Utterance], graphs: dict[str, int],
              batch: int, chunking: Chunking | None = None) -> Recognized:
    """Argmax ids of every utterance on one runtime's graphs (``sessions`` by graph name)."""
    import numpy as np

    chunking = chunking or Chunking.of(frontend.config, graphs)
    pieces = plan_pieces(utts, graphs, frontend, chunking)
    got: dict[int, list[int]] = {}
    out = Recognized([[] for _ in utts], chunks=pieces_per_utterance(pieces, len(utts)))
    for graph, rows in batches(pieces, graphs, batch):
        padded = rows + [rows[0]] * (batch - len(rows))
        feeds = frontend.features([_audio(utts, pieces[k]) for k in padded], graphs[graph])
        t0 = time.perf_counter()
        logits = np.asarray(sessions[graph].run(feeds)[0])
        out.latency_s.append({"graph": graph, "rows": len(rows), "seconds": time.perf_counter() - t0})
        ids = logits.argmax(-1)
        for j, k in enumerate(rows):
            first, end = pieces[k].keep
            got[k] = [int(t) for t in ids[j, first:end]]
    for k, piece in enumerate(pieces):  # pieces are in audio order per utterance
        out.ids[piece.utt] += got[k]
    return out


def _audio(utts: list[Utterance], piece: Piece) -> Any:
    return utts[piece.utt].audio[piece.start:piece.start + piece.samples]


def reference(model: Any, frontend: Frontend, utts: list[Utterance], graphs: dict[str, int],
              chunking: Chunking | None = None) -> list[list[int]]:
    """The unmodified model on the same padded inputs (the same chunks), one at a time: its argmax ids."""
    import torch

    chunking = chunking or Chunking.of(frontend.config, graphs)
    out: list[list[int]] = [[] for _ in utts]
    with torch.no_grad():
        for piece in plan_pieces(utts, graphs, frontend, chunking):
            graph = fit(piece.samples / SAMPLE_RATE, graphs)
            assert graph is not None
            feeds = {k: torch.from_numpy(v).to(model.device)
                     for k, v in frontend.features([_audio(utts, piece)], graphs[graph]).items()}
            logits = model(feeds["input_values"].to(model.dtype), attention_mask=feeds.get("attention_mask")).logits
            first, end = piece.keep
            out[piece.utt] += [int(t) for t in logits[0].float().argmax(-1)[first:end].cpu()]
    return out
