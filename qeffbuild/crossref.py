"""Cross-reference checks of a loaded workspace: names, files and cycles."""

from __future__ import annotations

import importlib.util
from difflib import get_close_matches
from pathlib import Path

from .errors import Problem
from .loader import ManifestFile, TargetRef, Workspace, display_path
from .manifest import (
    ModelTable,
    PackageSource,
    PathSource,
    RandomSource,
    SpecializationTable,
    StepTable,
    ValidationTable,
)


def _hint(name: str, known: list[str]) -> str:
    close = get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Checker:
    def __init__(self, ws: Workspace, problems: list[Problem]) -> None:
        self.ws = ws
        self.problems = problems

    def add(self, f: ManifestFile, table: str, name: str, key: str, msg: str, *line_path: str) -> None:
        line = f.line(table, name, *(line_path or tuple(key.split(".")))) if key else f.line(table, name)
        self.problems.append(Problem(f.display, line, f"{table}.{name}" if name else table, key, msg))

    def ref(self, t: TargetRef, key: str, name: str, want: str) -> TargetRef | None:
        """Check that ``name`` names a target of table ``want``; report it otherwise."""
        found = self.ws.targets.get(name)
        known = [n for n, r in self.ws.targets.items() if r.table == want]
        if found is None and any(name in f.broken for f in self.ws.files):
            return None  # that table has its own error already
        if found is None:
            self.add(
                t.file,
                t.table,
                t.name,
                key,
                f"unknown {want[:-1]} {name!r}{_hint(name, known)} (known: {', '.join(sorted(known)) or 'none'})",
            )
            return None
        if found.table != want:
            self.add(
                t.file, t.table, t.name, key, f"{name!r} is a {found.table[:-1]}, not a {want[:-1]}{_hint(name, known)}"
            )
            return None
        return found

    def path(
        self,
        t: TargetRef | None,
        f: ManifestFile,
        key: str,
        rel: str,
        *,
        folder: bool | None = None,
        table: str = "",
        name: str = "",
    ) -> None:
        p = f.root / rel
        table = t.table if t else table
        name = t.name if t else name
        if not p.exists():
            self.add(
                f,
                table,
                name,
                key,
                f"file not found: {rel!r} (looked in {display_path(p)}); paths are relative to the manifest's folder",
            )
        elif folder is True and not p.is_dir():
            self.add(f, table, name, key, f"{rel!r} is a file; expected a folder")
        elif folder is False and not p.is_file():
            self.add(f, table, name, key, f"{rel!r} is a folder; expected a file")


def cross_check(ws: Workspace, problems: list[Problem]) -> None:
    from .backends import BACKENDS

    c = _Checker(ws, problems)
    for f in ws.files:
        for i, name in enumerate(f.manifest.project.default or []):
            if name not in ws.targets:
                c.add(
                    f,
                    "project",
                    "",
                    f"default[{i}]",
                    f"unknown target {name!r}{_hint(name, list(ws.targets))}",
                    "default",
                )
    for t in ws.targets.values():
        spec = t.spec
        if isinstance(spec, ModelTable):
            _check_model(c, t, spec)
        elif isinstance(spec, SpecializationTable):
            _check_specialization(c, t, spec, BACKENDS.names())
        elif isinstance(spec, ValidationTable):
            _check_validation(c, t, spec)
        elif isinstance(spec, StepTable):
            for i, rel in enumerate(spec.inputs):
                c.path(t, t.file, f"inputs[{i}]", rel, folder=False)
            for i, dep in enumerate(spec.deps):
                if dep not in ws.targets and not any(dep in f.broken for f in ws.files):
                    c.add(
                        t.file,
                        t.table,
                        t.name,
                        f"deps[{i}]",
                        f"unknown target {dep!r}{_hint(dep, list(ws.targets))}",
                        "deps",
                    )
            for i, out in enumerate(spec.outputs):
                if Path(out).is_absolute() or ".." in Path(out).parts:
                    c.add(
                        t.file,
                        t.table,
                        t.name,
                        f"outputs[{i}]",
                        f"output {out!r} must be a relative path inside the step's output folder",
                        "outputs",
                    )
    _check_cycles(c)


def _check_model(c: _Checker, t: TargetRef, m: ModelTable) -> None:
    src = m.source
    if isinstance(src, PathSource):
        c.path(t, t.file, "source.path", src.path, folder=True)
    elif isinstance(src, PackageSource):
        _check_package(c, t, "source.package", src)
    elif isinstance(src, RandomSource):
        if isinstance(src.tokenizer, PathSource):
            c.path(t, t.file, "source.tokenizer", src.tokenizer.path, folder=True)
        elif isinstance(src.tokenizer, PackageSource):
            _check_package(c, t, "source.tokenizer", src.tokenizer)
    if m.task != "embedding" and (m.pooling != "mean" or m.normalize):
        c.add(t.file, t.table, t.name, "pooling", f"pooling and normalize apply to task 'embedding', not {m.task!r}")


