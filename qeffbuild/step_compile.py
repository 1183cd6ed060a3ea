"""The compile step (worker side): dispatch to the backend named in the params."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable

from .backends import BACKENDS
from .steps import StepContext
from .torchutil import quiet_warnings


def run(ctx: StepContext) -> None:
    quiet_warnings()
    backend = BACKENDS.get(ctx.params["backend"])
    module, _, func = backend.runner.partition(":")
    import importlib

    compile_fn: Callable[[StepContext], None] = getattr(importlib.import_module(module), func)
    compile_fn(ctx)
    upstream = ctx.inputs.get("onnx") or ctx.inputs["program"]
    io = json.loads((upstream / "io.json").read_text())
    io["shapes"] = ctx.params.get("shapes") or io["shapes"]
    io["backend"] = backend.name
    io["device"] = ctx.params["device"]
    (ctx.out / "io.json").write_text(json.dumps(io, indent=1))
    shutil.copy2(upstream / "io.json", ctx.out / "source-io.json")
