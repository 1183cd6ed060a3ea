"""A matrix in a manifest: one table that expands into the cross product of named axes.

Any target table (``[models.*]``, ``[specializations.*]``, ``[validations.*]``, ``[steps.*]``) may carry a
``matrix`` key, as DVC's ``matrix`` and GitHub Actions' ``strategy.matrix`` do::

    [validations."${matrix.model}-b${matrix.batch}-parity"]
    matrix = { model = ["tiny-bert", "minilm"], batch = [1, 4],
               exclude = [{ model = "minilm", batch = 1 }], include = [{ model = "tiny-bert", batch = 8 }] }
    model = "${matrix.model}"
    specializations = ["${matrix.model}-b${matrix.batch}"]

Each axis is a non-empty list of scalars; the rows are the cross product in the order the axes are written,
less every row an ``exclude`` entry matches (all of its keys equal), plus each ``include`` row (it names
every axis). ``${matrix.AXIS}`` is replaced in the table's name and in every string inside it: a string that is
exactly one reference takes the value with its type (``batch_size = "${matrix.batch}"`` is an integer), one
that holds more text gets the value as text. Expansion happens right after the TOML is read, so the expanded
tables are validated, planned and keyed like hand-written ones; each keeps the file and line of its matrix
table, and a problem in it names the row (``matrix row model=minilm, batch=4``).
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from ..errors import Problem

MATRIX_REF = re.compile(r"\$\{matrix\.([^}]*)\}")
AXIS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
MAX_ROWS = 100_000  # a typo in an axis list must not become a million targets
RESERVED = ("include", "exclude")
Scalar = str | int | float | bool


class MatrixError(ValueError):
    """A mistake in a matrix, at ``key`` (relative to the table)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def rows_of(matrix: Any) -> list[dict[str, Scalar]]:
    """The rows a ``matrix`` value describes (raises MatrixError, located at a key under ``matrix``)."""
    if not isinstance(matrix, dict) or not matrix:
        raise MatrixError("matrix", "matrix must be a table of axes, e.g. matrix = { model = [\"a\", \"b\"], "
                                    "batch = [1, 4] }")
    axes: dict[str, list[Scalar]] = {}
    for axis, values in matrix.items():
        if axis in RESERVED:
            continue
        if not AXIS_NAME.fullmatch(axis):
            raise MatrixError(f"matrix.{axis}", f"axis name {axis!r} must be letters, digits, _ or - (starting with "
                                                "a letter or _)")
        if not isinstance(values, list) or not values:
            raise MatrixError(f"matrix.{axis}", f"axis {axis!r} must be a non-empty list of values, got {values!r}")
        for i, value in enumerate(values):
            if isinstance(value, (dict, list)):
                raise MatrixError(f"matrix.{axis}[{i}]", f"axis values are strings, numbers or booleans, got "
                                                         f"{value!r}")
        if len({repr(v) for v in values}) != len(values):
            raise MatrixError(f"matrix.{axis}", f"axis {axis!r} lists a value twice")
        axes[axis] = values
    if not axes:
        raise MatrixError("matrix", "matrix has no axes (only include/exclude); add one, e.g. batch = [1, 4]")
    size = 1
    for values in axes.values():
        size *= len(values)
    if size > MAX_ROWS:
        raise MatrixError("matrix", f"matrix has {size} rows, more than {MAX_ROWS}; split it")
    exclude = _entries(matrix, "exclude", axes, every_axis=False)
    rows = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    rows = [r for r in rows if not any(all(r[k] == v for k, v in e.items()) for e in exclude)]
    for extra in _entries(matrix, "include", axes, every_axis=True):
        if extra not in rows:
            rows.append(extra)
    if not rows:
        raise MatrixError("matrix.exclude", "exclude removes every row of the matrix")
    return rows


