"""Small torch helpers shared by worker-side steps and sessions (imported only where they run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DTYPES = ("float32", "float16", "bfloat16")


def torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def torch_device(device: str) -> str:
    """An explicit device index: exported programs record ``cuda:0`` for tensors made on ``cuda``."""
    return "cuda:0" if device == "cuda" else device


def example_inputs(shapes: dict[str, list[int]], dtypes: dict[str, str], device: str = "cpu") -> dict[str, Any]:
    """Deterministic example tensors of the given shapes (ids are small, masks are ones)."""
    import torch

    out: dict[str, Any] = {}
    for name in list(dtypes) + [n for n in shapes if n not in dtypes]:  # the graph's input order
        shape = shapes[name]
        dt = getattr(torch, dtypes.get(name, "int64"))
        if dt.is_floating_point:
            gen = torch.Generator().manual_seed(0)
            out[name] = torch.randn(*shape, generator=gen).to(dt)
        elif "mask" in name:
            out[name] = torch.ones(*shape, dtype=dt)
        else:
            out[name] = (torch.arange(int(torch.tensor(shape).prod())) % 100 + 1).reshape(shape).to(dt)
        out[name] = out[name].to(device)
    return out


def quiet_warnings() -> None:
    """Silence the export toolchain's chatter; real problems still raise."""
    import logging
    import os
    import sys
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("torch.onnx", "torch._dynamo", "torch._inductor", "torch.export", "onnxscript", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Read by transformers when it is imported; set directly when it already is.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def load_program(path: Path) -> Any:
    """A saved torch.export program."""
    import torch

    return torch.export.load(path)
