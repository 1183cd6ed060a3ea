"""The greedy loop for torch sessions, kept on the session's device.

The host loop (``greedy.py``) copies the whole retained state to the host and back at every step; on a GPU
that alone costs more than the model. Here the encoder's outputs, the retained state, the logits rules, the
chosen tokens and the EOS bookkeeping stay on the device: the retained state lives in buffers allocated
once and updated in place, so compiled graphs (CUDA graphs under ``inductor``) always see inputs of the same
shapes, dtypes and strides. The host reads the tokens once at the end, and, when the loop may stop at EOS,
a flag every few steps.

Where the session is ``capturable`` (compiled, on CUDA) a prompt step (decoder and state update) and a
generating step (decoder, state update, rules, argmax) are each captured once as a CUDA graph and replayed:
one launch per token, no host work but the replay. The first generated token runs eagerly (its rules differ).

It returns exactly what the host loop returns (same tokens, same trimming at EOS), so every runtime is held
to the same checks whichever loop ran it.
"""

from __future__ import annotations

import weakref
from typing import Any

from .greedy import Decoded, decoder_inputs
from .rules import LogitRules, RuleState, best_tokens

EOS_POLL = 8  # steps between host reads of "has every row ended?" (each read waits for the device)
WARMUP_STEPS = 3  # eager steps on a side stream before a CUDA graph is captured (Inductor's first-call work)
CAPTURED_FROM_TOKEN = 1  # generated tokens before this one run eagerly (the first's rules differ); this one captures


def greedy_on_device(decoder: Any, decoder_io: dict[str, Any], fixed: list[Any], prompts: Any, rules: LogitRules,
                     steps: int, stop_at_eos: bool = False, min_steps: int = 0) -> Decoded:
    import numpy as np
    import torch

    loop = step_loop(decoder, decoder_io)
    prompts_t = torch.as_tensor(np.asarray(prompts, dtype=np.int64)).to(loop.device)
    lead = prompts_t.shape[1] - 1
    loop.reset(fixed, prompts_t[:, :1])
    rule = loop.rules_for(rules)
    out = torch.full((loop.batch, steps), rules.eos, dtype=torch.int64, device=loop.device)
    finished = torch.zeros(loop.batch, dtype=torch.bool, device=loop.device)
    ended_at = -1
    for pos in range(lead + steps):
        i = pos - lead
        if i < 0:
            loop.feed(prompts_t[:, pos + 1:pos + 2])
            continue
        loop.generate(rule, i)
        out[:, i] = loop.nxt
        finished |= loop.nxt == rules.eos
        if stop_at_eos and i + 1 >= min_steps and (i + 1) % EOS_POLL == 0 and bool(finished.all()):
            ended_at = i
            break
    tokens, done = out.cpu().numpy(), finished.cpu().numpy()
    if stop_at_eos:
        tokens = tokens[:, : _trim(tokens, rules.eos, min_steps, ended_at)]
    return Decoded(tokens, done)


_LOOPS: weakref.WeakKeyDictionary[Any, StepLoop] = weakref.WeakKeyDictionary()


def step_loop(decoder: Any, decoder_io: dict[str, Any]) -> StepLoop:
    """The decoder session's step loop, made once per session: its buffers (and CUDA graphs) are reused by
    every decode, so a fresh decode pays no allocation or capture."""
    loop = _LOOPS.get(decoder)
    if loop is None:
        loop = _LOOPS[decoder] = StepLoop(decoder, decoder_io)
    return loop


class _Generating:
    """The rules of one kind of decode (short-form, timestamps …) with their state and captured step."""

    def __init__(self, state: RuleState) -> None:
        self.state = state
        self.graph: Any = None


