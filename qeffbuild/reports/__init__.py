"""The reports room: writing a validation's report (report.json, report.txt, report.html) and tables.

A family renders its own table and page content (``tasks/<family>/report.py``); this module writes
the files, prints the table and turns a failed check into :class:`~qeffbuild.errors.ValidationFailed`.
``html.py`` renders the self-contained HTML page; ``plots.py`` draws its SVG plots.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

RANDOM_WEIGHTS = ("random weights: this model was built from a config with random weights, so its outputs are "
                  "noise. 'ok' means every runtime gives the reference model's answers, not that the model is "
                  "any good")


def sig(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant digits: how reports store measured times and rates, so that a fast
    machine's 0.00206 s is not stored as 0.0021 (a fixed number of decimals loses the small ones)."""
    return float(f"{value:.{digits}g}")


def printable(text: str) -> str:
    """Text for a terminal: control and format characters (ESC, BEL, bidi overrides a model or a file name may
    hold) written as escapes, so they cannot move the cursor, ring or reorder what follows."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode() for c in text)


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if v != 1.0 else "1"
    return str(v)


def row_label(row: dict[str, Any]) -> str:
    """A validation row's name in reports: its runtime, and its specialization where it has one."""
    return row["runtime"] if not row.get("specialization") else f"{row['runtime']} · {row['specialization']}"


def failure_text(report: dict[str, Any]) -> str:
    """Every row's failures, one line each: what a failed validation prints."""
    lines = ["validation failed:"]
    for r in report["rows"]:
        lines += [f"  {r['runtime']} [{r.get('specialization') or '-'}]: {f}" for f in r.get("failures", [])]
    return "\n".join(lines)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(out)


def publish(out: Path, report: dict[str, Any], render: Callable[[dict[str, Any]], str],
            failure_text: Callable[[dict[str, Any]], str],
            html: Callable[[dict[str, Any]], str] | None = None) -> None:
    """Write report.json, report.txt and report.html, print the table, and fail when a check did not hold."""
    from ..errors import ValidationFailed

    text = render(report)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.txt").write_text(text)
    if html is not None:
        (out / "report.html").write_text(html(report))
    print(text)
    if not report["ok"]:
        raise ValidationFailed(failure_text(report))
