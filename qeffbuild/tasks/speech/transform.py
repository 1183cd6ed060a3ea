"""The speech transform (worker side): the encoder side (per audio length) or the decoder step as a
torch.export program, through the generic retained-state rewrite (``retained.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...core.steps import StepContext
from ...decoding.fuse import fuse_projections
from ...pipeline.torchutil import quiet_warnings, save_program, torch_device, torch_dtype
from .families import of_model_type
from .retained import Adapter, DecoderStep, EncoderSide, cross_names, past_names, present_names, probe

PROBE_SAMPLES = 16000  # the decoder's shapes do not depend on the audio length: probe with one second


def load_model(folder: Path, dtype: Any = None) -> Any:
    """A saved speech model, whichever of the architectures it is."""
    import transformers

    config = json.loads((folder / "config.json").read_text())
    cls = getattr(transformers, of_model_type(config.get("model_type")).auto_class)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    return cls.from_pretrained(folder, **kwargs).eval()


def encoder_example(adapter: Adapter, batch: int, samples: int, device: str, dtype: Any) -> dict[str, Any]:
    """Inputs of the encoder side for ``samples`` samples of audio, named as the graph names them."""
    import torch

    gen = torch.Generator().manual_seed(0)
    example = adapter.arch.example_inputs(adapter.model.config, batch, samples, gen)
    return {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in example.items()}


def run(ctx: StepContext) -> None:
    quiet_warnings()
    import torch

    p = ctx.params
    dtype, device = torch_dtype(p["dtype"]), torch_device(p.get("device", "cpu"))
    model = load_model(ctx.inputs["model"] / "model", dtype).to(device)
    adapter = Adapter(model, p["arch"])
    fused = fuse_projections(model, adapter.arch.self_attention)
    b, enc_len = int(p["batch_size"]), int(p["encoder_len"])
    samples = int(p.get("samples") or PROBE_SAMPLES)
    enc_inputs = encoder_example(adapter, b, samples, device, dtype)
    info = probe(adapter, list(enc_inputs.values()))
    n = info["n_layers"]
    cross = [b, info["cross_heads"], enc_len, info["cross_head_dim"]]
    mask_name = ["encoder_attention_mask"] if adapter.has_mask() else []
    if p["graph"] == "encoder":
        module: Any = EncoderSide(adapter, enc_len)
        example = enc_inputs
        inputs = {k: ("int64" if k == "attention_mask" else p["dtype"]) for k in example}
        outputs = [*cross_names(n), *mask_name]
        shapes = {k: list(v.shape) for k, v in example.items()}
    else:
        ctx_len = int(p["ctx_len"])
        module = DecoderStep(adapter, n, info["hidden_size"])
        past = [b, info["heads"], ctx_len, info["head_dim"]]
        shapes = {"input_ids": [b, 1], "position": [], **{k: past for k in past_names(n)},
                  **{k: cross for k in cross_names(n)}, **{k: [b, enc_len] for k in mask_name}}
        inputs = {"input_ids": "int64", "position": "int64",
                  **{k: p["dtype"] for k in past_names(n) + cross_names(n)}, **{k: "int64" for k in mask_name}}
        example = {
            "input_ids": torch.full((b, 1), adapter.start, dtype=torch.long, device=device),
            "position": torch.tensor(0, dtype=torch.long, device=device),
            **{k: torch.zeros(*past, dtype=dtype, device=device) for k in past_names(n)},
            **{k: torch.randn(*cross).to(device=device, dtype=dtype) for k in cross_names(n)},
            **{k: torch.ones(b, enc_len, dtype=torch.long, device=device) for k in mask_name},
        }
        outputs = ["logits", *present_names(n)]
    with torch.no_grad():
        program = torch.export.export(module.eval(), tuple(example.values()), strict=False)
    save_program(program, ctx.out / "program.pt2")
    io = {"inputs": inputs, "outputs": outputs, "shapes": shapes, "dtype": p["dtype"], "call": "positional",
          "graph": p["graph"], "layers": info, "arch": p["arch"],
          "samples": samples if p["graph"] == "encoder" else None}
    (ctx.out / "io.json").write_text(json.dumps(io, indent=1))
    print(f"exported the {p['arch']} {p['graph']} ({p['dtype']}), shapes {shapes}; "
          f"{fused} self-attentions' q/k/v fused into one matmul each")
