"""``qeffbuild.Transcriber``: transcription with a built specialization of any family that transcribes.

Each family that hears ships its own transcriber (``Task.transcriber``: Whisper-style sequence-to-sequence in
``tasks/speech``, CTC in ``tasks/ctc``); this facade picks it from the target's family, or from a saved folder's
model, so users write one line whatever the model is.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Self

from .errors import UsageError


class BuiltTranscriber:
    """What every family's transcriber shares: a built folder checked in full before it is used, ``save``,
    ``load`` and ``from_target``. A family's class sets ``task`` and opens its graphs in ``__init__``."""

    task: ClassVar[str]

    def __init__(self, folder: Path, runtime: str = "onnxruntime", device: str = "cpu", verify: bool = True) -> None:
        self.folder = Path(folder)
        if verify:
            verified(self.folder, read_by(runtime))
        self.runtime, self.device = runtime, device

    def save(self, dest: Path) -> Path:
        """Copy the built folder to ``dest``; ``load(dest)`` opens it."""
        shutil.copytree(self.folder, dest, dirs_exist_ok=False)
        return Path(dest)

    @classmethod
    def load(cls, folder: Path, runtime: str = "onnxruntime", device: str = "cpu") -> Self:
        """Open a saved folder; the files it reads are checked against the digests they were built with."""
        return cls(folder, runtime, device)

    @classmethod
    def from_target(cls, target: str, runtime: str = "onnxruntime", project: Any = None) -> Self:
        """Build ``target`` (a specialization of this family, or a validation's first one) and open it."""
        from .api import Project

        project = project or Project()
        folder, spec = project.built_specialization(target, cls.task)  # checked in full there
        return cls(folder, runtime, spec["device"], verify=False)


def read_by(runtime: str) -> Callable[[str], bool]:
    """Which files of a built folder a transcriber on ``runtime`` reads (paths relative to the folder): the
    runtime's graphs, and the model folder's config, tokenizer and feature extractor. The model's weights belong
    to the reference, which no transcriber opens; hashing them (and every other backend's graphs) would cost
    seconds of start-up at large-v3's size and check bytes nothing reads."""
    from .core.plugins import plugins

    opens = plugins().runtimes.get(runtime).opens
    graphs = ("transform-",) if opens == "program" else (f"{opens}/",)

    def used(rel: str) -> bool:
        if rel.startswith("model/"):
            return not rel.endswith(WEIGHT_FILES)
        return rel.startswith(graphs)

    return used


WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def verified(folder: Path, used: Callable[[str], bool] | None = None) -> None:
    """Every file of a saved folder that will be read (``used``; all when None) read in full against the digest
    it was built with, before any is used."""
    from .exec.materialize import verify_folder

    changed = verify_folder(Path(folder), used)
    if changed:
        raise UsageError(f"{folder}: {', '.join(changed[:5])}{' …' if len(changed) > 5 else ''} changed since it "
                         "was built (a disk error or an edit); build the specialization again and save a fresh copy")


def _transcribing_family(folder: Path) -> Any:
    from .core.plugins import load_attr, plugins

    try:
        config = json.loads((Path(folder) / "model" / "config.json").read_text())
    except (OSError, ValueError):
        raise UsageError(f"{folder} is not a built specialization (no model/config.json); build one with "
                         "`qeffbuild build SPECIALIZATION` and open its out/ folder") from None
    architectures = config.get("architectures") or [None]
    for task in plugins().tasks.values():
        if task.transcriber and task.supports(architectures[0], config.get("model_type")):
            return load_attr(task.transcriber)
    able = [t.name for t in plugins().tasks.values() if t.transcriber]
    raise UsageError(f"{folder} holds a {architectures[0] or config.get('model_type')} model; only models of the "
                     f"families {', '.join(able)} transcribe")


class Transcriber:
    """Open a built specialization's folder (``Transcriber(folder, runtime, device)`` or :meth:`load`), or build
    and open a target (:meth:`from_target`); the object is the family's own transcriber."""

    def __new__(cls, folder: Path, runtime: str = "onnxruntime", device: str = "cpu", verify: bool = True,
                **kwargs: Any) -> Any:
        if verify:
            verified(folder)
        return _transcribing_family(folder)(folder, runtime, device, verify=False, **kwargs)

    @staticmethod
    def load(folder: Path, runtime: str = "onnxruntime", device: str = "cpu") -> Any:
        """Open a saved folder; its files are checked against the digests they were built with."""
        verified(folder)
        return _transcribing_family(folder)(folder, runtime, device, verify=False)

    @staticmethod
    def from_target(target: str, runtime: str = "onnxruntime", project: Any = None) -> Any:
        """Build ``target`` (a specialization, or a validation's first one) and open it."""
        from .api import Project
        from .core.plugins import load_attr

        project = project or Project()
        task = project.task_of_target(target)
        if not task.transcriber:
            raise UsageError(f"{target!r} is a {task.name!r} target; Transcriber opens speech models")
        return load_attr(task.transcriber).from_target(target, runtime, project)
