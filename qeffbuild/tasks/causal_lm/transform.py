"""The causal-LM transform (worker side): a prefill or decode graph as a torch.export program.

Both graphs are the model's own forward (every layer, its rotary or absolute positions, its LM head) over a
``Cache`` of the decoding core's :class:`~qeffbuild.decoding.cache.RetainedLayer` s built from the graph's
inputs: ``(input_ids [batch, seq], position, past_*) → (logits [batch, seq, vocab], present_*)``. A prefill
(``seq`` = its length) starts at position 0 and writes slots 0..seq-1; a decode step (``seq`` = 1) writes the
slot at ``position``. Nothing is copied from transformers' layer code.
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
    return transformers.AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()


def past_names(n_layers: int) -> list[str]:
    return [f"past_{kv}_{i}" for i in range(n_layers) for kv in ("key", "value")]


def present_names(n_layers: int) -> list[str]:
    return [f"present_{kv}_{i}" for i in range(n_layers) for kv in ("key", "value")]


def cache_shape(model: Any) -> tuple[int, int, int]:
    """(layers, key/value heads, head size), learnt by running the model once on two tokens."""
    import torch
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache()
    with torch.no_grad():
        model(input_ids=torch.ones(1, 2, dtype=torch.long, device=model.device), past_key_values=cache, use_cache=True)
    first: Any = cache.layers[0]
    return len(cache.layers), int(first.keys.shape[1]), int(first.keys.shape[-1])


def step_module(model: Any, n_layers: int) -> Any:
    import torch
    from transformers.cache_utils import Cache

    from ...decoding.cache import RetainedLayer

    class LMStep(torch.nn.Module):
        """(tokens, position, past keys/values) → (logits, updated past): the model's own forward."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, position: torch.Tensor, *past: torch.Tensor) -> tuple[Any, ...]:
            cache = Cache(layers=[RetainedLayer(past[2 * i], past[2 * i + 1], position) for i in range(n_layers)])
            seq = input_ids.shape[1]
            positions = (position + torch.arange(seq, device=input_ids.device)).unsqueeze(0)
            out = self.model(input_ids=input_ids, position_ids=positions.expand(input_ids.shape[0], -1),
                             past_key_values=cache, use_cache=True)
            present: list[Any] = []
            layers: list[Any] = list(cache.layers)
            for layer in layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    return LMStep().eval()


def run(ctx: StepContext) -> None:
    quiet_warnings()
    import torch

    p = ctx.params
    dtype, device = torch_dtype(p["dtype"]), torch_device(p.get("device", "cpu"))
    model = load_model(ctx.inputs["model"] / "model", dtype).to(device)
    n, heads, head_dim = cache_shape(model)
    b, seq, ctx_len = int(p["batch_size"]), int(p["seq_len"]), int(p["ctx_len"])
    past = [b, heads, ctx_len, head_dim]
    example = {"input_ids": torch.zeros(b, seq, dtype=torch.long, device=device),
               "position": torch.tensor(0, dtype=torch.long, device=device),
               **{k: torch.zeros(*past, dtype=dtype, device=device) for k in past_names(n)}}
    dynamic = None
    if p["graph"] == "any":  # one program for every prompt length and the decode step (``seq_len``: the most)
        tokens = torch.export.Dim("seq_len", min=1, max=seq)
        dynamic = ({1: tokens}, None, tuple(None for _ in past_names(n)))
    with torch.no_grad():
        program = torch.export.export(step_module(model, n), tuple(example.values()), dynamic_shapes=dynamic,
                                      strict=False)
    save_program(program, ctx.out / "program.pt2")
    io = {"inputs": {"input_ids": "int64", "position": "int64", **{k: p["dtype"] for k in past_names(n)}},
          "outputs": ["logits", *present_names(n)], "dtype": p["dtype"], "call": "positional", "graph": p["graph"],
          "shapes": {"input_ids": [b, seq], "position": [], **{k: past for k in past_names(n)}},
          "layers": {"n_layers": n, "heads": heads, "head_dim": head_dim}, "seq_len": seq, "ctx_len": ctx_len}
    (ctx.out / "io.json").write_text(json.dumps(io, indent=1))
    print(f"exported the {p['graph']} graph ({p['dtype']}): batch {b}, {seq} tokens, {ctx_len} cache slots, "
          f"{n} layers × {heads} heads × {head_dim}")
