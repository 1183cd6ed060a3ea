"""Speech validation and evaluation (worker side).

Two questions, one pass over the data:

1. **Does every runtime compute the model?** On the *exact subset* (the first ``exact_subset``
   utterances, plus one for each compiled audio length), the reference — the unmodified Hugging
   Face model in float32, greedy, no cache, batch 1, on the padded input the runtime sees — gives
   ``max_new_tokens`` tokens, and every float32 runtime × specialization must give the same ones
   (EOS does not stop them). ``model.generate`` must agree with the reference up to EOS.
2. **How well, and how fast?** Every utterance is decoded in batches of the specialization's size,
   each row stopping at its own EOS (at most ``generation_max_length`` tokens), and the texts are
   scored against the transcripts (WER, CER after the normalizer; ΔWER against the float32
   reference's, which is ``model.generate`` at the first specialization's batch size). Each row
   records samples/s, the real-time factor and every batch's latency.

The report is report.json, report.txt and a self-contained report.html.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ...checks import Evidence, TextEvidence, check, computed_metrics, measure
from ...checks.text import wer
from ...checks.tokens import first_mismatch
from ...core.plugins import plugins
from ...core.steps import StepContext
from ...decoding.device import CAPTURED_FROM_TOKEN
from ...errors import InputError
from ...exec.progress import StepProgress
from ...pipeline.audio import read_selected
from ...pipeline.normalizers import make_normalizer
from ...pipeline.torchutil import quiet_warnings, strict_fp32
from ...reports import publish, sig
from ...reports.html import template_from
from ...runtimes import Session, open_session
from .driver import (
    DecodeConfig,
    Frontend,
    Utterance,
    batches,
    fit,
    greedy_decode,
    hf_generate,
    pad_rows,
    reference_decode,
    reference_encoder,
    to_torch,
    until_eos,
)
from .report import failure_text, render, render_html
from .validate_long import LongInputs, describe, is_long

# Tokens of the untimed first decode: through the token at which the device loop captures its generating step's
# CUDA graph. With one token the capture fell in the first timed batch: on an H200 the large-v3 b1 validation said
# 3.3 utterances/s where the bench said 4.4.
WARM_TOKENS = CAPTURED_FROM_TOKEN + 1


def open_graphs(runtime: str, opens: str, spec: dict[str, Any],
                inputs: dict[str, Path]) -> tuple[dict[str, Session], Session, dict[str, Any]]:
    """A runtime's encoder sessions (one per audio length), its decoder session and the decoder's io."""
    dev, name = spec["device"], spec["name"]
    prefix = "program" if opens == "program" else opens
    encoders = {g: open_session(plugins(), runtime, inputs[f"{prefix}/{name}/{g}"], dev) for g in spec["graphs"]}
    folder = inputs[f"{prefix}/{name}/decoder"]
    decoder_io = json.loads((folder / "io.json").read_text())
    return encoders, open_session(plugins(), runtime, folder, dev), decoder_io


def exact_subset(utts: list[Utterance], specs: list[dict[str, Any]], n: int) -> list[int]:
    """The first ``n`` utterances, plus the first of every compiled audio length none of them uses: every
    artifact is held to exact tokens."""
    chosen = list(range(min(n, len(utts))))
    for spec in specs:
        used = {fit(utts[i].seconds, spec["graphs"]) for i in chosen}
        for i, u in enumerate(utts):
            graph = fit(u.seconds, spec["graphs"])
            if graph not in used:
                chosen.append(i)
                used.add(graph)
    return sorted(set(chosen))


class Timed:
    """Per-batch wall-clock latencies of one decode of the whole set."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []

    def add(self, graph: str, rows: int, seconds: float) -> None:
        self.batches.append({"graph": graph, "rows": rows, "seconds": sig(seconds)})

    @property
    def total(self) -> float:
        return sum(b["seconds"] for b in self.batches)

    def full_batch_rate(self, batch_size: int) -> float | None:
        """Rows a second had each batch been full, when the data set left padding rows (3 utterances in a batch of
        8): `qeffbuild bench` times full batches, so this is the figure to hold beside its utt/s. None when every
        batch was full (samples/s is that figure) or only long-form batches ran (their rows are windows)."""
        short = [b for b in self.batches if b["graph"] != "long-form"]
        seconds = sum(b["seconds"] for b in short)
        if not short or seconds <= 0 or all(b["rows"] == batch_size for b in short):
            return None
        return len(short) * batch_size / seconds


