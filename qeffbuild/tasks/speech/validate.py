"""Speech validation (worker side): greedy decoding on every runtime, token for token against the reference.

The reference is the unmodified Hugging Face model in float32, decoded greedily without a cache,
one utterance at a time, on the same padded input a runtime sees (the specialization's audio
length that fits it); ``generate`` (greedy) must agree with it up to EOS. Every runtime ×
specialization decodes in batches of its ``batch_size`` and must give each utterance the
reference's tokens over ``max_new_tokens`` steps (so a row's tokens are those of batch 1);
WER/CER against transcripts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ...checks import check
from ...checks.tensor import ShapeMismatch
from ...checks.text import cer, wer
from ...checks.tokens import first_mismatch, token_agreement
from ...core.plugins import plugins
from ...core.steps import StepContext
from ...pipeline.torchutil import quiet_warnings
from ...reports import publish
from ...runtimes import Session, open_session
from . import AUDIO_SUFFIXES
from .driver import (
    DecodeConfig,
    Frontend,
    Utterance,
    batches,
    greedy_decode,
    hf_generate,
    load_dataset,
    pad_rows,
    reference_decode,
    until_eos,
)
from .report import failure_text, render


def open_graphs(runtime: str, opens: str, spec: dict[str, Any],
                inputs: dict[str, Path]) -> tuple[dict[str, Session], Session, dict[str, Any]]:
    """A runtime's encoder sessions (one per audio length), its decoder session and the decoder's io."""
    dev, name = spec["device"], spec["name"]
    prefix = "program" if opens == "program" else opens
    encoders = {g: open_session(plugins(), runtime, inputs[f"{prefix}/{name}/{g}"], dev) for g in spec["graphs"]}
    folder = inputs[f"{prefix}/{name}/decoder"]
    decoder_io = json.loads((folder / "io.json").read_text())
    return encoders, open_session(plugins(), runtime, folder, dev), decoder_io


def decode_all(frontend: Frontend, encoders: dict[str, Session], decoder: Session, decoder_io: dict[str, Any],
               utts: list[Utterance], spec: dict[str, Any], dc: DecodeConfig, steps: int) -> Any:
    """Every utterance decoded in batches of the specialization's size, on the audio length that fits it."""
    import numpy as np

    out = np.zeros((len(utts), steps), np.int64)
    b = spec["batch_size"]
    for graph, rows in batches(utts, spec["graphs"], b):
        padded = pad_rows(rows, b)
        feeds = frontend.features([utts[i].audio for i in padded], spec["graphs"][graph])
        decoded = greedy_decode(encoders[graph], decoder, feeds, dc, steps, decoder_io)
        for k, i in enumerate(rows):
            out[i] = decoded.tokens[k]
    return out


def references(model: Any, frontend: Frontend, utts: list[Utterance], spec: dict[str, Any], dc: DecodeConfig,
               steps: int, cache: dict[tuple[str, int], Any]) -> Any:
    """The reference's tokens per utterance at batch 1, on the padded input ``spec`` gives it."""
    import numpy as np

    out = np.zeros((len(utts), steps), np.int64)
    for graph, rows in batches(utts, spec["graphs"], 1):
        samples = spec["graphs"][graph]
        key = (utts[rows[0]].name, samples)
        if key not in cache:
            cache[key] = reference_decode(model, dc.arch, frontend.features([utts[rows[0]].audio], samples), dc,
                                          steps)[0]
        out[rows[0]] = cache[key]
    return out


