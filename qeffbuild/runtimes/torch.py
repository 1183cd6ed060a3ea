"""Torch sessions: an exported program (or any torch callable) run on named numpy inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .io import cast_feeds, read_io


def to_numpy(values: Any) -> list[Any]:
    """Outputs as numpy arrays that own their memory: a compiled runtime (AOTInductor) may reuse its output
    buffers on the next call, and a view of one would change under the caller (a decoder's retained state)."""
    import torch

    return [(v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()).numpy().copy()
            for v in values]


class TorchCalling:
    """Calls a torch callable the way its graph was exported (keywords or positions)."""

    def __init__(self, fn: Any, io: dict[str, Any], device: str) -> None:
        from ..pipeline.torchutil import torch_device

        self.fn = fn
        self.io = io
        self.device = torch_device(device)

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        import torch

        tensors = {}
        for name, value in cast_feeds(feeds, self.io).items():
            t = torch.from_numpy(value)
            if self.io["inputs"][name] == "bfloat16":
                t = t.to(torch.bfloat16)
            tensors[name] = t.to(self.device)
        return to_numpy(self.run_tensors(tensors))

    def run_tensors(self, feeds: dict[str, Any]) -> list[Any]:
        """Torch tensors in (on this session's device, in the artifact's dtypes), torch tensors out, no copy:
        a device-resident decode loop keeps its state on the device. Outputs may be the callable's own
        buffers (AOTInductor, CUDA graphs), valid until its next call."""
        import torch

        with torch.no_grad():
            if self.io.get("call") == "positional":
                out = self.fn(*(feeds[name] for name in self.io["inputs"]))
            else:
                out = self.fn(**feeds)
        if isinstance(out, torch.Tensor):
            return [out]
        return list(out.values()) if isinstance(out, dict) else list(out)


class TorchSession(TorchCalling):
    """A torch callable: the eager reference, or an exported program's module."""

    def __init__(self, fn: Any, io: dict[str, Any] | None = None, device: str = "cpu") -> None:
        super().__init__(fn, io or {"inputs": {"input_ids": "int64", "attention_mask": "int64"}}, device)


def open_program(folder: Path, device: str = "cpu") -> TorchSession:
    from ..pipeline.torchutil import load_program

    program = load_program(folder / "program.pt2")  # exported on ``device`` by its transform step
    return TorchSession(program.module(), read_io(folder), device)