def decode_all(frontend: Frontend, encoders: dict[str, Session], decoder: Session, decoder_io: dict[str, Any],
               utts: list[Utterance], spec: dict[str, Any], dc: DecodeConfig, steps: int, min_steps: int,
               progress: StepProgress, label: str, long: LongInputs) -> tuple[list[list[int]], Timed, dict[int, Any]]:
    """Every utterance in batches of the specialization's size, on the audio length that fits it; a batch
    stops when each row has emitted EOS and ``min_steps`` are done. Utterances longer than the specialization
    reads at once are decoded long-form (their results are returned by index).

    Each audio length's first batch is first decoded for WARM_TOKENS tokens, untimed: a compiled runtime
    (inductor) compiles and captures its graphs there, so the speed columns measure decoding."""
    out: list[list[int]] = [[] for _ in utts]
    timed = Timed()
    b = spec["batch_size"]
    warm: set[str] = set()
    short = [u for u in utts if not is_long(u, spec)]
    index = [i for i, u in enumerate(utts) if not is_long(u, spec)]
    for graph, local in batches(short, spec["graphs"], b):
        rows = [index[k] for k in local]
        t0 = time.perf_counter()
        feeds = frontend.features([utts[i].audio for i in pad_rows(rows, b)], spec["graphs"][graph])
        features_s = time.perf_counter() - t0
        if graph not in warm:
            warm.add(graph)
            greedy_decode(encoders[graph], decoder, feeds, dc, WARM_TOKENS, decoder_io)
        t1 = time.perf_counter()
        decoded = greedy_decode(encoders[graph], decoder, feeds, dc, steps, decoder_io, stop_at_eos=True,
                                min_steps=min_steps)
        timed.add(graph, len(rows), features_s + time.perf_counter() - t1)
        for k, i in enumerate(rows):
            out[i] = [int(t) for t in decoded.tokens[k]]
        progress.advance(len(rows), label)
    longs = [i for i, u in enumerate(utts) if is_long(u, spec)]
    results: dict[int, Any] = {}
    if longs:
        t0 = time.perf_counter()
        for i, result in zip(longs, long.on_runtime(encoders, decoder, decoder_io, [utts[i].audio for i in longs],
                                                    spec), strict=True):
            out[i], results[i] = result.tokens, result
        timed.add("long-form", len(longs), time.perf_counter() - t0)
        progress.advance(len(longs), f"{label} long-form")
    return out, timed, results


def generate_all(model: Any, frontend: Frontend, utts: list[Utterance], spec: dict[str, Any], dc: DecodeConfig,
                 steps: int, progress: StepProgress, long: LongInputs) -> tuple[list[list[int]], Timed, dict[int, Any]]:
    """The float32 reference's transcripts: ``model.generate`` (greedy, cached), batched as ``spec``; long
    utterances long-form, as the reference decodes them."""
    out: list[list[int]] = [[] for _ in utts]
    timed = Timed()
    b = spec["batch_size"]
    short = [u for u in utts if not is_long(u, spec)]
    index = [i for i, u in enumerate(utts) if not is_long(u, spec)]
    for graph, local in batches(short, spec["graphs"], b):
        rows = [index[k] for k in local]
        t0 = time.perf_counter()
        feeds = frontend.features([utts[i].audio for i in rows], spec["graphs"][graph])
        got = hf_generate(model, dc.arch, feeds, dc, steps)
        timed.add(graph, len(rows), time.perf_counter() - t0)
        for k, i in enumerate(rows):
            out[i] = got[k]
        progress.advance(len(rows), "pytorch generate")
    results: dict[int, Any] = {}
    for i, u in enumerate(utts):
        if is_long(u, spec):
            results[i] = long.reference(u, spec)  # decoded once per validation: the subset's check may have
            out[i] = results[i].tokens
            timed.add("long-form", 1, long.reference_seconds(u, spec))  # asked first, so time that decode
            progress.advance(1, "pytorch long-form")
    return out, timed, results


