"""CTC validation (worker side): every runtime's per-frame argmax ids against the unmodified model's, and WER.

The reference is the unmodified Hugging Face model in float32, one utterance at a time, on the same padded
inputs the runtime reads (the audio length the utterance falls into). Every runtime × specialization must give
the same ids on every frame of every utterance (float32; half precision is held to the reference's WER within
a margin). Texts come from CTC collapse and the model's tokenizer, scored against the data set's transcripts.
"""

from __future__ import annotations

from typing import Any

from ...checks import Evidence, TextEvidence, check, computed_metrics, measure
from ...checks.text import wer
from ...checks.tokens import first_mismatch
from ...core.plugins import plugins
from ...core.steps import StepContext
from ...exec.progress import StepProgress
from ...pipeline.audio import SAMPLE_RATE, Utterance, read_selected
from ...pipeline.normalizers import make_normalizer
from ...pipeline.torchutil import quiet_warnings, strict_fp32
from ...reports import publish, sig
from ...reports.html import template_from
from ...runtimes import open_session
from .driver import Chunking, Frontend, Recognized, chunk_counts, recognize, reference
from .report import failure_text, render, render_html


def run(ctx: StepContext) -> None:
    quiet_warnings()
    strict_fp32()
    import time

    import torch

    from .transform import load_model

    p = ctx.params
    model_dir = ctx.inputs["model"] / "model"
    utts = read_selected(p["inputs"], ctx.files, ctx.paths)
    frontend = Frontend(model_dir)
    normalize = make_normalizer(p["normalizer"], model_dir)
    specs = p["specializations"]
    model = load_model(model_dir, torch.float32).to("cuda:0" if any(s["device"] == "cuda" for s in specs) else "cpu")
    evaluated = [(r, s) for r, o in p["runtimes"].items() if o != "reference" for s in specs]
    progress = StepProgress(len(utts) * (len(specs) + len(evaluated)), "utterances")
    refs: dict[str, list[list[int]]] = {}
    chunking = {s["name"]: Chunking.of(frontend.config, s["graphs"], p.get("chunk_stride_s")) for s in specs}
    t0 = time.perf_counter()
    for s in specs:
        key = repr(sorted(s["graphs"].items()))
        if key not in refs:
            refs[key] = reference(model, frontend, utts, s["graphs"], chunking[s["name"]])
        progress.advance(len(utts), "reference")
    ref_seconds = time.perf_counter() - t0
    first = refs[repr(sorted(specs[0]["graphs"].items()))]
    ref_texts = [frontend.text(ids) for ids in first]
    scorer = _Scorer(utts, normalize, frontend, ref_texts)
    rows = [scorer.row("pytorch", None, first, Recognized(first, [{"graph": "all", "rows": len(utts),
                                                                   "seconds": ref_seconds}],
                                                       chunk_counts(utts, specs[0]["graphs"], frontend,
                                                                    chunking[specs[0]["name"]])),
                       p["checks"].get("pytorch", {}).get(specs[0]["name"], {}))]
    for runtime, spec in evaluated:
        opens = p["runtimes"][runtime]
        prefix = "program" if opens == "program" else opens
        sessions = {g: open_session(plugins(), runtime, ctx.inputs[f"{prefix}/{spec['name']}/{g}"], spec["device"])
                    for g in spec["graphs"]}
        got = recognize(sessions, frontend, utts, spec["graphs"], int(spec["batch_size"]), chunking[spec["name"]])
        progress.advance(len(utts), runtime)
        rows.append(scorer.row(runtime, spec, refs[repr(sorted(spec["graphs"].items()))], got,
                               p["checks"][runtime][spec["name"]]))
    report = {
        "task": "ctc",
        "reference": "pytorch: the unmodified Hugging Face model in float32, one utterance at a time, on the same "
                     "padded audio; argmax per frame, CTC collapse, the model's tokenizer",
        "random_weights": bool(p.get("random_weights")),
        "meaningless_on_random_weights": ["wer", "cer", "wer_delta"] if p.get("random_weights") else [],
        "source": p["inputs"]["source"], "inputs": [u.name for u in utts],
        "durations_s": [round(u.seconds, 3) for u in utts], "audio_s": round(sum(u.seconds for u in utts), 3),
        "transcripts": [u.transcript for u in utts], "normalizer": p["normalizer"],
        "frames": [len(ids) for ids in first], "rows": rows,
        "long_audio": _long_audio(utts, specs, chunking), "ok": all(r["ok"] for r in rows),
        "provenance": {"keys": ctx.keys},
    }
    title = ctx.node_id.partition(":")[2]
    publish(ctx.out, report, render, failure_text,
            lambda r: render_html(r, template_from(ctx.files), f"{title}: CTC validation"))


def _long_audio(utts: list[Utterance], specs: list[dict[str, Any]], chunking: dict[str, Chunking]) -> list[str]:
    """How each specialization read the utterances longer than its longest audio length (none: [])."""
    out = []
    for s in specs:
        longest = max(s["graphs"].values())
        long = [u.name for u in utts if len(u.audio) > longest]
        if long:
            out.append(f"{s['name']}: {len(long)} utterance(s) longer than {longest / SAMPLE_RATE:g} s "
                       f"{chunking[s['name']].describe()}")
    return out


class _Scorer:
    """One report row per runtime × specialization: exact ids on every frame, WER on the texts, speed."""

    def __init__(self, utts: list[Utterance], normalize: Any, frontend: Frontend, ref_texts: list[str]) -> None:
        self.utts, self.normalize, self.frontend, self.ref_texts = utts, normalize, frontend, ref_texts
        self.has_text = all(u.transcript for u in utts)

    def row(self, runtime: str, spec: dict[str, Any] | None, ref: list[list[int]], got: Recognized,
            bounds: dict[str, float]) -> dict[str, Any]:
        texts = [self.frontend.text(ids) for ids in got.ids]
        text = TextEvidence([u.transcript or "" for u in self.utts], texts,
                            self.ref_texts if spec is not None else None, self.normalize) if self.has_text else None
        values = measure(computed_metrics(plugins().tasks.get("ctc"), bounds),
                         Evidence(tokens=(ref, got.ids), text=text))
        failures = check(values, bounds)
        per = []
        for i, u in enumerate(self.utts):
            miss = first_mismatch(ref[i], got.ids[i])
            item: dict[str, Any] = {"input": u.name, "text": texts[i], "frames": len(got.ids[i]),
                                    "chunks": got.chunks[i] if got.chunks else 1,
                                    "first_mismatch": miss,
                                    "mismatches": sum(a != b for a, b in zip(ref[i], got.ids[i], strict=False))}
            if u.transcript:
                item["wer"] = round(wer([u.transcript], [texts[i]], self.normalize), 4)
            per.append(item)
            if miss is not None and values.get("token_agreement", 1.0) < bounds.get("token_agreement", 0.0):
                failures.append(f"{u.name}: ids differ from frame {miss} on ({item['mismatches']} of "
                                f"{len(ref[i])} frames differ)")
        total = got.seconds
        return {"runtime": runtime, "specialization": spec["name"] if spec else None,
                "dtype": spec["dtype"] if spec else "float32", "batch_size": spec["batch_size"] if spec else 1,
                "bounds": bounds, "seconds": sig(total),
                "samples_per_s": sig(len(self.utts) / total) if total > 0 else None,
                "rtf": sig(total / sum(u.seconds for u in self.utts)),
                "latency_s": [{**b, "seconds": sig(b["seconds"])} for b in got.latency_s],
                **{k: round(v, 6) for k, v in values.items()}, "failures": failures, "ok": not failures,
                "per_input": per}
