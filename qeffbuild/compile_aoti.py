"""The `aoti` backend: a torch AOTInductor package (.pt2) compiled for fixed shapes."""

from __future__ import annotations

import json

from .steps import StepContext
from .torchutil import example_inputs, torch_device


def compile(ctx: StepContext) -> None:
    import torch

    p = ctx.params
    src = ctx.inputs["program"]
    io = json.loads((src / "io.json").read_text())
    program = torch.export.load(src / "program.pt2")
    device = p["device"]  # the program was exported on this device by its transform step
    shapes = p.get("shapes") or io["shapes"]
    example = example_inputs(shapes, io["inputs"], torch_device(device))
    with torch.no_grad():
        if io.get("call") == "positional":
            static = torch.export.export(program.module(), tuple(example.values()), strict=False)
        else:
            static = torch.export.export(program.module(), (), example, strict=False)
        path = torch._inductor.aoti_compile_and_package(static, package_path=str(ctx.out / "model.pt2"))
    print(f"AOTInductor package for {device}, shapes {shapes}: {path}")
