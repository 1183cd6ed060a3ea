"""Speech validation (worker side): greedy decoding on every runtime, token for token against the reference.

The reference is the unmodified Hugging Face model in float32, decoded greedily without a
cache; ``generate`` (greedy) must agree with it up to EOS. Every runtime × specialization is
compared on every utterance over ``max_new_tokens`` steps; WER/CER against transcripts.
"""

from __future__ import annotations

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
    Utterance,
    batched,
    features,
    greedy_decode,
    hf_generate,
    load_dataset,
    reference_decode,
    until_eos,
)
from .report import failure_text, render


def open_pair(runtime: str, opens: str, spec: dict[str, Any], inputs: dict[str, Path]) -> tuple[Session, Session]:
    """The (encoder, decoder-step) sessions of a runtime for one specialization."""
    dev, name = spec["device"], spec["name"]
    prefix = "program" if opens == "program" else opens
    return (open_session(plugins(), runtime, inputs[f"{prefix}/{name}/encoder"], dev),
            open_session(plugins(), runtime, inputs[f"{prefix}/{name}/decoder"], dev))


def decode_all(enc: Session, dec: Session, feats: Any, dc: DecodeConfig, steps: int, batch: int,
               ctx_len: int) -> Any:
    import numpy as np

    rows = list(range(len(feats)))
    out = [greedy_decode(enc, dec, feats[chunk], dc, steps, ctx_len) for chunk in batched(rows, batch)]
    return np.concatenate(out)[: len(rows)]


def run(ctx: StepContext) -> None:
    quiet_warnings()
    import torch
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    p = ctx.params
    steps = int(p["max_new_tokens"])
    model_dir = ctx.inputs["model"] / "model"
    audio = [f for f in ctx.files.values() if f.suffix.lower() in AUDIO_SUFFIXES]
    utts = load_dataset(sorted(audio, key=lambda f: f.name))
    processor = AutoProcessor.from_pretrained(model_dir)
    dc = DecodeConfig.from_model_dir(model_dir, p["language"])
    feats = features(processor, utts, dc.encoder_ctx_len)
    model = AutoModelForSpeechSeq2Seq.from_pretrained(model_dir, dtype=torch.float32).eval()
    t0 = time.perf_counter()
    ref = reference_decode(model, feats, dc, steps)
    ref_s = time.perf_counter() - t0
    generated = hf_generate(model, feats, dc, steps)

    def text(tokens: Any) -> str:
        out: str = processor.tokenizer.decode(until_eos(list(tokens), dc.eos), skip_special_tokens=True)
        return out.strip()

    gen_agrees = [g == until_eos(r.tolist(), dc.eos)[: len(g)] and (len(g) == steps or dc.eos in r.tolist())
                  for g, r in zip(generated, ref, strict=True)]
    ref_bounds: dict[str, float] = next(iter(p["checks"].get("pytorch", {}).values()), {})
    rows = [_row("pytorch", None, ref, ref, utts, text, ref_bounds, ref_s, steps)]
    rows[0]["generate_agrees"] = all(gen_agrees)
    if not all(gen_agrees):
        rows[0]["failures"].append("the greedy reference loop disagrees with model.generate on "
                                   f"{[u.name for u, ok in zip(utts, gen_agrees, strict=True) if not ok]}")
        rows[0]["ok"] = False
    for runtime, opens in p["runtimes"].items():
        if opens == "reference":
            continue
        for spec in p["specializations"]:
            enc, dec = open_pair(runtime, opens, spec, ctx.inputs)
            t0 = time.perf_counter()
            got = decode_all(enc, dec, feats, dc, steps, spec["batch_size"], spec["ctx_len"])
            seconds = time.perf_counter() - t0
            rows.append(_row(runtime, spec, ref, got, utts, text, p["checks"][runtime][spec["name"]], seconds, steps))
    report = {
        "task": "speech-seq2seq",
        "reference": "pytorch (unmodified Hugging Face model, float32, greedy)",
        "inputs": [u.name for u in utts],
        "notes": {u.name: u.note for u in utts if u.note},
        "transcripts": [u.transcript for u in utts],
        "prompt": dc.prompt,
        "steps": steps,
        "rows": rows,
        "ok": all(r["ok"] for r in rows),
    }
    publish(ctx.out, report, render, failure_text)


def _row(runtime: str, spec: dict[str, Any] | None, ref: Any, got: Any, utts: list[Utterance], text: Any,
         bounds: dict[str, float], seconds: float, steps: int) -> dict[str, Any]:
    row: dict[str, Any] = {"runtime": runtime, "specialization": spec["name"] if spec else None,
                           "dtype": spec["dtype"] if spec else "float32", "bounds": bounds,
                           "seconds": round(seconds, 3)}
    try:
        agreement = token_agreement(ref, got)
    except ShapeMismatch as e:
        row.update(token_agreement=None, failures=[str(e)], ok=False, per_input=[], tokens_per_s=None)
        return row
    per = []
    for i, u in enumerate(utts):
        ref_i, got_i = [int(t) for t in ref[i]], [int(t) for t in got[i]]
        per.append({"input": u.name, "tokens": got_i, "text": text(got[i]),
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
