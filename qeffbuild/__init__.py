"""qeffbuild: a declarative, cached build system for model artifacts.

The public names load lazily, so ``import qeffbuild`` stays cheap::

    from qeffbuild import Project, Transcriber
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"
__all__ = ["BuildResult", "Project", "QeffbuildError", "Transcriber", "__version__"]

_LAZY = {
    "Project": "qeffbuild.api",
    "BuildResult": "qeffbuild.api",
    "QeffbuildError": "qeffbuild.errors",
    "Transcriber": "qeffbuild.transcribe",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qeffbuild' has no attribute {name!r}")
