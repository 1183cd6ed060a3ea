"""Graph pieces shared by every model task: the load step and plan-time shape checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .backends import BACKENDS
from .errors import BackendUnavailable, ManifestError, Problem
from .graph import Graph
from .loader import TargetRef, Workspace
from .manifest import ModelTable, RandomSource
from .sources import Resolved, resolve
from .steps import StepNode

_resolved: dict[tuple[str, str], Resolved] = {}


def resolved_source(ref: TargetRef) -> Resolved:
    """The model's source, resolved once per process."""
    key = (str(ref.file.path), ref.name)
    if key not in _resolved:
        _resolved[key] = resolve(ref.spec.source, ref.file.root)
    return _resolved[key]


def model_config(ref: TargetRef) -> dict[str, Any]:
    """The model's config as far as it is known without transformers (source config + overrides)."""
    spec: ModelTable = ref.spec
    return {**resolved_source(ref).config, **spec.overrides}


def load_node(graph: Graph, ref: TargetRef) -> str:
    spec: ModelTable = ref.spec
    src = resolved_source(ref)
    paths: dict[str, Path] = {"source": src.folder} if src.folder else {}
    if isinstance(spec.source, RandomSource) and spec.source.tokenizer is not None:
        tok = resolve(spec.source.tokenizer, ref.file.root)
        if tok.folder:
            paths["tokenizer"] = tok.folder
    node = StepNode(
        id=f"load:{ref.name}",
        kind="load",
        params={"source": src.params, "overrides": spec.overrides, "task": spec.task,
                "trust_remote_code": spec.trust_remote_code},
        files=src.files,
        target=ref.name,
        out_subdir="",
        salt=ref.file.manifest.project.salt,
        paths=paths,
    )
    return graph.add(node)


def fail(ref: TargetRef, key: str, message: str) -> None:
    """Raise a located manifest error found while planning."""
    f = ref.file
    raise ManifestError([Problem(f.display, f.line(ref.table, ref.name, *key.split(".")),
                                 f"{ref.table}.{ref.name}", key, message)])


def check_backend(ref: TargetRef, backend: str, device: str) -> None:
    why = BACKENDS.get(backend).unavailable(device)
    if why:
        f = ref.file
        raise BackendUnavailable(f"{f.display}:{f.line(ref.table, ref.name, 'compile')}: [{ref.table}.{ref.name}] "
                                 f"cannot compile with {backend!r} here: {why}")


def check_device(ref: TargetRef, device: str) -> None:
    """A specialization for a GPU is refused at plan time on a machine without one."""
    if device == "cuda":
        from .backends import _cuda_unavailable

        why = _cuda_unavailable()
        if why:
            f = ref.file
            raise BackendUnavailable(f"{f.display}:{f.line(ref.table, ref.name, 'device')}: [{ref.table}.{ref.name}] "
                                     f"device 'cuda': {why}")


def model_of(ws: Workspace, ref: TargetRef) -> TargetRef:
    return ref if isinstance(ref.spec, ModelTable) else ws.targets[ref.spec.model]
