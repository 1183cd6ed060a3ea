"""How `qeffbuild run` shows embeddings (torch-free): the first values and the width of each."""

from __future__ import annotations

from typing import Any

FORMATS = ("text", "json")


def render(rows: list[dict[str, Any]], fmt: str) -> list[str]:
    from ...reports import printable

    return [f"{printable(r['input'])}: [{', '.join(f'{v:.4f}' for v in r['embedding'][:4])}, …] "
            f"({len(r['embedding'])} dims)" for r in rows]