def run(ctx: StepContext) -> None:
    quiet_warnings()
    import torch

    from .transform import load_model

    p = ctx.params
    steps, arch = int(p["max_new_tokens"]), p["arch"]
    model_dir = ctx.inputs["model"] / "model"
    audio = sorted((f for f in ctx.files.values() if f.suffix.lower() in AUDIO_SUFFIXES), key=lambda f: f.name)
    utts = load_dataset(audio)
    frontend = Frontend(model_dir, arch)
    dc = DecodeConfig.from_model_dir(model_dir, p["language"], arch)
    model = load_model(model_dir, torch.float32)
    ref_cache: dict[tuple[str, int], Any] = {}
    first = p["specializations"][0]
    t0 = time.perf_counter()
    ref = references(model, frontend, utts, first, dc, steps, ref_cache)
    ref_s = time.perf_counter() - t0
    gen_agrees = _generate_agrees(model, frontend, utts, first, dc, steps, ref)
    ref_bounds: dict[str, float] = next(iter(p["checks"].get("pytorch", {}).values()), {})
    rows = [_row("pytorch", None, ref, ref, utts, frontend, dc, ref_bounds, ref_s, steps)]
    rows[0]["generate_agrees"] = all(gen_agrees)
    if not all(gen_agrees):
        rows[0]["failures"].append("the greedy reference loop disagrees with model.generate on "
                                   f"{[u.name for u, ok in zip(utts, gen_agrees, strict=True) if not ok]}")
        rows[0]["ok"] = False
    for runtime, opens in p["runtimes"].items():
        if opens == "reference":
            continue
        for spec in p["specializations"]:
            expected = references(model, frontend, utts, spec, dc, steps, ref_cache)
            encoders, decoder, decoder_io = open_graphs(runtime, opens, spec, ctx.inputs)
            t0 = time.perf_counter()
            got = decode_all(frontend, encoders, decoder, decoder_io, utts, spec, dc, steps)
            seconds = time.perf_counter() - t0
            rows.append(_row(runtime, spec, expected, got, utts, frontend, dc, p["checks"][runtime][spec["name"]],
                             seconds, steps))
    report = {
        "task": "speech-seq2seq",
        "architecture": arch,
        "reference": "pytorch (unmodified Hugging Face model, float32, greedy, batch 1)",
        "inputs": [u.name for u in utts],
        "durations_s": [round(u.seconds, 3) for u in utts],
        "notes": {u.name: u.note for u in utts if u.note},
        "transcripts": [u.transcript for u in utts],
        "prompt": dc.prompt,
        "steps": steps,
        "rows": rows,
        "ok": all(r["ok"] for r in rows),
    }
    publish(ctx.out, report, render, failure_text)


def _generate_agrees(model: Any, frontend: Frontend, utts: list[Utterance], spec: dict[str, Any],
                     dc: DecodeConfig, steps: int, ref: Any) -> list[bool]:
    out = []
    for graph, rows in batches(utts, spec["graphs"], 1):
        i = rows[0]
        gen = hf_generate(model, dc.arch, frontend.features([utts[i].audio], spec["graphs"][graph]), dc, steps)[0]
        r = ref[i].tolist()
        out.append((i, gen == until_eos(r, dc.eos)[: len(gen)] and (len(gen) == steps or dc.eos in r)))
    return [ok for _, ok in sorted(out)]


def _row(runtime: str, spec: dict[str, Any] | None, ref: Any, got: Any, utts: list[Utterance], frontend: Frontend,
         dc: DecodeConfig, bounds: dict[str, float], seconds: float, steps: int) -> dict[str, Any]:
    row: dict[str, Any] = {"runtime": runtime, "specialization": spec["name"] if spec else None,
                           "dtype": spec["dtype"] if spec else "float32", "bounds": bounds,
                           "batch_size": spec["batch_size"] if spec else 1, "seconds": round(seconds, 3)}
    try:
        agreement = token_agreement(ref, got)
    except ShapeMismatch as e:
        row.update(token_agreement=None, failures=[str(e)], ok=False, per_input=[], tokens_per_s=None)
        return row
    per: list[dict[str, Any]] = []
    for i, u in enumerate(utts):
        ref_i, got_i = [int(t) for t in ref[i]], [int(t) for t in got[i]]
        per.append({"input": u.name, "tokens": got_i, "text": frontend.text(got_i, dc.eos),
                    "first_mismatch": first_mismatch(ref_i, got_i),
                    "mismatches": sum(a != b for a, b in zip(ref_i, got_i, strict=True))})
    values: dict[str, float] = {"token_agreement": agreement}
    if all(u.transcript for u in utts):
        hyps = [r["text"] for r in per]
        refs = [u.transcript or "" for u in utts]
        values["wer"], values["cer"] = wer(refs, hyps), cer(refs, hyps)
    failures = check(values, bounds)
    if agreement < bounds.get("token_agreement", 0.0):
        for i, r in enumerate(per):
            if r["first_mismatch"] is not None:
                j = r["first_mismatch"]
                failures.append(
                    f"{r['input']}: tokens differ from step {j} on ({r['mismatches']} of {steps} steps differ; "
                    f"at step {j} the reference has {int(ref[i][j])}, this runtime {r['tokens'][j]})"
                )
    row.update(values, failures=failures, ok=not failures, per_input=per,
               tokens_per_s=round(len(utts) * steps / seconds, 1) if seconds > 0 else None)
    return row
