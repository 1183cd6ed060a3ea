"""The embedding task's graph: load → transform (pooling, torch.export) → export (ONNX) →
compile (one artifact per backend and seq_len) → validate."""

from __future__ import annotations

from typing import Any

from .backends import BACKENDS
from .graph import Graph
from .graph_model import check_backend, check_device, fail, load_node, model_config, model_of
from .loader import TargetRef, Workspace
from .manifest import ModelTable, SpecializationTable, ValidationTable
from .runtimes import RUNTIMES
from .steps import FileInput, StepNode
from .thresholds import resolve_checks


def expand(ws: Workspace, ref: TargetRef, graph: Graph) -> list[str]:
    model = model_of(ws, ref)
    if isinstance(ref.spec, ModelTable):
        return [load_node(graph, ref)]
    if isinstance(ref.spec, SpecializationTable):
        return [nid for backend in ref.spec.compile for nid in compile_nodes(graph, model, ref, backend)]
    return [validate_node(ws, graph, model, ref)]


def _salt(ref: TargetRef) -> str:
    return ref.file.manifest.project.salt


def transform_node(graph: Graph, model: TargetRef, dtype: str, device: str = "cpu") -> str:
    """The pooled model as a torch.export program, exported on the device it will run on
    (a program's device placement is baked into its graph)."""
    m: ModelTable = model.spec
    max_pos = int(model_config(model).get("max_position_embeddings", 512))
    return graph.add(StepNode(
        id=f"transform:{model.name}:{dtype}" + ("" if device == "cpu" else f":{device}"),
        kind="transform",
        params={"task": "embedding", "pooling": m.pooling, "normalize": m.normalize, "dtype": dtype,
                "max_seq_len": max_pos, "device": device},
        deps={"model": load_node(graph, model)},
        target=model.name,
        out_subdir=f"transform-{dtype}",
        salt=_salt(model),
    ))


def export_node(graph: Graph, model: TargetRef, dtype: str, opset: int) -> str:
    return graph.add(StepNode(
        id=f"export:{model.name}:{dtype}:opset{opset}",
        kind="export",
        params={"task": "embedding", "opset": opset},
        deps={"program": transform_node(graph, model, dtype, "cpu")},  # ONNX from the CPU program
        target=model.name,
        out_subdir=f"onnx-{dtype}",
        salt=_salt(model),
    ))


def compile_nodes(graph: Graph, model: TargetRef, spec_ref: TargetRef, backend: str) -> list[str]:
    s: SpecializationTable = spec_ref.spec
    check_backend(spec_ref, backend, s.device)
    max_pos = int(model_config(model).get("max_position_embeddings", 512))
    for n in s.seq_len:
        if n > max_pos:
            fail(spec_ref, "seq_len", f"seq_len {n} exceeds the model's max_position_embeddings ({max_pos})")
    if BACKENDS.get(backend).needs_onnx:
        role, upstream = "onnx", export_node(graph, model, s.dtype, s.opset)
    else:
        role, upstream = "program", transform_node(graph, model, s.dtype, s.device)
    ids = []
    for n in s.seq_len:
        ids.append(graph.add(StepNode(
            id=f"compile:{backend}:{spec_ref.name}:seq{n}",
            kind="compile",
            params={"task": "embedding", "backend": backend, "batch_size": s.batch_size, "seq_len": n,
                    "device": s.device, "dtype": s.dtype,
                    "shapes": {"input_ids": [s.batch_size, n], "attention_mask": [s.batch_size, n]}},
            deps={role: upstream},
            target=spec_ref.name,
            out_subdir=f"{backend}/seq{n}",
            salt=_salt(spec_ref),
        )))
    return ids


def validate_node(ws: Workspace, graph: Graph, model: TargetRef, ref: TargetRef) -> str:
    v: ValidationTable = ref.spec
    m: ModelTable = model.spec
    deps: dict[str, str] = {"model": load_node(graph, model)}
    specs: list[dict[str, Any]] = []
    for name in v.specializations:
        sref = ws.targets[name]
        check_device(sref, sref.spec.device)
        s: SpecializationTable = sref.spec
        specs.append({"name": name, "batch_size": s.batch_size, "seq_len": s.seq_len, "dtype": s.dtype,
                      "device": s.device})
        for runtime in v.runtimes:
            opens = RUNTIMES.get(runtime).opens
            if opens == "transformed":
                deps[f"transformed/{s.dtype}/{s.device}"] = transform_node(graph, model, s.dtype, s.device)
            elif opens not in ("reference",):
                for nid in compile_nodes(graph, model, sref, opens):
                    deps[f"{opens}/{name}/seq{graph.nodes[nid].params['seq_len']}"] = nid
    return graph.add(StepNode(
        id=f"validate:{ref.name}",
        kind="validate",
        params={"task": "embedding", "runtimes": v.runtimes, "specializations": specs, "pooling": m.pooling,
                "normalize": m.normalize, "checks": resolve_checks(v, specs)},
        deps=deps,
        files=(FileInput(v.inputs, ref.file.root / v.inputs),),
        target=ref.name,
        out_subdir="",
        salt=_salt(ref),
    ))
