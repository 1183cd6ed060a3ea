"""The `ort` backend: an ONNX Runtime offline-optimized model with fixed input shapes."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from .errors import BackendUnavailable
from .steps import StepContext

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def fix_shapes(model: object, shapes: dict[str, list[int]]) -> None:
    """Replace the symbolic dims of the graph inputs by the specialization's sizes."""
    graph = model.graph  # type: ignore[attr-defined]
    for inp in graph.input:
        if inp.name not in shapes:
            continue
        dims = inp.type.tensor_type.shape.dim
        want = shapes[inp.name]
        if len(dims) != len(want):
            raise ValueError(f"input {inp.name} has rank {len(dims)}, the specialization gives {want}")
        for dim, size in zip(dims, want, strict=True):
            dim.ClearField("dim_param")
            dim.dim_value = int(size)


def compile(ctx: StepContext) -> None:
    import onnx
    import onnxruntime as ort

    p = ctx.params
    provider = PROVIDERS[p["device"]]
    if provider not in ort.get_available_providers():
        raise BackendUnavailable(f"ONNX Runtime here has no {provider} (has {ort.get_available_providers()})")
    model = onnx.load(str(ctx.inputs["onnx"] / "model.onnx"))
    shapes = p.get("shapes") or json.loads((ctx.inputs["onnx"] / "io.json").read_text())["shapes"]
    fix_shapes(model, shapes)
    with tempfile.TemporaryDirectory() as tmp:
        fixed = Path(tmp) / "fixed.onnx"
        onnx.save(model, str(fixed))
        so = ort.SessionOptions()
        # EXTENDED, not ALL: ALL adds layout changes tied to this CPU, and the artifact may move.
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(ctx.out / "model.onnx")
        ort.InferenceSession(str(fixed), so, providers=[provider])
    print(f"ONNX Runtime {ort.__version__} optimized model for {provider}, shapes {shapes}")
