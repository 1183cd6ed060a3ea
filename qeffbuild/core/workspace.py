"""The loaded manifests as one namespace of targets: what planning, checking and every family read.

The loader (``loader.py``) parses and validates files into these; the cross-reference checks, the graph
expansion and the families only read them, so none of them imports the loader.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import Problem
from .diagnostics import Path as KeyPath
from .diagnostics import index_lines, line_of
from .tables import TABLES, Manifest, random_weights

if TYPE_CHECKING:
    from .plugins import Plugins, Task
    from .schema import TableClasses
    from .sources import Resolved


class LineIndex:
    """Key path → line, computed on first use: only messages need lines, a no-op build never does."""

    def __init__(self, text: str) -> None:
        self._text: str | None = text
        self._index: dict[KeyPath, int] = {}
        self.aliases: dict[tuple[str, str], str] = {}  # (table, expanded name) → its matrix table's name
        self.rows: dict[tuple[str, str], str] = {}  # (table, expanded name) → "matrix row a=1, b=x"

    @property
    def index(self) -> dict[KeyPath, int]:
        if self._text is not None:
            self._index = index_lines(self._text)
            self._text = None
        return self._index

    def _real(self, path: KeyPath) -> KeyPath:
        """A key under a table expanded from a matrix lives at its matrix table's lines."""
        if len(path) >= 2 and (origin := self.aliases.get((str(path[0]), str(path[1])))) is not None:
            return (path[0], origin, *path[2:])
        return path

    def get(self, path: KeyPath) -> int | None:
        return self.index.get(self._real(path))

    def of(self, path: KeyPath) -> int | None:
        return line_of(self.index, self._real(path))


@dataclass(frozen=True)
class ManifestFile:
    """One loaded manifest and where it lives."""

    path: Path  # absolute
    display: str  # as shown to the user (relative to the working directory when possible)
    root: Path  # relative paths in the manifest are relative to this directory
    manifest: Manifest
    lines: LineIndex
    broken: frozenset[str] = frozenset()  # names of tables that failed validation

    def line(self, *path: str | int) -> int | None:
        return self.lines.of(tuple(path))


@dataclass(frozen=True)
class TargetRef:
    """A named table of some manifest: every one is a buildable target."""

    name: str
    table: str  # models | specializations | validations | steps
    file: ManifestFile

    @property
    def spec(self) -> Any:
        return getattr(self.file.manifest, self.table)[self.name]

    @property
    def kind(self) -> str:
        return self.table[:-1]

    def where(self, *key: str | int) -> str:
        """``file:line: [table.name]`` for messages about this target (or one of its keys)."""
        line = self.file.line(self.table, self.name, *key)
        return f"{self.file.display}:{line}: [{self.table}.{self.name}]" if line else \
            f"{self.file.display}: [{self.table}.{self.name}]"


@dataclass
class Workspace:
    """All manifests of one invocation, with a flat namespace of targets."""

    files: list[ManifestFile]
    plugins: Plugins
    classes: TableClasses
    targets: dict[str, TargetRef] = field(default_factory=dict)
    # Source resolutions of this workspace only: a second Project in one process sees new files.
    _sources: dict[str, Resolved] = field(default_factory=dict, repr=False)

    def defaults(self) -> list[str]:
        names: list[str] = []
        for f in self.files:
            chosen = f.manifest.project.default
            names.extend(chosen if chosen is not None else declared(f.manifest))
        return names

    def model_of(self, ref: TargetRef) -> TargetRef:
        return ref if ref.table == "models" else self.targets[ref.spec.model]

    def task_of(self, ref: TargetRef) -> Task:
        return self.plugins.tasks.get(self.model_of(ref).spec.task)

    def random_weights(self, name: str) -> bool | None:
        """Whether target ``name`` is built from a random-weight model (None: a command step)."""
        ref = self.targets[name]
        if ref.table == "steps":
            return None
        return random_weights(self.model_of(ref).spec.source)

    def source(self, model: TargetRef) -> Resolved:
        """The model's source made concrete (folder, files, config), once per workspace."""
        if model.name not in self._sources:
            from .sources import resolve

            family = self.plugins.tasks.get(model.spec.task) if model.spec.task in self.plugins.tasks else None
            self._sources[model.name] = resolve(model.spec.source, model.file.root,
                                                family.compose if family is not None else None)
        return self._sources[model.name]


def declared(m: Manifest) -> list[str]:
    return [name for table in TABLES for name in getattr(m, table)]


def name_matrix_rows(problems: list[Problem], files: list[ManifestFile] | list[Any]) -> list[Problem]:
    """Each problem in a table expanded from a matrix, with the row that made it (the line is the matrix's)."""
    rows = {(f.display, f"{table}.{name}"): row for f in files for (table, name), row in f.lines.rows.items()}
    if not rows:
        return problems
    return [replace(p, message=f"{p.message} ({rows[(p.file, p.table)]})") if (p.file, p.table) in rows else p
            for p in problems]


def display_path(path: Path) -> str:
    """A path as messages show it: relative to the working directory where possible."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
