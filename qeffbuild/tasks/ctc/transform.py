"""The CTC transform (worker side): the model's own forward for one audio length as a torch.export program.

``(input_values [batch, samples] [, attention_mask [batch, samples]]) → logits [batch, frames, vocab]``. The
attention mask is an input only where the model's feature extractor makes one (``return_attention_mask``:
layer-norm feature encoders); group-norm models (wav2vec2-base) read zero-padded audio without one, as
transformers' own pipeline feeds them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...core.steps import StepContext
from ...pipeline.torchutil import quiet_warnings, save_program, torch_device, torch_dtype


def load_model(folder: Path, dtype: Any = None) -> Any:
    import transformers

    kwargs = {"dtype": dtype} if dtype is not None else {}
    return transformers.AutoModelForCTC.from_pretrained(folder, **kwargs).eval()


def uses_mask(folder: Path) -> bool:
    """Whether the model's feature extractor makes an attention mask (its saved config says)."""
    from transformers import AutoFeatureExtractor

    return bool(getattr(AutoFeatureExtractor.from_pretrained(folder), "return_attention_mask", False))


def logits_module(model: Any, with_mask: bool) -> Any:
    import torch

    class CTCLogits(torch.nn.Module):
        """Audio → per-frame logits: the model's own forward, nothing of it copied."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_values: torch.Tensor, *mask: torch.Tensor) -> torch.Tensor:
            out = self.model(input_values, attention_mask=mask[0] if with_mask else None)
            logits: torch.Tensor = out.logits
            return logits

    return CTCLogits().eval()


def run(ctx: StepContext) -> None:
    quiet_warnings()
    import torch

    p = ctx.params
    dtype, device = torch_dtype(p["dtype"]), torch_device(p.get("device", "cpu"))
    folder = ctx.inputs["model"] / "model"
    model = load_model(folder, dtype).to(device)
    with_mask = uses_mask(folder)
    b, samples = int(p["batch_size"]), int(p["samples"])
    gen = torch.Generator().manual_seed(0)
    example = [(torch.randn(b, samples, generator=gen) * 0.1).to(device=device, dtype=dtype)]
    if with_mask:
        example.append(torch.ones(b, samples, dtype=torch.long, device=device))
    with torch.no_grad():
        program = torch.export.export(logits_module(model, with_mask), tuple(example), strict=False)
        frames = int(model(*example[:1], attention_mask=example[1] if with_mask else None).logits.shape[1])
    save_program(program, ctx.out / "program.pt2")
    inputs = {"input_values": p["dtype"], **({"attention_mask": "int64"} if with_mask else {})}
    io = {"inputs": inputs, "outputs": ["logits"], "dtype": p["dtype"], "call": "positional",
          "shapes": {"input_values": [b, samples], **({"attention_mask": [b, samples]} if with_mask else {})},
          "samples": samples, "frames": frames, "vocab_size": int(model.config.vocab_size)}
    (ctx.out / "io.json").write_text(json.dumps(io, indent=1))
    print(f"exported {type(model).__name__} ({p['dtype']}): batch {b}, {samples} samples → {frames} frames"
          f"{', with an attention mask' if with_mask else ''}")
