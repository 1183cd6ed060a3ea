"""`qeffbuild env`: versions, plug-ins, and which backends and runtimes can run on this machine."""

from __future__ import annotations

import functools
import importlib.util
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .keys import dist_version
from .plugins import plugins

# The libraries every build reads; each family and backend adds its own (Task.libraries, Backend.toolchain).
VERSIONED = ("torch", "transformers", "tokenizers", "onnx", "onnxscript", "onnxruntime", "numpy", "pydantic", "ray",
             "s3fs")


def cuda_unavailable() -> str | None:
    """Why this machine cannot build for CUDA (None when it can): a GPU device node and nvcc."""
    if not any(Path(p).exists() for p in ("/dev/nvidia0", "/dev/nvidiactl")):
        return "no NVIDIA GPU on this machine (no /dev/nvidia0); use device = \"cpu\" or build on a GPU host"
    if shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists():
        return "building for CUDA needs the CUDA toolkit (nvcc) on PATH"
    return None


@functools.cache
def gpu_facts() -> dict[str, str]:
    """The GPU kind and the CUDA versions that make a compiled CUDA artifact valid, read without importing
    torch: ``nvidia-smi`` for the first GPU's name and compute capability, torch's own ``version.py`` for
    the CUDA it was built with. Empty where there is no GPU."""
    if cuda_unavailable() is not None or shutil.which("nvidia-smi") is None:
        return {}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    name, capability, driver = ([*(x.strip() for x in out.splitlines()[0].split(",")), "", "", ""])[:3]
    return {"gpu": name, "compute_capability": capability, "cuda_driver": driver, "torch_cuda": torch_cuda()}


@functools.cache
def cpu_isa() -> str:
    """The vector instruction set a CPU build's compiled kernels target, read from ``/proc/cpuinfo`` without
    importing torch: Inductor compiles C++ for the best one this CPU has (AMX, AVX-512, AVX2; on Arm SVE or
    NEON), and a frozen package holds weights prepacked for it, so a package built here may not run, or run
    well, on a CPU without it. The architecture alone where the flags cannot be read."""
    machine = platform.machine().lower()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return machine
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines()
                      if line.startswith(("flags", "Features"))), []))
    for isa, needs in (("amx", {"amx_tile", "avx512f"}), ("avx512", {"avx512f", "avx512bw", "avx512vl", "avx512dq"}),
                       ("avx2", {"avx2", "fma"}), ("sve", {"sve"}), ("neon", {"asimd"})):
        if needs <= flags:
            return f"{machine}-{isa}"
    return machine


def torch_cuda() -> str:
    """The CUDA version torch was built with (``torch.version.cuda``), from its version.py, without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return "none"
    version_py = Path(spec.origin).parent / "version.py"
    text = version_py.read_text() if version_py.is_file() else ""
    match = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return match.group(1) if match else "none"


def describe(lazy: Any) -> dict[str, Any]:
    from .. import __version__

    loaded = plugins()
    project = lazy.get()
    return {
        "qeffbuild": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "versions": {d: dist_version(d) for d in dict.fromkeys([
            *VERSIONED, *(lib for t in loaded.tasks.values() for lib in t.libraries),
            *(lib for b in loaded.backends.values() for lib in b.toolchain)])},
        "cuda": cuda_unavailable(),
        "gpu": gpu_facts(),
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
        "broken_plugins": loaded.broken,
        "manifests": [str(p) for p in project.manifest_paths],
        "out_dir": str(project.out_dir),
        "cache_dir": str(project.cache_dir),
    }
