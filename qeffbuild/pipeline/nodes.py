"""Step nodes every family shares — load, ONNX export, compile — and their plan-time checks.

Torch-free: families call these while expanding targets. Each node names its worker
code (``pipeline/load.py``, ``export.py``, ``compile.py``) and declares the toolchain that
enters its key: a compile node declares its backend's, so an onnxruntime upgrade
rebuilds `ort` artifacts and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from ..core.environment import cuda_unavailable
from ..core.graph import Expansion
from ..core.steps import MODEL_TOOLCHAIN, FileInput, StepNode
from ..core.tables import ModelBase, RandomSource
from ..core.workspace import TargetRef
from ..errors import BackendUnavailable

LOAD_VERSION = 3
EXPORT_VERSION = 1
ONNX_PASS_VERSION = 1  # the pass runner (loading, saving); each pass's own version is in its params
COMPILE_RUNNER = "qeffbuild.pipeline.compile:run"


def model_config(x: Expansion, model: TargetRef) -> dict[str, Any]:
    """The model's config as far as it is known without transformers (source config + overrides)."""
    spec: ModelBase = model.spec
    return {**x.ws.source(model).config, **spec.overrides}


def config_int(x: Expansion, model: TargetRef, names: tuple[str, ...], default: int | None = None) -> int | None:
    """The first of ``names`` the config sets, as an integer (configs name one limit differently:
    ``max_position_embeddings``, GPT-2's ``n_positions`` …); a non-integer is a located error."""
    cfg = model_config(x, model)
    for name in names:
        if name in cfg and cfg[name] is not None:
            value = cfg[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                where = "overrides" if name in model.spec.overrides else "source.config" \
                    if isinstance(model.spec.source, RandomSource) else "source"
                x.fail(model, where, f"config {name} must be a positive integer, got {value!r}")
            return value
    return default


def check_support(x: Expansion, model: TargetRef) -> None:
    """The model's architecture must be one its task's family builds (torch-free: from config or class)."""
    task = x.ws.task_of(model)
    src = x.ws.source(model)
    if task.supports(src.architecture, src.model_type):
        return
    fits = [t.name for t in x.ws.plugins.tasks.values() if t.supports(src.architecture, src.model_type)]
    what = src.architecture or src.model_type or "this model"
    other = f"; it fits task {' or '.join(map(repr, fits))}" if fits else "; no installed family builds it"
    x.fail(model, "task", f"task {task.name!r} does not build {what} (model_type {src.model_type!r}): it builds "
                          f"{task.supported()}{other}")


def check_backend(spec_ref: TargetRef, backend: str, device: str, x: Expansion) -> None:
    why = x.ws.plugins.backends.get(backend).unavailable(device)
    if why:
        raise BackendUnavailable(f"{spec_ref.where('compile')} cannot compile with {backend!r} here: {why}")


def check_device(spec_ref: TargetRef, device: str) -> None:
    """A specialization for a GPU is refused at plan time on a machine without one."""
    if device == "cuda" and (why := cuda_unavailable()):
        raise BackendUnavailable(f"{spec_ref.where('device')} device 'cuda': {why}")


def load_node(x: Expansion, model: TargetRef, auto_class: str, preprocessor: str,
              extra: dict[str, Any] | None = None) -> str:
    """The model in the Hugging Face layout, overrides applied (``auto_class`` loads it; a family may name a
    ``builder`` in ``extra`` that constructs it instead, and add params of its own)."""
    spec: ModelBase = model.spec
    check_support(x, model)
    src = x.ws.source(model)
    params = {"source": src.params, "overrides": spec.overrides, "task": spec.task, "auto_class": auto_class,
              "preprocessor": preprocessor, "trust_remote_code": spec.trust_remote_code, **(extra or {})}
    return x.graph.add(StepNode(
        id=f"load:{model.name}", kind="load", params=params, runner="qeffbuild.pipeline.load:run",
        version=LOAD_VERSION, toolchain=MODEL_TOOLCHAIN, files=src.files, target=model.name, out_subdir="",
        salt=x.salt(model), paths=dict(src.paths),
    ))


def export_node(x: Expansion, model: TargetRef, program: str, opset: int, step_id: str, out_subdir: str) -> str:
    """ONNX from a torch.export program (always the CPU program)."""
    return x.graph.add(StepNode(
        id=step_id, kind="export", params={"opset": opset}, runner="qeffbuild.pipeline.export:run",
        version=EXPORT_VERSION, toolchain=(*MODEL_TOOLCHAIN, "onnx", "onnxscript"), deps={"program": program},
        target=model.name, out_subdir=out_subdir, salt=x.salt(model),
    ))


def graph_compile_nodes(x: Expansion, model: TargetRef, spec_ref: TargetRef, backend: str, graphs: Iterable[str],
                        transform: Callable[[str, str], str],
                        compile_params: Callable[[str], dict[str, Any]]) -> dict[str, str]:
    """``{graph: compile node}`` for a specialization of several graphs (encoder/decoder, prefill/decode,
    one per audio length): each graph's program (``transform(graph, device)``), exported from the CPU
    program when the backend reads ONNX (an ONNX graph carries no device), else the program of the
    specialization's device, then compiled with ``compile_params(graph)``."""
    spec = spec_ref.spec
    onnx = x.ws.plugins.backends.get(backend).consumes == "onnx"
    ids = {}
    for graph in graphs:
        program = transform(graph, "cpu" if onnx else spec.device)
        upstream = export_node(x, model, program, spec.opset, f"export:{spec_ref.name}:{graph}:opset{spec.opset}",
                               f"onnx-{graph}") if onnx else program
        ids[graph] = compile_node(x, spec_ref, backend, upstream, compile_params(graph), graph)
    return ids


def onnx_pass_nodes(x: Expansion, spec_ref: TargetRef, upstream: str, passes: tuple[str, ...],
                    overrides: Callable[[str], dict[str, Any]] = lambda name: {}) -> str:
    """Chain the named ONNX passes after ``upstream`` (an export or an earlier pass); shared by every
    specialization and backend that asks for the same passes, with the same params, on the same export.
    ``overrides(name)``: params a backend's options table changes (a pass so changed is a step of its own)."""
    for name in passes:
        p = x.ws.plugins.onnx_passes.get(name)
        up = x.graph.nodes[upstream]
        params = {**p.params, **overrides(name)}
        changed = sorted(k for k in params if params[k] != p.params.get(k))
        label = name + "".join(f".{k}-{params[k]}" for k in changed)
        upstream = x.graph.add(StepNode(
            id=f"onnx-pass:{label}:{upstream.partition(':')[2]}", kind="onnx-pass",
            params={"pass": p.name, "pass_version": p.version, "pass_params": params},
            runner="qeffbuild.pipeline.onnx_passes:run", version=ONNX_PASS_VERSION,
            toolchain=("python", "onnx", "numpy"),
            deps={"onnx": upstream}, target=up.target, out_subdir=f"{up.out_subdir}+{label}", salt=up.salt,
        ))
    return upstream


def backend_options(x: Expansion, spec_ref: TargetRef, backend: str, dtype: str) -> Any:
    """The specialization's ``[specializations.X.<table>]`` for ``backend`` (None: no table and no defaults), with
    the family's defaults for ``dtype`` (:attr:`Task.option_defaults`) where the manifest leaves a key unset."""
    b = x.ws.plugins.backends.get(backend)
    if b.options is None:
        return None
    table = b.options_table()
    given = getattr(spec_ref.spec, table, None)
    defaults = x.ws.task_of(spec_ref).option_defaults.get((table, dtype), {})
    if not defaults:
        return given
    written = given.model_dump(exclude_unset=True) if given is not None else {}
    return b.options.model_validate({**defaults, **written})


def compile_node(x: Expansion, spec_ref: TargetRef, backend: str, upstream: str, params: dict[str, Any],
                 graph: str) -> str:
    """The artifact of ``backend`` for one graph of a specialization (``graph``: ``seq16``, ``decoder`` …,
    or "" for a backend that holds every shape in one artifact), compiled from ``upstream`` (ONNX or a program).

    A backend that builds on another (the `qaic` QPC on the `qaic-bundle`) gets that one's node as
    its input; one that asks for ONNX passes gets them chained in front of it.
    """
    b = x.ws.plugins.backends.get(backend)
    table = b.options_table()
    dtype = params.get("dtype", "float32")
    options = backend_options(x, spec_ref, backend, dtype)
    if b.builds_on is not None:
        upstream = compile_node(x, spec_ref, b.builds_on, upstream, params, graph)
    elif b.consumes == "onnx" and b.passes_for(dtype):
        upstream = onnx_pass_nodes(x, spec_ref, upstream, b.passes_for(dtype),
                                   lambda name: b.pass_params(name, options))
    role = "onnx" if b.consumes == "onnx" else "program"
    if options is not None:  # [specializations.X.<table>]: part of the key
        params = {**params, "options": options.model_dump()}

    def fail(key: str, message: str) -> NoReturn:
        x.fail(spec_ref, f"{table}.{key}" if key else table, message)

    params = b.plan(fail, params, options)
    if not b.symbolic_graphs:
        params = {k: v for k, v in params.items() if k != "graph_facts"}
    suffix = f":{graph}" if graph else ""
    return x.graph.add(StepNode(
        id=f"compile:{backend}:{spec_ref.name}{suffix}", kind="compile", params={"backend": backend, **params},
        runner=COMPILE_RUNNER, version=b.version, toolchain=("python", *b.toolchain),
        tool_versions=b.tool_versions(params.get("device", "cpu")), deps={role: upstream},
        files=template_files(spec_ref, b.templates), target=spec_ref.name,
        out_subdir=f"{backend}/{graph}" if graph else backend, salt=x.salt(spec_ref),
    ))


class GraphFamily:
    """``expand`` for a family whose specializations are several graphs (encoder/decoder, prefill/decode, one
    per audio length): a model is its load step; a specialization is a self-contained folder — the model, every
    graph's program and every backend's artifacts (with what they build on); a validation is its one node.
    The family gives ``load``, ``dims``, ``graphs``, ``transform_node``, ``compile_nodes`` and ``validate_node``."""

    def expand(self, x: Expansion, ref: TargetRef) -> list[str]:
        model = x.ws.model_of(ref)
        if ref.table == "models":
            return [self.load(x, model)]
        if ref.table == "specializations":
            dims = self.dims(x, model, ref)
            ids = [self.load(x, model)]
            ids += [self.transform_node(x, model, ref, g, dims, ref.spec.device) for g in self.graphs(dims)]
            return ids + with_bases(x, [nid for b in ref.spec.compile
                                        for nid in self.compile_nodes(x, model, ref, b).values()])
        return [self.validate_node(x, model, ref)]

    def load(self, x: Expansion, model: TargetRef) -> str:
        raise NotImplementedError

    def dims(self, x: Expansion, model: TargetRef, spec_ref: TargetRef) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def graphs(dims: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    def transform_node(self, x: Expansion, model: TargetRef, spec_ref: TargetRef, graph: str, dims: dict[str, Any],
                       device: str) -> str:
        raise NotImplementedError

    def compile_nodes(self, x: Expansion, model: TargetRef, spec_ref: TargetRef, backend: str) -> dict[Any, str]:
        raise NotImplementedError

    def validate_node(self, x: Expansion, model: TargetRef, ref: TargetRef) -> str:
        raise NotImplementedError


def with_bases(x: Expansion, ids: list[str]) -> list[str]:
    """Compile nodes plus the artifacts they build on (a `qaic` QPC's bundle), for a target's out/ folder."""
    out: list[str] = []
    for nid in ids:
        node = x.graph.nodes[nid]
        if node.kind == "compile" and x.ws.plugins.backends.get(node.params["backend"]).builds_on:
            out.extend(with_bases(x, [node.deps["onnx"]]))
        out.append(nid)
    return list(dict.fromkeys(out))


def template_files(spec_ref: TargetRef, names: tuple[str, ...]) -> tuple[FileInput, ...]:
    """The templates a backend renders, as key inputs: a project's override changes the artifact's key."""
    from ..templating import resolve_template

    return tuple(FileInput(f"template:{name}", resolve_template(name, spec_ref.file.root)) for name in names)


def check_runtime(x: Expansion, spec_ref: TargetRef, runtime: str, device: str) -> None:
    """A validation that runs a backend's artifact needs that backend's runtime on this machine, and a backend that
    compiles the specialization's dtype (a validation compiles each of its specializations for each of its runtimes,
    whatever their own ``compile`` lists: without this, an int8 specialization beside an `aoti` runtime failed in
    its compile step with a trace of torch.export's internals)."""
    opens = x.ws.plugins.runtimes.get(runtime).opens
    if opens in ("reference", "program"):
        return
    backend = x.ws.plugins.backends.get(opens)
    refused = backend.refuses_dtype(getattr(spec_ref.spec, "dtype", "float32"))
    if refused:
        x.fail(spec_ref, "dtype", f"a validation runs it on runtime {runtime!r}, but {refused}; list "
                                  f"{spec_ref.name!r} in a validation without {runtime!r} (or give that validation a "
                                  f"specialization of another dtype)")
    why = backend.runtime_unavailable(device)
    if why:
        raise BackendUnavailable(f"{spec_ref.where('device')} runtime {runtime!r} cannot run here: {why}")