def references(model: Any, frontend: Frontend, utts: list[Utterance], subset: list[int], spec: dict[str, Any],
               dc: DecodeConfig, steps: int, cache: dict[tuple[str, int], Any],
               progress: StepProgress, long: LongInputs) -> dict[int, Any]:
    """The reference's tokens for the subset at batch 1, on the padded input ``spec`` gives each (long
    utterances: the reference's long-form tokens, every window's)."""
    out = {}
    for i in subset:
        if is_long(utts[i], spec):
            out[i] = long.reference(utts[i], spec).tokens
            progress.advance(1, "reference long-form")
            continue
        samples = spec["graphs"][fit(utts[i].seconds, spec["graphs"]) or ""]
        key = (utts[i].name, samples)
        if key not in cache:
            cache[key] = reference_decode(model, dc.arch, frontend.features([utts[i].audio], samples), dc, steps)[0]
        out[i] = cache[key]
        progress.advance(1, "reference")
    return out


def run(ctx: StepContext) -> None:
    quiet_warnings()
    strict_fp32()  # no TF32: runtimes are compared with a float32 reference
    import torch

    from .transform import load_model

    p = ctx.params
    steps, gen_len, arch = int(p["max_new_tokens"]), int(p["generation_max_length"]), p["arch"]
    model_dir = ctx.inputs["model"] / "model"
    utts = read_selected(p["inputs"], ctx.files, ctx.paths)
    if len(utts) < 2:
        raise InputError(f"{p['inputs']['source']} gives {len(utts)} utterance(s); a speech validation needs at "
                         "least 2")
    frontend = Frontend(model_dir, arch)
    dc = DecodeConfig.from_model_dir(model_dir, p["language"], arch, p["task"])
    normalize = make_normalizer(p["normalizer"], model_dir)
    specs = p["specializations"]
    # float32 with TF32 off on the GPU the specializations run on (the CPU reference takes minutes per
    # utterance at whisper-tiny's size and 128 tokens); on the CPU otherwise
    ref_device = "cuda:0" if any(s["device"] == "cuda" for s in specs) else "cpu"
    model = load_model(model_dir, torch.float32).to(ref_device)
    subset = exact_subset(utts, specs, int(p["exact_subset"]))
    evaluated = [(r, s) for r, o in p["runtimes"].items() if o != "reference" for s in specs]
    # units: the reference on the subset (first spec, then each runtime × spec), the generate check on it,
    # then every utterance decoded by generate and by each runtime × spec
    progress = StepProgress(len(subset) * (2 + len(evaluated)) + len(utts) * (1 + len(evaluated)), "decodes")
    long = LongInputs(p["longform"], dc, frontend, model, p["language"], p["task"])

    def texts_of(toks: list[list[int]], results: dict[int, Any]) -> list[str]:
        return [long.text(results[i]) if i in results else frontend.text(t[:gen_len], dc.eos)
                for i, t in enumerate(toks)]

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ref_cache: dict[tuple[str, int], Any] = {}
    first = specs[0]
    ref = references(model, frontend, utts, subset, first, dc, steps, ref_cache, progress, long)
    gen_agrees, ties = _generate_agrees(model, frontend, utts, [i for i in subset if not is_long(utts[i], first)],
                                        first, dc, steps, ref, progress)
    timings["reference (exact subset)"] = time.perf_counter() - t0
    gen_tokens, gen_timed, gen_long = generate_all(model, frontend, utts, first, dc, gen_len, progress, long)
    base = _Scorer(utts, normalize, long)
    ref_row = base.row("pytorch", None, {i: ref[i] for i in subset}, {i: ref[i] for i in subset},
                       texts_of(gen_tokens, gen_long), gen_timed,
                       [len(t) for t in gen_tokens], next(iter(p["checks"].get("pytorch", {}).values()), {}), steps,
                       None, gen_long)
    ref_row["batch_size"] = first["batch_size"]
    ref_row["generate_agrees"] = all(gen_agrees.values())
    ref_row["generate_near_ties"] = ties
    if not ref_row["generate_agrees"]:
        ref_row["failures"].append("the greedy reference loop disagrees with model.generate on "
                                   f"{[utts[i].name for i, ok in gen_agrees.items() if not ok]}")
        ref_row["ok"] = False
    rows = [ref_row]
    for runtime, spec in evaluated:
        t0 = time.perf_counter()
        expected = references(model, frontend, utts, subset, spec, dc, steps, ref_cache, progress, long)
        encoders, decoder, decoder_io = open_graphs(runtime, p["runtimes"][runtime], spec, ctx.inputs)
        tokens, timed, results = decode_all(frontend, encoders, decoder, decoder_io, utts, spec, dc,
                                            max(steps, gen_len), steps, progress, f"{runtime} {spec['name']}", long)
        got = {i: tokens[i] if i in results else tokens[i][:steps] for i in subset}
        row = base.row(runtime, spec, expected, got, texts_of(tokens, results), timed,
                       [len(t) if i in results else len(until_eos(t[:gen_len], dc.eos))
                        for i, t in enumerate(tokens)],
                       p["checks"][runtime][spec["name"]], steps,
                       [item["text"] for item in ref_row["per_input"]], results)
        rows.append(_with_logit_gaps(row, model, frontend, utts, spec, dc, expected))
        timings[f"{runtime} {spec['name']}"] = time.perf_counter() - t0
    audio_s = sum(u.seconds for u in utts)
    report = {
        "task": "speech-seq2seq", "architecture": arch,
        "reference": f"pytorch: the unmodified Hugging Face model in float32 on {ref_device.split(':')[0]} — greedy "
                     "without a cache at batch 1 for the exact tokens; model.generate (greedy) for its transcripts",
        "random_weights": bool(p.get("random_weights")),
        "meaningless_on_random_weights": ["wer", "cer", "wer_delta"] if p.get("random_weights") else [],
        "source": p["inputs"]["source"], "source_kind": p["inputs"]["kind"],
        "inputs": [u.name for u in utts], "durations_s": [round(u.seconds, 3) for u in utts],
        "audio_s": round(audio_s, 3), "notes": {u.name: u.note for u in utts if u.note},
        "transcripts": [u.transcript for u in utts], "exact_subset": [utts[i].name for i in subset],
        "prompt": dc.prompt, "steps": steps, "generation_max_length": gen_len, "normalizer": p["normalizer"],
        "long_form": {**p["longform"], "inputs": sorted({utts[i].name for i in gen_long}),
                      "method": next(iter(gen_long.values())).method if gen_long else None,
                      "reference": ("Hugging Face's long-form model.generate(return_timestamps=True) on the whole "
                                    "log-mel" if long.sequential else "the unmodified model on the same chunks, "
                                    "greedy without a cache, merged at their overlaps")},
        "rows": rows, "ok": all(r["ok"] for r in rows),
        "provenance": {"keys": ctx.keys, "versions": _versions(), "timings_s": {k: round(v, 3)
                                                                               for k, v in timings.items()}},
    }
    title = ctx.node_id.partition(":")[2]
    publish(ctx.out, report, render, failure_text,
            lambda r: render_html(r, template_from(ctx.files), f"{title}: speech validation"))


