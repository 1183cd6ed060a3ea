"""Transcribe with a built speech specialization: the Python API behind `qeffbuild run`.

A built specialization folder (``out/<specialization>/``) is self-contained: the Hugging
Face model folder (processor, configs), the encoder and decoder-step programs, and every
compiled artifact. :class:`Transcriber` opens one runtime of it; ``save`` copies the folder
and ``load`` opens a saved copy again.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ...core.plugins import plugins
from ...errors import UsageError


class Transcriber:
    """Greedy transcription on one runtime of a built speech specialization."""

    def __init__(self, folder: Path, runtime: str = "onnxruntime", device: str = "cpu",
                 language: str | None = "en") -> None:
        from ...runtimes.io import read_io
        from .driver import DecodeConfig

        self.folder = Path(folder)
        self.runtime = runtime
        info = plugins().runtimes.get(runtime)
        if not info.runs_task("speech-seq2seq"):
            raise UsageError(f"runtime {runtime!r} does not run speech models")
        self.model_dir = self.folder / "model"
        if not (self.model_dir / "config.json").is_file():
            raise UsageError(f"{self.folder} is not a built speech specialization (no model/config.json); "
                             "build it with `qeffbuild build SPECIALIZATION`")
        self.decode_config = DecodeConfig.from_model_dir(self.model_dir, language)
        self.device = device
        self.encoder, self.decoder = self._open(info.opens)
        decoder_dir = self.folder / self._artifact_dir(info.opens, "decoder")
        shapes = read_io(decoder_dir)["shapes"]
        self.batch_size, self.ctx_len = shapes["input_ids"][0], shapes["past_key_0"][2]
        self._processor: Any = None

    def _artifact_dir(self, opens: str, which: str) -> str:
        return f"transform-{which}" if opens in ("program", "reference") else f"{opens}/{which}"

    def _open(self, opens: str) -> tuple[Any, Any]:
        from ...runtimes import open_session

        if opens == "reference":
            raise UsageError("runtime 'pytorch' is the reference; transcribe with pytorch-transformed, "
                             "onnxruntime or aoti")
        dirs = [self.folder / self._artifact_dir(opens, w) for w in ("encoder", "decoder")]
        missing = [d for d in dirs if not d.is_dir()]
        if missing:
            raise UsageError(f"{self.folder} has no {opens!r} artifacts ({missing[0].name}); add that backend to the "
                             "specialization's compile list")
        return (open_session(plugins(), self.runtime, dirs[0], self.device),
                open_session(plugins(), self.runtime, dirs[1], self.device))

    @property
    def processor(self) -> Any:
        if self._processor is None:
            from transformers import AutoProcessor

            self._processor = AutoProcessor.from_pretrained(self.model_dir)
        return self._processor

    def transcribe(self, wavs: list[Path], max_new_tokens: int | None = None) -> list[str]:
        from .driver import batched, features, greedy_decode, load_dataset, until_eos

        dc = self.decode_config
        steps = min(max_new_tokens or self.ctx_len, self.ctx_len - len(dc.prompt) + 1)
        utts = load_dataset([Path(w) for w in wavs])  # in the order given: texts[i] belongs to wavs[i]
        if not utts:
            raise UsageError("no audio files given")
        feats = features(self.processor, utts, dc.encoder_ctx_len)
        texts: list[str] = []
        rows = list(range(len(utts)))
        for chunk in batched(rows, self.batch_size):
            tokens = greedy_decode(self.encoder, self.decoder, feats[chunk], dc, steps, self.ctx_len, stop_at_eos=True)
            for i in range(min(self.batch_size, len(rows) - len(texts))):
                ids = until_eos(tokens[i].tolist(), dc.eos)
                texts.append(self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip())
        return texts

    def save(self, dest: Path) -> Path:
        """Copy the built folder to ``dest`` (hard links where possible); ``load(dest)`` opens it."""
        shutil.copytree(self.folder, dest, copy_function=_link_or_copy, dirs_exist_ok=False)
        return Path(dest)

    @classmethod
    def load(cls, folder: Path, runtime: str = "onnxruntime", device: str = "cpu") -> Transcriber:
        return cls(folder, runtime, device)

    @classmethod
    def from_target(cls, target: str, runtime: str = "onnxruntime", project: Any = None) -> Transcriber:
        """Build ``target`` (a speech specialization, or a validation's first one) and open it."""
        from ...api import Project

        project = project or Project()
        folder, spec = project.built_specialization(target, "speech-seq2seq")
        return cls(folder, runtime, spec["device"])


def run(folder: Path, spec: dict[str, Any], runtime: str, inputs: list[str],
        options: dict[str, Any]) -> list[dict[str, Any]]:
    """`qeffbuild run` for speech: transcribe audio files in the order given."""
    missing = [a for a in inputs if not Path(a).is_file()]
    if missing:
        raise UsageError(f"no such audio file: {', '.join(missing)}")
    t = Transcriber(folder, runtime, spec["device"])
    texts = t.transcribe([Path(a) for a in inputs], options.get("max_new_tokens"))
    return [{"input": a, "text": text} for a, text in zip(inputs, texts, strict=True)]


def _link_or_copy(src: str, dst: str) -> None:
    from ...store import link_or_copy

    link_or_copy(Path(src), Path(dst))
