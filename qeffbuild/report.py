"""Readable validation reports: the table printed on the terminal and saved as report.txt."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if v != 1.0 else "1"
    return str(v)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def render_table(report: dict[str, Any]) -> str:
    if report["task"] != "embedding":
        from .report_speech import render_speech

        return render_speech(report)
    headers = ["runtime", "specialization", "dtype", "MAD", "max-abs", "min cosine", "graphs used", "s", "result"]
    rows = []
    for r in report["rows"]:
        if "skipped" in r:
            rows.append([r["runtime"], "-", "-", "-", "-", "-", "-", "-", f"skipped: {r['skipped']}"])
            continue
        used = r.get("batches_per_seq_len")
        graphs = ",".join(f"{k}:{v}" for k, v in used.items()) if used else "-"
        rows.append([r["runtime"], r["specialization"] or "-", r["dtype"], _fmt(r["mad"]), _fmt(r["max_abs"]),
                     _fmt(r["cosine"]), graphs, f"{r['seconds']:.2f}", "ok" if r["ok"] else "FAIL"])
    n = len(report["inputs"])
    head = f"{n} inputs ({min(report['tokens'])}–{max(report['tokens'])} tokens); reference: {report['reference']}"
    return head + "\n" + table(headers, rows) + "\n"


def publish(out: Path, report: dict[str, Any], failure_text: Callable[[dict[str, Any]], str]) -> None:
    """Write report.json and report.txt, print the table, and fail when a check did not hold."""
    import json

    from .errors import ValidationFailed

    text = render_table(report)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.txt").write_text(text)
    print(text)
    if not report["ok"]:
        raise ValidationFailed(failure_text(report))