def _entries(matrix: dict[str, Any], key: str, axes: dict[str, list[Scalar]],
             every_axis: bool) -> list[dict[str, Scalar]]:
    entries = matrix.get(key, [])
    if not isinstance(entries, list):
        raise MatrixError(f"matrix.{key}", f"{key} must be a list of tables, e.g. {key} = [{{ batch = 8 }}]")
    out = []
    for i, entry in enumerate(entries):
        where = f"matrix.{key}[{i}]"
        if not isinstance(entry, dict) or not entry:
            raise MatrixError(where, f"each {key} entry is a table of axis values, got {entry!r}")
        unknown = [k for k in entry if k not in axes]
        if unknown:
            raise MatrixError(where, f"{key} names {unknown[0]!r}, not an axis (axes: {', '.join(axes)})")
        missing = [a for a in axes if a not in entry]
        if every_axis and missing:
            raise MatrixError(where, f"an include row names every axis; add {', '.join(missing)}")
        out.append(dict(entry))
    return out


def substitute(value: Any, row: dict[str, Scalar], path: str) -> Any:
    """``value`` with every ``${matrix.AXIS}`` replaced from ``row`` (raises MatrixError at ``path``)."""
    if isinstance(value, str):
        refs = MATRIX_REF.findall(value)
        if not refs:
            return value
        for axis in refs:
            if axis not in row:
                raise MatrixError(path, f"unknown matrix axis {axis!r} in {value!r} (axes: {', '.join(row)})")
        whole = MATRIX_REF.fullmatch(value)
        if whole is not None:
            return row[whole.group(1)]
        return MATRIX_REF.sub(lambda m: _text(row[m.group(1)]), value)
    if isinstance(value, list):
        return [substitute(v, row, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {substitute(k, row, path) if isinstance(k, str) else k: substitute(v, row, f"{path}.{k}".lstrip("."))
                for k, v in value.items()}
    return value


def _text(value: Scalar) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def describe(row: dict[str, Scalar]) -> str:
    return "matrix row " + ", ".join(f"{k}={_text(v)}" for k, v in row.items())


def expand(data: dict[str, Any], tables: tuple[str, ...], display: str, line_of: Any,
           problems: list[Problem]) -> dict[tuple[str, str], tuple[str, dict[str, Scalar]]]:
    """Expand every matrix table of a parsed manifest in place; return each expanded table's origin
    (``(table, name) → (the matrix table's name, its row)``) for line numbers and messages."""
    origins: dict[tuple[str, str], tuple[str, dict[str, Scalar]]] = {}
    for table in tables:
        entries = data.get(table)
        if not isinstance(entries, dict) or not any(isinstance(b, dict) and "matrix" in b for b in entries.values()):
            continue
        out: dict[str, Any] = {}
        for name, body in entries.items():
            if not (isinstance(body, dict) and "matrix" in body):
                out.setdefault(name, body)
                continue
            try:
                expanded = _expand_one(name, body)
            except MatrixError as e:
                problems.append(Problem(display, line_of((table, name, *e.key.split(".")[:1])), f"{table}.{name}",
                                        e.key, str(e)))
                continue
            for new_name, (new_body, row) in expanded.items():
                clash = new_name in out or (new_name in entries and new_name != name)
                if clash:
                    problems.append(Problem(display, line_of((table, name)), f"{table}.{name}", "matrix",
                                            f"{describe(row)} gives the name {new_name!r}, which another table of "
                                            f"[{table}] has; put every axis in the name"))
                    continue
                out[new_name] = new_body
                origins[(table, new_name)] = (name, row)
        data[table] = out
    return origins


def _expand_one(name: str, body: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, Scalar]]]:
    rows = rows_of(body["matrix"])
    fields = {k: v for k, v in body.items() if k != "matrix"}
    out: dict[str, tuple[dict[str, Any], dict[str, Scalar]]] = {}
    for row in rows:
        new_name = substitute(name, row, "")
        if not isinstance(new_name, str):
            new_name = _text(new_name)
        if new_name in out:
            raise MatrixError("matrix", f"{describe(row)} and {describe(out[new_name][1])} both give the name "
                                        f"{new_name!r}; use every axis in the table's name, e.g. "
                                        f"[{{table}}.\"x-${{matrix.{next(iter(row))}}}\"]".replace("{table}", "…"))
        out[new_name] = (substitute(fields, row, ""), row)
    return out
