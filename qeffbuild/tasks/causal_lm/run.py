"""`qeffbuild run` for causal LMs: generate from prompts with a built specialization (worker-free, in process).

Inputs are prompts, or ``@file`` for a file of prompts (one a line). Each row decodes greedily until EOS or
``max_new_tokens`` (default: what the cache holds after the longest prompt); a row cut by the budget says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import UsageError


def _prompts(inputs: list[str]) -> list[str]:
    out = []
    for item in inputs:
        if item.startswith("@"):
            try:
                out += [line.strip() for line in Path(item[1:]).read_text(encoding="utf-8").splitlines()
                        if line.strip()]
            except (OSError, UnicodeDecodeError) as e:
                raise UsageError(f"cannot read prompts from {item[1:]} ({e})") from None
        else:
            out.append(item)
    if not out:
        raise UsageError("no prompts given")
    return out


def run(folder: Path, spec: dict[str, Any], runtime: str, inputs: list[str],
        options: dict[str, Any]) -> list[dict[str, Any]]:
    from transformers import AutoTokenizer

    from ...core.plugins import plugins
    from .driver import Graphs, generate, rules_of

    info = plugins().runtimes.get(runtime)
    if info.opens == "reference":
        raise UsageError(f"runtime {runtime!r} is the reference; generate with a built artifact (pytorch-transformed, "
                         "onnxruntime, aoti …)")
    base = folder if info.opens == "program" else folder / info.opens
    prefix = "transform-" if info.opens == "program" else ""
    decode_dir = base / f"{prefix}decode"
    if not decode_dir.is_dir():
        raise UsageError(f"{folder} has no {info.opens!r} artifacts; add that backend to the specialization's "
                         "compile list")
    from ...runtimes import open_session

    prefill = {int(d.name.rsplit("-", 1)[1]): open_session(plugins(), runtime, d, spec["device"])
               for d in sorted(base.glob(f"{prefix}prefill-*")) if d.is_dir()}
    graphs = Graphs(prefill, open_session(plugins(), runtime, decode_dir, spec["device"]),
                    json.loads((decode_dir / "io.json").read_text()))
    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    texts = _prompts(inputs)
    prompts = [list(tokenizer(t)["input_ids"]) for t in texts]
    room = graphs.ctx_len - max(len(p) for p in prompts) + 1
    steps = min(options.get("max_new_tokens") or room, room)
    rules = rules_of(folder / "model")
    rows = []
    for text, prompt, tokens in zip(texts, prompts, generate(graphs, prompts, rules, steps, stop_at_eos=True),
                                    strict=True):
        ended = rules.eos in tokens
        kept = tokens[: tokens.index(rules.eos)] if ended else tokens
        notes = [] if ended else [f"stopped after {steps} new tokens without an end of text (ctx_len "
                                  f"{graphs.ctx_len}; pass --max-new-tokens, or raise ctx_len)"]
        rows.append({"input": text, "text": tokenizer.decode(kept, skip_special_tokens=True), "tokens": kept,
                     "prompt_tokens": len(prompt), "notes": notes, "truncated": not ended})
    return rows


def render(rows: list[dict[str, Any]], fmt: str) -> list[str]:
    from ...reports import printable

    return [f"{printable(r['input'])} → {printable(r['text'])}" for r in rows]
