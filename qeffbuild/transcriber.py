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

from .errors import UsageError
from .runtimes import RUNTIMES


class Transcriber:
    """Greedy transcription on one runtime of a built speech specialization."""

    def __init__(self, folder: Path, runtime: str = "onnxruntime", device: str = "cpu",
                 language: str | None = "en") -> None:
        from .sessions import read_io
        from .speech import DecodeConfig

        self.folder = Path(folder)
        self.runtime = runtime
        info = RUNTIMES.get(runtime)
        if "speech-seq2seq" not in info.tasks:
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
        return f"transform-{which}" if opens in ("transformed", "reference") else f"{opens}/{which}"

    def _open(self, opens: str) -> tuple[Any, Any]:
        from .sessions import open_compiled, open_program

        if opens == "reference":
            raise UsageError("runtime 'pytorch' is the reference; transcribe with pytorch-transformed, "
                             "onnxruntime or aoti")
        dirs = [self.folder / self._artifact_dir(opens, w) for w in ("encoder", "decoder")]
        missing = [d for d in dirs if not d.is_dir()]
        if missing:
            raise UsageError(f"{self.folder} has no {opens!r} artifacts ({missing[0].name}); add that backend to the "
                             "specialization's compile list")
        if opens == "transformed":
            return open_program(dirs[0], self.device), open_program(dirs[1], self.device)
        return open_compiled(opens, dirs[0], self.device), open_compiled(opens, dirs[1], self.device)

    @property
    def processor(self) -> Any:
        if self._processor is None:
            from transformers import AutoProcessor

            self._processor = AutoProcessor.from_pretrained(self.model_dir)
        return self._processor

    def transcribe(self, wavs: list[Path], max_new_tokens: int | None = None) -> list[str]:
        from .speech import batched, features, greedy_decode, load_dataset, until_eos

        dc = self.decode_config
        steps = min(max_new_tokens or self.ctx_len, self.ctx_len - len(dc.prompt) + 1)
        utts = load_dataset([Path(w) for w in wavs])
        if not utts:
            raise UsageError("no .wav files given")
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
        from .api import Project
        from .manifest import SpecializationTable, ValidationTable

        project = project or Project()
        ref = project.workspace.targets.get(target)
        if ref is not None and isinstance(ref.spec, ValidationTable):
            target = ref.spec.specializations[0]
            ref = project.workspace.targets[target]
        if ref is None or not isinstance(ref.spec, SpecializationTable):
            raise UsageError(f"{target!r} is not a specialization or validation target")
        task = project.workspace.targets[ref.spec.model].spec.task
        if task != "speech-seq2seq":
            raise UsageError(f"`run` transcribes audio with a speech specialization; {target!r} is for a {task!r} "
                             "model (validate it with `qeffbuild build`, time it with `qeffbuild bench`)")
        result = project.build([target])
        if not result.ok:
            raise UsageError(f"{target} did not build; run `qeffbuild build {target}` to see why")
        return cls(Path(result.outputs[target]), runtime, ref.spec.device)


def _link_or_copy(src: str, dst: str) -> None:
    from .store import link_or_copy

    link_or_copy(Path(src), Path(dst))
