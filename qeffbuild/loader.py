"""Loading manifests: TOML files → validated, cross-checked :class:`Workspace`.

Every problem of one load is collected as a located :class:`~qeffbuild.errors.Problem`
(file, line, table, key, what was expected, the nearest valid name) and raised together
as one :class:`~qeffbuild.errors.ManifestError`.
"""

from __future__ import annotations

import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from .errors import ManifestError, Problem, UsageError
from .manifest import SOURCE_KINDS, TABLES, Manifest
from .tomlpos import index_lines, line_of


@dataclass(frozen=True)
class ManifestFile:
    """One loaded manifest and where it lives."""

    path: Path  # absolute
    display: str  # as shown to the user (relative to the working directory when possible)
    root: Path  # relative paths in the manifest are relative to this directory
    manifest: Manifest
    lines: dict[tuple[str, ...], int]
    broken: frozenset[str] = frozenset()  # names of tables that failed validation

    def line(self, *path: str) -> int | None:
        return line_of(self.lines, tuple(path))


@dataclass(frozen=True)
class TargetRef:
    """A named table of some manifest: every one is a buildable target."""

    name: str
    table: str  # models | specializations | validations | steps
    file: ManifestFile

    @property
    def spec(self) -> Any:
        return getattr(self.file.manifest, self.table)[self.name]


@dataclass
class Workspace:
    """All manifests of one invocation, with a flat namespace of targets."""

    files: list[ManifestFile]
    targets: dict[str, TargetRef] = field(default_factory=dict)

    def defaults(self) -> list[str]:
        names: list[str] = []
        for f in self.files:
            chosen = f.manifest.project.default
            names.extend(chosen if chosen is not None else _declared(f.manifest))
        return names


def _declared(m: Manifest) -> list[str]:
    return [name for table in TABLES for name in getattr(m, table)]


def display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)


