"""The `aoti` backend: a torch AOTInductor package (.pt2) compiled for fixed shapes."""

from __future__ import annotations

import json

from .steps import StepContext
from .torchutil import example_inputs


def compile(ctx: StepContext) -> None:
    import torch

    p = ctx.params
    src = ctx.inputs["program"]
    io = json.loads((src / "io.json").read_text())
    program = torch.export.load(src / "program.pt2")
    device = p["device"]
    if device != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    shapes = p.get("shapes") or io["shapes"]
    example = example_inputs(shapes, io["inputs"], device)
    with torch.no_grad():
        if io.get("call") == "positional":
            static = torch.export.export(program.module(), tuple(example.values()), strict=False)
        else:
            static = torch.export.export(program.module(), (), example, strict=False)
        path = torch._inductor.aoti_compile_and_package(static, package_path=str(ctx.out / "model.pt2"))
    print(f"AOTInductor package for {device}, shapes {shapes}: {path}")
