"""Where a key sits in a TOML file: line numbers for error messages.

``tomllib`` keeps no positions, so this scans the text for table headers and
``key = value`` lines. It understands what manifests use (tables, dotted and quoted keys,
inline tables on one line); anything it cannot place falls back to its table's line.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")
_INLINE_KEY = re.compile(r"""[{,]\s*([A-Za-z0-9_-]+|"[^"]*")\s*=""")


def _split_dotted(text: str) -> tuple[str, ...]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)
    return tuple(p.strip("\"'") for p in parts)


def index_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map every dotted key path seen in ``text`` to the 1-based line it is defined on."""
    where: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    depth = 0  # open brackets of a multi-line array: keys inside are not top-level
    for lineno, line in enumerate(text.splitlines(), start=1):
        if depth == 0 and (m := _HEADER.match(line)):
            table = _split_dotted(m.group(1))
            where.setdefault(table, lineno)
            continue
        if depth == 0 and (m := _KEY.match(line)):
            path = table + _split_dotted(m.group(1))
            where.setdefault(path, lineno)
            rest = line[m.end():]
            for inner in _INLINE_KEY.finditer(rest):
                where.setdefault((*path, inner.group(1).strip('"')), lineno)
        code = line.split("#", 1)[0]
        depth = max(0, depth + code.count("[") - code.count("]"))
    return where


def line_of(index: dict[tuple[str, ...], int], path: tuple[str, ...]) -> int | None:
    """The line of ``path``, or of its closest enclosing key or table."""
    for n in range(len(path), 0, -1):
        if path[:n] in index:
            return index[path[:n]]
        # A table known only through its sub-tables ([a.b] without [a]): its first sub-table.
        below = [line for key, line in index.items() if key[:n] == path[:n]]
        if below:
            return min(below)
    return None
