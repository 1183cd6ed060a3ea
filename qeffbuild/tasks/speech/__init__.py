"""The speech seq2seq family: audio encoder + text decoder with the KV-cache retained-state rewrite.

Graph: load → {encoder, decoder-step} transform → export (ONNX) → compile per backend →
validate (greedy decoding on every runtime, token for token against the unmodified
model). This module is torch-free: manifest fields, plan-time checks, expansion. Step ids
name roles (``transform:<spec>:decoder``); their keys carry the shapes, so ``explain``
compares a changed ``ctx_len`` with the step's last build.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from ...checks import resolve_checks
from ...core.plugins import Task
from ...core.steps import MODEL_TOOLCHAIN, FileInput, StepNode
from ...core.tables import ModelBase, SpecializationBase, ValidationBase
from ...pipeline.nodes import check_backend, check_device, compile_node, config_int, export_node, load_node

if TYPE_CHECKING:
    from ...core.graph import Expansion
    from ...core.loader import TargetRef
    from ...core.plugins import Plugins

TRANSFORM_VERSION = 2
VALIDATE_VERSION = 2
PROMPT_MAX = 4  # <|startoftranscript|> <|lang|> <|task|> <|notimestamps|>
MIN_DECODE_STEPS = 20  # a cache wrong after step 1 must not pass: check many steps
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".opus", ".w64")


class SpeechModel(ModelBase):
    task: Literal["speech-seq2seq"] = Field(description="Speech recognition with an encoder-decoder model.")


class SpeechSpecialization(SpecializationBase):
    ctx_len: int | None = Field(None, ge=1, le=65536, description="Decoder KV-cache length (retained state).")
    encoder_ctx_len: int | None = Field(None, ge=1, le=65536, description="Encoder positions.")


class SpeechValidation(ValidationBase):
    inputs: str = Field(description="A folder of audio files (any format soundfile reads) with optional .txt "
                                    "transcripts beside them.")
    max_new_tokens: int = Field(24, ge=1, le=4096,
                                description="Greedy decode steps compared per utterance (≥ 20; EOS does not "
                                            "stop them).")
    language: str | None = Field("en", description="Language token of the decoder prompt (None: omit).")


def audio_files(folder: Any) -> list[Any]:
    """The audio files of a folder (by suffix, any case), sorted by name."""
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES),
                  key=lambda p: p.name)


class SpeechTask(Task):
    name = "speech-seq2seq"
    description = "speech recognition: encoder + retained-state decoder step, checked token for token"
    model_table = SpeechModel
    specialization_table = SpeechSpecialization
    validation_table = SpeechValidation
    metrics: ClassVar[tuple[str, ...]] = ("token_agreement", "wer", "cer")
    bench = "qeffbuild.tasks.speech.bench:bench"
    run = "qeffbuild.tasks.speech.transcriber:run"

    def supports(self, architecture: str | None, model_type: str | None) -> bool:
        return model_type == "whisper" or (architecture or "").startswith("Whisper")

    def supported(self) -> str:
        return "WhisperForConditionalGeneration (model_type whisper)"

    def default_checks(self, runtime: str, dtype: str) -> dict[str, float]:
        # Generation: float32 tokens must equal the reference's; half precision reports its agreement.
        return {} if runtime == "pytorch" else {"token_agreement": 1.0 if dtype == "float32" else 0.0}

    def check(self, checker: Any, ref: TargetRef) -> None:
        if ref.table == "validations":
            checker.path(ref, "inputs", ref.spec.inputs, folder=True)

    def expand(self, x: Expansion, ref: TargetRef) -> list[str]:
        model = x.ws.model_of(ref)
        if ref.table == "models":
            return [self.load(x, model)]
        if ref.table == "specializations":
            # A self-contained folder: the HF model (processor, configs), both programs, every artifact.
            dims = self.dims(x, model, ref)
            ids = [self.load(x, model)]
            ids += [self.transform_node(x, model, ref, which, dims, ref.spec.device)
                    for which in ("encoder", "decoder")]
            return ids + [nid for b in ref.spec.compile for nid in self.compile_nodes(x, model, ref, b).values()]
        return [self.validate_node(x, model, ref)]

    @staticmethod
    def load(x: Expansion, model: TargetRef) -> str:
        return load_node(x, model, "AutoModelForSpeechSeq2Seq", "processor",
                         "qeffbuild.tasks.speech.prompt:random_generation_config")

    def dims(self, x: Expansion, model: TargetRef, spec_ref: TargetRef) -> dict[str, int]:
        """batch, encoder_ctx_len and ctx_len of a specialization, checked against the model."""
        s: SpeechSpecialization = spec_ref.spec
        max_src = config_int(x, model, ("max_source_positions",), 1500) or 1500
        max_tgt = config_int(x, model, ("max_target_positions",), 448) or 448
        enc = s.encoder_ctx_len or max_src
        if enc != max_src:
            x.fail(spec_ref, "encoder_ctx_len", f"encoder_ctx_len must equal the model's max_source_positions "
                   f"({max_src}): the unmodified reference encoder accepts only that length")
        ctx = s.ctx_len or max_tgt
        if ctx > max_tgt:
            x.fail(spec_ref, "ctx_len", f"ctx_len {ctx} exceeds the model's max_target_positions ({max_tgt})")
        return {"batch_size": s.batch_size, "encoder_ctx_len": enc, "ctx_len": ctx}

    def transform_node(self, x: Expansion, model: TargetRef, spec_ref: TargetRef, which: str,
                       dims: dict[str, int], device: str) -> str:
        s: SpeechSpecialization = spec_ref.spec
        params: dict[str, Any] = {"graph": which, "dtype": s.dtype, "batch_size": dims["batch_size"],
                                  "encoder_ctx_len": dims["encoder_ctx_len"], "device": device}
        if which == "decoder":  # only the decoder depends on ctx_len: changing it leaves the encoder cached
            params["ctx_len"] = dims["ctx_len"]
        suffix = "" if device == s.device else f":{device}"
        return x.graph.add(StepNode(
            id=f"transform:{spec_ref.name}:{which}{suffix}", kind="transform",
            runner="qeffbuild.tasks.speech.transform:run", version=TRANSFORM_VERSION, toolchain=MODEL_TOOLCHAIN,
            params=params, deps={"model": self.load(x, model)}, target=spec_ref.name,
            out_subdir=f"transform-{which}", salt=x.salt(model)))

    def compile_nodes(self, x: Expansion, model: TargetRef, spec_ref: TargetRef, backend: str) -> dict[str, str]:
        s: SpeechSpecialization = spec_ref.spec
        check_backend(spec_ref, backend, s.device, x)
        dims = self.dims(x, model, spec_ref)
        onnx = x.ws.plugins.backends.get(backend).consumes == "onnx"
        ids = {}
        for which in ("encoder", "decoder"):
            # ONNX is exported from the CPU program; AOTInductor compiles the program of its device.
            program = self.transform_node(x, model, spec_ref, which, dims, "cpu" if onnx else s.device)
            upstream = export_node(x, model, program, s.opset, f"export:{spec_ref.name}:{which}:opset{s.opset}",
                                   f"onnx-{which}") if onnx else program
            shape = {k: v for k, v in dims.items() if which == "decoder" or k != "ctx_len"}
            ids[which] = compile_node(x, spec_ref, backend, upstream,
                                      {"graph": which, "device": s.device, "dtype": s.dtype, **shape},
                                      f"compile:{backend}:{spec_ref.name}:{which}", f"{backend}/{which}")
        return ids

    def validate_node(self, x: Expansion, model: TargetRef, ref: TargetRef) -> str:
        v: SpeechValidation = ref.spec
        if v.max_new_tokens < MIN_DECODE_STEPS:
            x.fail(ref, "max_new_tokens", f"speech validations compare at least {MIN_DECODE_STEPS} decode steps "
                   f"(a cache that is wrong after the first step must not pass); got {v.max_new_tokens}")
        folder = ref.file.root / v.inputs
        audio = audio_files(folder)
        if len(audio) < 2:
            x.fail(ref, "inputs", f"{v.inputs!r} holds {len(audio)} audio file(s); a speech validation needs at "
                   "least two utterances (any format soundfile reads, optional .txt transcript beside each)")
        transcripts = [p.with_suffix(".txt") for p in audio if p.with_suffix(".txt").is_file()]
        files = tuple(FileInput(f"{v.inputs}/{p.name}", p) for p in sorted(audio + transcripts))
        deps: dict[str, str] = {"model": self.load(x, model)}
        specs: list[dict[str, Any]] = []
        toolchain = {*MODEL_TOOLCHAIN, "numpy", "soundfile", "soxr", "jiwer"}
        runtimes = {r: x.ws.plugins.runtimes.get(r) for r in v.runtimes}
        for name in v.specializations:
            sref = x.ws.targets[name]
            s: SpeechSpecialization = sref.spec
            check_device(sref, s.device)
            dims = self.dims(x, model, sref)
            if dims["ctx_len"] < v.max_new_tokens + PROMPT_MAX:
                x.fail(sref, "ctx_len", f"ctx_len {dims['ctx_len']} cannot hold the prompt ({PROMPT_MAX}) plus "
                       f"max_new_tokens ({v.max_new_tokens}) of validation {ref.name!r}")
            specs.append({"name": name, "dtype": s.dtype, "device": s.device, **dims})
            for runtime in runtimes.values():
                if runtime.opens == "program":
                    for which in ("encoder", "decoder"):
                        deps[f"program/{name}/{which}"] = self.transform_node(x, model, sref, which, dims, s.device)
                elif runtime.opens != "reference":
                    toolchain.update(x.ws.plugins.backends.get(runtime.opens).toolchain)
                    for which, nid in self.compile_nodes(x, model, sref, runtime.opens).items():
                        deps[f"{runtime.opens}/{name}/{which}"] = nid
        return x.graph.add(StepNode(
            id=f"validate:{ref.name}", kind="validate", runner="qeffbuild.tasks.speech.validate:run",
            version=VALIDATE_VERSION, toolchain=tuple(sorted(toolchain)),
            params={"runtimes": {r: rt.opens for r, rt in runtimes.items()}, "specializations": specs,
                    "max_new_tokens": v.max_new_tokens, "language": v.language,
                    "checks": resolve_checks(self, v, [s["dtype"] for s in specs], [s["name"] for s in specs])},
            deps=deps, files=files, target=ref.name, out_subdir="", salt=x.salt(ref)))


def register(plugins: Plugins) -> None:
    plugins.tasks.add(SpeechTask.name, SpeechTask())
