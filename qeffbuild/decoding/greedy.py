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

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .rules import LogitRules, best_tokens


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

    prompts = np.asarray(prompts, dtype=np.int64)
    shapes = decoder_io["shapes"]
    fixed_names, past = decoder_inputs(decoder_io)
    state = {name: np.zeros(shapes[name], np.float32) for name in past}
    state.update({name: np.asarray(value) for name, value in zip(fixed_names, fixed, strict=True)})
    logits = None
    for pos in range(prompts.shape[1]):  # the prompt, a token a step: the last step's logits choose the first token
        res = decoder.run({"input_ids": prompts[:, pos:pos + 1], "position": np.array(pos, np.int64), **state})
        state.update(dict(zip(past, res[1:], strict=True)))
        logits = res[0][:, -1, :]
    return continue_greedy(decoder, decoder_io, state, logits, prompts.shape[1], rules, steps, stop_at_eos, min_steps)


def continue_greedy(decoder: Any, decoder_io: dict[str, Any], state: dict[str, Any], logits: Any, position: int,
                    rules: LogitRules, steps: int, stop_at_eos: bool = False, min_steps: int = 0) -> Decoded:
    """Up to ``steps`` greedy tokens from ``logits`` ([batch, vocab]: the prompt's last, from a prefill or the
    prompt's steps) with the decoder's inputs ``state`` (retained and fixed) after ``position`` tokens."""
    with _torch_on_one_thread():
        return _continue(decoder, decoder_io, state, logits, position, rules, steps, stop_at_eos, min_steps)


@contextmanager
def _torch_on_one_thread() -> Iterator[None]:
    """The host loop's torch work (the logits rules and argmax of one step) is microseconds on one thread; on
    the default pool, torch's threads woke beside the runtime's own (ONNX Runtime's then spun between calls; none
    does now, `backends/ort.py`) and a whisper-tiny step took 8–14 ms instead of 4.3 on 2 cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _continue(decoder: Any, decoder_io: dict[str, Any], state: dict[str, Any], logits: Any, position: int,
              rules: LogitRules, steps: int, stop_at_eos: bool, min_steps: int) -> Decoded:
    import numpy as np
    import torch

    step = _Step(decoder, decoder_io, state)
    b = logits.shape[0]
    out = np.full((b, steps), rules.eos, np.int64)
    finished = np.zeros(b, bool)
    rule_state = rules.state(b, logits.shape[-1], "cpu")
    for i in range(steps):
        if i > 0:
            logits = step({"input_ids": out[:, i - 1:i], "position": np.array(position + i - 1, np.int64)})[:, -1, :]
        chosen = best_tokens(rule_state.apply(torch.from_numpy(np.ascontiguousarray(logits)), first=i == 0))
        rule_state.advance(chosen, i)
        out[:, i] = chosen.numpy()
        finished |= out[:, i] == rules.eos
        if stop_at_eos and finished.all() and i + 1 >= min_steps:
            return Decoded(out[:, : i + 1], finished)
    return Decoded(out, finished)


class _Step:
    """One decoder step over the loop's ``state`` (retained and fixed inputs), which it updates; returns the
    logits ([batch, 1, vocab]).

    Where the session can ``bind`` its inputs and outputs and its graph updates every past input in place
    (``in_place_state``: ONNX Runtime after the ``ort-fusions`` pass), the state is bound once as both the past
    inputs and the present outputs: a step writes its one slot, copies no state and allocates nothing, and the
    host only fills in the token and the position. At whisper-tiny's 448 slots and batch 8 the copy of the
    state was a fifth of the step. The loop owns ``state``'s arrays from here: the caller's past arrays may be
    written into. Any other session runs a step with ``run``."""

    def __init__(self, decoder: Any, decoder_io: dict[str, Any], state: dict[str, Any]) -> None:
        import numpy as np

        self.decoder, self.state = decoder, state
        self.past = decoder_inputs(decoder_io)[1]
        self.call: Any = None
        in_place: frozenset[str] = getattr(decoder, "in_place_state", frozenset())
        if not hasattr(decoder, "bind") or not self.past or not set(self.past) <= in_place:
            return
        dtypes = decoder.dtypes  # as the graph runs them (an int8 artifact's state is float32)
        for name in state:  # bound by pointer: writable C-contiguous arrays of the graph's dtypes, made once
            array = np.ascontiguousarray(state[name], dtype=dtypes[name])
            state[name] = array if array.flags.writeable else array.copy()
        b = state[self.past[0]].shape[0]
        self.ids, self.position = np.zeros((b, 1), np.int64), np.zeros((), np.int64)
        self.call = decoder.bind({**state, "input_ids": self.ids, "position": self.position},
                                 {"present_" + n[len("past_"):]: state[n] for n in self.past})

    def __call__(self, feeds: dict[str, Any]) -> Any:
        import numpy as np

        if self.call is None:
            res = self.decoder.run({**feeds, **self.state})
            self.state.update(dict(zip(self.past, res[1:], strict=True)))
            return res[0]
        self.ids[...] = feeds["input_ids"]
        self.position[...] = feeds["position"]
        logits = self.call()[0]
        return logits.astype(np.float32, copy=False)
