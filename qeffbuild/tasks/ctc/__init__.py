"""The CTC family: speech recognition with a connectionist-temporal-classification head (Wav2Vec2ForCTC,
HubertForCTC, WavLMForCTC, Data2VecAudioForCTC …), as QEfficient ships wav2vec2 CTC.

Graph: load → transform (one fixed-shape program per audio length, ``audio_len_s``: raw 16 kHz samples in,
per-frame logits out) → export (ONNX) → compile per backend → validate (every runtime's per-frame argmax ids
against the unmodified model's on the same inputs, exact in float32; CTC collapse and the model's tokenizer give
the text, scored by WER against the data set's transcripts).

An utterance goes to the smallest audio length that holds it, padded with the feature extractor's padding (and
an attention mask where its feature extractor makes one); only its own frames are compared and decoded. A longer
one is read in overlapping chunks of the longest length, as transformers' ASR pipeline reads it (``driver.py``).

This module is torch-free: manifest fields, plan-time facts and expansion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from ...checks import resolve_checks
from ...core.plugins import NumericClass, Task
from ...core.steps import MODEL_TOOLCHAIN, StepNode
from ...core.tables import ModelBase, SpecializationBase
from ...pipeline.audio import SAMPLE_RATE
from ...pipeline.datasets import AudioValidation, DataError, select
from ...pipeline.nodes import (
    GraphFamily,
    check_backend,
    check_device,
    check_runtime,
    graph_compile_nodes,
    load_node,
    model_config,
    template_files,
)

if TYPE_CHECKING:
    from ...core.graph import Expansion
    from ...core.plugins import Plugins
    from ...core.workspace import TargetRef

TRANSFORM_VERSION = 2  # 2: the program holds only the weights its graph reads (torchutil.save_program)
VALIDATE_VERSION = 2  # 2: audio longer than the longest audio_len_s is chunked
HALF_WER_MARGIN = 0.02  # float16/bfloat16: WER within two points of float32's on the same data
REPORT_TEMPLATES = ("report/report.html.j2",)
TEXT_METRICS = ("wer", "cer", "wer_delta")


class CTCModel(ModelBase):
    task: Literal["ctc"] = Field(description="Speech recognition with a CTC head (Wav2Vec2ForCTC, HubertForCTC …).")


class CTCSpecialization(SpecializationBase):
    audio_len_s: list[float] = Field(description="CTC: the audio lengths (seconds) it compiles for; an utterance "
                                                 "uses the shortest that holds it.",
                                     json_schema_extra={"example": "audio_len_s = [5, 15]"})

    @field_validator("audio_len_s", mode="before")
    @classmethod
    def _one(cls, v: Any) -> Any:
        return [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("audio_len_s")
    @classmethod
    def _lengths(cls, v: list[float]) -> list[float]:
        if not v or any(not 0.1 <= s <= 600 for s in v):
            raise ValueError("every audio length must be between 0.1 and 600 seconds")
        if len({round(s * SAMPLE_RATE) for s in v}) != len(v):
            raise ValueError("audio lengths must be distinct")
        return sorted(v)


class CTCValidation(AudioValidation):
    chunk_stride_s: float | None = Field(None, gt=0, le=300, description="Audio longer than the longest audio_len_s "
                                         "is read in chunks of that length, as transformers' ASR pipeline reads it "
                                         "with chunk_length_s: seconds of each chunk's edges dropped (default: a "
                                         "sixth of the chunk, the pipeline's stride_length_s).")


def graph_name(seconds: float) -> str:
    return f"audio-{seconds:g}s"


CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)  # wav2vec2's feature encoder, where a config leaves them out
CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)


def frames(cfg: dict[str, Any], samples: int) -> int:
    """Output frames of the convolutional feature encoder for ``samples`` samples (its kernels and strides)."""
    length = samples
    for k, s in zip(cfg.get("conv_kernel") or CONV_KERNELS, cfg.get("conv_stride") or CONV_STRIDES, strict=False):
        length = (length - int(k)) // int(s) + 1
    return length


def samples_per_frame(cfg: dict[str, Any]) -> int:
    """Input samples per output frame: the product of the feature encoder's strides (inputs_to_logits_ratio)."""
    out = 1
    for s in cfg.get("conv_stride") or CONV_STRIDES:
        out *= int(s)
    return out


