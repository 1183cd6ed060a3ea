"""Logits processing as Hugging Face's ``generate`` applies it, for greedy decoding on any runtime.

``LogitRules`` is data (which tokens are suppressed, when, and Whisper's timestamp settings); ``RuleState``
applies it to a step's logits with torch operations only, keeping what the timestamp rules remember of
each row (was the last token a timestamp, the one before, the latest timestamp) in tensors. Nothing reads
back to the host, so a CUDA graph can capture a whole step with its rules, and the host loop runs the very
same code on the CPU (float32, as HF computes the timestamp rule's log-probabilities).

The rules, in HF's order (``SuppressTokensAtBegin``, ``SuppressTokens``, ``WhisperTimeStampLogitsProcessor``):

- ``begin_suppress`` at the first generated token, ``suppress`` always (ids beyond a small model's vocabulary
  are skipped);
- with timestamps: ``<|notimestamps|>`` never; timestamps come in pairs (after a timestamp that follows text,
  no text but EOS; after two timestamps, no timestamp); a timestamp never goes back (nor repeats, unless it
  closes a pair); the first token is a timestamp, at most ``max_initial_timestamp_index`` steps in; and when
  the timestamps' total probability beats every single text token's, a timestamp it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def best_tokens(scores: Any) -> Any:
    """Each row's first highest score ([batch] int64, on ``scores``' device), as ``torch.argmax`` picks it (a NaN
    counts as the highest). On the CPU through numpy's vectorised reduction: on one thread torch's argmax over a
    [4, 51865] step took 0.26 ms and this takes 0.013, most of the host work of a batch-4 whisper-tiny step
    (``benchmarks/host_step.py``). On a GPU torch's own, which a CUDA graph captures."""
    if scores.device.type != "cpu":
        return scores.argmax(-1)
    import numpy as np
    import torch

    return torch.from_numpy(np.argmax(scores.numpy(), axis=-1).astype(np.int64, copy=False))


@dataclass(frozen=True)
class Timestamps:
    begin: int  # the first timestamp token (<|0.00|>): no_timestamps_token_id + 1
    no_timestamps: int
    max_initial_index: int | None = None


@dataclass(frozen=True)
class LogitRules:
    eos: int
    suppress: tuple[int, ...] = ()
    begin_suppress: tuple[int, ...] = ()
    timestamps: Timestamps | None = None

    def state(self, batch: int, vocab: int, device: Any) -> RuleState:
        return RuleState(self, batch, vocab, device)


class RuleState:
    """The rules for one decode of ``batch`` rows: precomputed biases, and the timestamp memory per row."""

    def __init__(self, rules: LogitRules, batch: int, vocab: int, device: Any) -> None:
        import torch

        self.rules, self.vocab, self.device = rules, vocab, device
        inf = float("-inf")
        always = torch.zeros(vocab, dtype=torch.float32)
        always[[t for t in rules.suppress if t < vocab]] = inf
        ts = rules.timestamps
        if ts is not None and ts.no_timestamps < vocab:
            always[ts.no_timestamps] = inf
        first = always.clone()
        first[[t for t in rules.begin_suppress if t < vocab]] = inf
        if ts is not None:  # the first token is a timestamp, and an early one
            first[: ts.begin] = inf
            if ts.max_initial_index is not None:
                first[ts.begin + ts.max_initial_index + 1:] = inf
        self.bias_first, self.bias_after = first.to(device), always.to(device)
        self.ids = torch.arange(vocab, device=device)
        self.last_ts = torch.zeros(batch, dtype=torch.bool, device=device)  # the last generated token is one
        self.penult_ts = torch.ones(batch, dtype=torch.bool, device=device)  # fewer than 2 tokens count as one
        self.latest = torch.full((batch,), -1, dtype=torch.int64, device=device)  # latest timestamp (-1: none)

    def reset(self) -> None:
        self.last_ts.zero_()
        self.penult_ts.fill_(True)
        self.latest.fill_(-1)

    def apply(self, logits: Any, first: bool) -> Any:
        """The processed logits ([batch, vocab], float32) of a step; ``first``: the first generated token."""
        scores = logits.float() + (self.bias_first if first else self.bias_after)
        ts = self.rules.timestamps
        if ts is None or first:
            return self._prefer_timestamps(scores) if ts is not None else scores
        import torch

        inf = float("-inf")
        text = self.ids < ts.begin
        pair_open = self.last_ts & ~self.penult_ts  # a timestamp right after text: close the pair or end
        scores = scores.masked_fill((self.last_ts & self.penult_ts)[:, None] & ~text, inf)
        scores = scores.masked_fill(pair_open[:, None] & (self.ids < self.rules.eos), inf)
        floor = torch.where(self.latest < 0, torch.full_like(self.latest, ts.begin),
                            torch.where(pair_open, self.latest, self.latest + 1))
        scores = scores.masked_fill(~text & (self.ids < floor[:, None]), inf)
        return self._prefer_timestamps(scores)

    def _prefer_timestamps(self, scores: Any) -> Any:
        """Where all timestamps together are likelier than the likeliest text token, a timestamp it is."""
        import torch

        begin = self.rules.timestamps.begin  # type: ignore[union-attr]
        logprobs = torch.nn.functional.log_softmax(scores, dim=-1)
        timestamp = logprobs[:, begin:].logsumexp(dim=-1)
        best_text = logprobs[:, :begin].max(dim=-1).values
        return scores.masked_fill((timestamp > best_text)[:, None] & (self.ids < begin), float("-inf"))

    def advance(self, chosen: Any, generated_before: int) -> None:
        """Remember the tokens just chosen ([batch]); ``generated_before``: tokens each row had before them."""
        if self.rules.timestamps is None:
            return
        import torch

        is_ts = chosen >= self.rules.timestamps.begin
        if generated_before >= 1:  # with fewer than two tokens the penultimate counts as a timestamp
            self.penult_ts.copy_(self.last_ts)
        self.last_ts.copy_(is_ts)
        self.latest.copy_(torch.where(is_ts, chosen, self.latest))