def find_manifests(paths: list[Path]) -> list[Path]:
    """Expand files and folders into the sorted list of ``*.toml`` manifests."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(sorted(p.rglob("*.toml")))
        elif p.is_file():
            found.append(p)
        else:
            raise UsageError(f"{p}: no such manifest file or folder (pass -m FILE_OR_FOLDER)")
    if not found:
        where = ", ".join(str(p) for p in paths)
        raise UsageError(f"no *.toml manifests found under {where}; create one with `qeffbuild init`")
    return [p.resolve() for p in found]


def load(paths: list[Path]) -> Workspace:
    """Load and check every manifest under ``paths``; raise one ManifestError listing all problems."""
    problems: list[Problem] = []
    files: list[ManifestFile] = []
    for path in find_manifests(paths):
        loaded = _load_file(path, problems)
        if loaded is not None:
            files.append(loaded)
    ws = Workspace(files)
    _collect_targets(ws, problems)
    from .crossref import cross_check

    cross_check(ws, problems)
    if problems:
        raise ManifestError(problems)
    return ws


def _load_file(path: Path, problems: list[Problem]) -> ManifestFile | None:
    display = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        problems.append(Problem(display, None, "", "", f"cannot read manifest: {e}"))
        return None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        line = int(m.group(1)) if m else None
        col = f" (column {m.group(2)})" if m else ""
        problems.append(Problem(display, line, "", "", f"TOML syntax error: {msg}{col}"))
        return None
    lines = index_lines(text)
    manifest, broken = _validate_tables(display, lines, data, problems)
    if manifest is None:
        return None
    return ManifestFile(path, display, path.parent, manifest, lines, broken)


def _validate_tables(display: str, lines: dict, data: dict[str, Any],
                     problems: list[Problem]) -> tuple[Manifest | None, frozenset[str]]:
    """Validate table by table, so one bad table does not hide the problems of the others.

    Returns the manifest of the valid tables and the names of the invalid ones (kept so that
    references to them are not reported a second time as unknown names).
    """
    from pydantic import ValidationError

    def report(e: ValidationError, prefix: tuple[str, ...]) -> None:
        for err in e.errors(include_url=False):
            located: dict[str, Any] = {**err, "loc": prefix + tuple(err["loc"])}
            if located["loc"] == ("project",) and located["type"] == "missing":
                continue  # reported above with a fix
            problems.append(_problem_from_pydantic(display, lines, data, located))

    if "project" not in data:
        problems.append(Problem(display, None, "project", "",
                                'missing [project] table; start the file with:\n  [project]\n  name = "my-project"'))
    clean: dict[str, Any] = {}
    broken: set[str] = set()
    for top, value in data.items():
        if top in TABLES and isinstance(value, dict):
            table_cls = Manifest.model_fields[top].annotation.__args__[1]  # type: ignore[union-attr]
            good = {}
            for name, body in value.items():
                try:
                    table_cls.model_validate(body)
                    good[name] = body
                except ValidationError as e:
                    report(e, (top, name))
                    broken.add(name)
            clean[top] = good
        else:
            clean[top] = value
    try:
        manifest = Manifest.model_validate(clean)
    except ValidationError as e:
        report(e, ())
        return None, frozenset(broken)
    return manifest, frozenset(broken)


def _collect_targets(ws: Workspace, problems: list[Problem]) -> None:
    for f in ws.files:
        for table in TABLES:
            for name in getattr(f.manifest, table):
                if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                    problems.append(
                        Problem(f.display, f.line(table, name), f"{table}.{name}", "",
                                "target names use letters, digits, '_', '-' and '.', starting with a letter or digit")
                    )
                    continue
                prior = ws.targets.get(name)
                if prior is not None:
                    first = f"{prior.file.display}:{prior.file.line(prior.table, name)}"
                    problems.append(
                        Problem(f.display, f.line(table, name), f"{table}.{name}", "",
                                f"duplicate target name {name!r}, already defined as [{prior.table}.{name}] "
                                f"at {first}; every model, specialization, validation and step needs its own name")
                    )
                    continue
                ws.targets[name] = TargetRef(name, table, f)


# --- turning pydantic errors into located, actionable problems --------------------------


def _problem_from_pydantic(display: str, lines: dict, data: dict, err: dict[str, Any]) -> Problem:
    loc = _strip_tags(tuple(err["loc"]))
    str_loc = tuple(str(p) for p in loc)
    if loc and loc[0] in TABLES and len(loc) >= 2:
        table, key_parts = f"{loc[0]}.{loc[1]}", loc[2:]
    elif loc and loc[0] == "project":
        table, key_parts = "project", loc[1:]
    else:
        table, key_parts = "", loc
    key = _format_key(key_parts)
    line = line_of(lines, str_loc)
    return Problem(display, line, table, key, _explain(err, loc))


def _strip_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop pydantic's union-member tags (e.g. ``source.path.path`` → ``source.path``)."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        if i > 0 and loc[i - 1] == "source" and part in SOURCE_KINDS and i + 1 < len(loc):
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


def _explain(err: dict[str, Any], loc: tuple[Any, ...]) -> str:
    kind = err["type"]
    given = err.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        close = get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key {loc[-1]!r}{hint} (expected one of: {', '.join(allowed)})"
    if kind == "missing":
        return f"required key {loc[-1]!r} is missing"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        options = re.findall(r"'([^']*)'", expected)
        close = get_close_matches(str(given), options, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"expected one of {expected}, got {given!r}{hint}"
    if kind == "source_kind":
        keys = sorted(given) if isinstance(given, dict) else given
        return f"{err['msg']}; got {keys!r}, e.g. source = {{ path = \"models/minilm\" }}"
    msg = re.sub(r"^Value error, ", "", err["msg"])
    msg = msg[0].lower() + msg[1:] if msg else msg
    return f"{msg}, got {given!r}"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the table at ``loc``, found by walking the manifest models."""
    tp: Any = Manifest
    for part in loc:
        tp = _step_into(tp, part)
        if tp is None:
            return []
    cls = _model_class(tp)
    return sorted(cls.model_fields) if cls is not None else []


def _model_class(tp: Any) -> Any:
    from pydantic import BaseModel

    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
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
    for member in _unwrap(tp):
        cls = _model_class(member)
        if cls is not None and isinstance(part, str) and part in cls.model_fields:
            return cls.model_fields[part].annotation
        if cls is not None and isinstance(part, str) and part in SOURCE_KINDS and cls.__name__.endswith("Source"):
            return SOURCE_KINDS[part]
        origin = typing.get_origin(member)
        if origin is dict:
            return typing.get_args(member)[1]
        if origin is list and isinstance(part, int):
            return typing.get_args(member)[0]
    if isinstance(part, str) and part in SOURCE_KINDS:
        return SOURCE_KINDS[part]
    return None