class CTCTask(GraphFamily, Task):
    name = "ctc"
    description = "speech recognition with a CTC head: per-frame argmax ids checked exactly, text by WER"
    model_table = CTCModel
    specialization_table = CTCSpecialization
    validation_table = CTCValidation
    metrics: ClassVar[tuple[str, ...]] = ("token_agreement", "wer", "cer", "wer_delta")
    evidence: ClassVar[tuple[str, ...]] = ("tokens", "text")
    libraries = ("soundfile", "soxr", "jiwer")
    run = "qeffbuild.tasks.ctc.transcriber:run"
    run_render = "qeffbuild.tasks.ctc.transcriber:render"
    report_html = "qeffbuild.tasks.ctc.report:render_html"
    transcriber = "qeffbuild.tasks.ctc.transcriber:CTCTranscriber"
    example = 'a CTC speech model, e.g. source = { random = "Wav2Vec2ForCTC", config = { … } }'

    def supports(self, architecture: str | None, model_type: str | None) -> bool:
        return (architecture or "").endswith("ForCTC")

    def supported(self) -> str:
        return "*ForCTC classes (Wav2Vec2ForCTC, HubertForCTC, WavLMForCTC, Data2VecAudioForCTC …)"

    def default_checks(self, numeric: NumericClass, dtype: str) -> dict[str, float]:
        if numeric == "reference":
            return {}
        if numeric == "accelerator" or dtype == "float32":
            return {"token_agreement": 1.0}
        return {"wer_delta": HALF_WER_MARGIN}

    # --- facts ----------------------------------------------------------------------------------------
    def dims(self, x: Expansion, model: TargetRef, spec_ref: TargetRef) -> dict[str, Any]:
        s: CTCSpecialization = spec_ref.spec
        cfg = model_config(x, model)
        graphs = {}
        for seconds in s.audio_len_s:
            samples = round(seconds * SAMPLE_RATE)
            if frames(cfg, samples) < 1:
                x.fail(spec_ref, "audio_len_s", f"{seconds:g} s is too short for the model's convolutions")
            graphs[graph_name(seconds)] = {"samples": samples, "seconds": seconds, "frames": frames(cfg, samples)}
        return {"batch_size": s.batch_size, "graphs": graphs}

    # --- graph ----------------------------------------------------------------------------------------
    def load(self, x: Expansion, model: TargetRef) -> str:
        return load_node(x, model, "AutoModelForCTC", "processor")

    @staticmethod
    def graphs(dims: dict[str, Any]) -> list[str]:
        return list(dims["graphs"])

    def transform_node(self, x: Expansion, model: TargetRef, spec_ref: TargetRef, graph: str, dims: dict[str, Any],
                       device: str) -> str:
        s: CTCSpecialization = spec_ref.spec
        params = {"samples": dims["graphs"][graph]["samples"], "batch_size": dims["batch_size"], "dtype": s.dtype,
                  "device": device}
        suffix = "" if device == s.device else f":{device}"
        return x.graph.add(StepNode(
            id=f"transform:{spec_ref.name}:{graph}{suffix}", kind="transform",
            runner="qeffbuild.tasks.ctc.transform:run", version=TRANSFORM_VERSION, toolchain=MODEL_TOOLCHAIN,
            params=params, deps={"model": self.load(x, model)}, target=spec_ref.name,
            out_subdir=f"transform-{graph}", salt=x.salt(model)))

    def compile_nodes(self, x: Expansion, model: TargetRef, spec_ref: TargetRef, backend: str) -> dict[str, str]:
        s: CTCSpecialization = spec_ref.spec
        check_backend(spec_ref, backend, s.device, x)
        dims = self.dims(x, model, spec_ref)

        def params(graph: str) -> dict[str, Any]:
            facts = dims["graphs"][graph]
            return {"graph": graph, "device": s.device, "dtype": s.dtype, "samples": facts["samples"],
                    "batch_size": dims["batch_size"], "graph_facts": self.graph_facts(graph, facts, dims)}

        return graph_compile_nodes(x, model, spec_ref, backend, dims["graphs"],
                                   lambda g, device: self.transform_node(x, model, spec_ref, g, dims, device), params)

    @staticmethod
    def graph_facts(graph: str, facts: dict[str, Any], dims: dict[str, Any]) -> dict[str, Any]:
        """One graph per audio length, named as its length; no retained state."""
        symbols = {"batch_size": dims["batch_size"], "seq_len": facts["samples"], "frames": facts["frames"]}
        return {"graphs": [{"name": "CTC_" + graph.replace("audio-", "").replace(".", "_"), "symbols": symbols}],
                "retained": {},
                "axes": {"input_values": ["batch_size", "seq_len"], "attention_mask": ["batch_size", "seq_len"],
                         "logits": ["batch_size", "frames", None]}}

    def validate_node(self, x: Expansion, model: TargetRef, ref: TargetRef) -> str:
        v: CTCValidation = ref.spec
        try:
            sel = select(v, ref.file.root)
        except DataError as e:
            x.fail(ref, e.key, str(e))
        if sel.kind != "hf" and len(sel.rows) < 2:
            x.fail(ref, "inputs", f"{v.inputs!r} gives {len(sel.rows)} utterance(s); a CTC validation needs at least "
                   "two")
        durations = {r["name"]: r["seconds"] for r in sel.rows}
        deps: dict[str, str] = {"model": self.load(x, model)}
        specs: list[dict[str, Any]] = []
        toolchain = {*MODEL_TOOLCHAIN, "numpy", "soundfile", "soxr", "jiwer", "matplotlib", "jinja2"}
        if sel.kind == "hf":
            toolchain.add("datasets")
        runtimes = {r: x.ws.plugins.runtimes.get(r) for r in v.runtimes}
        for name in v.specializations:
            sref = x.ws.targets[name]
            s: CTCSpecialization = sref.spec
            check_device(sref, s.device)
            dims = self.dims(x, model, sref)
            if durations:
                _check_lengths(x, ref, sref, dims, durations)
            _check_stride(x, ref, sref, dims)
            specs.append({"name": name, "dtype": s.dtype, "device": s.device, "batch_size": dims["batch_size"],
                          "graphs": {g: d["samples"] for g, d in dims["graphs"].items()}})
            for runtime in runtimes.values():
                if runtime.opens == "program":
                    for graph in dims["graphs"]:
                        deps[f"program/{name}/{graph}"] = self.transform_node(x, model, sref, graph, dims, s.device)
                elif runtime.opens != "reference":
                    check_runtime(x, sref, runtime.name, s.device)
                    toolchain.update(x.ws.plugins.backends.get(runtime.opens).toolchain)
                    for graph, nid in self.compile_nodes(x, model, sref, runtime.opens).items():
                        deps[f"{runtime.opens}/{name}/{graph}"] = nid
        checks = _text_checks(x, ref, resolve_checks(self, v, [s["dtype"] for s in specs], [s["name"] for s in specs]),
                              sel.has_text)
        return x.graph.add(StepNode(
            id=f"validate:{ref.name}", kind="validate", runner="qeffbuild.tasks.ctc.validate:run",
            exclusive=True, version=VALIDATE_VERSION, toolchain=tuple(sorted(toolchain)),
            params={"runtimes": {r: rt.opens for r, rt in runtimes.items()}, "specializations": specs,
                    "normalizer": v.normalizer or "simple", "checks": checks,
                    **({"chunk_stride_s": v.chunk_stride_s} if v.chunk_stride_s is not None else {}),
                    "inputs": {**sel.params, "rows": sel.rows, "source": v.inputs},
                    "random_weights": x.ws.random_weights(ref.name)},
            deps=deps, files=sel.files + template_files(ref, REPORT_TEMPLATES), target=ref.name, out_subdir="",
            salt=x.salt(ref), paths=sel.paths))


