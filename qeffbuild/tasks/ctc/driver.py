"""CTC recognition on any runtime (worker side): audio → padded batches → logits → argmax ids → text.

Utterances are grouped by the shortest audio length that holds them (shortest first), cut into batches of the
specialization's size (a short batch is filled with copies of a row, whose results are dropped) and padded by
the model's feature extractor. Each row keeps the argmax ids of its own frames only (the encoder's output length
for its real samples); CTC collapse (repeats merged, blanks dropped) and the tokenizer turn them into text.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import InputError
from ...pipeline.audio import SAMPLE_RATE, Utterance
from . import frames


class Frontend:
    """The model's feature extractor and CTC tokenizer."""

    def __init__(self, model_dir: Path) -> None:
        import transformers

        self.fe = transformers.AutoFeatureExtractor.from_pretrained(model_dir)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
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


def batches(utts: list[Utterance], graphs: dict[str, int], batch: int) -> list[tuple[str, list[int]]]:
    """(graph, rows) pairs: rows of one graph, at most ``batch`` a time, shortest first."""
    groups: dict[str, list[int]] = {}
    for i, u in sorted(enumerate(utts), key=lambda iu: (len(iu[1].audio), iu[0])):
        name = fit(u.seconds, graphs)
        if name is None:
            longest = max(graphs.values()) / SAMPLE_RATE
            raise InputError(f"{u.name} is {u.seconds:.2f} s long, longer than every compiled audio length "
                             f"({longest:g} s); add a longer audio_len_s or split the audio")
        groups.setdefault(name, []).append(i)
    return [(name, rows[k:k + batch]) for name, rows in groups.items() for k in range(0, len(rows), batch)]


@dataclass
class Recognized:
    """Every utterance's argmax ids (its own frames), and how long each batch took."""

    ids: list[list[int]]
    latency_s: list[dict[str, Any]] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(b["seconds"] for b in self.latency_s)


def recognize(sessions: dict[str, Any], frontend: Frontend, utts: list[Utterance], graphs: dict[str, int],
              batch: int) -> Recognized:
    """Argmax ids of every utterance on one runtime's graphs (``sessions`` by graph name)."""
    import numpy as np

    out = Recognized([[] for _ in utts])
    for graph, rows in batches(utts, graphs, batch):
        padded = rows + [rows[0]] * (batch - len(rows))
        feeds = frontend.features([utts[i].audio for i in padded], graphs[graph])
        t0 = time.perf_counter()
        logits = np.asarray(sessions[graph].run(feeds)[0])
        out.latency_s.append({"graph": graph, "rows": len(rows), "seconds": time.perf_counter() - t0})
        ids = logits.argmax(-1)
        for k, i in enumerate(rows):
            out.ids[i] = [int(t) for t in ids[k, : frontend.own_frames(utts[i])]]
    return out


def reference(model: Any, frontend: Frontend, utts: list[Utterance], graphs: dict[str, int]) -> list[list[int]]:
    """The unmodified model on the same padded inputs, one utterance at a time: its argmax ids."""
    import torch

    out = []
    with torch.no_grad():
        for u in utts:
            graph = fit(u.seconds, graphs)
            if graph is None:
                raise InputError(f"{u.name} is longer than every compiled audio length")
            feeds = {k: torch.from_numpy(v).to(model.device) for k, v in frontend.features([u.audio],
                                                                                           graphs[graph]).items()}
            logits = model(feeds["input_values"].to(model.dtype), attention_mask=feeds.get("attention_mask")).logits
            out.append([int(t) for t in logits[0].float().argmax(-1)[: frontend.own_frames(u)].cpu()])
    return out
