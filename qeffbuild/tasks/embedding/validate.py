"""Embedding validation (worker side): every runtime × specialization against the float32 HF reference."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ...checks import Evidence, check, computed_metrics, measure
from ...checks.tensor import ShapeMismatch, per_row
from ...core.plugins import load_attr, plugins
from ...core.steps import StepContext
from ...pipeline.torchutil import quiet_warnings, strict_fp32
from ...reports import publish, sig
from ...reports.html import template_from
from ...runtimes import open_session
from .driver import Bucketed, RunFn, check_lengths, read_sentences, reference, run_bucketed, tokenize
from .report import failure_text, render, render_html


def _run_fn(runtime: str, opens: str, spec: dict[str, Any], inputs: dict[str, Path]) -> RunFn:
    device = spec["device"]
    if opens == "program":
        session = open_session(plugins(), runtime, inputs[f"program/{spec['dtype']}/{device}"], device)
        return lambda feeds, _seq: session.run(feeds)[0]
    folders = {n: inputs[f"{opens}/{spec['name']}/seq{n}"] for n in spec["seq_len"]}
    # A backend that holds every length in one artifact (a QPC) is opened once.
    opened = {f: open_session(plugins(), runtime, f, device) for f in dict.fromkeys(folders.values())}
    return lambda feeds, seq: opened[folders[seq]].run(feeds)[0]


def _warm(fn: RunFn, spec: dict[str, Any], pad_id: int) -> None:
    """One untimed call per compiled length, so the timed batches measure the runtime warm (as the speech and
    causal-LM validations open and warm their graphs untimed): the speed columns then agree with `bench`."""
    import numpy as np

    for seq in spec["seq_len"]:
        ids = np.full((spec["batch_size"], seq), pad_id, np.int64)
        fn({"input_ids": ids, "attention_mask": np.ones_like(ids)}, seq)


def sentence_transformers_encode(model_dir: Path, sentences: list[str]) -> Any:
    """The `sentence-transformers` runtime: the model's own ST pipeline (None when it ships no config)."""
    if not (model_dir / "modules.json").is_file():
        return None
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu")
    return st.encode(sentences, convert_to_numpy=True, batch_size=8)


def run(ctx: StepContext) -> None:
    quiet_warnings()
    strict_fp32()  # no TF32: runtimes are compared with a float32 reference
    p = ctx.params
    model_dir = ctx.inputs["model"] / "model"
    notes = _load_notes(ctx.inputs["model"])
    sentences = read_sentences(next(f for label, f in ctx.files.items() if not label.startswith("template:")))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    token_ids = tokenize(tokenizer, sentences)
    check_lengths(token_ids, max(n for s in p["specializations"] for n in s["seq_len"]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    t0 = time.perf_counter()
    ref = reference(model_dir, sentences, p["pooling"], p["normalize"])
    ref_s = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    for runtime, opens in p["runtimes"].items():
        if opens == "reference":
            rows.append(_reference_row(runtime, model_dir, sentences, ref, ref_s, p["checks"][runtime]))
            continue
        for spec in p["specializations"]:
            t0 = time.perf_counter()
            fn = _run_fn(runtime, opens, spec, ctx.inputs)
            _warm(fn, spec, pad_id)  # first calls (an aoti package's kernel loading) are start-up, not speed
            where = f" of specialization {spec['name']!r}"
            bucketed = run_bucketed(token_ids, fn, spec["batch_size"], spec["seq_len"], pad_id, where)
            extra = []
            if opens != "program":
                unused = [n for n in spec["seq_len"] if n not in bucketed.batches_per_seq_len]
                if unused:
                    extra.append(f"compiled seq_len {unused} never ran on these inputs, so it is unvalidated; "
                                 "add inputs of those lengths")
            rows.append(_row(runtime, spec, ref, bucketed.embeddings, p["checks"][runtime][spec["name"]], extra,
                             time.perf_counter() - t0, bucketed))
    report = {
        "task": "embedding",
        "reference": "pytorch (unmodified Hugging Face model, float32)",
        "random_weights": bool(p.get("random_weights")),
        "inputs": sentences,
        "tokens": [len(t) for t in token_ids],
        "notes": notes,
        "rows": rows,
        "ok": all(r["ok"] for r in rows),
        "provenance": {"keys": ctx.keys, "versions": _versions()},
    }
    title = ctx.node_id.partition(":")[2]
    publish(ctx.out, report, render, failure_text,
            lambda r: render_html(r, template_from(ctx.files), f"{title}: embedding validation"))


def _versions() -> dict[str, str]:
    from ... import __version__
    from ...core.keys import dist_version

    dists = ("torch", "transformers", "onnx", "onnxruntime", "numpy", "sentence-transformers", "matplotlib")
    return {"qeffbuild": __version__, **{d: dist_version(d) for d in dists}}


def _load_notes(model_step: Path) -> list[str]:
    try:
        notes: list[str] = json.loads((model_step / "notes.json").read_text())
        return notes
    except (OSError, ValueError):
        return []


def _reference_row(runtime: str, model_dir: Path, sentences: list[str], ref: Any, ref_s: float,
                   checks: dict[str, dict[str, float]]) -> dict[str, Any]:
    if runtime == "pytorch":
        return _row(runtime, None, ref, ref, {}, [], ref_s, None)
    info = plugins().runtimes.get(runtime)
    t0 = time.perf_counter()
    got = load_attr(info.runner)(model_dir, sentences) if info.runner else None
    if got is None:
        return {"runtime": runtime, "specialization": None, "ok": True,
                "skipped": "the model ships no configuration for this runtime (modules.json)"}
    return _row(runtime, None, ref, got, next(iter(checks.values())), [], time.perf_counter() - t0, None)


def _row(runtime: str, spec: dict[str, Any] | None, ref: Any, got: Any, bounds: dict[str, float],
         extra: list[str], seconds: float, bucketed: Bucketed | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "runtime": runtime,
        "specialization": spec["name"] if spec else None,
        "dtype": spec["dtype"] if spec else "float32",
        "bounds": bounds,
        "seconds": sig(seconds),
        "batches_per_seq_len": {str(k): v for k, v in bucketed.batches_per_seq_len.items()} if bucketed else None,
        "batch_size": spec["batch_size"] if spec else None,
        "latency_s": bucketed.latency_s if bucketed else [],
    }
    if bucketed and bucketed.latency_s:
        busy = sum(b["seconds"] for b in bucketed.latency_s)
        row["sequences_per_s"] = sig(len(bucketed.seq_len_of) / busy) if busy > 0 else None
    try:
        metrics = measure(computed_metrics(plugins().tasks.get("embedding"), bounds), Evidence(tensor=(ref, got)))
    except ShapeMismatch as e:  # a listed failure in the report, never a crashed worker
        row.update(mad=None, max_abs=None, cosine=None, failures=[str(e), *extra], ok=False, per_input=[])
        return row
    failures = check(metrics, bounds) + extra
    row.update(metrics)
    row.update(failures=failures, ok=not failures,
               per_input=[{**m, "seq_len": bucketed.seq_len_of[i] if bucketed else None}
                          for i, m in enumerate(per_row(ref, got))])
    return row
