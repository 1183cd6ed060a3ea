"""Loading manifests: TOML files → validated, cross-checked :class:`Workspace`.

Every problem of one load is collected as a located :class:`~qeffbuild.errors.Problem`
(file, line, table, key, what was expected, the nearest valid name) and raised together
as one :class:`~qeffbuild.errors.ManifestError`. Tables are validated one by one, each
against its family's class, so one bad table never hides the problems of another.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ManifestError, Problem, UsageError
from .diagnostics import Path as KeyPath
from .diagnostics import did_you_mean, syntax_error_line
from .pydantic_errors import explain_errors
from .tables import TABLES, Manifest, ModelBase, ProjectTable, StepTable, Table
from .workspace import LineIndex, ManifestFile, TargetRef, Workspace, display_path, name_matrix_rows

if TYPE_CHECKING:
    from .plugins import Plugins
    from .schema import TableClasses

MAX_MANIFEST_BYTES = 16 * 1024 * 1024
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAX_NAME = 100  # names become file names (out/<target>, logs/<step>.log): stay well under 255 bytes


def find_manifests(paths: list[Path]) -> list[Path]:
    """Expand files and folders into the sorted list of ``*.toml`` manifests."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob("*.toml") if q.is_file()))
        elif p.is_file():
            found.append(p)
        else:
            raise UsageError(f"{p}: no such manifest file or folder (pass -m FILE_OR_FOLDER)")
    if not found:
        where = ", ".join(str(p) for p in paths)
        raise UsageError(f"no *.toml manifests found under {where}; create one with `qeffbuild init`")
    return [p.resolve() for p in found]


@dataclass
class _Parsed:
    """A manifest between the two passes: its text parsed, its tables not all validated yet."""

    path: Path
    display: str
    data: dict[str, Any]
    lines: LineIndex
    tables: dict[str, dict[str, Table]] = field(default_factory=lambda: {t: {} for t in TABLES})
    project: ProjectTable | None = None
    broken: set[str] = field(default_factory=set)


def load(paths: list[Path], plugins: Plugins | None = None) -> Workspace:
    """Load and check every manifest under ``paths``; raise one ManifestError listing all problems."""
    from .plugins import plugins as loaded_plugins
    from .schema import TableClasses

    plugins = plugins or loaded_plugins()
    classes = TableClasses(plugins)
    problems: list[Problem] = []
    parsed = [p for path in find_manifests(paths) if (p := _parse(path, problems)) is not None]
    v = _Validator(classes, problems)
    for p in parsed:
        v.first_pass(p)
    models = {name: m for p in parsed for name, m in p.tables["models"].items()}
    declared = {name for p in parsed for name in p.data["models"]}
    for p in parsed:
        v.second_pass(p, models, declared)
    files = [ManifestFile(p.path, p.display, p.path.parent, Manifest(p.project, **p.tables), p.lines,  # type: ignore[arg-type]
                          frozenset(p.broken)) for p in parsed if p.project is not None]
    ws = Workspace(files, plugins, classes)
    _collect_targets(ws, problems)
    from .crossref import cross_check

    cross_check(ws, problems)
    if problems:
        raise ManifestError(name_matrix_rows(problems, [*parsed]))
    return ws


def _parse(path: Path, problems: list[Problem]) -> _Parsed | None:
    display = display_path(path)
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            problems.append(Problem(display, None, "", "", f"manifest is larger than {MAX_MANIFEST_BYTES >> 20} MiB"))
            return None
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        problems.append(Problem(display, None, "", "", f"cannot read manifest: {e}"))
        return None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line \d+, column (\d+)\)", str(e))
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(e))
        col = f" (column {m.group(1)})" if m else ""
        problems.append(Problem(display, syntax_error_line(text, str(e)), "", "", f"TOML syntax error: {msg}{col}"))
        return None
    except RecursionError:
        problems.append(Problem(display, None, "", "", "TOML nests arrays or tables too deeply to read; "
                                "flatten the deepest value"))
        return None
    lines = LineIndex(text)
    if "matrix" in text:  # cheap test first: most manifests have none
        from .matrix import describe, expand

        origins = expand(data, TABLES, display, lines.of, problems)
        lines.aliases = {key: name for key, (name, _row) in origins.items()}
        lines.rows = {key: describe(row) for key, (_name, row) in origins.items()}
    return _Parsed(path, display, data, lines)