class StepLoop:
    """Decode steps over static device buffers: the decoder reads the current tokens, position, fixed inputs
    and retained state from them, and each step writes the new state, position and chosen tokens back."""

    def __init__(self, decoder: Any, decoder_io: dict[str, Any]) -> None:
        import torch

        self.decoder, self.device = decoder, decoder.device
        shapes, inputs = decoder_io["shapes"], decoder_io["inputs"]
        self.batch = shapes["input_ids"][0]
        fixed, self.past = decoder_inputs(decoder_io)
        buffer = lambda n: torch.zeros(shapes[n], dtype=_dtype(inputs[n]), device=self.device)  # noqa: E731
        self.fixed = {n: buffer(n) for n in fixed}
        self.state = {n: buffer(n) for n in self.past}
        self.tok = torch.zeros((self.batch, 1), dtype=torch.int64, device=self.device)
        self.prompt_tok = torch.zeros((self.batch, 1), dtype=torch.int64, device=self.device)
        self.position = torch.zeros((), dtype=torch.int64, device=self.device)
        # a session that writes its new state into the state buffers itself (no copy back): see step_in_place
        self.in_place = bool(getattr(decoder, "retained_in_place", False))
        self.vocab = int(self._step().shape[-1])  # one call: the logits' width, and the first compile
        self.nxt = torch.zeros(self.batch, dtype=torch.int64, device=self.device)
        self.capturable = bool(getattr(decoder, "capturable", False))
        self.feed_graph: Any = None
        self.kinds: dict[LogitRules, _Generating] = {}

    def rules_for(self, rules: LogitRules) -> _Generating:
        kind = self.kinds.get(rules)
        if kind is None:
            kind = self.kinds[rules] = _Generating(rules.state(self.batch, self.vocab, self.device))
        kind.state.reset()
        return kind

    def reset(self, fixed: list[Any], first_tokens: Any) -> None:
        for buf, value in zip(self.fixed.values(), fixed, strict=True):
            buf.copy_(value)
        for buf in self.state.values():
            buf.zero_()
        self.position.zero_()
        self.tok.copy_(first_tokens)

    # --- steps --------------------------------------------------------------------------------------
    def feed(self, next_tokens: Any) -> None:
        """A prompt step: the decoder reads the current token; the next one is the prompt's, not the model's."""
        self.prompt_tok.copy_(next_tokens)
        if self.capturable and self.feed_graph is None:
            self.feed_graph = self._capture(self._feed)
        if self.feed_graph is not None:
            self.feed_graph.replay()
        else:
            self._feed()

    def generate(self, kind: _Generating, i: int) -> None:
        """Generated token ``i`` (0: the first, whose rules differ, runs eagerly)."""
        if i < CAPTURED_FROM_TOKEN or not self.capturable:
            self._generate(kind.state, i)
            return
        if kind.graph is None:  # capturing runs the step: save and restore what it changes
            kind.graph = self._capture(lambda: self._generate(kind.state, 1))
        kind.graph.replay()

    def _step(self) -> Any:
        """One decoder call at the current position: the state buffers hold the new state, the position is the
        next one; returns the logits."""
        feeds = {"input_ids": self.tok, "position": self.position, **self.fixed, **self.state}
        if self.in_place:
            logits = self.decoder.step_in_place(feeds)[0]
        else:
            res = self.decoder.run_tensors(feeds)
            for name, value in zip(self.past, res[1:], strict=True):
                self.state[name].copy_(value)
            logits = res[0]
        self.position += 1
        return logits

    def _feed(self) -> None:
        self._step()
        self.tok.copy_(self.prompt_tok)

    def _generate(self, state: RuleState, i: int) -> None:
        logits = self._step()
        self.nxt.copy_(best_tokens(state.apply(logits[:, -1, :], first=i == 0)))
        state.advance(self.nxt, i)
        self.tok.copy_(self.nxt[:, None])

    def _capture(self, step: Any) -> Any:
        """Capture ``step`` as a CUDA graph, leaving every buffer as it was (warm-up and capture both run it)."""
        import torch

        saved = [t.clone() for t in self._buffers()]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # first calls off the capture: lazy initialisation, autotuning
            for _ in range(WARMUP_STEPS):
                step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        for t, value in zip(self._buffers(), saved, strict=True):
            t.copy_(value)
        return graph

    def _buffers(self) -> list[Any]:
        rules = [t for k in self.kinds.values() for t in (k.state.last_ts, k.state.penult_ts, k.state.latest)]
        return [*self.state.values(), self.tok, self.prompt_tok, self.position, self.nxt, *rules]


def _trim(tokens: Any, eos: int, min_steps: int, ended_at: int) -> int:
    """Where the host loop stops: the first step at which every row has emitted EOS (and min_steps are
    done); the device loop only looks every few steps, so it may have decoded a few more."""
    import numpy as np

    seen: Any = np.logical_or.accumulate(tokens == eos, axis=1).all(axis=0)  # [steps]: every row has ended by then
    ends = np.flatnonzero(seen[max(min_steps - 1, 0):])
    if ends.size:
        return int(ends[0]) + max(min_steps - 1, 0) + 1
    return tokens.shape[1] if ended_at < 0 else ended_at + 1


def to_device(feeds: dict[str, Any], dtypes: dict[str, str], device: Any) -> dict[str, Any]:
    import torch

    return {name: torch.from_numpy(feeds[name]).to(device=device, dtype=_dtype(dtype)).contiguous()
            for name, dtype in dtypes.items()}


def _dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)
