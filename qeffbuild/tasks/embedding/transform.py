"""The embedding transform (worker side): the model with its pooling head as one dynamic-shape program."""

from __future__ import annotations

import json
from typing import Any

from ...core.steps import StepContext
from ...pipeline.torchutil import quiet_warnings, save_program, torch_device, torch_dtype


def run(ctx: StepContext) -> None:
    quiet_warnings()
    import torch
    from torch.export import Dim
    from transformers import AutoModel

    from .pooling import make_pooled

    p = ctx.params
    device = torch_device(p.get("device", "cpu"))
    model = AutoModel.from_pretrained(ctx.inputs["model"] / "model", dtype=torch_dtype(p["dtype"])).eval().to(device)
    wrapped = make_pooled(model, p["pooling"], p["normalize"])
    batch: Any = Dim("batch", min=1, max=4096)
    seq: Any = Dim("seq", min=1, max=int(p["max_seq_len"]))
    if device.startswith("cuda"):
        # SDPA's CUDA kernels pad the sequence to a multiple of 8, a guard export cannot prove for every
        # length in a named range; AUTO lets export keep it as a run-time check of the program.
        batch = seq = Dim.AUTO
    example = {name: torch.ones(2, 8, dtype=torch.int64, device=device) for name in ("input_ids", "attention_mask")}
    with torch.no_grad():
        program = torch.export.export(
            wrapped,
            (),
            example,
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
            strict=False,
        )
    save_program(program, ctx.out / "program.pt2")
    io = {"inputs": {"input_ids": "int64", "attention_mask": "int64"}, "outputs": ["embeddings"], "dtype": p["dtype"]}
    (ctx.out / "io.json").write_text(json.dumps(io, indent=1))
    print(f"exported {type(model).__name__} with pooling={p['pooling']} normalize={p['normalize']} ({p['dtype']})")
