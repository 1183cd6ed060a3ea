"""Generation on any runtime (worker side): prefill graphs, then the decode graph, through the decoding core.

Prompts are grouped by length (rows of one batch share a position), cut into batches of the specialization's
size (a short batch is filled with copies of a row, whose results are dropped), right-padded to the smallest
prefill length that holds them and prefilled; the logits of each row's last prompt token choose its first new
token, and the decoding core's greedy loop runs the decode graph from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...decoding.greedy import continue_greedy, decoder_inputs
from ...decoding.rules import LogitRules
from ...errors import InputError


@dataclass
class Graphs:
    """One runtime's graphs of one specialization: a prefill session per length and the decode session."""

    prefill: dict[int, Any]
    decode: Any
    decode_io: dict[str, Any]

    @property
    def batch(self) -> int:
        return int(self.decode_io["shapes"]["input_ids"][0])

    @property
    def ctx_len(self) -> int:
        return int(self.decode_io["ctx_len"])


def open_graphs(runtime: str, opens: str, spec: dict[str, Any], inputs: dict[str, Path]) -> Graphs:
    from ...core.plugins import plugins
    from ...runtimes import open_session

    prefix, dev, name = ("program" if opens == "program" else opens), spec["device"], spec["name"]
    folder = inputs[f"{prefix}/{name}/decode"]
    return Graphs({n: open_session(plugins(), runtime, inputs[f"{prefix}/{name}/prefill-{n}"], dev)
                   for n in spec["prefill"]}, open_session(plugins(), runtime, folder, dev),
                  json.loads((folder / "io.json").read_text()))


def rules_of(model_dir: Path) -> LogitRules:
    """EOS and suppressed tokens from the model's generation config (greedy, as ``generate`` decodes)."""
    config = json.loads((model_dir / "config.json").read_text())
    gen_path = model_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
    eos = gen.get("eos_token_id", config.get("eos_token_id"))
    eos = eos[0] if isinstance(eos, list) and eos else eos
    if not isinstance(eos, int):
        eos = -1  # no end of text: every row decodes its steps
    return LogitRules(eos, tuple(gen.get("suppress_tokens") or ()), tuple(gen.get("begin_suppress_tokens") or ()))


def batches(prompts: list[list[int]], batch: int) -> list[list[int]]:
    """Indices of prompts in batches of one length each (shortest first), at most ``batch`` a batch."""
    by_length: dict[int, list[int]] = {}
    for i, p in sorted(enumerate(prompts), key=lambda ip: (len(ip[1]), ip[0])):
        by_length.setdefault(len(p), []).append(i)
    return [rows[k:k + batch] for rows in by_length.values() for k in range(0, len(rows), batch)]


def prefill_length(graphs: Graphs, length: int) -> int | None:
    """The prefill graph a prompt of ``length`` tokens runs through: the shortest that holds it."""
    return min((n for n in graphs.prefill if n >= length), default=None)


def generate(graphs: Graphs, prompts: list[list[int]], rules: LogitRules, steps: int, stop_at_eos: bool = False,
             on_batch: Any = None) -> list[list[int]]:
    """``steps`` greedy tokens after each prompt (fewer where every row of a batch ended, with ``stop_at_eos``)."""
    import numpy as np

    out: list[list[int]] = [[] for _ in prompts]
    _fixed, past = decoder_inputs(graphs.decode_io)
    shapes = graphs.decode_io["shapes"]
    for rows in batches(prompts, graphs.batch):
        length = len(prompts[rows[0]])
        prefill = prefill_length(graphs, length)
        if prefill is None:
            raise InputError(f"a prompt of {length} tokens is longer than every prefill_seq_len "
                             f"({max(graphs.prefill)}); add a longer one or shorten the prompt")
        if length - 1 + steps > graphs.ctx_len:
            raise InputError(f"a prompt of {length} tokens and {steps} new tokens need {length - 1 + steps} cache "
                             f"slots; ctx_len is {graphs.ctx_len}: raise it or ask for fewer tokens")
        padded = rows + [rows[0]] * (graphs.batch - len(rows))
        ids = np.zeros((graphs.batch, prefill), np.int64)
        ids[:, :length] = [prompts[i] for i in padded]
        state = {name: np.zeros(shapes[name], np.float32) for name in past}
        res = graphs.prefill[prefill].run({"input_ids": ids, "position": np.array(0, np.int64), **state})
        state.update(dict(zip(past, res[1:], strict=True)))
        decoded = continue_greedy(graphs.decode, graphs.decode_io, state, res[0][:, length - 1, :], length, rules,
                                  steps, stop_at_eos)
        for k, i in enumerate(rows):
            out[i] = [int(t) for t in decoded.tokens[k]]
        if on_batch is not None:
            on_batch(len(rows))
    return out


def reference(model: Any, prompts: list[list[int]], rules: LogitRules, steps: int) -> list[list[int]]:
    """The unmodified model, greedy, recomputing the whole sequence at every step (no cache), one prompt a time."""
    import torch

    out = []
    with torch.no_grad():
        for prompt in prompts:
            seq = torch.tensor([prompt], device=model.device)
            state = rules.state(1, int(model.config.vocab_size), "cpu")
            tokens: list[int] = []
            for i in range(steps):
                logits = model(input_ids=seq, use_cache=False).logits[:, -1, :].float().cpu()
                chosen = state.apply(logits[:, : state.vocab], first=i == 0).argmax(-1)
                state.advance(chosen, i)
                tokens.append(int(chosen))
                seq = torch.cat([seq, chosen[:, None].to(model.device)], dim=1)
            out.append(tokens)
    return out


def hf_generate(model: Any, prompt: list[int], steps: int, min_new_tokens: int = 0,
                compiled: bool = False) -> list[int]:
    """``model.generate``, greedy, as a user calls it: the new tokens, EOS included when it came.

    ``compiled``: HF's own fast path — a static cache, and ``generate`` compiling the forward with
    ``torch.compile`` (transformers does that itself on GPUs; on CPU its compile config must ask for it)."""
    import torch

    kwargs: dict[str, Any] = {"max_new_tokens": steps, "do_sample": False, "num_beams": 1}
    if min_new_tokens:
        kwargs["min_new_tokens"] = min_new_tokens
    if compiled:
        from transformers import CompileConfig

        config = CompileConfig()
        config._compile_all_devices = True  # type: ignore[assignment]  # its field for compiling off-GPU
        kwargs.update(cache_implementation="static", compile_config=config)
    ids = torch.tensor([prompt], device=model.device)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
    return [int(t) for t in out[0, len(prompt):]]
