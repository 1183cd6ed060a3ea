"""The export step (worker side): a torch.export program → ONNX via the dynamo exporter."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from ..core.steps import StepContext
from ..errors import BuildError
from .torchutil import example_inputs, load_program, quiet_warnings

EXTERNAL_DATA_BYTES = 2 * 1024**3  # protobuf's limit: larger weights go to an external data file


def run(ctx: StepContext) -> None:
    import torch

    quiet_warnings()
    src = ctx.inputs["program"]
    io = json.loads((src / "io.json").read_text())
    program = load_program(src / "program.pt2")
    weight_bytes = sum(t.numel() * t.element_size() for t in program.state_dict.values())
    external = weight_bytes > EXTERNAL_DATA_BYTES
    shapes = io.get("shapes") or {name: [2, 8] for name in io["inputs"]}  # dynamic programs: any small shape
    example = example_inputs(shapes, io["inputs"])
    path = ctx.out / "model.onnx"
    positional = io.get("call") == "positional"
    torch.onnx.export(
        program, tuple(example.values()) if positional else (), str(path), kwargs=None if positional else example,
        dynamo=True, opset_version=int(ctx.params["opset"]),
        input_names=list(io["inputs"]), output_names=io["outputs"], external_data=external, verbose=False,
    )
    _check_in_child(str(path))
    shutil.copy2(src / "io.json", ctx.out / "io.json")
    print(f"exported ONNX opset {ctx.params['opset']} ({weight_bytes / 1e6:.1f} MB of weights, external={external})")


def _check_in_child(path: str) -> None:
    """onnx.checker in a child process: a checker crash or memory blow-up fails the step, not the worker."""
    code = "import onnx, sys; onnx.checker.check_model(sys.argv[1], full_check=True)"
    proc = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"onnx.checker rejected the exported model: {proc.stderr.strip()[-2000:]}")
