"""Cross-reference checks of a loaded workspace: names, files, backends, runtimes, metrics, cycles.

Family-specific checks (a specialization's shapes, a validation's inputs) run through the
family's :meth:`~qeffbuild.core.plugins.Task.check` with the same :class:`Checker`.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path, PurePosixPath

from ..errors import Problem
from .diagnostics import did_you_mean
from .tables import (
    ComposedSource,
    ModelBase,
    PackageSource,
    PathSource,
    RandomSource,
    SpecializationBase,
    StepTable,
    ValidationBase,
)
from .workspace import ManifestFile, TargetRef, Workspace, display_path

hint = did_you_mean  # the name the families import


class Checker:
    """Collects located problems about targets; shared by the engine and every family."""

    def __init__(self, ws: Workspace, problems: list[Problem]) -> None:
        self.ws = ws
        self.problems = problems
        self._names: dict[str | None, list[str]] = {}

    def names(self, table: str | None = None) -> list[str]:
        """Target names (of one table), listed once per load: a hint must not copy 10,000 names per problem."""
        if table not in self._names:
            self._names[table] = [n for n, r in self.ws.targets.items() if table is None or r.table == table]
        return self._names[table]

    def add(self, f: ManifestFile, table: str, name: str, key: str, msg: str, *line_path: str | int) -> None:
        path = line_path or tuple(_key_parts(key))
        line = f.line(table, name, *path) if key else f.line(table, name)
        self.problems.append(Problem(f.display, line, f"{table}.{name}" if name else table, key, msg))

    def report(self, t: TargetRef, key: str, msg: str, *line_path: str | int) -> None:
        self.add(t.file, t.table, t.name, key, msg, *line_path)

    def ref(self, t: TargetRef, key: str, name: str, want: str) -> TargetRef | None:
        """Check that ``name`` names a target of table ``want``; report it otherwise."""
        found = self.ws.targets.get(name)
        if found is not None and found.table == want:
            return found
        known = self.names(want)
        if found is None and any(name in f.broken for f in self.ws.files):
            return None  # that table has its own error already
        if found is None:
            self.report(t, key, f"unknown {want[:-1]} {name!r}{hint(name, known)} "
                                f"(known: {', '.join(sorted(known)) or 'none'})")
            return None
        self.report(t, key, f"{name!r} is a {found.table[:-1]}, not a {want[:-1]}{hint(name, known)}")
        return None

    def path(self, t: TargetRef, key: str, rel: str, *, folder: bool | None = None) -> Path | None:
        """Check that ``rel`` (relative to the manifest) exists, as a folder or a file; return it."""
        p = t.file.root / rel
        try:
            exists, is_dir, is_file = p.exists(), p.is_dir(), p.is_file()
        except OSError as e:  # a name too long, a loop of links
            self.report(t, key, f"cannot use {rel!r}: {e.strerror or e}")
            return None
        if not exists:
            self.report(t, key, f"file not found: {rel!r} (looked in {display_path(p)}); paths are relative to the "
                                "manifest's folder")
        elif folder is True and not is_dir:
            self.report(t, key, f"{rel!r} is a file; expected a folder")
        elif folder is False and not is_file:
            self.report(t, key, f"{rel!r} is a folder; expected a file")
        else:
            return p
        return None


def _key_parts(key: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in key.replace("]", "").split("."):
        name, *indices = piece.split("[")
        if name:
            parts.append(name)
        parts.extend(int(i) for i in indices if i.isdigit())
    return parts


def cross_check(ws: Workspace, problems: list[Problem]) -> None:
    c = Checker(ws, problems)
    for f in ws.files:
        for i, name in enumerate(f.manifest.project.default or []):
            if name not in ws.targets and not any(name in g.broken for g in ws.files):
                c.add(f, "project", "", f"default[{i}]", f"unknown target {name!r}{hint(name, list(ws.targets))}",
                      "default", i)
    for t in ws.targets.values():
        spec = t.spec
        if isinstance(spec, ModelBase):
            _check_model(c, t, spec)
        elif isinstance(spec, SpecializationBase):
            _check_specialization(c, t, spec)
        elif isinstance(spec, ValidationBase):
            _check_validation(c, t, spec)
        elif isinstance(spec, StepTable):
            _check_step(c, t, spec)
    _check_cycles(c)


def _check_model(c: Checker, t: TargetRef, m: ModelBase) -> None:
    _check_source(c, t, m.source, "source")
    c.ws.plugins.tasks.get(m.task).check(c, t)


def _check_source(c: Checker, t: TargetRef, src: object, key: str) -> None:
    if isinstance(src, PathSource):
        c.path(t, f"{key}.path", src.path, folder=True)
    elif isinstance(src, PackageSource):
        _check_package(c, t, f"{key}.package", src)
    elif isinstance(src, RandomSource):
        if isinstance(src.tokenizer, PathSource):
            c.path(t, f"{key}.tokenizer", src.tokenizer.path, folder=True)
        elif isinstance(src.tokenizer, PackageSource):
            _check_package(c, t, f"{key}.tokenizer", src.tokenizer)
    elif isinstance(src, ComposedSource):
        family = getattr(t.spec, "task", None)
        if isinstance(family, str) and family in c.ws.plugins.tasks and c.ws.plugins.tasks.get(family).compose is None:
            able = [n for n in c.ws.plugins.tasks.names() if c.ws.plugins.tasks.get(n).compose is not None]
            c.report(t, key, f"task {family!r} builds a model from one source, not an encoder and a decoder "
                             f"(tasks that compose them: {', '.join(able) or 'none'})")
            return
        _check_source(c, t, src.encoder, f"{key}.encoder")
        _check_source(c, t, src.decoder, f"{key}.decoder")


def _check_package(c: Checker, t: TargetRef, key: str, src: PackageSource) -> None:
    spec = importlib.util.find_spec(src.package) if src.package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        c.report(t, key, f"Python package {src.package!r} is not installed (install it with pip, or use "
                         "source = { path = ... })")
        return
    folder = Path(next(iter(spec.submodule_search_locations))) / src.subdir
    try:
        found = folder.is_dir()
    except OSError as e:  # a name the file system refuses (too long, …)
        c.report(t, key.replace(".package", ".subdir"), f"cannot use subdir {src.subdir[:80]!r}: {e.strerror}")
        return
    if not found:
        c.report(t, key, f"package {src.package!r} has no folder {src.subdir!r} ({folder})")


def _check_specialization(c: Checker, t: TargetRef, s: SpecializationBase) -> None:
    backends = c.ws.plugins.backends
    for i, b in enumerate(s.compile):
        if b not in backends:
            c.report(t, f"compile[{i}]", f"unknown compile backend {b!r}{hint(b, backends.names())} "
                                         f"(known: {', '.join(backends.names())}){backends.unloaded_note()}",
                     "compile", i)
        elif (why := backends.get(b).refuses_dtype(s.dtype)) is not None:
            c.report(t, f"compile[{i}]", f"{why}; use another dtype or backend", "compile", i)
    if len(set(s.compile)) != len(s.compile):
        c.report(t, "compile", "each backend may be listed once")
    _check_option_tables(c, t, s)
    model = c.ref(t, "model", s.model, "models")
    if model is not None:
        c.ws.plugins.tasks.get(model.spec.task).check(c, t)


def _check_option_tables(c: Checker, t: TargetRef, s: SpecializationBase) -> None:
    """A backend's options table on a specialization that compiles with none of the backends reading it would
    change nothing (and silently): say so."""
    backends = c.ws.plugins.backends
    read: dict[str, list[str]] = {}
    for name in backends.names():
        b = backends.get(name)
        if b.options is not None:
            read.setdefault(b.options_table(), []).append(name)
    compiled = set(s.compile)
    for table, readers in sorted(read.items()):
        if getattr(s, table, None) is not None and not compiled & set(readers):
            c.report(t, table, f"[{table}] options, but {t.name!r} compiles with none of the backends that read "
                     f"them ({', '.join(readers)}); add one to compile or drop the table")


def _check_validation(c: Checker, t: TargetRef, v: ValidationBase) -> None:
    model = c.ref(t, "model", v.model, "models")
    for i, name in enumerate(v.specializations):
        sref = c.ref(t, f"specializations[{i}]", name, "specializations")
        if sref is not None and model is not None and sref.spec.model != v.model:
            c.report(t, f"specializations[{i}]", f"specialization {name!r} is for model {sref.spec.model!r}, "
                                                 f"not {v.model!r}", "specializations", i)
    runtimes = c.ws.plugins.runtimes
    task = model.spec.task if model is not None else None
    for i, r in enumerate(v.runtimes):
        if r not in runtimes:
            c.report(t, f"runtimes[{i}]", f"unknown runtime {r!r}{hint(r, runtimes.names())} "
                                          f"(known: {', '.join(runtimes.names())}){runtimes.unloaded_note()}",
                     "runtimes", i)
        elif task is not None and not runtimes.get(r).runs_task(task):
            can = [n for n in runtimes.names() if runtimes.get(n).runs_task(task)]
            c.report(t, f"runtimes[{i}]", f"runtime {r!r} does not run task {task!r} (runtimes for it: "
                                          f"{', '.join(can)})", "runtimes", i)
    _check_int8_program(c, t, v)
    _check_bounds(c, t, v, task)
    if model is not None:
        c.ws.plugins.tasks.get(model.spec.task).check(c, t)


def _check_int8_program(c: Checker, t: TargetRef, v: ValidationBase) -> None:
    """An int8 specialization's program is the float32 one (the backend quantizes): running it says nothing."""
    runtimes = c.ws.plugins.runtimes
    program = [r for r in v.runtimes if r in runtimes and runtimes.get(r).opens == "program"]
    int8 = [n for n in v.specializations if n in c.ws.targets
            and getattr(c.ws.targets[n].spec, "dtype", None) == "int8"]
    if program and int8:
        c.report(t, "runtimes", f"runtime {program[0]!r} would run the float32 program of int8 specialization "
                                f"{int8[0]!r} (int8 is applied by its compile backend); validate int8 on the "
                                "backend's runtime (onnxruntime) and leave out the program runtime")


