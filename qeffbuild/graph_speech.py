"""The speech-seq2seq (Whisper) task's graph: load → {encoder, decoder-step} transform →
export → compile per backend → validate (greedy decoding on every runtime)."""

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

# transformers' WhisperConfig defaults, for random configs that leave a key out.
WHISPER_DEFAULTS = {"max_source_positions": 1500, "max_target_positions": 448}
PROMPT_MAX = 4  # <|startoftranscript|> <|lang|> <|task|> <|notimestamps|>
MIN_DECODE_STEPS = 20  # a cache wrong after step 1 must not pass: check many steps


def expand(ws: Workspace, ref: TargetRef, graph: Graph) -> list[str]:
    model = model_of(ws, ref)
    if isinstance(ref.spec, ModelTable):
        return [load_node(graph, ref)]
    if isinstance(ref.spec, SpecializationTable):
        # A self-contained folder: the HF model (processor, configs), both programs, every artifact.
        dims = spec_dims(model, ref)
        ids = [load_node(graph, model)]
        ids += [transform_node(graph, model, which, ref.spec.dtype, dims, ref.spec.device)
                for which in ("encoder", "decoder")]
        return ids + [nid for b in ref.spec.compile for nid in compile_nodes(graph, model, ref, b).values()]
    return [validate_node(ws, graph, model, ref)]


def _config(model: TargetRef) -> dict[str, Any]:
    return {**WHISPER_DEFAULTS, **model_config(model)}


def spec_dims(model: TargetRef, spec_ref: TargetRef) -> dict[str, int]:
    """batch, encoder_ctx_len and ctx_len of a specialization, checked against the model."""
    s: SpecializationTable = spec_ref.spec
    cfg = _config(model)
    max_src, max_tgt = int(cfg["max_source_positions"]), int(cfg["max_target_positions"])
    enc = s.encoder_ctx_len or max_src
    if enc != max_src:
        fail(spec_ref, "encoder_ctx_len", f"encoder_ctx_len must equal the model's max_source_positions ({max_src}): "
             "the unmodified reference encoder accepts only that length")
    ctx = s.ctx_len or max_tgt
    if ctx > max_tgt:
        fail(spec_ref, "ctx_len", f"ctx_len {ctx} exceeds the model's max_target_positions ({max_tgt})")
    return {"batch_size": s.batch_size, "encoder_ctx_len": enc, "ctx_len": ctx}


def _salt(ref: TargetRef) -> str:
    return ref.file.manifest.project.salt


def transform_node(graph: Graph, model: TargetRef, which: str, dtype: str, dims: dict[str, int],
                   device: str = "cpu") -> str:
    b, enc, ctx = dims["batch_size"], dims["encoder_ctx_len"], dims["ctx_len"]
    params: dict[str, Any] = {"task": "speech-seq2seq", "graph": which, "dtype": dtype, "batch_size": b,
                              "encoder_ctx_len": enc, "device": device}
    suffix = f"{which}:{dtype}:b{b}:enc{enc}" + ("" if device == "cpu" else f":{device}")
    if which == "decoder":  # only the decoder depends on ctx_len: changing it leaves the encoder cached
        params["ctx_len"] = ctx
        suffix += f":ctx{ctx}"
    return graph.add(StepNode(id=f"transform:{model.name}:{suffix}", kind="transform", params=params,
                              deps={"model": load_node(graph, model)}, target=model.name,
                              out_subdir=f"transform-{which}", salt=_salt(model)))


def compile_nodes(graph: Graph, model: TargetRef, spec_ref: TargetRef, backend: str) -> dict[str, str]:
    s: SpecializationTable = spec_ref.spec
    check_backend(spec_ref, backend, s.device)
    dims = spec_dims(model, spec_ref)
    ids = {}
    for which in ("encoder", "decoder"):
        # ONNX is exported from the CPU program; AOTInductor compiles the program of its device.
        program = transform_node(graph, model, which, s.dtype, dims,
                                 "cpu" if BACKENDS.get(backend).needs_onnx else s.device)
        if BACKENDS.get(backend).needs_onnx:
            upstream = graph.add(StepNode(
                id=program.replace("transform:", "export:", 1) + f":opset{s.opset}", kind="export",
                params={"task": "speech-seq2seq", "opset": s.opset}, deps={"program": program},
                target=model.name, out_subdir=f"onnx-{which}", salt=_salt(model)))
            role = "onnx"
        else:
            upstream, role = program, "program"
        ids[which] = graph.add(StepNode(
            id=f"compile:{backend}:{spec_ref.name}:{which}", kind="compile",
            params={"task": "speech-seq2seq", "backend": backend, "graph": which, "device": s.device,
                    "dtype": s.dtype, **{k: v for k, v in dims.items() if which == "decoder" or k != "ctx_len"}},
            deps={role: upstream}, target=spec_ref.name, out_subdir=f"{backend}/{which}", salt=_salt(spec_ref)))
    return ids


def validate_node(ws: Workspace, graph: Graph, model: TargetRef, ref: TargetRef) -> str:
    v: ValidationTable = ref.spec
    if v.max_new_tokens < MIN_DECODE_STEPS:
        fail(ref, "max_new_tokens", f"speech validations compare at least {MIN_DECODE_STEPS} decode steps "
             f"(a cache that is wrong after the first step must not pass); got {v.max_new_tokens}")
    folder = ref.file.root / v.inputs
    wavs = sorted(folder.glob("*.wav"))
    if len(wavs) < 2:
        fail(ref, "inputs", f"{v.inputs!r} holds {len(wavs)} .wav file(s); a speech validation needs at least two "
             "utterances (16 kHz mono WAV, optional .txt transcript beside each)")
    files = tuple(FileInput(f"{v.inputs}/{p.name}", p) for p in sorted(wavs + list(folder.glob("*.txt"))))
    deps: dict[str, str] = {"model": load_node(graph, model)}
    specs: list[dict[str, Any]] = []
    for name in v.specializations:
        sref = ws.targets[name]
        check_device(sref, sref.spec.device)
        s: SpecializationTable = sref.spec
        dims = spec_dims(model, sref)
        if dims["ctx_len"] < v.max_new_tokens + PROMPT_MAX:
            fail(sref, "ctx_len", f"ctx_len {dims['ctx_len']} cannot hold the prompt ({PROMPT_MAX}) plus "
                 f"max_new_tokens ({v.max_new_tokens}) of validation {ref.name!r}")
        specs.append({"name": name, "dtype": s.dtype, "device": s.device, **dims})
        for runtime in v.runtimes:
            opens = RUNTIMES.get(runtime).opens
            if opens == "transformed":
                for which in ("encoder", "decoder"):
                    deps[f"transformed/{name}/{which}"] = transform_node(graph, model, which, s.dtype, dims, s.device)
            elif opens != "reference":
                for which, nid in compile_nodes(graph, model, sref, opens).items():
                    deps[f"{opens}/{name}/{which}"] = nid
    return graph.add(StepNode(
        id=f"validate:{ref.name}", kind="validate",
        params={"task": "speech-seq2seq", "runtimes": v.runtimes, "specializations": specs,
                "max_new_tokens": v.max_new_tokens, "language": v.language,
                "checks": resolve_checks(v, specs, task="speech-seq2seq")},
        deps=deps, files=files, target=ref.name, out_subdir="", salt=_salt(ref)))
