"""The compile step (worker side): run the backend named in the params, then record the artifact's io."""

from __future__ import annotations

import json
import shutil

from ..core.plugins import load_attr, plugins
from ..core.steps import StepContext
from .torchutil import quiet_warnings


def run(ctx: StepContext) -> None:
    backend = plugins().backends.get(ctx.params["backend"])
    if backend.consumes == "program":
        quiet_warnings()
    load_attr(backend.compile)(ctx)
    upstream = ctx.inputs.get("onnx") or ctx.inputs["program"]
    io = json.loads((upstream / "io.json").read_text())
    io["shapes"] = ctx.params.get("shapes") or io.get("shapes")
    io["backend"] = backend.name
    io["device"] = ctx.params.get("device")  # None: the artifact runs on its own hardware (a QPC on a card)
    (ctx.out / "io.json").write_text(json.dumps(io, indent=1))
    shutil.copy2(upstream / "io.json", ctx.out / "source-io.json")
