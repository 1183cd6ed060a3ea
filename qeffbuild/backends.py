"""Compile backends: the registry of names, artifacts and where each can run.

Only descriptions live here (planning imports this); each backend's compile function is
named as ``module:function`` and imported inside the worker.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from .registry import Registry


@dataclass(frozen=True)
class Backend:
    name: str
    runner: str  # module:function run in the worker: (ctx) -> None
    needs_onnx: bool  # compiles from the ONNX export (else from the torch.export program)
    devices: tuple[str, ...]
    toolchain: tuple[str, ...]
    description: str

    def unavailable(self, device: str) -> str | None:
        """Why this backend cannot compile for ``device`` here (None when it can)."""
        if device not in self.devices:
            return f"backend {self.name!r} compiles for {', '.join(self.devices)}, not {device!r}"
        if self.name == "aoti" and device == "cuda":
            return _cuda_unavailable()
        if self.name == "ort" and device == "cuda":
            import onnxruntime  # only for a CUDA specialization: CPU plans stay light

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                return ("this ONNX Runtime has no CUDAExecutionProvider (it has "
                        f"{', '.join(onnxruntime.get_available_providers())}); install onnxruntime-gpu")
        if self.name == "qaic":
            if shutil.which("qaic-compile") is None and not _qaic_sdk():
                return ("the Cloud AI 100 compiler (qaic-compile, from the Qualcomm Apps/Platform SDK under "
                        "/opt/qti-aic) is not installed on this machine")
            return "qeffbuild does not drive qaic-compile yet: this backend is registered but not implemented"
        return None


def _qaic_sdk() -> bool:
    from pathlib import Path

    return Path("/opt/qti-aic/exec/qaic-compile").exists()


def _cuda_unavailable() -> str | None:
    from pathlib import Path

    if not any(Path(p).exists() for p in ("/dev/nvidia0", "/dev/nvidiactl")):
        return "no NVIDIA GPU on this machine (no /dev/nvidia0); use device = \"cpu\" or build on a GPU host"
    if shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists():
        return "AOTInductor for CUDA needs the CUDA toolkit (nvcc) on PATH"
    return None


BACKENDS: Registry[Backend] = Registry("compile backend")
BACKENDS.add("ort", Backend("ort", "qeffbuild.compile_ort:compile", True, ("cpu", "cuda"),
                            ("onnx", "onnxruntime"), "ONNX Runtime offline-optimized model, fixed shapes"))
BACKENDS.add("aoti", Backend("aoti", "qeffbuild.compile_aoti:compile", False, ("cpu", "cuda"),
                             ("torch",), "torch AOTInductor package (.pt2)"))
BACKENDS.add("qaic", Backend("qaic", "", True, ("cpu", "cuda", "qaic"),
                             ("onnx",), "Qualcomm Cloud AI 100 (qaic-compile)"))
