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

from typing import Any

from .driver import DecodeConfig, Decoded

EOS_POLL = 8  # steps between host reads of "has every row ended?" (each read waits for the device)


def greedy_decode_on_device(encoder: Any, decoder: Any, enc_feeds: dict[str, Any], dc: DecodeConfig, steps: int,
                            decoder_io: dict[str, Any], stop_at_eos: bool = False, min_steps: int = 0) -> Decoded:
    import torch

    device = decoder.device
    shapes, inputs = decoder_io["shapes"], decoder_io["inputs"]
    b = shapes["input_ids"][0]
    enc_out = encoder.run_tensors(_to_device(enc_feeds, encoder.io["inputs"], encoder.device))
    past = [n for n in inputs if n.startswith("past_")]
    cross = [n for n in inputs if n.startswith("cross_") or n == "encoder_attention_mask"]
    # owned, contiguous copies: a compiled encoder may reuse its output buffers on its next call
    fixed = {n: _owned(t.to(device), _dtype(inputs[n])) for n, t in zip(cross, enc_out, strict=True)}
    state = {n: torch.zeros(shapes[n], dtype=_dtype(inputs[n]), device=device) for n in past}
    out = torch.full((b, steps), dc.eos, dtype=torch.int64, device=device)
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    position = torch.zeros((), dtype=torch.int64, device=device)
    tok = torch.full((b, 1), dc.prompt[0], dtype=torch.int64, device=device)
    bias: dict[int, Any] = {}
    lead = len(dc.prompt) - 1
    ended_at = -1
    for pos in range(lead + steps):
        res = decoder.run_tensors({"input_ids": tok, "position": position, **fixed, **state})
        for name, value in zip(past, res[1:], strict=True):
            state[name].copy_(value)
        position += 1
        i = pos - lead
        if i < 0:
            tok = torch.full((b, 1), dc.prompt[pos + 1], dtype=torch.int64, device=device)
            continue
        logits = res[0][:, -1, :].float()
        nxt = (logits + _bias(bias, min(i, 1), logits.shape[1], dc, device)).argmax(-1)
        out[:, i] = nxt
        finished |= nxt == dc.eos
        tok = nxt[:, None].contiguous()
        if stop_at_eos and i + 1 >= min_steps and (i + 1) % EOS_POLL == 0 and bool(finished.all()):
            ended_at = i
            break
    tokens, done = out.cpu().numpy(), finished.cpu().numpy()
    if stop_at_eos:
        tokens = tokens[:, : _trim(tokens, dc.eos, min_steps, ended_at)]
    return Decoded(tokens, done)


def _trim(tokens: Any, eos: int, min_steps: int, ended_at: int) -> int:
    """Where the numpy loop stops: the first step at which every row has emitted EOS (and min_steps are
    done); the device loop only looks every few steps, so it may have decoded a few more."""
    import numpy as np

    seen: Any = np.logical_or.accumulate(tokens == eos, axis=1).all(axis=0)  # [steps]: every row has ended by then
    ends = np.flatnonzero(seen[max(min_steps - 1, 0):])
    if ends.size:
        return int(ends[0]) + max(min_steps - 1, 0) + 1
    return tokens.shape[1] if ended_at < 0 else ended_at + 1


def _bias(cache: dict[int, Any], first: int, vocab: int, dc: DecodeConfig, device: Any) -> Any:
    """0 or −inf per token id, added to the logits: suppress_tokens always, begin_suppress_tokens at step 0
    (``first`` is 0 there, 1 after). Ids beyond a small model's vocabulary are skipped, as the numpy loop does."""
    import torch

    if first not in cache:
        b = torch.zeros(vocab, dtype=torch.float32)
        banned = [t for t in dc.suppress if t < vocab] + ([t for t in dc.begin_suppress if t < vocab] if first == 0
                                                          else [])
        if banned:
            b[banned] = -torch.inf
        cache[first] = b.to(device)
    return cache[first]


def _to_device(feeds: dict[str, Any], dtypes: dict[str, str], device: Any) -> dict[str, Any]:
    import torch

    return {name: torch.from_numpy(feeds[name]).to(device=device, dtype=_dtype(dtype)).contiguous()
            for name, dtype in dtypes.items()}


def _owned(t: Any, dtype: Any) -> Any:
    import torch

    return t.to(dtype).clone(memory_format=torch.contiguous_format)


def _dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)
