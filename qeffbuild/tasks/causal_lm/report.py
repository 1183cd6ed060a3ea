"""The causal-LM validation's reports: the text table, the failure message and the HTML page's content."""

from __future__ import annotations

from typing import Any

from ...reports import RANDOM_WEIGHTS, failure_text, printable, row_label, table
from ...reports.html import Page, Plot, Table

__all__ = ["failure_text", "render", "render_html"]  # failure_text: the shared one, for the validation


def render(report: dict[str, Any]) -> str:
    headers = ["runtime", "specialization", "dtype", "batch", "token agreement", "tokens/s", "result"]
    rows = [[r["runtime"], r["specialization"] or "-", r["dtype"], str(r["batch_size"]), f"{r['token_agreement']:.3f}",
             f"{r['tokens_per_s']:.1f}" if r.get("tokens_per_s") else "-", "ok" if r["ok"] else "FAIL"]
            for r in report["rows"]]
    out = [f"{len(report['prompts'])} prompts ({min(report['prompt_tokens'])}–{max(report['prompt_tokens'])} tokens); "
           f"exact tokens on {report['steps']} greedy steps each", f"reference: {report['reference']}",
           table(headers, rows)]
    if report.get("random_weights"):
        out.append(f"{RANDOM_WEIGHTS}.")
    out.append("")
    for i, prompt in enumerate(report["prompts"][:8]):
        out.append(f"prompt {i + 1}: {printable(prompt)!r}")
        for r in report["rows"]:
            per = r["per_input"][i]
            mark = "" if per["first_mismatch"] is None else f"  (differs from step {per['first_mismatch']})"
            out.append(f"  {row_label(r):<36} {per['text'][:100]!r}{mark}")
    return "\n".join(out) + "\n"


def render_html(report: dict[str, Any], template_text: str, title: str) -> str:
    from ...reports import plots
    from ...reports.html import render as render_page

    rows = report["rows"]
    labels = [row_label(r) for r in rows]
    summary = Table("Summary", ["runtime", "specialization", "dtype", "batch", "token agreement", "tokens/s", "result"],
                    [[r["runtime"], r["specialization"] or "-", r["dtype"], r["batch_size"],
                      f"{r['token_agreement']:.3f}", f"{r['tokens_per_s']:.1f}" if r.get("tokens_per_s") else "-",
                      "ok" if r["ok"] else "FAIL"] for r in rows],
                    note="token agreement: share of greedy tokens equal to the reference's, over every prompt.",
                    status_column=6)
    facts = [("prompts", f"{len(report['prompts'])}, {min(report['prompt_tokens'])}–{max(report['prompt_tokens'])} "
                         "tokens"), ("steps", str(report["steps"])), ("reference", report["reference"])]
    page = Page(title, report["ok"], facts, [f"{row_label(r)}: {f}" for r in rows for f in r["failures"]], [summary],
                provenance=report.get("provenance", {}),
                banner=RANDOM_WEIGHTS if report.get("random_weights") else "")
    page.plots.append(Plot("Token agreement with the reference", plots.bars(
        labels, [r["token_agreement"] for r in rows], "share of tokens equal", fmt="{:.3f}"),
        "1.000 means every greedy token of every prompt equals the reference's."))
    page.details.append(Table("Generations per prompt", ["#", "prompt", *labels],
                              [[i + 1, p, *[r["per_input"][i]["text"] for r in rows]]
                               for i, p in enumerate(report["prompts"])], collapsed=len(report["prompts"]) > 20))
    return render_page(page, template_text)
