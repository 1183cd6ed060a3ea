"""The greedy decode loop for torch runtimes, kept on the session's device.

The numpy loop in ``driver.greedy_decode`` copies the whole retained state to the host and back at
every step; on a GPU that alone costs more than the model. Here the encoder's outputs, the retained
state, the logits processing, the chosen tokens and the EOS bookkeeping stay on the device: the
retained state lives in buffers allocated once and updated in place, so the compiled graphs (CUDA
graphs under ``inductor``) always see inputs of the same shapes, dtypes and strides. The host
reads the tokens once at the end, and, when the loop may stop at EOS, a flag every few steps.

It returns exactly what the numpy loop returns (same tokens, same trimming at EOS), so every
runtime is held to the same checks whichever loop ran it.
"""

from __future__ import annotations

import weakref
from typing import Any

from .driver import DecodeConfig, Decoded

EOS_POLL = 8  # steps between host reads of "has every row ended?" (each read waits for the device)
WARMUP_STEPS = 3  # eager steps on a side stream before a CUDA graph is captured (Inductor's first-call work)


def greedy_decode_on_device(encoder: Any, decoder: Any, enc_feeds: dict[str, Any], dc: DecodeConfig, steps: int,
                            decoder_io: dict[str, Any], stop_at_eos: bool = False, min_steps: int = 0) -> Decoded:
    import torch

    loop = step_loop(decoder, decoder_io)
    enc_out = encoder.run_tensors(_to_device(enc_feeds, encoder.io["inputs"], encoder.device))
    biases = [_bias(first, loop.vocab, dc, loop.device) for first in (0, 1)]
    loop.reset(enc_out, dc.prompt[0], biases[0])
    out = torch.full((loop.batch, steps), dc.eos, dtype=torch.int64, device=loop.device)
    finished = torch.zeros(loop.batch, dtype=torch.bool, device=loop.device)
    lead = len(dc.prompt) - 1
    ended_at = -1
    for pos in range(lead + steps):
        i = pos - lead
        if i == 1:
            loop.bias.copy_(biases[1])  # begin_suppress_tokens apply to the first generated token only
        loop.step()
        if i < 0:
            loop.tok.fill_(dc.prompt[pos + 1])  # still feeding the prompt: its next token, not the model's
            continue
        out[:, i] = loop.nxt
        finished |= loop.nxt == dc.eos
        if stop_at_eos and i + 1 >= min_steps and (i + 1) % EOS_POLL == 0 and bool(finished.all()):
            ended_at = i
            break
    tokens, done = out.cpu().numpy(), finished.cpu().numpy()
    if stop_at_eos:
        tokens = tokens[:, : _trim(tokens, dc.eos, min_steps, ended_at)]
    return Decoded(tokens, done)


_LOOPS: weakref.WeakKeyDictionary[Any, StepLoop] = weakref.WeakKeyDictionary()


def step_loop(decoder: Any, decoder_io: dict[str, Any]) -> StepLoop:
    """The decoder session's step loop, made once per session: its buffers (and CUDA graph) are reused by
    every decode, so a fresh decode pays no allocation or capture."""
    loop = _LOOPS.get(decoder)
    if loop is None:
        loop = _LOOPS[decoder] = StepLoop(decoder, decoder_io)
    return loop


class StepLoop:
    """One greedy decode step over static device buffers: the decoder reads the current token, position,
    cross-attention inputs and retained state from them, and the step writes the new state, position and
    chosen token back in place. Where the session allows (``capturable``: compiled, on CUDA) the whole step
    (decoder, state update, logits bias, argmax) is captured as one CUDA graph and replayed: one launch per
    token instead of dozens, and no host work but the replay."""

    def __init__(self, decoder: Any, decoder_io: dict[str, Any]) -> None:
        import torch

        self.decoder, self.device = decoder, decoder.device
        shapes, inputs = decoder_io["shapes"], decoder_io["inputs"]
        self.batch = shapes["input_ids"][0]
        self.past = [n for n in inputs if n.startswith("past_")]
        cross = [n for n in inputs if n.startswith("cross_") or n == "encoder_attention_mask"]
        buffer = lambda n: torch.zeros(shapes[n], dtype=_dtype(inputs[n]), device=self.device)  # noqa: E731
        self.fixed = {n: buffer(n) for n in cross}
        self.state = {n: buffer(n) for n in self.past}
        self.tok = torch.zeros((self.batch, 1), dtype=torch.int64, device=self.device)
        self.position = torch.zeros((), dtype=torch.int64, device=self.device)
        self.vocab = int(self._run()[0].shape[-1])  # one call: the logits' width, and the first compile
        self.bias = torch.zeros(self.vocab, dtype=torch.float32, device=self.device)
        self.nxt = torch.zeros(self.batch, dtype=torch.int64, device=self.device)
        self.graph = self._capture() if getattr(decoder, "capturable", False) else None

    def reset(self, enc_out: list[Any], first_token: int, bias: Any) -> None:
        for buf, value in zip(self.fixed.values(), enc_out, strict=True):
            buf.copy_(value)
        for buf in self.state.values():
            buf.zero_()
        self.position.zero_()
        self.tok.fill_(first_token)
        self.bias.copy_(bias)

    def step(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self._step()

    def _run(self) -> list[Any]:
        return self.decoder.run_tensors({"input_ids": self.tok, "position": self.position, **self.fixed,
                                         **self.state})

    def _step(self) -> None:
        res = self._run()
        for name, value in zip(self.past, res[1:], strict=True):
            self.state[name].copy_(value)
        self.position += 1
        self.nxt.copy_((res[0][:, -1, :].float() + self.bias).argmax(-1))
        self.tok.copy_(self.nxt[:, None])

    def _capture(self) -> Any:
        import torch

        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # first calls off the capture: lazy initialisation, autotuning
            for _ in range(WARMUP_STEPS):
                self._step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step()
        return graph


def _trim(tokens: Any, eos: int, min_steps: int, ended_at: int) -> int:
    """Where the numpy loop stops: the first step at which every row has emitted EOS (and min_steps are
    done); the device loop only looks every few steps, so it may have decoded a few more."""
    import numpy as np

    seen: Any = np.logical_or.accumulate(tokens == eos, axis=1).all(axis=0)  # [steps]: every row has ended by then
    ends = np.flatnonzero(seen[max(min_steps - 1, 0):])
    if ends.size:
        return int(ends[0]) + max(min_steps - 1, 0) + 1
    return tokens.shape[1] if ended_at < 0 else ended_at + 1


def _bias(first: int, vocab: int, dc: DecodeConfig, device: Any) -> Any:
    """0 or −inf per token id, added to the logits: suppress_tokens always, begin_suppress_tokens at step 0
    (``first`` is 0 there, 1 after). Ids beyond a small model's vocabulary are skipped, as the numpy loop does."""
    import torch

    b = torch.zeros(vocab, dtype=torch.float32)
    banned = [t for t in dc.suppress if t < vocab] + ([t for t in dc.begin_suppress if t < vocab] if first == 0
                                                      else [])
    if banned:
        b[banned] = -torch.inf
    return b.to(device)


def _to_device(feeds: dict[str, Any], dtypes: dict[str, str], device: Any) -> dict[str, Any]:
    import torch

    return {name: torch.from_numpy(feeds[name]).to(device=device, dtype=_dtype(dtype)).contiguous()
            for name, dtype in dtypes.items()}


def _dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)