def _check_package(c: _Checker, t: TargetRef, key: str, src: PackageSource) -> None:
    spec = importlib.util.find_spec(src.package) if src.package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        c.add(
            t.file,
            t.table,
            t.name,
            key,
            f"Python package {src.package!r} is not installed (install it with pip, or use source = {{ path = ... }})",
        )
        return
    folder = Path(next(iter(spec.submodule_search_locations))) / src.subdir
    if not folder.is_dir():
        c.add(t.file, t.table, t.name, key, f"package {src.package!r} has no folder {src.subdir!r} ({folder})")


def _check_specialization(c: _Checker, t: TargetRef, s: SpecializationTable, backends: list[str]) -> None:
    model_ref = c.ref(t, "model", s.model, "models")
    for i, b in enumerate(s.compile):
        if b not in backends:
            c.add(
                t.file,
                t.table,
                t.name,
                f"compile[{i}]",
                f"unknown compile backend {b!r}{_hint(b, backends)} (known: {', '.join(backends)})",
                "compile",
            )
    if model_ref is None:
        return
    task = model_ref.spec.task
    if task == "embedding":
        if not s.seq_len:
            c.add(
                t.file,
                t.table,
                t.name,
                "seq_len",
                "an embedding specialization needs seq_len, e.g. seq_len = [32, 128]",
            )
        for key in ("ctx_len", "encoder_ctx_len"):
            if getattr(s, key) is not None:
                c.add(t.file, t.table, t.name, key, f"{key} applies to task 'speech-seq2seq', not 'embedding'")
    elif s.seq_len:
        c.add(
            t.file,
            t.table,
            t.name,
            "seq_len",
            f"seq_len applies to task 'embedding', not {task!r}; use ctx_len and encoder_ctx_len",
        )


def _check_validation(c: _Checker, t: TargetRef, v: ValidationTable) -> None:
    from .runtimes import RUNTIMES

    model_ref = c.ref(t, "model", v.model, "models")
    for i, name in enumerate(v.specializations):
        sref = c.ref(t, f"specializations[{i}]", name, "specializations")
        if sref is not None and model_ref is not None and sref.spec.model != v.model:
            c.add(
                t.file,
                t.table,
                t.name,
                f"specializations[{i}]",
                f"specialization {name!r} is for model {sref.spec.model!r}, not {v.model!r}",
                "specializations",
            )
    known = RUNTIMES.names()
    for i, r in enumerate(v.runtimes):
        if r not in RUNTIMES:
            c.add(
                t.file,
                t.table,
                t.name,
                f"runtimes[{i}]",
                f"unknown runtime {r!r}{_hint(r, known)} (known: {', '.join(known)})",
                "runtimes",
            )
        elif model_ref is not None and model_ref.spec.task not in RUNTIMES.get(r).tasks:
            c.add(
                t.file,
                t.table,
                t.name,
                f"runtimes[{i}]",
                f"runtime {r!r} does not run task {model_ref.spec.task!r}",
                "runtimes",
            )
    for r in v.checks:
        if r not in v.runtimes:
            c.add(
                t.file,
                t.table,
                t.name,
                f"checks.{r}",
                f"checks for runtime {r!r}, which this validation does not run{_hint(r, v.runtimes)} "
                f"(runtimes: {', '.join(v.runtimes)})",
            )
    if model_ref is not None:
        want_folder = model_ref.spec.task != "embedding"
        c.path(t, t.file, "inputs", v.inputs, folder=want_folder)


def _check_cycles(c: _Checker) -> None:
    """Report each dependency cycle among steps once, with its full path."""
    deps = {
        n: [d for d in r.spec.deps if d in c.ws.targets]
        for n, r in c.ws.targets.items()
        if isinstance(r.spec, StepTable)
    }
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    seen_cycles: set[frozenset[str]] = set()
    for root in sorted(deps):
        if root in state:
            continue
        # Iterative DFS: a chain of thousands of steps must not hit the recursion limit.
        path: list[str] = [root]
        todo: list[list[str]] = [list(deps.get(root, []))]
        state[root] = 1
        while path:
            if not todo[-1]:
                state[path.pop()] = 2
                todo.pop()
                continue
            d = todo[-1].pop(0)
            if state.get(d) == 1:
                cycle = [*path[path.index(d) :], d]
                if frozenset(cycle) not in seen_cycles:
                    seen_cycles.add(frozenset(cycle))
                    t = c.ws.targets[d]
                    c.add(t.file, t.table, t.name, "deps",
                          f"dependency cycle: {' -> '.join(cycle)}; remove one of these deps")
            elif d not in state:
                state[d] = 1
                path.append(d)
                todo.append(list(deps.get(d, [])))
