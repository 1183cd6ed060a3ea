"""Turning pydantic validation errors into located, actionable manifest problems."""

from __future__ import annotations

import re
import types
import typing
from typing import TYPE_CHECKING, Any

from ..errors import Problem
from .diagnostics import Path as KeyPath
from .diagnostics import did_you_mean, line_of
from .tables import SOURCE_KINDS, TABLES

if TYPE_CHECKING:
    from pydantic import ValidationError

    from .schema import TableClasses


def explain_errors(e: ValidationError, display: str, lines: dict[KeyPath, int], prefix: KeyPath,
                   cls: type, classes: TableClasses, task: str | None, skip_missing: bool = False) -> list[Problem]:
    """One problem per pydantic error of validating the table at ``prefix`` with ``cls`` (``skip_missing``:
    not the required keys, where the family that requires them is unknown)."""
    out = []
    for err in e.errors(include_url=False):
        if skip_missing and err["type"] == "missing":
            continue
        inner = _strip_tags(tuple(err["loc"]))
        loc = prefix + inner
        if loc and loc[0] in TABLES and len(loc) >= 2:
            table, key_parts = f"{loc[0]}.{loc[1]}", loc[2:]
        elif loc and loc[0] == "project":
            table, key_parts = "project", loc[1:]
        else:
            table, key_parts = "", loc
        raw = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith(("function-", "list[", "dict["))))
        message = _explain(dict(err), inner, raw, cls, classes, str(prefix[0]) if prefix else "", task)
        out.append(Problem(display, line_of(lines, loc), table, _format_key(key_parts), message))
    return out


def _strip_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop pydantic's union-member tags (e.g. ``source.path.path`` → ``source.path``)."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        if i > 0 and loc[i - 1] in ("source", "encoder", "decoder") and part in SOURCE_KINDS and i + 1 < len(loc):
            continue
        if isinstance(part, str) and (part.startswith(("function-", "list[", "dict[")) or "Source" in part):
            continue
        out.append(part)
    return tuple(out)


def _format_key(parts: tuple[Any, ...]) -> str:
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text


def _explain(err: dict[str, Any], loc: tuple[Any, ...], raw: tuple[Any, ...], cls: type, classes: TableClasses,
             table: str, task: str | None) -> str:
    """``loc`` is the user's key path; ``raw`` keeps pydantic's union tags, to walk the classes."""
    kind = err["type"]
    given = err.get("input")
    if kind == "extra_forbidden":
        return _unknown_key(raw, cls, classes, table, task)
    if kind == "missing":
        example = _example(cls, raw)
        return f"required key {loc[-1]!r} is missing" + (f", e.g. {example}" if example else "")
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        options = re.findall(r"'([^']*)'", expected)
        return f"expected one of {expected}, got {given!r}{_hint(str(given), options)}"
    if kind == "source_kind":
        keys = sorted(given) if isinstance(given, dict) else given
        return f"{err['msg']}; got {keys!r}, e.g. source = {{ path = \"models/minilm\" }}"
    if kind == "finite_number":
        return f"{given!r} is not a finite number; NaN and infinities cannot be compared or hashed"
    msg = re.sub(r"^Value error, ", "", err["msg"])
    msg = msg[0].lower() + msg[1:] if msg else msg
    return f"{msg}, got {_short(given)}"


def _unknown_key(loc: tuple[Any, ...], cls: type, classes: TableClasses, table: str, task: str | None) -> str:
    key = str(loc[-1])
    allowed = _allowed_keys(cls, loc[:-1])
    if len(loc) == 1 and table in ("specializations", "validations", "models") and task:
        owners = [t for t in classes.tasks_with_key(table, key) if t != task]
        if owners:
            return f"{key!r} applies to task {' or '.join(map(repr, owners))}, not {task!r} (expected one of: " \
                   f"{', '.join(allowed)})"
    return f"unknown key {key!r}{_hint(key, allowed)} (expected one of: {', '.join(allowed) or 'none'})"


_hint = did_you_mean


def _short(value: Any, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _example(cls: type, loc: tuple[Any, ...]) -> str:
    model = _model_at(cls, loc[:-1])
    info = model.model_fields.get(str(loc[-1])) if model is not None else None
    extra = info.json_schema_extra if info is not None else None
    return str(extra.get("example", "")) if isinstance(extra, dict) else ""


def _allowed_keys(cls: type, loc: tuple[Any, ...]) -> list[str]:
    """The field names of the table at ``loc`` inside ``cls``."""
    model = _model_at(cls, loc)
    return sorted(model.model_fields) if model is not None else []


def _model_at(cls: type, loc: tuple[Any, ...]) -> Any:
    tp: Any = cls
    for part in loc:
        tp = _step_into(tp, part)
        if tp is None:
            return None
    return _model_class(tp)


def _model_class(tp: Any) -> Any:
    from pydantic import BaseModel

    for member in _unwrap(tp):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _unwrap(tp: Any) -> list[Any]:
    """The member types of an Annotated/Optional/Union type."""
    if typing.get_origin(tp) is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        out: list[Any] = []
        for a in typing.get_args(tp):
            out.extend(_unwrap(a))
        return out
    return [tp]


def _step_into(tp: Any, part: Any) -> Any:
    members = _unwrap(tp)
    if len(members) > 1 and isinstance(part, str) and SOURCE_KINDS.get(part) in members:
        return SOURCE_KINDS[part]  # a tagged union member (pydantic names the tag in the location)
    for member in members:
        cls = _model_class(member)
        if cls is not None and isinstance(part, str) and part in cls.model_fields:
            return cls.model_fields[part].annotation
        origin = typing.get_origin(member)
        if origin is dict:
            return typing.get_args(member)[1]
        if origin is list and isinstance(part, int):
            return typing.get_args(member)[0]
    return None