def _sig_or_none(value: float | None) -> float | None:
    return None if value is None else sig(value)


class _Scorer:
    """One report row per runtime × specialization: exact tokens on the subset, WER on everything, speed."""

    def __init__(self, utts: list[Utterance], normalize: Any, long: LongInputs) -> None:
        self.utts, self.normalize, self.long = utts, normalize, long
        self.has_text = all(u.transcript for u in utts)

    def row(self, runtime: str, spec: dict[str, Any] | None, ref: dict[int, Any], got: dict[int, Any],
            texts: list[str], timed: Timed, generated: list[int], bounds: dict[str, float], steps: int,
            reference_texts: list[str] | None, long_results: dict[int, Any]) -> dict[str, Any]:
        total = timed.total
        row: dict[str, Any] = {
            "runtime": runtime, "specialization": spec["name"] if spec else None,
            "dtype": spec["dtype"] if spec else "float32", "batch_size": spec["batch_size"] if spec else 1,
            "bounds": bounds, "seconds": sig(total),
            "samples_per_s": sig(len(self.utts) / total) if total > 0 else None,
            "rtf": sig(total / sum(u.seconds for u in self.utts)),
            "tokens_per_s": sig(sum(generated) / total) if total > 0 else None,
            "latency_s": timed.batches,
            "full_batch_samples_per_s": _sig_or_none(timed.full_batch_rate(spec["batch_size"] if spec else 1)),
        }
        order = sorted(ref)
        failures: list[str] = []
        tokens = ([[int(t) for t in ref[i]] for i in order], [[int(t) for t in got[i]] for i in order])
        text = TextEvidence([u.transcript or "" for u in self.utts], texts, reference_texts, self.normalize) \
            if self.has_text else None
        values = measure(computed_metrics(plugins().tasks.get("speech-seq2seq"), bounds), Evidence(tokens=tokens,
                                                                                                    text=text))
        per: list[dict[str, Any]] = []
        for i, u in enumerate(self.utts):
            item: dict[str, Any] = {"input": u.name, "text": texts[i]}
            if i in long_results:
                item["long_form"] = describe(long_results[i], lambda toks: self.long.text(_only(toks)))
            if u.transcript:
                item["wer"] = round(wer([u.transcript], [texts[i]], self.normalize), 4)
            if i in got:
                r_i, g_i = [int(t) for t in ref[i]], [int(t) for t in got[i]]
                item.update(tokens=g_i, first_mismatch=first_mismatch(r_i, g_i),
                            mismatches=sum(a != b for a, b in zip(r_i, g_i, strict=False)) + abs(len(r_i) - len(g_i)))
            per.append(item)
        failures += check(values, {k: b for k, b in bounds.items() if k != DIVERGENCE})  # that one: _with_logit_gaps
        if values.get("token_agreement", 1.0) < bounds.get("token_agreement", 0.0):
            for i in order:
                item = per[i]
                if item.get("first_mismatch") is not None:
                    j = item["first_mismatch"]
                    want = int(ref[i][j]) if j < len(ref[i]) else "nothing more"
                    have = item["tokens"][j] if j < len(item["tokens"]) else "nothing more"
                    failures.append(f"{item['input']}: tokens differ from step {j} on ({item['mismatches']} of "
                                    f"{max(len(ref[i]), len(item['tokens']))} steps differ; at step {j} the "
                                    f"reference has {want}, this runtime {have})")
        row.update({k: round(v, 6) for k, v in values.items()}, failures=failures, ok=not failures, per_input=per)
        return row


