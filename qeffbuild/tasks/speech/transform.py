"""The speech transform (worker side): Whisper → encoder and decoder-step torch.export programs."""

from __future__ import annotations

import json
from typing import Any

from ...core.steps import StepContext
from ...pipeline.torchutil import example_inputs, quiet_warnings, torch_device, torch_dtype
from .model import build_graphs, cache_names, present_names


def run(ctx: StepContext) -> None:
    quiet_warnings()
    import torch
    from transformers import AutoModelForSpeechSeq2Seq

    p = ctx.params
    dtype = torch_dtype(p["dtype"])
    device = torch_device(p.get("device", "cpu"))
    model = AutoModelForSpeechSeq2Seq.from_pretrained(ctx.inputs["model"] / "model", dtype=dtype).eval().to(device)
    cfg = model.config
    b, enc_ctx = int(p["batch_size"]), int(p["encoder_ctx_len"])
    ctx_len = int(p.get("ctx_len") or 1)
    encoder, decoder = build_graphs(model, ctx_len)
    heads = cfg.decoder_attention_heads
    if p["graph"] == "encoder":
        shapes: dict[str, list[int]] = {"input_features": [b, cfg.num_mel_bins, 2 * enc_ctx]}
        inputs = {"input_features": p["dtype"]}
        outputs = ["encoder_hidden_states"]
        module: Any = encoder
    else:
        cache = [b, heads, ctx_len, cfg.d_model // heads]
        names = cache_names(cfg.decoder_layers)
        shapes = {"input_ids": [b, 1], "position_ids": [b, 1], "encoder_hidden_states": [b, enc_ctx, cfg.d_model],
                  **{n: cache for n in names}}
        inputs = {"input_ids": "int64", "position_ids": "int64", "encoder_hidden_states": p["dtype"],
                  **{n: p["dtype"] for n in names}}
        outputs = ["logits", *present_names(cfg.decoder_layers)]
        module = decoder
    example = example_inputs(shapes, inputs, device)
    if p["graph"] == "decoder":
        example["position_ids"].zero_()
    with torch.no_grad():
        program = torch.export.export(module, tuple(example.values()), strict=False)
    torch.export.save(program, ctx.out / "program.pt2")
    io = {"inputs": inputs, "outputs": outputs, "shapes": shapes, "dtype": p["dtype"], "call": "positional",
          "graph": p["graph"]}
    (ctx.out / "io.json").write_text(json.dumps(io, indent=1))
    print(f"exported Whisper {p['graph']} ({p['dtype']}), shapes {shapes}")
