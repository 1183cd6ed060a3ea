"""The `aoti` backend: a torch AOTInductor package (.pt2) compiled for fixed shapes, and its session."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar

from ..core.environment import cpu_isa, cuda_unavailable
from ..core.plugins import Backend, Runtime
from ..core.steps import StepContext


class AotiBackend(Backend):
    name = "aoti"
    description = "torch AOTInductor package (.pt2), fixed shapes"
    consumes = "program"
    devices = ("cpu", "cuda")
    refused_dtypes: ClassVar[dict[str, str]] = {
        "int8": "int8 here is ONNX Runtime's dynamic quantization; torch's CPU int8 paths (torchao, PT2E) are not "
                "built into AOTInductor packages by qeffbuild yet: use `ort` for int8",
    }
    toolchain = ("torch",)
    # 2: CPU packages frozen (weights folded in and prepacked); the CPU's vector ISA in the key. 3: not frozen where
    # every product has one row (freezing_for)
    version = 3
    compile = "qeffbuild.backends.aoti:compile_model"
    session = "qeffbuild.backends.aoti:AotiSession"
    runtimes = (Runtime("aoti", "the AOTInductor package", "aoti"),)

    def unavailable(self, device: str) -> str | None:
        return super().unavailable(device) or (cuda_unavailable() if device == "cuda" else None)

    def tool_versions(self, device: str) -> dict[str, str]:
        # a CPU package is C++ compiled for this CPU's vector ISA, with weights prepacked for it: a machine with
        # another ISA builds its own
        return {"cpu_isa": cpu_isa()} if device == "cpu" else {}


# Freezing folds the weights into the package as constants and prepacks them for oneDNN's matmuls. On the real
# all-MiniLM-L6-v2 (b4 × seq 16, 2 cores): 19.8 ms a call unfrozen, 11.4 frozen, eager 26.1; outputs within
# 2e-7 of eager. But where every product has one row (a batch-1 decoder step) the prepacked products are the slower
# ones, and a weight read both as a table and as a product (a tied embedding and LM head) is kept twice. A decoder
# step, 2 cores, median of 12 (the exported program run eagerly beside it):
#   whisper-large-v3 dims b1 (3.2 GB):  frozen 167.8 ms, not frozen 146.3, eager 159.8; package 3,479 against 3,213 MB
#   whisper-tiny dims b1:                frozen 5.85 ms, not frozen 5.36, eager 7.89; package 195 against 116 MB
#   whisper-tiny dims b4:                frozen 11.37 ms, not frozen 12.26, eager 13.32
# CPU only: the CUDA packages are not changed (and segfault on load on our GPU host anyway).
PRODUCTS = ("aten::linear", "aten::mm", "aten::addmm", "aten::matmul")


def freezing_for(program: Any) -> bool:
    """Whether a CPU package of ``program`` is frozen: unless its every product has one row."""
    return max(product_rows(program), default=0) > 1


def product_rows(program: Any) -> list[int]:
    """The rows (all but the last dimension of the left operand) of each product ``program``'s graph computes."""
    from ..pipeline.torchutil import op_name

    rows = []
    for node in program.graph.nodes:
        op = op_name(node) if node.op == "call_function" else ""
        if op not in PRODUCTS:
            continue
        left = node.args[1] if op == "aten::addmm" else node.args[0]
        shape = getattr(getattr(left, "meta", {}).get("val"), "shape", None)
        if shape is not None:
            rows.append(int(math.prod(shape[:-1])))
    return rows


def compile_model(ctx: StepContext) -> None:
    import torch

    from ..pipeline.torchutil import example_inputs, load_program, share_precompiled_headers, torch_device

    share_precompiled_headers()
    p = ctx.params
    src = ctx.inputs["program"]
    io = json.loads((src / "io.json").read_text())
    program = load_program(src / "program.pt2")
    device = p["device"]  # the program was exported on this device by its transform step
    shapes = p.get("shapes") or io["shapes"]
    example = example_inputs(shapes, io["inputs"], torch_device(device))
    with torch.no_grad():
        if io.get("call") == "positional":
            static = torch.export.export(program.module(), tuple(example.values()), strict=False)
        else:
            static = torch.export.export(program.module(), (), example, strict=False)
        configs = {"freezing": freezing_for(static)} if device == "cpu" else None
        path = torch._inductor.aoti_compile_and_package(static, package_path=str(ctx.out / "model.pt2"),
                                                        inductor_configs=configs)
    if device == "cuda":
        probe_load(Path(path))
    frozen = "" if configs is None else (", weights frozen and prepacked" if configs["freezing"] else
                                         ", not frozen (every product has one row)")
    print(f"AOTInductor package {path} for {device}, shapes {shapes}{frozen}")


def probe_load(package: Path) -> None:
    """Load a CUDA package in a child process before it is cached: with torch 2.11 and CUDA 13 on our GPU
    machine ``aoti_load_package`` segfaults on every CUDA package (a two-layer MLP too), which would
    otherwise surface later as a validation or a user's process dying."""
    import signal
    import subprocess
    import sys

    from ..errors import BackendUnavailable

    code = "import sys, torch; torch._inductor.aoti_load_package(sys.argv[1]); print('loaded')"
    done = subprocess.run([sys.executable, "-c", code, str(package)], capture_output=True, text=True, timeout=600)
    if done.returncode == 0 and "loaded" in done.stdout:
        return
    how = (f"died with {signal.Signals(-done.returncode).name}" if done.returncode < 0
           else f"exited {done.returncode}: {done.stderr.strip()[-500:]}")
    raise BackendUnavailable(
        f"an AOTInductor CUDA package cannot be loaded on this machine (the load probe {how}; torch "
        f"{torch_version()}); compile CUDA specializations with `inductor` instead: compile = [\"inductor\"]")


def torch_version() -> str:
    import torch

    return f"{torch.__version__}, CUDA {torch.version.cuda}"


class AotiSession:
    """An AOTInductor package loaded in this process."""

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        import torch

        from ..runtimes.io import read_io
        from ..runtimes.torch import TorchCalling

        self._calling = TorchCalling(torch._inductor.aoti_load_package(str(folder / "model.pt2")), read_io(folder),
                                     device)
        self.io = self._calling.io
        self.device = self._calling.device

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        return self._calling.run(feeds)

    def run_tensors(self, feeds: dict[str, Any]) -> list[Any]:
        return self._calling.run_tensors(feeds)
