"""Runtime sessions: open a built artifact on a device and run named numpy inputs.

Every session takes ``{name: np.ndarray}`` and returns the list of outputs as float32
numpy arrays, whatever the artifact's own dtype, so the task drivers are runtime-agnostic.
Each artifact folder carries an ``io.json`` (input names and dtypes, output names, how the
graph is called); sessions cast float feeds to the artifact's dtype.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol


class Session(Protocol):
    def run(self, feeds: dict[str, Any]) -> list[Any]: ...


def read_io(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "io.json").read_text())
    return data


def _to_numpy(values: Any) -> list[Any]:
    import torch

    if isinstance(values, torch.Tensor):
        values = [values]
    elif isinstance(values, dict):
        values = list(values.values())
    return [v.detach().to("cpu", torch.float32).numpy() if v.is_floating_point() else v.detach().cpu().numpy()
            for v in values]


def _cast(feeds: dict[str, Any], io: dict[str, Any]) -> dict[str, Any]:
    """Float inputs in the artifact's dtype (bfloat16 goes through torch: numpy has none)."""
    out = {}
    for name, dtype in io["inputs"].items():
        value = feeds[name]
        if dtype in ("float16", "float32") and value.dtype.kind == "f" and value.dtype.name != dtype:
            value = value.astype(dtype)
        out[name] = value
    return out


class _TorchCalling:
    """Calls a torch callable the way its graph was exported (keywords or positions)."""

    def __init__(self, fn: Any, io: dict[str, Any], device: str) -> None:
        from .torchutil import torch_device

        self.fn = fn
        self.io = io
        self.device = torch_device(device)

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        import torch

        with torch.no_grad():
            tensors = {}
            for name, value in _cast(feeds, self.io).items():
                t = torch.from_numpy(value)
                if self.io["inputs"][name] == "bfloat16":
                    t = t.to(torch.bfloat16)
                tensors[name] = t.to(self.device)
            if self.io.get("call") == "positional":
                return _to_numpy(self.fn(*tensors.values()))
            return _to_numpy(self.fn(**tensors))


class TorchSession(_TorchCalling):
    """A torch callable: the eager reference, or an exported program's module."""

    def __init__(self, fn: Any, io: dict[str, Any] | None = None, device: str = "cpu") -> None:
        io = io or {"inputs": {"input_ids": "int64", "attention_mask": "int64"}}
        super().__init__(fn, io, device)


class AotiSession(_TorchCalling):
    def __init__(self, folder: Path, device: str = "cpu") -> None:
        import torch

        super().__init__(torch._inductor.aoti_load_package(str(folder / "model.pt2")), read_io(folder), device)


class OrtSession:
    def __init__(self, folder: Path, device: str = "cpu") -> None:
        import onnxruntime as ort

        from .compile_ort import PROVIDERS

        self.io = read_io(folder)
        so = ort.SessionOptions()
        # The artifact is already optimized offline; do not re-optimize at load.
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.sess = ort.InferenceSession(str(folder / "model.onnx"), so, providers=[PROVIDERS[device]])
        self.names = [i.name for i in self.sess.get_inputs()]

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        import numpy as np

        cast = _cast(feeds, self.io)
        outs = self.sess.run(None, {k: cast[k] for k in self.names})
        return [o.astype(np.float32) if o.dtype.kind == "f" else o for o in outs]


def open_program(folder: Path, device: str = "cpu") -> TorchSession:
    import torch

    program = torch.export.load(folder / "program.pt2")  # exported on ``device`` by its transform step
    return TorchSession(program.module(), read_io(folder), device)


def open_compiled(backend: str, folder: Path, device: str = "cpu") -> Session:
    if backend == "ort":
        return OrtSession(folder, device)
    if backend == "aoti":
        return AotiSession(folder, device)
    from .errors import BackendUnavailable

    raise BackendUnavailable(f"no runtime session for backend {backend!r}")
