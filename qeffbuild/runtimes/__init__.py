"""The runtimes room: the registry of runtimes and the one way to open a session on an artifact.

A runtime opens the reference (the unmodified Hugging Face model, run by the family), the
exported torch program (``program``), or a compile backend's artifact (the backend names
its session class, and registers its runtimes itself; families register runtimes only they
use, such as ``sentence-transformers``). Every session takes ``{name: numpy array}`` and returns its outputs as
a list of numpy arrays, floats as float32, so the families' drivers are runtime-agnostic.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..core.plugins import Runtime, load_attr

if TYPE_CHECKING:
    from ..core.plugins import Plugins

BUILTIN = (
    Runtime("pytorch", "the unmodified Hugging Face model (the reference)", "reference", numeric="reference"),
    Runtime("pytorch-transformed", "the transformed torch.export program", "program", numeric="same-program"),
)


class Session(Protocol):
    def run(self, feeds: dict[str, Any]) -> list[Any]: ...


def register(plugins: Plugins) -> None:
    for runtime in BUILTIN:
        plugins.runtimes.add(runtime.name, runtime)


def open_session(plugins: Plugins, runtime: str, folder: Path, device: str = "cpu") -> Session:
    """Open the artifact in ``folder`` (a program or a backend's output) for ``runtime``."""
    opens = plugins.runtimes.get(runtime).opens
    if opens == "reference":
        raise ValueError(f"runtime {runtime!r} runs the reference model; it opens no artifact")
    if opens == "program":
        from .torch import open_program

        return open_program(folder, device)
    session: Session = load_attr(plugins.backends.get(opens).session)(folder, device)
    return session