def _only(tokens: list[int]) -> Any:
    """A segment's tokens as a long-form result, to decode its text the same way."""
    from .longform import LongForm

    return LongForm("", list(tokens))


DIVERGENCE = "divergence_gap"  # bounded after the row is scored: it needs the reference's logits

# How far apart (in processed logits) the reference's token and generate's may be at their first difference
# for the difference to count as a tie: generate's cached attention and the reference's uncached one round
# differently (more so on a GPU), and a random model's logits are close together, so an exact tie can flip.
TIE_LOGIT_GAP = 1e-3


def _generate_agrees(model: Any, frontend: Frontend, utts: list[Utterance], subset: list[int], spec: dict[str, Any],
                     dc: DecodeConfig, steps: int, ref: dict[int, Any],
                     progress: StepProgress) -> tuple[dict[int, bool], list[dict[str, Any]]]:
    """``model.generate`` at batch 1 against the reference loop on the subset (up to EOS).

    Where they first differ, the reference's logits at that step decide: a gap of at most ``TIE_LOGIT_GAP``
    between the two tokens is a near tie (recorded, not a failure); anything larger means the reference loop
    is not the model's greedy decode.
    """
    agrees, ties = {}, []
    for i in subset:
        samples = spec["graphs"][fit(utts[i].seconds, spec["graphs"]) or ""]
        feeds = frontend.features([utts[i].audio], samples)
        gen = hf_generate(model, dc.arch, feeds, dc, steps)[0]
        r = [int(t) for t in ref[i]]
        step = first_difference(r, gen, dc.eos, steps)
        agrees[i] = step is None
        if step is not None:
            chosen = gen[step] if step < len(gen) else dc.eos
            gap = logit_gap(model, dc, feeds, r[:step], r[step], chosen)
            if gap <= TIE_LOGIT_GAP:
                agrees[i] = True
                ties.append({"input": utts[i].name, "step": step, "reference_token": r[step],
                             "generate_token": chosen, "logit_gap": gap})
        progress.advance(1, "model.generate check")
    return agrees, ties


