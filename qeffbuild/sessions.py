"""Runtime sessions: open a built artifact on a device and run named numpy inputs.

Every session takes ``{name: np.ndarray}`` and returns the list of outputs as float32
numpy arrays, whatever the artifact's own dtype, so the task drivers are runtime-agnostic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Session(Protocol):
    def run(self, feeds: dict[str, Any]) -> list[Any]: ...


def _to_numpy(values: Any) -> list[Any]:
    import torch

    if isinstance(values, torch.Tensor):
        values = [values]
    elif isinstance(values, dict):
        values = list(values.values())
    return [v.detach().to("cpu", torch.float32).numpy() if v.is_floating_point() else v.detach().cpu().numpy()
            for v in values]


class TorchSession:
    """A torch callable (the eager reference, or an exported program's module)."""

    def __init__(self, fn: Any, device: str = "cpu") -> None:
        self.fn = fn
        self.device = device

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        import torch

        with torch.no_grad():
            tensors = {k: torch.from_numpy(v).to(self.device) for k, v in feeds.items()}
            return _to_numpy(self.fn(**tensors))


class OrtSession:
    def __init__(self, path: Path, device: str = "cpu") -> None:
        import onnxruntime as ort

        from .compile_ort import PROVIDERS

        so = ort.SessionOptions()
        so.intra_op_num_threads = 0
        # The artifact is already optimized offline; do not re-optimize at load.
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.sess = ort.InferenceSession(str(path), so, providers=[PROVIDERS[device]])
        self.names = [i.name for i in self.sess.get_inputs()]

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        import numpy as np

        outs = self.sess.run(None, {k: feeds[k] for k in self.names if k in feeds})
        return [o.astype(np.float32) if o.dtype.kind == "f" else o for o in outs]


class AotiSession:
    def __init__(self, path: Path, device: str = "cpu") -> None:
        import torch

        self.runner = torch._inductor.aoti_load_package(str(path))
        self.device = device

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        import torch

        with torch.no_grad():
            tensors = {k: torch.from_numpy(v).to(self.device) for k, v in feeds.items()}
            return _to_numpy(self.runner(**tensors))


def open_program(folder: Path, device: str = "cpu") -> TorchSession:
    import torch

    program = torch.export.load(folder / "program.pt2")
    if device != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    return TorchSession(program.module(), device)


def open_compiled(backend: str, folder: Path, device: str = "cpu") -> Session:
    if backend == "ort":
        return OrtSession(folder / "model.onnx", device)
    if backend == "aoti":
        return AotiSession(folder / "model.pt2", device)
    from .errors import BackendUnavailable

    raise BackendUnavailable(f"no runtime session for backend {backend!r}")