def _check_bounds(c: Checker, t: TargetRef, v: ValidationBase, task: str | None) -> None:
    """Every bound names a listed runtime and a metric this task computes, in the metric's range."""
    metrics = c.ws.plugins.metrics
    family = c.ws.plugins.tasks.get(task) if task else None
    computed = metrics.names() if family is None else [*family.metrics, *(
        n for n in metrics.names() if n not in family.metrics and metrics.get(n).kind in family.evidence)]
    for runtime, bounds in v.checks.items():
        if runtime not in v.runtimes:
            c.report(t, f"checks.{runtime}", f"checks for runtime {runtime!r}, which this validation does not run"
                                             f"{hint(runtime, v.runtimes)} (runtimes: {', '.join(v.runtimes)})")
            continue
        for metric, bound in bounds.items():
            key = f"checks.{runtime}.{metric}"
            if metric not in metrics:
                c.report(t, key, f"unknown metric {metric!r}{hint(metric, computed)} (task {task!r} computes: "
                                 f"{', '.join(computed)})")
            elif metric not in computed:
                c.report(t, key, f"metric {metric!r} is not computed by task {task!r}, so a bound on it would be "
                                 f"ignored (it computes: {', '.join(computed)})")
            else:
                m = metrics.get(metric)
                if bound < m.lowest or (m.highest is not None and bound > m.highest):
                    top = f"{m.highest:g}" if m.highest is not None else "∞"
                    c.report(t, key, f"{metric} bound {bound:g} is outside [{m.lowest:g}, {top}]")


