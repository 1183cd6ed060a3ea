"""`qeffbuild env`: versions, plug-ins, and which backends and runtimes can run on this machine."""

from __future__ import annotations

import platform
import shutil
from pathlib import Path
from typing import Any

from .keys import dist_version
from .plugins import plugins

VERSIONED = ("torch", "transformers", "tokenizers", "onnx", "onnxscript", "onnxruntime", "numpy", "pydantic",
             "sentence-transformers", "soundfile", "soxr", "jiwer", "ray", "s3fs")


def cuda_unavailable() -> str | None:
    """Why this machine cannot build for CUDA (None when it can): a GPU device node and nvcc."""
    if not any(Path(p).exists() for p in ("/dev/nvidia0", "/dev/nvidiactl")):
        return "no NVIDIA GPU on this machine (no /dev/nvidia0); use device = \"cpu\" or build on a GPU host"
    if shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists():
        return "building for CUDA needs the CUDA toolkit (nvcc) on PATH"
    return None


def describe(lazy: Any) -> dict[str, Any]:
    from .. import __version__

    loaded = plugins()
    project = lazy.get()
    return {
        "qeffbuild": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "versions": {d: dist_version(d) for d in VERSIONED},
        "cuda": cuda_unavailable(),
        "backends": [{"name": b.name, "description": b.description, "consumes": b.consumes,
                      "devices": {d: b.unavailable(d) for d in b.devices}, "toolchain": b.environment()}
                     for b in loaded.backends.values()],
        "runtimes": [{"name": r.name, "opens": r.opens, "tasks": r.tasks, "description": r.description}
                     for r in loaded.runtimes.values()],
        "tasks": [{"name": t.name, "description": t.description, "builds": t.supported(), "metrics": t.metrics}
                  for t in loaded.tasks.values()],
        "metrics": [{"name": m.name, "higher_is_better": m.higher_is_better, "description": m.description}
                    for m in loaded.metrics.values()],
        "plugins": loaded.sources,
        "manifests": [str(p) for p in project.manifest_paths],
        "out_dir": str(project.out_dir),
        "cache_dir": str(project.cache_dir),
    }