def _with_logit_gaps(row: dict[str, Any], model: Any, frontend: Frontend, utts: list[Utterance],
                     spec: dict[str, Any], dc: DecodeConfig, expected: dict[int, Any]) -> dict[str, Any]:
    """Where a runtime's tokens first leave the reference's, how far apart the reference's own (float32,
    processed) logits put the two tokens: the evidence for a half-precision row that drifts. A random model's
    logits are nearly flat, so one rounding can flip a near tie (a gap of a few thousandths) and greedy
    decoding then follows another path; a wrong kernel picks a token the reference ranks far below."""
    gaps = []
    for i, item in enumerate(row["per_input"]):
        j, have = item.get("first_mismatch"), item.get("tokens") or []
        want = [int(t) for t in expected.get(i, [])]
        if j is None or j >= len(want) or j >= len(have) or is_long(utts[i], spec):
            continue  # no difference, or one in length (EOS) only: no token of the runtime's to rank
        samples = spec["graphs"][fit(utts[i].seconds, spec["graphs"]) or ""]
        gap = logit_gap(model, dc, frontend.features([utts[i].audio], samples), want[:j], want[j], have[j])
        item["reference_logit_gap"] = round(gap, 6)
        gaps.append(gap)
    if gaps:
        row["max_reference_logit_gap"] = round(max(gaps), 6)
    bound = row.get("bounds", {}).get(DIVERGENCE)
    if bound is not None:  # a reduced-precision row on random weights: where it differs, a near tie
        values = measure([DIVERGENCE], Evidence(divergence=gaps))
        row.update({k: round(v, 6) for k, v in values.items()})
        failures = check(values, {DIVERGENCE: bound})
        if failures:
            row["failures"] = [*row["failures"], *(f"{f} (the float32 reference ranks this runtime's token that far "
                                                   "below its own where they first differ: not a rounding)"
                                                   for f in failures)]
            row["ok"] = False
    return row


def first_difference(ref: list[int], gen: list[int], eos: int, steps: int) -> int | None:
    """The first step where generate's tokens (EOS-trimmed) leave the reference's, or None."""
    wanted = until_eos(ref, eos)
    for k in range(min(steps, len(wanted) + 1)):
        got = gen[k] if k < len(gen) else eos
        want = wanted[k] if k < len(wanted) else eos
        if got != want:
            return k
        if got == eos:
            return None
    return None


def logit_gap(model: Any, dc: DecodeConfig, feeds: dict[str, Any], prefix: list[int], ref_token: int,
              gen_token: int) -> float:
    """The reference's (uncached, processed) logit of its own token minus that of generate's at one step."""
    import torch

    t = to_torch(feeds, model)
    seq = torch.tensor([dc.prompt + prefix], device=model.device)
    extra = {"attention_mask": t["attention_mask"]} if "attention_mask" in t else {}
    with torch.no_grad():
        enc = reference_encoder(model, dc.arch, t)
        logits = model(encoder_outputs=enc, decoder_input_ids=seq, use_cache=False, **extra).logits
    last = logits[:, -1, :].float().cpu()
    row = dc.rules().state(1, last.shape[-1], "cpu").apply(last, first=not prefix)[0]
    return float(row[ref_token] - row[gen_token])


def _versions() -> dict[str, str]:
    from ... import __version__
    from ...core.keys import dist_version

    dists = ("torch", "transformers", "onnx", "onnxruntime", "numpy", "jiwer", "matplotlib", "datasets")
    return {"qeffbuild": __version__, **{d: dist_version(d) for d in dists}}


