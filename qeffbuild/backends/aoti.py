"""The `aoti` backend: a torch AOTInductor package (.pt2) compiled for fixed shapes, and its session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core.environment import cuda_unavailable
from ..core.plugins import Backend, Runtime
from ..core.steps import StepContext


class AotiBackend(Backend):
    name = "aoti"
    description = "torch AOTInductor package (.pt2), fixed shapes"
    consumes = "program"
    devices = ("cpu", "cuda")
    toolchain = ("torch",)
    version = 1
    compile = "qeffbuild.backends.aoti:compile_model"
    session = "qeffbuild.backends.aoti:AotiSession"
    runtimes = (Runtime("aoti", "the AOTInductor package", "aoti"),)

    def unavailable(self, device: str) -> str | None:
        why = super().unavailable(device)
        if why or device != "cuda":
            return why
        return cuda_unavailable()


def compile_model(ctx: StepContext) -> None:
    import torch

    from ..pipeline.torchutil import example_inputs, load_program, torch_device

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
        path = torch._inductor.aoti_compile_and_package(static, package_path=str(ctx.out / "model.pt2"))
    print(f"AOTInductor package {path} for {device}, shapes {shapes}")


class AotiSession:
    """An AOTInductor package loaded in this process."""

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        import torch

        from ..runtimes.io import read_io
        from ..runtimes.torch import TorchCalling

        self._calling = TorchCalling(torch._inductor.aoti_load_package(str(folder / "model.pt2")), read_io(folder),
                                     device)
        self.io = self._calling.io

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        return self._calling.run(feeds)