def _check_step(c: Checker, t: TargetRef, spec: StepTable) -> None:
    for i, rel in enumerate(spec.inputs):
        c.path(t, f"inputs[{i}]", rel, folder=False)
    for i, dep in enumerate(spec.deps):
        if dep not in c.ws.targets and not any(dep in f.broken for f in c.ws.files):
            c.report(t, f"deps[{i}]", f"unknown target {dep!r}{hint(dep, c.names())}", "deps", i)
    for key, values in (("cmd", spec.cmd), ("env", list(spec.env.values()))):
        for i, arg in enumerate(values):
            for name in PLACEHOLDER.findall(arg):
                _check_placeholder(c, t, spec, f"{key}[{i}]" if key == "cmd" else f"env.{list(spec.env)[i]}", name)
    for i, out in enumerate(spec.outputs):
        pure = PurePosixPath(out)
        if pure.is_absolute() or ".." in pure.parts or out in ("", ".") or "\\" in out or "\0" in out:
            c.report(t, f"outputs[{i}]", f"output {out!r} must be a relative path inside the step's output folder",
                     "outputs", i)


PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_:.-]*)\}")  # not ${VAR}: the shell's


def _check_placeholder(c: Checker, t: TargetRef, spec: StepTable, key: str, name: str) -> None:
    """{out}, {root} and {dep:NAME} for a NAME in deps: any other would reach the command verbatim."""
    if name in ("out", "root"):
        return
    if name.startswith("dep:"):
        dep = name[4:]
        if dep not in spec.deps:
            c.report(t, key, f"{{{name}}} names {dep!r}, which is not in this step's deps"
                             f"{hint(dep, spec.deps)}; add it to deps = [...]")
        return
    c.report(t, key, f"unknown placeholder {{{name}}} (a command may use {{out}}, {{root}} and {{dep:NAME}}; a shell "
                     f"variable is written ${{NAME}}){hint(name, ['out', 'root'])}")


def _check_cycles(c: Checker) -> None:
    """Report each dependency cycle among steps once, with its full path (iterative: chains can be long)."""
    deps = {n: [d for d in r.spec.deps if d in c.ws.targets]
            for n, r in c.ws.targets.items() if isinstance(r.spec, StepTable)}
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    seen_cycles: set[frozenset[str]] = set()
    for root in sorted(deps):
        if root in state:
            continue
        path: list[str] = [root]
        on_path: dict[str, int] = {root: 0}
        todo: list[list[str]] = [list(reversed(deps.get(root, [])))]
        state[root] = 1
        while path:
            if not todo[-1]:
                done = path.pop()
                on_path.pop(done, None)
                state[done] = 2
                todo.pop()
                continue
            d = todo[-1].pop()
            if state.get(d) == 1:
                cycle = [*path[on_path[d]:], d]
                if frozenset(cycle) not in seen_cycles:
                    seen_cycles.add(frozenset(cycle))
                    t = c.ws.targets[d]
                    c.report(t, "deps", f"dependency cycle: {' -> '.join(cycle)}; remove one of these deps")
            elif d not in state:
                state[d] = 1
                on_path[d] = len(path)
                path.append(d)
                todo.append(list(reversed(deps.get(d, []))))
