"""The speech validation's reports: the text table, the failure message and the HTML page's content."""

from __future__ import annotations

from typing import Any

from ...reports import RANDOM_WEIGHTS, failure_text, row_label, table
from ...reports.html import Page, Plot, Table

__all__ = ["failure_text", "render", "render_html"]  # failure_text: the shared one, for the validation


def _f(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _noise(report: dict[str, Any], text: str) -> str:
    """A transcription metric as shown: in parentheses when the weights are random (it measures noise)."""
    return f"({text})" if report.get("random_weights") and text != "-" else text


def render(report: dict[str, Any]) -> str:
    headers = ["runtime", "specialization", "dtype", "batch", "token agreement", "WER", "ΔWER", "CER", "samples/s",
               "RTF", "tokens/s", "result"]
    rows = [[r["runtime"], r["specialization"] or "-", r["dtype"], str(r.get("batch_size", "-")),
             _f(r.get("token_agreement")), _noise(report, _f(r.get("wer"))),
             _noise(report, _f(r.get("wer_delta"), "+.3f")), _noise(report, _f(r.get("cer"))),
             _f(r.get("samples_per_s"), ".2f"), _f(r.get("rtf"), ".3f"), _f(r.get("tokens_per_s"), ".1f"),
             "ok" if r["ok"] else "FAIL"] for r in report["rows"]]
    out = [f"{len(report['inputs'])} utterances ({report['audio_s']:.1f} s of audio) from {report['source']}; "
           f"exact tokens on {len(report['exact_subset'])} × {report['steps']} steps; transcripts of at most "
           f"{report['generation_max_length']} tokens; normalizer {report['normalizer']}; prompt {report['prompt']}",
           f"reference: {report['reference']}"]
    out += [f"note: {name}: {note}" for name, note in report.get("notes", {}).items()]
    for r in report["rows"]:
        out += [f"note: model.generate differs from the reference loop on {t['input']} at step {t['step']} "
                f"({t['generate_token']} for {t['reference_token']}), a near tie: the reference's logits differ by "
                f"{t['logit_gap']:.2g}" for t in r.get("generate_near_ties", [])]
    out.append(table(headers, rows))
    out.append("speed: samples/s, RTF and tokens/s are end to end over this data set (features, encoder and decode); "
               "`qeffbuild bench` gives the decode alone per token, and utterances/s at full batches")
    out += [f"note: {row_label(r)}: {len(report['inputs'])} utterances do not fill its batches of {r['batch_size']}; "
            f"at full batches {r['full_batch_samples_per_s']:.2f} samples/s (bench's utt/s)"
            for r in report["rows"] if r.get("full_batch_samples_per_s")]
    if report.get("random_weights"):
        out.append(f"{RANDOM_WEIGHTS} (WER, ΔWER and CER are in parentheses: they score noise).")
    out.append("")
    for i, name in enumerate(report["inputs"][:12]):
        out.append(f"{name}: transcript {report['transcripts'][i]!r}")
        for r in report["rows"]:
            per = r["per_input"][i] if r.get("per_input") else None
            if per is None:
                continue
            mark = "" if per.get("first_mismatch") is None else f"  (differs from step {per['first_mismatch']}"
            if mark and "reference_logit_gap" in per:  # how close the reference's two candidates were there
                mark += f"; reference logit gap {per['reference_logit_gap']:.3g}"
            mark += ")" if mark else ""
            out.append(f"  {row_label(r):<36} {per['text']!r}{mark}")
    if len(report["inputs"]) > 12:
        out.append(f"… {len(report['inputs']) - 12} more utterances in report.json and report.html")
    return "\n".join(out) + "\n"


def _short(rows: list[dict[str, Any]]) -> list[str]:
    """Plot labels: the runtime alone when every row has the same specialization."""
    specs = {r.get("specialization") for r in rows if r.get("specialization")}
    return [r["runtime"] if len(specs) <= 1 else row_label(r) for r in rows]


def page(report: dict[str, Any], title: str) -> Page:
    """The HTML page: summary, agreement, WER (per runtime and per utterance), latency and throughput."""
    from ...reports import plots

    rows = report["rows"]
    labels = _short(rows)
    has_wer = any(r.get("wer") is not None for r in rows)
    facts = [("inputs", f"{len(report['inputs'])} utterances, {report['audio_s']:.1f} s of audio, from "
                        f"{report['source']} ({report['source_kind']})"),
             ("exact tokens", f"{len(report['exact_subset'])} utterances × {report['steps']} greedy steps against "
                              "the reference"),
             ("transcripts", f"at most {report['generation_max_length']} new tokens, each row stopping at its end "
                             f"of text; normalizer {report['normalizer']}"),
             ("reference", report["reference"]), ("architecture", report["architecture"]),
             ("prompt", str(report["prompt"]))]
    noise = bool(report.get("random_weights"))
    summary = Table("Summary", ["runtime", "specialization", "dtype", "batch", "token agreement", "WER", "ΔWER",
                                "CER", "samples/s", "RTF", "tokens/s", "result"],
                    [[r["runtime"], r["specialization"] or "-", r["dtype"], r.get("batch_size", "-"),
                      _num(r.get("token_agreement")), _num(r.get("wer"), noise=noise),
                      _num(r.get("wer_delta"), signed=True, noise=noise), _num(r.get("cer"), noise=noise),
                      _num(r.get("samples_per_s"), 2), _num(r.get("rtf"), 3), _num(r.get("tokens_per_s"), 1),
                      "ok" if r["ok"] else "FAIL"] for r in rows],
                    note="token agreement: share of greedy tokens equal to the reference's on the exact subset; "
                         "ΔWER: WER minus the float32 reference's on the same data; RTF: decode time / audio time."
                         + (" WER, ΔWER and CER are in parentheses: on random weights they score noise." if noise
                            else ""),
                    status_column=11)
    page = Page(title, report["ok"], facts, [f"{row_label(r)}: {f}" for r in rows for f in r["failures"]], [summary],
                provenance=report.get("provenance", {}), banner=RANDOM_WEIGHTS if noise else "")
    page.plots.append(Plot("Token agreement with the reference (exact subset)", plots.bars(
        labels, [r.get("token_agreement") for r in rows], "share of tokens equal", fmt="{:.3f}"),
        "1.000 means every greedy token of every checked utterance equals the reference's."))
    if has_wer:
        ref_wer = rows[0].get("wer")
        noted = " (random weights: noise)" if noise else ""
        page.plots.append(Plot(f"WER per runtime{noted}", plots.bars(
            labels, [r.get("wer") for r in rows], "WER", line=ref_wer, line_label="float32 reference", fmt="{:.3f}"),
            f"normalizer: {report['normalizer']}"))
        page.plots.append(Plot(f"WER per utterance{noted}", plots.dots(
            report["inputs"], {label: [p.get("wer") for p in r["per_input"]] for label, r in zip(labels, rows,
                                                                                                    strict=True)},
            "WER"),
            "One dot per utterance and runtime; the utterances are numbered as in the table below."))
    page.plots.append(Plot("Latency per utterance", plots.boxes(
        {label: [b["seconds"] * 1000 / b["rows"] for b in r.get("latency_s", [])]
         for label, r in zip(labels, rows, strict=True)}, "ms per utterance"),
        "Each dot is one batch's time (features, encoder and every decoder step) divided by its utterances; "
        "box: quartiles. Validation timings include each runtime's first calls; `qeffbuild bench` measures the "
        "steady state."))
    throughput = _throughput(rows)
    if throughput:
        page.plots.append(Plot("Throughput against batch size", plots.lines(throughput, "batch size", "samples/s"),
                               "Every runtime that ran at more than one batch size."))
    detail = Table("Transcripts per utterance",
                   ["#", "utterance", "seconds", "transcript", *[f"{row_label(r)}" for r in rows]],
                   [[i + 1, name, report["durations_s"][i], report["transcripts"][i] or "-",
                     *[_hyp(r["per_input"][i]) for r in rows]] for i, name in enumerate(report["inputs"])],
                   note="Each runtime's text (and its WER when there is a transcript).",
                   collapsed=len(report["inputs"]) > 40)
    page.details.append(detail)
    return page


def _num(v: Any, digits: int = 3, signed: bool = False, noise: bool = False) -> str:
    """A number as the text report writes it (fixed decimals), so both reports show the same figures."""
    if v is None:
        return "-"
    text = format(float(v), f"{'+' if signed else ''}.{digits}f")
    return f"({text})" if noise else text


def _hyp(per: dict[str, Any]) -> str:
    wer = f" (WER {per['wer']:.2f})" if per.get("wer") is not None else ""
    gap = f"; reference logit gap {per['reference_logit_gap']:.3g}" if "reference_logit_gap" in per else ""
    mark = f" [differs from step {per['first_mismatch']}{gap}]" if per.get("first_mismatch") is not None else ""
    return f"{per['text']!r}{wer}{mark}"


def _throughput(rows: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    by: dict[str, dict[int, float]] = {}
    for r in rows:
        if r.get("samples_per_s") is not None and r["specialization"]:
            by.setdefault(f"{r['runtime']} ({r['dtype']})", {})[int(r["batch_size"])] = float(r["samples_per_s"])
    return {k: sorted(v.items()) for k, v in by.items() if len(v) > 1}


def render_html(report: dict[str, Any], template_text: str, title: str) -> str:
    from ...reports.html import render as render_page

    return render_page(page(report, title), template_text)
