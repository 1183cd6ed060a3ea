"""The kinds of plug-in (task families, compile backends, runtimes, metrics, ONNX passes) and their loading.

A plug-in is described here by what planning needs, and nothing heavy: the code that
imports torch, onnx or onnxruntime is named as ``module:attribute`` and imported only in
the worker process that runs it. Built-in plug-ins register from the package; third-party
ones from the ``qeffbuild.plugins`` entry-point group::

    [project.entry-points."qeffbuild.plugins"]
    my_family = "my_package.qeffbuild_plugin:register"      # register(plugins: Plugins) -> None

Every registry refuses an unknown name with the list of known ones. A plug-in that fails to load (a
third-party package, or a family package with a bug) is set aside with its error instead of taking the
whole tool down: `qeffbuild ls` and every build that does not need it still work, `qeffbuild env` and
`ls` warn about it, and looking up one of its names says why the name is missing.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NoReturn

from .registry import Registry

if TYPE_CHECKING:
    from .graph import Expansion
    from .tables import ModelBase, SpecializationBase, Table, ValidationBase
    from .workspace import TargetRef

ENTRY_POINT_GROUP = "qeffbuild.plugins"
# Rooms whose ``register(plugins)`` fills the registries with what qeffbuild ships; each finds
# its own modules (a new backend file, metric file or family package needs no edit elsewhere).
BUILTIN_ROOMS = ("qeffbuild.checks", "qeffbuild.pipeline.onnx_passes", "qeffbuild.backends", "qeffbuild.runtimes",
                 "qeffbuild.tasks")


def load_attr(spec: str) -> Any:
    """Import ``module:attribute`` (only where the code runs: a worker, a session)."""
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Metric:
    """One number a validation computes and a check can bound.

    ``compute`` is ``module:function``, called by :func:`qeffbuild.checks.measure` on a row's evidence of
    this metric's ``kind``: ``(reference array, runtime array)`` for tensors, ``(reference sequences,
    runtime sequences)`` for tokens, ``(transcripts, texts, reference_hyps=…, normalize=…)`` for text,
    ``(gaps,)`` for divergence (the reference's logit gap where each differing input first differs);
    it returns a float (None: not measurable on this row).
    """

    name: str
    kind: Literal["tensor", "tokens", "text", "divergence"]
    higher_is_better: bool
    description: str
    compute: str
    lowest: float = 0.0  # the smallest meaningful bound
    highest: float | None = None  # the largest meaningful bound (None: unbounded)


@dataclass(frozen=True)
class OnnxPass:
    """A named, versioned rewrite of an ONNX model that a backend asks for before it compiles.

    ``apply`` is ``module:function``: ``(model: onnx.ModelProto, params) -> str`` (a one-line
    summary of what it changed); the pass runs as its own cached step between export and compile.
    """

    name: str
    version: int
    description: str
    apply: str
    params: Mapping[str, Any] = field(default_factory=dict)  # part of the pass step's key
    # False for a pass that changes numbers on purpose (int8 quantization): the conformance suite
    # then holds it to a relative bound instead of bit-equality, and validation to the family's bound.
    exact: bool = True


NumericClass = Literal["reference", "same-program", "compiled", "library", "accelerator"]


@dataclass(frozen=True)
class Runtime:
    """Where a validation or a user runs a model: the reference, the exported program, or a backend's artifact."""

    name: str
    description: str
    opens: str  # "reference" | "program" | the name of a compile backend
    tasks: tuple[str, ...] | None = None  # None: every task
    # "reference" runtimes other than the plain HF model name the function that runs them.
    runner: str | None = None
    # How its numbers relate to the reference's, which picks the family's default bounds (no family or runtime
    # names the other): "reference" (is it: nothing to bound), "same-program" (the exported program run eagerly:
    # the tightest bounds), "compiled" (the same float math through other kernels), "library" (another float32
    # implementation of the unmodified model, whatever the specialization's dtype), "accelerator" (reduced
    # precision hardware: the card's tolerances, as QEfficient sets them).
    numeric: NumericClass = "compiled"

    def runs_task(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks


class Backend:
    """A compile backend: what it compiles from, for which devices and dtypes, and how.

    Subclasses set the class attributes and may override :meth:`unavailable` (plan-time:
    why it cannot run here) and :meth:`tool_versions` (non-Python toolchain versions that
    enter its compile keys, such as a compiler SDK's).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    consumes: ClassVar[Literal["onnx", "program"]]
    devices: ClassVar[tuple[str, ...]]
    # dtype -> why this backend refuses it (checked at plan time); absent: supported.
    refused_dtypes: ClassVar[dict[str, str]] = {}
    runtimes: ClassVar[tuple[Runtime, ...]] = ()  # the runtimes that open its artifacts
    toolchain: ClassVar[tuple[str, ...]]  # Python distributions whose versions enter its keys
    version: ClassVar[int] = 1  # bump when its compile step's behaviour changes
    compile: ClassVar[str]  # module:function run in the worker: (StepContext) -> None
    session: ClassVar[str]  # module:callable opening an artifact folder: (folder, device) -> Session
    options: ClassVar[type[Table] | None] = None  # a manifest sub-table [specializations.X.<options_key>]
    options_key: ClassVar[str | None] = None  # the sub-table's name (default: the backend's name)
    onnx_passes: ClassVar[tuple[str, ...]] = ()  # ONNX passes run (in order) on its input, each a cached step
    # A backend whose artifact this one compiles from (the `qaic` QPC from the `qaic-bundle`); None: from
    # the export (or program) directly.
    builds_on: ClassVar[str | None] = None
    # True: one artifact holds every shape of a specialization (a QPC with one graph per seq_len);
    # False: one artifact per shape.
    all_shapes_in_one: ClassVar[bool] = False
    templates: ClassVar[tuple[str, ...]] = ()  # jinja2 templates it renders; their text enters its keys
    # True: its compile params carry the family's graph facts (graph names, symbols, axis names,
    # retained-state pairs) for backends that name dimensions, as `qaic-bundle` does.
    symbolic_graphs: ClassVar[bool] = False
    # A Ray custom resource its steps need (only nodes with the device have it): `qaic` for Cloud AI 100.
    cluster_resource: ClassVar[str | None] = None

    @classmethod
    def options_table(cls) -> str:
        return cls.options_key or cls.name

    def unavailable(self, device: str) -> str | None:
        """Why this backend cannot compile for ``device`` on this machine (None when it can)."""
        if device not in self.devices:
            return f"backend {self.name!r} compiles for {', '.join(self.devices)}, not {device!r}"
        return None

    def passes_for(self, dtype: str) -> tuple[str, ...]:
        """The ONNX passes run (in order) before compiling a ``dtype`` specialization."""
        return self.onnx_passes

    def pass_params(self, name: str, options: Any) -> dict[str, Any]:
        """Overrides of ONNX pass ``name``'s params from this backend's manifest ``options`` (None: no table);
        they enter that pass step's key."""
        return {}

    def refuses_dtype(self, dtype: str) -> str | None:
        why = self.refused_dtypes.get(dtype)
        return f"backend {self.name!r} cannot compile {dtype}: {why}" if why else None

    def tool_versions(self, device: str) -> dict[str, str]:
        return {}

    def runtime_unavailable(self, device: str) -> str | None:
        """Why its artifacts cannot be run here (None when they can); checked where a validation runs them."""
        return self.unavailable(device)

    def plan(self, fail: Callable[[str, str], NoReturn], params: dict[str, Any],
             options: Any) -> dict[str, Any]:
        """Plan-time: check a compile's ``params`` against the manifest ``options`` (``fail(key, message)``
        reports a located problem) and return the params that enter its key."""
        return params

    def environment(self) -> str | None:
        """A line for `qeffbuild env` about the toolchain this backend found (None: nothing to add)."""
        return None

    def describe(self, device: str = "cpu") -> dict[str, Any]:
        why = self.unavailable(device)
        return {"name": self.name, "description": self.description, "consumes": self.consumes,
                "devices": list(self.devices), "available": why is None, "why_not": why}


class Task:
    """A model family: its manifest fields, plan-time checks and graph expansion.

    A family's package ``__init__`` defines its subclass and must stay torch-free; its
    heavy modules (transform, validate, bench, run) are named by ``module:function`` and run
    in workers.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    model_table: ClassVar[type[ModelBase]]
    specialization_table: ClassVar[type[SpecializationBase]]
    validation_table: ClassVar[type[ValidationBase]]
    metrics: ClassVar[tuple[str, ...]]  # what its validation always computes and reports
    # the kinds of evidence its validation gathers: `checks` may bound any registered metric of these kinds
    evidence: ClassVar[tuple[str, ...]] = ()
    bench: ClassVar[str | None] = None  # module:function behind `qeffbuild bench`
    run: ClassVar[str | None] = None  # module:function behind `qeffbuild run`
    # module:function (rows, format) -> one text per row: how `run` shows its rows (torch-free), and the formats
    # it offers besides json
    run_render: ClassVar[str | None] = None
    run_formats: ClassVar[tuple[str, ...]] = ("text", "json")
    # module:function (report.json dict, template text, title) -> HTML, behind `qeffbuild report`
    report_html: ClassVar[str | None] = None
    example: ClassVar[str] = ""  # a one-line hint shown when a model does not fit
    libraries: ClassVar[tuple[str, ...]] = ()  # Python distributions of its own that `qeffbuild env` reports
    # module:Class behind ``qeffbuild.Transcriber`` for families that transcribe (load, from_target, transcribe)
    transcriber: ClassVar[str | None] = None
    # {(a backend's options table, dtype): {option: value}}: what this family's specializations of that dtype get
    # for the options their manifest table leaves unset (a recipe measured on this family's models); the
    # backend's own defaults for the rest. Part of the compile key, as if the manifest had written them.
    option_defaults: ClassVar[dict[tuple[str, str], dict[str, Any]]] = {}

    def supports(self, architecture: str | None, model_type: str | None) -> bool:
        """Whether this family can build a model of that class / ``model_type`` (torch-free)."""
        raise NotImplementedError

    def supported(self) -> str:
        """The architectures this family builds, for error messages."""
        raise NotImplementedError

    def check(self, checker: Any, ref: TargetRef) -> None:
        """Load-time checks of one of this family's tables (problems go to ``checker``)."""

    # A family that builds models from an encoder and a decoder source (``source = { encoder = …, decoder = … }``)
    # says how they join: ``compose(encoder, decoder) -> (config, architecture, model_type)`` from the two
    # resolved sides. None: this family's models have one source.
    compose: Callable[[Any, Any], tuple[dict[str, Any], str, str]] | None = None

    def expand(self, x: Expansion, ref: TargetRef) -> list[str]:
        """Add the steps of target ``ref`` to the graph; return the ids of those it outputs."""
        raise NotImplementedError

    def default_checks(self, numeric: NumericClass, dtype: str) -> dict[str, float]:
        """The bounds a validation applies to a runtime of class ``numeric`` (see :class:`Runtime`) at ``dtype``
        when the manifest sets none."""
        return {}


@dataclass
class Plugins:
    """Every registry, filled once per process by :func:`plugins` (or by hand in tests)."""

    tasks: Registry[Task] = field(default_factory=lambda: Registry("task"))
    backends: Registry[Backend] = field(default_factory=lambda: Registry("compile backend"))
    runtimes: Registry[Runtime] = field(default_factory=lambda: Registry("runtime"))
    metrics: Registry[Metric] = field(default_factory=lambda: Registry("metric"))
    onnx_passes: Registry[OnnxPass] = field(default_factory=lambda: Registry("ONNX pass"))
    sources: list[str] = field(default_factory=list)  # where each plug-in module came from
    broken: list[str] = field(default_factory=list)  # plug-ins that failed to load, each with its error

    def __post_init__(self) -> None:
        for registry in (self.tasks, self.backends, self.runtimes, self.metrics, self.onnx_passes):
            registry.broken = self.broken  # a missing name's error mentions what failed to load

    def load(self, module: str) -> None:
        register: Callable[[Plugins], None] = importlib.import_module(module).register
        register(self)
        self.sources.append(module)

    def guarded(self, source: str, register: Callable[[], None], fix: str, called: str | None = None) -> bool:
        """Run one plug-in's ``register``; if it fails, set it aside with its error (and ``fix``) and go on.
        ``called`` is how errors name it (default: ``source``)."""
        try:
            register()
        except Exception as e:  # any bug in someone else's package: the rest of the tool must keep working
            self.broken.append(f"{called or source} failed to load ({type(e).__name__}: {e}); {fix}")
            return False
        self.sources.append(source)
        return True

    def load_each(self, package: str) -> None:
        """Import and register every module directly inside ``package``, each on its own (see :meth:`guarded`)."""
        for name in submodule_names(package):
            self.guarded(name, functools.partial(_register_module, name, self), f"fix {name} or remove it")


_PLUGINS: Plugins | None = None


def plugins() -> Plugins:
    """The process-wide plug-ins: the built-in ones, then every installed entry point."""
    global _PLUGINS
    if _PLUGINS is None:
        loaded = Plugins()
        for module in BUILTIN_ROOMS:
            loaded.load(module)
        _load_entry_points(loaded)
        _PLUGINS = loaded
    return _PLUGINS


def _register_module(name: str, plugins: Plugins) -> None:
    importlib.import_module(name).register(plugins)


def _register_entry_point(ep: Any, plugins: Plugins) -> None:
    ep.load()(plugins)


def submodule_names(package: str) -> list[str]:
    """The dotted names of the modules directly inside ``package``, sorted."""
    import pkgutil

    pkg = importlib.import_module(package)
    return [f"{package}.{m.name}" for m in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name)]


def submodules(package: str) -> list[Any]:
    """The modules directly inside ``package`` (sorted by name), imported."""
    return [importlib.import_module(name) for name in submodule_names(package)]


def _load_entry_points(loaded: Plugins) -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        loaded.guarded(f"entry point {ep.name} ({ep.value})", functools.partial(_register_entry_point, ep, loaded),
                       "fix or uninstall its package", f"the qeffbuild plug-in {ep.name!r} ({ep.value})")
