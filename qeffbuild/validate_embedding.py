"""Embedding validation: every runtime × specialization against the float32 HF reference."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .embedding import RunFn, read_sentences, reference, run_bucketed, tokenize
from .metrics import check, compare, per_row
from .report import publish
from .runtimes import RUNTIMES
from .sessions import Session, open_compiled, open_program
from .steps import StepContext


def _run_fn(runtime: str, spec: dict[str, Any], inputs: dict[str, Path]) -> RunFn:
    opens = RUNTIMES.get(runtime).opens
    device = spec["device"]
    if opens == "transformed":
        session: Session = open_program(inputs[f"transformed/{spec['dtype']}/{device}"], device)
        return lambda feeds, _seq: session.run(feeds)[0]
    sessions = {n: open_compiled(opens, inputs[f"{opens}/{spec['name']}/seq{n}"], device) for n in spec["seq_len"]}
    return lambda feeds, seq: sessions[seq].run(feeds)[0]


def _sentence_transformers(model_dir: Path, sentences: list[str]) -> Any:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu")
    return st.encode(sentences, convert_to_numpy=True, batch_size=8)


def validate(ctx: StepContext) -> None:
    p = ctx.params
    model_dir = ctx.inputs["model"] / "model"
    inputs_file = next(iter(ctx.files.values()))
    sentences = read_sentences(inputs_file)
    t0 = time.perf_counter()
    ref = reference(model_dir, sentences, p["pooling"], p["normalize"])
    ref_s = time.perf_counter() - t0
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    token_ids = tokenize(tokenizer, sentences)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows: list[dict[str, Any]] = []
    for runtime in p["runtimes"]:
        if runtime == "pytorch":
            rows.append(_row(runtime, None, ref, ref, {}, [], ref_s, None))
            continue
        if runtime == "sentence-transformers":
            if not (model_dir / "modules.json").is_file():
                rows.append({"runtime": runtime, "specialization": None, "skipped":
                             "the model ships no sentence-transformers config (modules.json)", "ok": True})
                continue
            t0 = time.perf_counter()
            got = _sentence_transformers(model_dir, sentences)
            bounds = next(iter(p["checks"][runtime].values()))
            rows.append(_row(runtime, None, ref, got, bounds, [], time.perf_counter() - t0, None))
            continue
        for spec in p["specializations"]:
            t0 = time.perf_counter()
            fn = _run_fn(runtime, spec, ctx.inputs)
            where = f" of specialization {spec['name']!r}"
            bucketed = run_bucketed(token_ids, fn, spec["batch_size"], spec["seq_len"], pad_id, where)
            extra = []
            if RUNTIMES.get(runtime).opens not in ("reference", "transformed"):
                unused = [n for n in spec["seq_len"] if n not in bucketed.batches_per_seq_len]
                if unused:
                    extra.append(f"compiled seq_len {unused} never ran on these inputs, so it is unvalidated; "
                                 "add inputs of those lengths")
            rows.append(_row(runtime, spec, ref, bucketed.embeddings, p["checks"][runtime][spec["name"]], extra,
                             time.perf_counter() - t0, bucketed))
    report = {
        "task": "embedding",
        "reference": "pytorch (unmodified Hugging Face model, float32)",
        "inputs": sentences,
        "tokens": [len(t) for t in token_ids],
        "rows": rows,
        "ok": all(r["ok"] for r in rows),
    }
    publish(ctx.out, report, _failure_text)


def _row(runtime: str, spec: dict[str, Any] | None, ref: Any, got: Any, bounds: dict[str, float],
         extra: list[str], seconds: float, bucketed: Any) -> dict[str, Any]:
    metrics = compare(ref, got)
    failures = check(metrics, bounds) + extra
    return {
        "runtime": runtime,
        "specialization": spec["name"] if spec else None,
        "dtype": spec["dtype"] if spec else "float32",
        **metrics,
        "bounds": bounds,
        "failures": failures,
        "ok": not failures,
        "seconds": round(seconds, 3),
        "batches_per_seq_len": {str(k): v for k, v in bucketed.batches_per_seq_len.items()} if bucketed else None,
        "per_input": [{**m, "seq_len": bucketed.seq_len_of[i] if bucketed else None}
                      for i, m in enumerate(per_row(ref, got))],
    }


def _failure_text(report: dict[str, Any]) -> str:
    lines = ["validation failed:"]
    for r in report["rows"]:
        for f in r.get("failures", []):
            lines.append(f"  {r['runtime']} [{r['specialization'] or '-'}]: {f}")
        bounds = r.get("bounds", {})
        for i, m in enumerate(r.get("per_input", [])):
            bad = check({k: v for k, v in m.items() if k in ("max_abs", "cosine")},
                        {k: v for k, v in bounds.items() if k in ("max_abs", "cosine")})
            if bad:
                lines.append(f"    input {i + 1} {report['inputs'][i][:50]!r}: {'; '.join(bad)}")
    return "\n".join(lines)
