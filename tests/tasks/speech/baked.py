"""A decoder step whose cache is held in module buffers: exported, it bakes the cache into constants.

This is the bug the retained-state rewrite prevents. It passes a one-step check and must fail the
validation on every utterance of every family.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any


def baked_decoder(model_dir: Path, good: Path, dest: Path) -> Path:
    """A copy of the decoder program folder ``good`` whose past keys/values come from buffers."""
    import torch

    from qeffbuild.tasks.speech.retained import Adapter, DecoderStep
    from qeffbuild.tasks.speech.transform import load_model

    io = json.loads((good / "io.json").read_text())
    model = load_model(model_dir, torch.float32)
    info = io["layers"]
    step = DecoderStep(Adapter(model, io["arch"]), info["n_layers"], info["hidden_size"])
    past = [n for n in io["inputs"] if n.startswith("past_")]

    class BakedCache(torch.nn.Module):
        """Takes the past as inputs but uses module buffers instead: exported, they are constants."""

        def __init__(self) -> None:
            super().__init__()
            self.step = step
            for i, name in enumerate(past):
                self.register_buffer(f"cache{i}", torch.zeros(io["shapes"][name]))

        def forward(self, input_ids: Any, position: Any, *state: Any) -> Any:
            frozen = [getattr(self, f"cache{i}") for i in range(len(past))]
            return self.step(input_ids, position, *frozen, *state[len(past):])

    example = tuple(torch.zeros(io["shapes"][n], dtype=getattr(torch, t)) if n != "input_ids" else
                    torch.full(io["shapes"][n], 1, dtype=torch.long) for n, t in io["inputs"].items())
    dest.mkdir(parents=True)
    shutil.copy(good / "io.json", dest / "io.json")
    torch.export.save(torch.export.export(BakedCache().eval(), example, strict=False), dest / "program.pt2")
    return dest
