"""Step nodes every family shares — load, ONNX export, compile — and their plan-time checks.

Torch-free: families call these while expanding targets. Each node names its worker
code (``pipeline/load.py``, ``export.py``, ``compile.py``) and declares the toolchain that
enters its key: a compile node declares its backend's, so an onnxruntime upgrade
rebuilds `ort` artifacts and nothing else.
"""

from __future__ import annotations

from typing import Any

from ..core.environment import cuda_unavailable
from ..core.graph import Expansion
from ..core.loader import TargetRef
from ..core.steps import MODEL_TOOLCHAIN, StepNode
from ..core.tables import ModelBase, RandomSource
from ..errors import BackendUnavailable

LOAD_VERSION = 3
EXPORT_VERSION = 1
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


def compile_node(x: Expansion, spec_ref: TargetRef, backend: str, upstream: str, params: dict[str, Any],
                 step_id: str, out_subdir: str) -> str:
    """One backend artifact of one fixed shape, compiled from ``upstream`` (ONNX or a program)."""
    b = x.ws.plugins.backends.get(backend)
    role = "onnx" if b.consumes == "onnx" else "program"
    toolchain = ("python", *b.toolchain)
    options = getattr(spec_ref.spec, backend, None) if b.options is not None else None
    if options is not None:  # [specializations.X.<backend>]: part of the key
        params = {**params, "options": options.model_dump()}
    return x.graph.add(StepNode(
        id=step_id, kind="compile", params={"backend": backend, **params}, runner=COMPILE_RUNNER,
        version=b.version, toolchain=toolchain, tool_versions=b.tool_versions(params.get("device", "cpu")),
        deps={role: upstream}, target=spec_ref.name, out_subdir=out_subdir, salt=x.salt(spec_ref),
    ))
