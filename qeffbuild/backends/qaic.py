"""The `qaic` backend (Qualcomm Cloud AI 100): registered, and refused at plan time with the reason."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..core.plugins import Backend


class QaicBackend(Backend):
    name = "qaic"
    description = "Qualcomm Cloud AI 100 (qaic-compile)"
    consumes = "onnx"
    devices = ("cpu", "cuda", "qaic")
    toolchain = ("onnx",)
    version = 1
    compile = ""
    session = ""

    def unavailable(self, device: str) -> str | None:
        if shutil.which("qaic-compile") is None and not Path("/opt/qti-aic/exec/qaic-compile").exists():
            return ("the Cloud AI 100 compiler (qaic-compile, from the Qualcomm Apps/Platform SDK under "
                    "/opt/qti-aic) is not installed on this machine")
        return "qeffbuild does not drive qaic-compile yet: this backend is registered but not implemented"
