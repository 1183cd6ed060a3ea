"""The CTC validation's reports: the text table, the failure message and the HTML page's content."""

from __future__ import annotations

from typing import Any

from ...reports import RANDOM_WEIGHTS, failure_text, printable, row_label, table
from ...reports.html import Page, Plot, Table

__all__ = ["failure_text", "render", "render_html"]  # failure_text: the shared one, for the validation


HEADERS = ["runtime", "specialization", "dtype", "batch", "id agreement", "WER", "ΔWER", "CER", "samples/s", "RTF",
           "result"]


def _f(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _noise(report: dict[str, Any], text: str) -> str:
    """A transcription metric as shown: in parentheses when the weights are random (it measures noise)."""
    return f"({text})" if report.get("random_weights") and text != "-" else text


def _cells(report: dict[str, Any], r: dict[str, Any]) -> list[str]:
    return [r["runtime"], r["specialization"] or "-", r["dtype"], str(r["batch_size"]), _f(r.get("token_agreement")),
            _noise(report, _f(r.get("wer"))), _noise(report, _f(r.get("wer_delta"), "+.3f")),
            _noise(report, _f(r.get("cer"))), _f(r.get("samples_per_s"), ".2f"), _f(r.get("rtf"), ".4f"),
            "ok" if r["ok"] else "FAIL"]


def render(report: dict[str, Any]) -> str:
    out = [f"{len(report['inputs'])} utterances ({report['audio_s']:.1f} s of audio) from {report['source']}; "
           f"argmax ids compared on all {sum(report['frames'])} frames; normalizer {report['normalizer']}",
           f"reference: {report['reference']}", *[f"long audio: {line}" for line in report.get("long_audio", [])],
           table(HEADERS, [_cells(report, r) for r in report["rows"]])]
    if report.get("random_weights"):
        out.append(f"{RANDOM_WEIGHTS}. WER, ΔWER and CER (in parentheses) measure noise.")
    out.append("")
    for i, name in enumerate(report["inputs"][:20]):
        transcript = report["transcripts"][i]
        out.append(f"{name}" + (f": {printable(transcript)!r}" if transcript else ""))
        for r in report["rows"]:
            per = r["per_input"][i]
            mark = "" if per["first_mismatch"] is None else f"  (differs from frame {per['first_mismatch']})"
            out.append(f"  {row_label(r):<36} {printable(per['text'])[:100]!r}{mark}")
    return "\n".join(out) + "\n"


def render_html(report: dict[str, Any], template_text: str, title: str) -> str:
    from ...reports import plots
    from ...reports.html import render as render_page

    rows = report["rows"]
    labels = [row_label(r) for r in rows]
    summary = Table("Summary", HEADERS, [_cells(report, r) for r in rows],
                    note="id agreement: share of frames whose argmax id equals the reference's, over every utterance.",
                    status_column=len(HEADERS) - 1)
    facts = [("utterances", f"{len(report['inputs'])} ({report['audio_s']:.1f} s) from {report['source']}"),
             ("frames compared", str(sum(report["frames"]))), ("normalizer", report["normalizer"]),
             ("reference", report["reference"]), *[("long audio", line) for line in report.get("long_audio", [])]]
    page = Page(title, report["ok"], facts, [f"{row_label(r)}: {f}" for r in rows for f in r["failures"]], [summary],
                provenance=report.get("provenance", {}),
                banner=RANDOM_WEIGHTS if report.get("random_weights") else "")
    page.plots.append(Plot("Argmax agreement with the reference", plots.bars(
        labels, [r["token_agreement"] for r in rows], "share of frames equal", fmt="{:.3f}"),
        "1.000 means every frame of every utterance has the reference's id."))
    page.details.append(Table("Transcripts per utterance", ["input", "transcript", *labels],
                              [[name, report["transcripts"][i] or "", *[r["per_input"][i]["text"] for r in rows]]
                               for i, name in enumerate(report["inputs"])], collapsed=len(report["inputs"]) > 20))
    return render_page(page, template_text)
