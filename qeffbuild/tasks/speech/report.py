"""The speech validation's readable table (agreement, WER/CER, the decoded text) and its failure message."""

from __future__ import annotations

from typing import Any

from ...reports import table


def render(report: dict[str, Any]) -> str:
    headers = ["runtime", "specialization", "dtype", "token agreement", "WER", "CER", "tokens/s", "result"]
    rows = []
    for r in report["rows"]:
        wer = f"{r['wer']:.3f}" if r.get("wer") is not None else "-"
        cer = f"{r['cer']:.3f}" if r.get("cer") is not None else "-"
        agreement = f"{r['token_agreement']:.3f}" if r.get("token_agreement") is not None else "-"
        rows.append([r["runtime"], r["specialization"] or "-", r["dtype"], agreement, wer, cer,
                     str(r.get("tokens_per_s") or "-"), "ok" if r["ok"] else "FAIL"])
    out = [f"{len(report['inputs'])} utterances × {report['steps']} greedy steps; prompt {report['prompt']}; "
           f"reference: {report['reference']}"]
    out += [f"note: {name}: {note}" for name, note in report.get("notes", {}).items()]
    out += [table(headers, rows), ""]
    for i, name in enumerate(report["inputs"]):
        out.append(f"{name}: transcript {report['transcripts'][i]!r}")
        for r in report["rows"]:
            if not r.get("per_input"):
                continue
            per = r["per_input"][i]
            mark = "" if per["first_mismatch"] is None else f"  (differs from step {per['first_mismatch']})"
            out.append(f"  {r['runtime']:<20} {per['text']!r}{mark}")
    return "\n".join(out) + "\n"


def failure_text(report: dict[str, Any]) -> str:
    lines = ["validation failed:"]
    for r in report["rows"]:
        for f in r["failures"]:
            lines.append(f"  {r['runtime']} [{r['specialization'] or '-'}]: {f}")
    return "\n".join(lines)