class _Validator:
    """Validates tables against their classes and turns pydantic errors into located problems."""

    def __init__(self, classes: TableClasses, problems: list[Problem]) -> None:
        self.classes = classes
        self.problems = problems

    def first_pass(self, p: _Parsed) -> None:
        """[project], [models.*] (each by its task) and [steps.*]; unknown top-level keys."""
        if "project" not in p.data:
            self.problems.append(Problem(p.display, None, "project", "", 'missing [project] table; start the file '
                                         'with:\n  [project]\n  name = "my-project"'))
        else:
            p.project = self._validate(p, ProjectTable, ("project",), p.data["project"])
        for top in p.data:
            if top != "project" and top not in TABLES:
                allowed = ["project", *TABLES]
                self.problems.append(Problem(p.display, p.lines.get((top,)), "", top,
                                             f"unknown key {top!r}{_hint(top, allowed)} (expected one of: "
                                             f"{', '.join(sorted(allowed))})"))
        for table in TABLES:
            value = p.data.get(table, {})
            if not isinstance(value, dict):
                self.problems.append(Problem(p.display, p.lines.get((table,)), "", table,
                                             f"expected a table of named [{table}.NAME] tables, got {value!r}"))
                value = {}
            p.data[table] = value
        for name, body in p.data["models"].items():
            self._model(p, name, body)
        for name, body in p.data["steps"].items():
            self._keep(p, "steps", name, self._validate(p, StepTable, ("steps", name), body))

    def second_pass(self, p: _Parsed, models: dict[str, Table], declared: set[str]) -> None:
        """[specializations.*] and [validations.*], each by the task of the model it names (``declared``: every
        model table's name, those that failed validation too)."""
        for table in ("specializations", "validations"):
            for name, body in p.data[table].items():
                name_of_model = body.get("model") if isinstance(body, dict) else None
                model = models.get(name_of_model) if isinstance(name_of_model, str) else None
                task = model.task if isinstance(model, ModelBase) else None
                unknown = isinstance(name_of_model, str) and name_of_model not in declared
                if unknown:  # the real mistake first; the family's required keys are unknowable without it
                    self.problems.append(Problem(
                        p.display, p.lines.of((table, name, "model")), f"{table}.{name}", "model",
                        f"unknown model {name_of_model!r}{_hint(str(name_of_model), sorted(declared))} (known: "
                        f"{', '.join(sorted(declared)) or 'none; add a [models.NAME] table'})"))
                cls = self.classes.of(table, task)
                value = self._validate(p, cls, (table, name), body, task, skip_missing=unknown)
                self._keep(p, table, name, None if unknown else value)

    def _model(self, p: _Parsed, name: str, body: Any) -> None:
        if not isinstance(body, dict):
            self.problems.append(Problem(p.display, p.lines.of(("models", name)), f"models.{name}", "",
                                         f"expected a table [models.{name}], got {body!r}"))
            p.broken.add(name)
            return
        task = body.get("task")
        known = self.classes.plugins.tasks.names()
        if isinstance(task, str) and task in known:
            self._keep(p, "models", name, self._validate(p, self.classes.model(task), ("models", name), body))
            return
        loc: KeyPath = ("models", name, "task")
        if task is None:
            msg = f"required key 'task' is missing (one of: {', '.join(known)})"
        else:
            msg = (f"unknown task {task!r}{_hint(str(task), known)} (known: {', '.join(known)})"
                   f"{self.classes.plugins.tasks.unloaded_note()}")
        self.problems.append(Problem(p.display, p.lines.of(loc), f"models.{name}", "task", msg))
        p.broken.add(name)

    def _keep(self, p: _Parsed, table: str, name: str, value: Table | None) -> None:
        if value is None:
            p.broken.add(name)
        else:
            p.tables[table][name] = value

    def _validate(self, p: _Parsed, cls: type[Table], prefix: KeyPath, body: Any, task: str | None = None,
                  skip_missing: bool = False) -> Any:
        from pydantic import ValidationError

        try:
            return cls.model_validate(body)
        except ValidationError as e:
            self.problems.extend(explain_errors(e, p.display, p.lines.index, prefix, cls, self.classes, task,
                                                skip_missing))
            return None
        except RecursionError:
            self.problems.append(Problem(p.display, p.lines.of(prefix), ".".join(map(str, prefix)), "",
                                         "nests too deeply to validate; flatten the deepest value"))
            return None


_hint = did_you_mean


def _collect_targets(ws: Workspace, problems: list[Problem]) -> None:
    for f in ws.files:
        for table in TABLES:
            for name in getattr(f.manifest, table):
                if not NAME_RE.fullmatch(name) or len(name) > MAX_NAME:
                    problems.append(
                        Problem(f.display, f.line(table, name), f"{table}.{_short(name)}", "",
                                f"target names use letters, digits, '_', '-' and '.', start with a letter or "
                                f"digit, and are at most {MAX_NAME} characters long")
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


def _short(name: str) -> str:
    return name if len(name) <= 60 else name[:57] + "..."
