"""The HTML report: one self-contained file per validation (no network, no JavaScript at view time).

A family turns its report.json into a :class:`Page` (facts, tables, plots); this module renders
it with ``templates/report/report.html.j2``. The validation step renders it from the template
it was given (the template's text is part of its key); ``qeffbuild report TARGET`` re-renders a
built target's report, adding the build's provenance (every step's key and duration).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEMPLATE = "report/report.html.j2"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[Any]]
    note: str = ""
    status_column: int | None = None  # the column holding ok / FAIL (coloured)
    collapsed: bool = False  # long tables start folded

    @property
    def numeric(self) -> list[bool]:
        """Per column: every cell is a number (or a number as text, or "-"), so cell and header align right."""
        cols = [all(_numeric(row[i]) for row in self.rows) and any(row[i] != "-" for row in self.rows)
                for i in range(len(self.headers))]
        return [c and i != self.status_column for i, c in enumerate(cols)]


def _numeric(cell: Any) -> bool:
    if isinstance(cell, (int, float)) and not isinstance(cell, bool):
        return True
    if not isinstance(cell, str):
        return False
    text = cell.strip("()").removeprefix("+").removeprefix("-").replace(",", "")
    return cell == "-" or text.replace(".", "", 1).replace("e-", "", 1).replace("e+", "", 1).isdigit()


@dataclass
class Plot:
    title: str
    svg: str
    caption: str = ""


@dataclass
class Page:
    title: str
    ok: bool
    facts: list[tuple[str, str]]
    failures: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    details: list[Table] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    banner: str = ""  # said above everything else (random weights: what "ok" means here)


def render(page: Page, template_text: str) -> str:
    """The page through the report template (a project may override it), in the sandbox ``templating`` uses."""
    from ..templating import render as render_template
    from ..templating import sandbox

    env = sandbox(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["pretty"] = lambda v: json.dumps(v, indent=1, sort_keys=True)
    return render_template(env, TEMPLATE, f"templates/{TEMPLATE}", {"page": page}, source=template_text)


def template_from(files: dict[str, Path]) -> str:
    """The report template a step was given (label ``template:report/report.html.j2``)."""
    return files[f"template:{TEMPLATE}"].read_text()


def provenance_rows(provenance: dict[str, Any]) -> dict[str, Any]:
    """Provenance as the template shows it: keys, versions, timings (any may be missing)."""
    return {k: provenance.get(k, {}) for k in ("keys", "versions", "timings_s", "build")}
