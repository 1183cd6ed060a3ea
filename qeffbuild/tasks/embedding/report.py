"""The embedding validation's readable table and its failure message."""

from __future__ import annotations

from typing import Any

from ...checks import check
from ...reports import fmt, table


def render(report: dict[str, Any]) -> str:
    headers = ["runtime", "specialization", "dtype", "MAD", "max-abs", "min cosine", "graphs used", "s", "result"]
    rows = []
    for r in report["rows"]:
        if "skipped" in r:
            rows.append([r["runtime"], "-", "-", "-", "-", "-", "-", "-", f"skipped: {r['skipped']}"])
            continue
        used = r.get("batches_per_seq_len")
        graphs = ",".join(f"{k}:{v}" for k, v in used.items()) if used else "-"
        rows.append([r["runtime"], r["specialization"] or "-", r["dtype"], fmt(r["mad"]), fmt(r["max_abs"]),
                     fmt(r["cosine"]), graphs, f"{r['seconds']:.2f}", "ok" if r["ok"] else "FAIL"])
    n = len(report["inputs"])
    head = f"{n} inputs ({min(report['tokens'])}–{max(report['tokens'])} tokens); reference: {report['reference']}"
    notes = "".join(f"note: {note}\n" for note in report.get("notes", []))
    return head + "\n" + notes + table(headers, rows) + "\n"


def failure_text(report: dict[str, Any]) -> str:
    lines = ["validation failed:"]
    for r in report["rows"]:
        for f in r.get("failures", []):
            lines.append(f"  {r['runtime']} [{r['specialization'] or '-'}]: {f}")
        bounds = {k: v for k, v in r.get("bounds", {}).items() if k in ("max_abs", "cosine")}
        for i, m in enumerate(r.get("per_input", [])):
            bad = check({k: v for k, v in m.items() if k in bounds}, bounds)
            if bad:
                lines.append(f"    input {i + 1} {report['inputs'][i][:50]!r}: {'; '.join(bad)}")
    return "\n".join(lines)
