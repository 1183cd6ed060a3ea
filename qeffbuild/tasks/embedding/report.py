"""The embedding validation's readable table and its failure message."""

from __future__ import annotations

from typing import Any

from ...checks import check
from ...reports import RANDOM_WEIGHTS, fmt, row_label, table
from ...reports.html import Page, Plot, Table


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
    random = f"{RANDOM_WEIGHTS}.\n" if report.get("random_weights") else ""
    return head + "\n" + notes + table(headers, rows) + "\n" + random


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


def _num(v: Any, digits: int = 3) -> str:
    """As the text report writes it (``fmt``: 3 significant digits), more digits for cosines."""
    return fmt(v) if digits == 3 or v is None else f"{float(v):.{digits}g}"


def _cut(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def _short(rows: list[dict[str, Any]]) -> list[str]:
    """Plot labels: the runtime alone when every row has the same specialization."""
    specs = {r.get("specialization") for r in rows if r.get("specialization")}
    return [r["runtime"] if len(specs) <= 1 else row_label(r) for r in rows]


def page(report: dict[str, Any], title: str) -> Page:
    """The HTML page: summary, MAD and cosine per runtime, latency, throughput against seq_len and batch."""
    from ...reports import plots

    rows = [r for r in report["rows"] if "skipped" not in r]
    facts = [("inputs", f"{len(report['inputs'])} sentences, {min(report['tokens'])}–{max(report['tokens'])} tokens"),
             ("reference", report["reference"])] + [("note", n) for n in report.get("notes", [])]
    summary = Table("Summary", ["runtime", "specialization", "dtype", "batch", "MAD", "max-abs", "min cosine",
                                "sequences/s", "result"],
                    [[r["runtime"], r["specialization"] or "-", r["dtype"], r.get("batch_size") or "-",
                      _num(r.get("mad")), _num(r.get("max_abs")), _num(r.get("cosine"), 7),
                      _num(r.get("sequences_per_s")), "ok" if r["ok"] else "FAIL"] for r in report["rows"]
                     if "skipped" not in r],
                    note="Against the reference on every input: mean and largest absolute difference, lowest "
                         "per-input cosine similarity.", status_column=8)
    failures = [f"{row_label(r)}: {f}" for r in report["rows"] for f in r.get("failures", [])]
    out = Page(title, report["ok"], facts, failures,
               [summary], provenance=report.get("provenance", {}),
               banner=RANDOM_WEIGHTS if report.get("random_weights") else "")
    compared = [r for r in rows if r.get("runtime") != "pytorch"]
    if compared:
        short = _short(compared)
        out.plots.append(Plot("Mean absolute difference from the reference", plots.bars(
            short, [r.get("mad") for r in compared], "MAD (log scale)", log=True),
            "Lower is closer to the reference; the summary table has each bound."))
        out.plots.append(Plot("Lowest cosine similarity per runtime", plots.bars(
            short, [r.get("cosine") for r in compared], "min cosine", fmt="{:.6f}"),
            "The least similar input's cosine with the reference embedding."))
    timed = {label: [b["seconds"] * 1000 / b["rows"] for b in r.get("latency_s", [])]
             for label, r in zip(_short(rows), rows, strict=True) if r.get("latency_s")}
    if timed:
        out.plots.append(Plot("Latency per sequence", plots.boxes(timed, "ms per sequence"),
                              "Each dot is one batch's time at its compiled seq_len, divided by its sequences. "
                              "Validation timings include each runtime's first calls; `qeffbuild bench` measures "
                              "the steady state."))
    by_seq: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        per: dict[int, list[float]] = {}
        for b in r.get("latency_s", []):
            per.setdefault(int(b["seq_len"]), []).append(b["rows"] / b["seconds"] if b["seconds"] > 0 else 0.0)
        if len(per) > 1:
            by_seq[row_label(r)] = [(n, sum(v) / len(v)) for n, v in sorted(per.items())]
    if by_seq:
        out.plots.append(Plot("Throughput against sequence length", plots.lines(by_seq, "seq_len", "sequences/s"),
                              "Mean over the batches that ran at each compiled length."))
    per_input = Table("Per input", ["#", "sentence", "tokens", *[f"{row_label(r)} cosine" for r in compared]],
                      [[i + 1, _cut(s), report["tokens"][i], *[_num(r["per_input"][i].get("cosine"), 7)
                                                               if r.get("per_input") else "-" for r in compared]]
                       for i, s in enumerate(report["inputs"])], collapsed=len(report["inputs"]) > 40)
    out.details.append(per_input)
    return out


def render_html(report: dict[str, Any], template_text: str, title: str) -> str:
    from ...reports.html import render as render_page

    return render_page(page(report, title), template_text)