def _check_lengths(x: Expansion, ref: TargetRef, sref: TargetRef, dims: dict[str, Any],
                   durations: dict[str, float]) -> None:
    """Every audio length serves an input (an artifact nobody ran is not validated); inputs longer than the
    longest length are read in chunks of it."""
    graphs = sorted(dims["graphs"].items(), key=lambda kv: kv[1]["samples"])
    used = {next((g for g, d in graphs if d["seconds"] + 1e-9 >= seconds), graphs[-1][0])
            for seconds in durations.values()}
    unused = [g for g, _ in graphs if g not in used]
    if unused:
        x.fail(sref, "audio_len_s", f"{', '.join(unused)} would serve none of the inputs of validation {ref.name!r}, "
               "so it would be unvalidated; add inputs of those lengths or drop that audio length")


def _check_stride(x: Expansion, ref: TargetRef, sref: TargetRef, dims: dict[str, Any]) -> None:
    """Chunks must keep frames between their two strides."""
    stride = ref.spec.chunk_stride_s
    longest = max(d["seconds"] for d in dims["graphs"].values())
    if stride is not None and 2 * stride >= longest:
        x.fail(ref, "chunk_stride_s", f"a stride of {stride:g} s on each side leaves nothing of the {longest:g} s "
               f"chunks of {sref.name!r} (its longest audio_len_s); set chunk_stride_s below {longest / 2:g}")


def _text_checks(x: Expansion, ref: TargetRef, checks: dict[str, Any], has_text: bool | None) -> dict[str, Any]:
    """WER, CER and ΔWER need transcripts: a bound on them without any is an error; defaults on them are dropped."""
    if has_text is not False:
        return checks
    for runtime, bounds in ref.spec.checks.items():
        for metric in TEXT_METRICS:
            if metric in bounds:
                x.fail(ref, f"checks.{runtime}.{metric}", f"{metric} needs transcripts, and the inputs of {ref.name!r} "
                       "have none; add them (a .txt beside each file, or a text column) or drop the bound")
    return {r: {s: {m: b for m, b in bounds.items() if m not in TEXT_METRICS} for s, bounds in per_spec.items()}
            for r, per_spec in checks.items()}


def register(plugins: Plugins) -> None:
    plugins.tasks.add(CTCTask.name, CTCTask())
