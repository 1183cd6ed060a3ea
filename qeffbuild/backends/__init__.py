"""The backends room: one file per compile backend, each registered here.

A backend file holds its plan-time description (devices, refused dtypes, toolchain,
availability), its worker-side ``compile`` and the session that opens its artifacts; the
heavy libraries are imported inside those functions only.

    ort.py    ONNX Runtime offline-optimized model, fixed shapes
    aoti.py   torch AOTInductor package (.pt2)
    qaic.py   Qualcomm Cloud AI 100 (qaic-compile)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .aoti import AotiBackend
from .ort import OrtBackend
from .qaic import QaicBackend

if TYPE_CHECKING:
    from ..core.plugins import Plugins

BUILTIN = (OrtBackend(), AotiBackend(), QaicBackend())


def register(plugins: Plugins) -> None:
    for backend in BUILTIN:
        plugins.backends.add(backend.name, backend)
