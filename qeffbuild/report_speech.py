"""The readable table of a speech validation: agreement, WER/CER and the decoded text."""

from __future__ import annotations

from typing import Any

from .report import table


def render_speech(report: dict[str, Any]) -> str:
    headers = ["runtime", "specialization", "dtype", "token agreement", "WER", "CER", "tokens/s", "result"]
    rows = []
    for r in report["rows"]:
        wer = f"{r['wer']:.3f}" if "wer" in r else "-"
        cer = f"{r['cer']:.3f}" if "cer" in r else "-"
        rows.append([r["runtime"], r["specialization"] or "-", r["dtype"], f"{r['token_agreement']:.3f}", wer, cer,
                     str(r["tokens_per_s"] or "-"), "ok" if r["ok"] else "FAIL"])
    out = [f"{len(report['inputs'])} utterances × {report['steps']} greedy steps; prompt {report['prompt']}; "
           f"reference: {report['reference']}", table(headers, rows), ""]
    for i, name in enumerate(report["inputs"]):
        out.append(f"{name}: transcript {report['transcripts'][i]!r}")
        for r in report["rows"]:
            per = r["per_input"][i]
            mark = "" if per["first_mismatch"] is None else f"  (differs from step {per['first_mismatch']})"
            out.append(f"  {r['runtime']:<20} {per['text']!r}{mark}")
    return "\n".join(out) + "\n"
