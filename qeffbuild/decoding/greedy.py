"""The greedy loop over a retained-state decoder step, on any runtime.

The decoder step graph takes ``input_ids`` [batch, 1], a scalar ``position``, the encoder side's fixed
inputs (cross-attention keys/values and mask) and the retained state (``past_*``, fixed ``ctx_len``), and
returns the logits and the state updated at ``position`` (``present_*``, fed back as ``past_*``). Every row
starts with its own prompt (rows of one batch have prompts of one length: they share ``position``); the
prompt is fed one token a step, then each step's processed logits choose the next token.

Without ``stop_at_eos`` EOS does not stop the loop: checks compare every step, so a cache that goes wrong
after the first step cannot pass. With it the loop ends once every row has emitted EOS and ``min_steps``
are done (a row's tokens after its EOS are the model's, kept for the token checks).

Sessions that take and return torch tensors (``run_tensors``) use the device loop (``device.py``), which
returns exactly what this loop returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .rules import LogitRules


@dataclass
class Decoded:
    tokens: Any  # [batch, steps] int64 (fewer steps when the loop stopped at EOS)
    finished: Any  # [batch] bool: the row emitted EOS within the steps


def decoder_inputs(decoder_io: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The decoder's fixed inputs (the encoder side's outputs, in order) and its retained-state inputs."""
    inputs = decoder_io["inputs"]
    fixed = [n for n in inputs if n.startswith("cross_") or n == "encoder_attention_mask"]
    return fixed, [n for n in inputs if n.startswith("past_")]


def greedy(decoder: Any, decoder_io: dict[str, Any], fixed: list[Any], prompts: Any, rules: LogitRules, steps: int,
           stop_at_eos: bool = False, min_steps: int = 0) -> Decoded:
    """Up to ``steps`` greedy tokens per row after ``prompts`` ([batch, prompt] token ids).

    ``fixed`` holds the encoder side's outputs, in the order of the decoder's fixed inputs."""
    import numpy as np

    if hasattr(decoder, "run_tensors"):
        from .device import greedy_on_device

        return greedy_on_device(decoder, decoder_io, fixed, prompts, rules, steps, stop_at_eos, min_steps)
    import torch

    prompts = np.asarray(prompts, dtype=np.int64)
    shapes = decoder_io["shapes"]
    b, lead = prompts.shape[0], prompts.shape[1] - 1
    fixed_names, past = decoder_inputs(decoder_io)
    state = {name: np.zeros(shapes[name], np.float32) for name in past}
    state.update({name: np.asarray(value) for name, value in zip(fixed_names, fixed, strict=True)})
    out = np.full((b, steps), rules.eos, np.int64)
    finished = np.zeros(b, bool)
    tok = prompts[:, :1].copy()
    rule_state = None
    for pos in range(lead + steps):
        res = decoder.run({"input_ids": tok, "position": np.array(pos, np.int64), **state})
        state.update(dict(zip(past, res[1:], strict=True)))
        i = pos - lead
        if i < 0:
            tok = prompts[:, pos + 1:pos + 2].copy()
            continue
        logits = torch.from_numpy(np.ascontiguousarray(res[0][:, -1, :]))
        if rule_state is None:
            rule_state = rules.state(b, logits.shape[-1], "cpu")
        chosen = rule_state.apply(logits, first=i == 0).argmax(-1)
        rule_state.advance(chosen, i)
        nxt = chosen.numpy()
        out[:, i] = nxt
        finished |= nxt == rules.eos
        tok = nxt[:, None].astype(np.int64)
        if stop_at_eos and finished.all() and i + 1 >= min_steps:
            out = out[:, : i + 1]
            break
    return Decoded(out, finished)
