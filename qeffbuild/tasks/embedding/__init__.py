"""The embedding family: text encoders and decoders with a pooling head (BERT, MiniLM, RoBERTa, GPT-2 …).

Graph: load → transform (pooling, one dynamic-shape torch.export program) → export (ONNX)
→ compile (one artifact per backend and seq_len) → validate. This module is torch-free:
its manifest fields, plan-time checks and expansion; ``transform``, ``validate``,
``bench`` and ``run`` are the worker-side modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from ...checks import resolve_checks
from ...core.plugins import NumericClass, Runtime, Task
from ...core.steps import MODEL_TOOLCHAIN, FileInput, StepNode
from ...core.tables import ModelBase, SpecializationBase, ValidationBase, graph_dtype
from ...pipeline.nodes import (
    check_backend,
    check_device,
    check_runtime,
    compile_node,
    config_int,
    export_node,
    load_node,
    template_files,
    with_bases,
)

if TYPE_CHECKING:
    from ...core.graph import Expansion
    from ...core.plugins import Plugins
    from ...core.workspace import TargetRef

Pooling = Literal["mean", "cls", "max", "avg", "last", "none"]
TRANSFORM_VERSION = 2  # 2: the program holds only the weights its graph reads (torchutil.save_program)
VALIDATE_VERSION = 3
REPORT_TEMPLATES = ("report/report.html.j2",)
# Config names of a model's position limit, in the order transformers' configs use them.
POSITION_LIMITS = ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length")
# Families whose position ids start after the padding index (RoBERTa: 514 positions serve 512 tokens).
PADDING_OFFSET_TYPES = ("roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "data2vec-text", "ibert")
NOT_TEXT = ("Whisper", "Speech2Text", "SpeechEncoderDecoder", "Wav2Vec2", "Hubert", "Vit", "ViT", "Clip", "CLIP")
NOT_TEXT_TYPES = ("whisper", "speech_to_text", "speech-encoder-decoder", "wav2vec2", "hubert", "vit",
                  "clip_vision_model")


class EmbeddingModel(ModelBase):
    task: Literal["embedding"] = Field(description="Text embeddings with a pooling head.")
    pooling: Pooling = Field("mean", description="mean | cls | max | avg | last (last non-pad token) | none.")
    normalize: bool = Field(False, description="L2-normalise pooled embeddings.")


class EmbeddingSpecialization(SpecializationBase):
    seq_len: list[int] = Field(description="Embedding: one compiled graph per entry; inputs use the smallest that "
                                           "fits.", json_schema_extra={"example": "seq_len = [32, 128]"})

    @field_validator("seq_len", mode="before")
    @classmethod
    def _one_seq_len(cls, v: Any) -> Any:
        return [v] if isinstance(v, int) else v

    @field_validator("seq_len")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("seq_len needs at least one length, e.g. seq_len = [32, 128]")
        if any(n < 1 or n > 1 << 20 for n in v):
            raise ValueError("every seq_len must be ≥ 1 (and at most 1048576)")
        if len(set(v)) != len(v):
            raise ValueError("seq_len values must be distinct")
        return sorted(v)


class EmbeddingValidation(ValidationBase):
    inputs: str = Field(description="A text file of sentences, one a line ('#' starts a comment).")


# Default bounds: float32 at least as strict as QEfficient's tests (ONNX Runtime MAD ≤ 1e-5); the
# transformed program must match to float rounding. Half precision is compared with the float32
# reference, so its bounds are wider.
_SAME_PROGRAM = {"mad": 1e-6, "max_abs": 1e-5, "cosine": 0.999999}
_FLOAT32 = {"mad": 1e-5, "cosine": 0.99999}
_ACCELERATOR = {"mad": 1e-2}  # QEfficient's tolerance for embeddings on Cloud AI 100
_INT8 = {"cosine": 0.99}  # int8 weights: every embedding within cosine 0.99 of float32's (MAD reported)
_HALF = {"float16": {"mad": 2e-3, "cosine": 0.999}, "bfloat16": {"mad": 2e-2, "cosine": 0.99}}


class EmbeddingTask(Task):
    name = "embedding"
    description = "text embeddings: encoder or decoder + pooling head, checked by MAD, max-abs and cosine"
    model_table = EmbeddingModel
    specialization_table = EmbeddingSpecialization
    validation_table = EmbeddingValidation
    metrics: ClassVar[tuple[str, ...]] = ("mad", "max_abs", "cosine")
    evidence: ClassVar[tuple[str, ...]] = ("tensor",)
    libraries = ("sentence-transformers",)
    bench = "qeffbuild.tasks.embedding.bench:bench"
    run = "qeffbuild.tasks.embedding.run:run"
    run_render = "qeffbuild.tasks.embedding.formats:render"
    report_html = "qeffbuild.tasks.embedding.report:render_html"
    # int8 on ONNX Runtime: every linear layer int8, each token's activations scaled on their own. On the real
    # all-MiniLM-L6-v2 (8 × 64) that is both the more exact (min cosine 0.9924 against 0.9906) and the faster
    # (18.5 against 21.8 ms) than the backend's default (per-tensor scales, float32 down-projections), and
    # ahead of sentence-transformers' own int8 export (docs/design-notes.md). Speech keeps per-tensor scales:
    # per token its encoder was 24 % slower.
    option_defaults: ClassVar[dict[tuple[str, str], dict[str, Any]]] = {
        ("ort", "int8"): {"int8_float_layers": "none", "int8_activations": "per-token"}}

    def supports(self, architecture: str | None, model_type: str | None) -> bool:
        if model_type in NOT_TEXT_TYPES:
            return False
        return architecture is None or not architecture.startswith(NOT_TEXT)

    def supported(self) -> str:
        return "text models that AutoModel loads (BERT, MiniLM, RoBERTa, GPT-2 …)"

    def check(self, checker: Any, ref: TargetRef) -> None:
        if ref.table == "validations":
            checker.path(ref, "inputs", ref.spec.inputs, folder=False)

    def default_checks(self, numeric: NumericClass, dtype: str) -> dict[str, float]:
        if numeric == "reference":
            return {}
        if numeric == "accelerator":
            return dict(_ACCELERATOR)
        if numeric == "library":  # another library runs the model in float32 whatever the dtype
            return dict(_FLOAT32)
        if dtype == "int8":
            return dict(_INT8)
        if dtype in _HALF:
            return dict(_HALF[dtype])
        return dict(_SAME_PROGRAM if numeric == "same-program" else _FLOAT32)

    def expand(self, x: Expansion, ref: TargetRef) -> list[str]:
        model = x.ws.model_of(ref)
        if ref.table == "models":
            return [self.load(x, model)]
        if ref.table == "specializations":
            # A self-contained folder: the HF model (tokenizer, config), the program, every artifact.
            s: EmbeddingSpecialization = ref.spec
            ids = [self.load(x, model), self.transform_node(x, model, s.dtype, s.device)]
            return ids + with_bases(x, [nid for backend in s.compile
                                        for nid in self.compile_nodes(x, model, ref, backend).values()])
        return [self.validate_node(x, model, ref)]

    @staticmethod
    def load(x: Expansion, model: TargetRef) -> str:
        return load_node(x, model, "AutoModel", "tokenizer")

    def max_seq_len(self, x: Expansion, model: TargetRef) -> int:
        limit = config_int(x, model, POSITION_LIMITS, 512)
        assert limit is not None
        if x.ws.source(model).model_type in PADDING_OFFSET_TYPES:
            pad = config_int(x, model, ("pad_token_id",), 1) or 1
            limit -= pad + 1
        return limit

    def transform_node(self, x: Expansion, model: TargetRef, dtype: str, device: str = "cpu") -> str:
        """The pooled model as a torch.export program, exported on the device it will run on
        (a program's device placement is baked into its graph)."""
        m: EmbeddingModel = model.spec
        return x.graph.add(StepNode(
            id=f"transform:{model.name}:{dtype}" + ("" if device == "cpu" else f":{device}"),
            kind="transform", runner="qeffbuild.tasks.embedding.transform:run", version=TRANSFORM_VERSION,
            toolchain=MODEL_TOOLCHAIN,
            params={"pooling": m.pooling, "normalize": m.normalize, "dtype": dtype,
                    "max_seq_len": self.max_seq_len(x, model), "device": device},
            deps={"model": self.load(x, model)}, target=model.name, out_subdir=f"transform-{dtype}", salt=x.salt(model),
        ))

    def compile_nodes(self, x: Expansion, model: TargetRef, spec_ref: TargetRef, backend: str) -> dict[int, str]:
        """``{seq_len: compile node}``: one artifact per length, or one for all (a QPC holds every length)."""
        s: EmbeddingSpecialization = spec_ref.spec
        check_backend(spec_ref, backend, s.device, x)
        limit = self.max_seq_len(x, model)
        for n in s.seq_len:
            if n > limit:
                x.fail(spec_ref, "seq_len",
                       f"seq_len {n} exceeds the model's position limit ({limit}, from its config)")
        b = x.ws.plugins.backends.get(backend)
        exported = graph_dtype(s.dtype)
        if b.consumes == "onnx":
            upstream = export_node(x, model, self.transform_node(x, model, exported, "cpu"), s.opset,
                                   f"export:{model.name}:{exported}:opset{s.opset}", f"onnx-{exported}")
        else:
            upstream = self.transform_node(x, model, exported, s.device)
        common = {"batch_size": s.batch_size, "device": s.device, "dtype": s.dtype,
                  "graph_facts": self.graph_facts(s)}
        if b.all_shapes_in_one:
            nid = compile_node(x, spec_ref, backend, upstream, {**common, "seq_len": s.seq_len}, "")
            return dict.fromkeys(s.seq_len, nid)
        return {n: compile_node(x, spec_ref, backend, upstream,
                                {**common, "seq_len": n,
                                 "shapes": {"input_ids": [s.batch_size, n], "attention_mask": [s.batch_size, n]}},
                                f"seq{n}")
                for n in s.seq_len}

    @staticmethod
    def graph_facts(s: EmbeddingSpecialization) -> dict[str, Any]:
        """Graph names and symbols as QEfficient's QEFFAutoModel names them (one graph per seq_len)."""
        many = len(s.seq_len) > 1
        return {"graphs": [{"name": f"Embedding_{i}" if many else "Embedding",
                            "symbols": {"batch_size": s.batch_size, "seq_len": n}} for i, n in enumerate(s.seq_len)],
                "axes": {"input_ids": ["batch_size", "seq_len"], "attention_mask": ["batch_size", "seq_len"]},
                "retained": {}}

    def validate_node(self, x: Expansion, model: TargetRef, ref: TargetRef) -> str:
        v: EmbeddingValidation = ref.spec
        m: EmbeddingModel = model.spec
        deps: dict[str, str] = {"model": self.load(x, model)}
        specs: list[dict[str, Any]] = []
        toolchain = {*MODEL_TOOLCHAIN, "numpy"}
        runtimes = {r: x.ws.plugins.runtimes.get(r) for r in v.runtimes}
        for name in v.specializations:
            sref = x.ws.targets[name]
            s: EmbeddingSpecialization = sref.spec
            check_device(sref, s.device)
            specs.append({"name": name, "batch_size": s.batch_size, "seq_len": s.seq_len, "dtype": s.dtype,
                          "device": s.device})
            for runtime in runtimes.values():
                if runtime.opens == "program":
                    deps[f"program/{s.dtype}/{s.device}"] = self.transform_node(x, model, s.dtype, s.device)
                elif runtime.opens != "reference":
                    check_runtime(x, sref, runtime.name, s.device)
                    toolchain.update(x.ws.plugins.backends.get(runtime.opens).toolchain)
                    for n, nid in self.compile_nodes(x, model, sref, runtime.opens).items():
                        deps[f"{runtime.opens}/{name}/seq{n}"] = nid
        if "sentence-transformers" in v.runtimes:
            toolchain.add("sentence-transformers")
        return x.graph.add(StepNode(
            id=f"validate:{ref.name}", kind="validate", runner="qeffbuild.tasks.embedding.validate:run",
            exclusive=True, version=VALIDATE_VERSION, toolchain=tuple(sorted(toolchain)),
            params={"runtimes": {r: rt.opens for r, rt in runtimes.items()}, "specializations": specs,
                    "pooling": m.pooling, "normalize": m.normalize,
                    "random_weights": x.ws.random_weights(ref.name),
                    "checks": resolve_checks(self, v, [s["dtype"] for s in specs], [s["name"] for s in specs])},
            deps=deps, files=(FileInput(v.inputs, ref.file.root / v.inputs), *template_files(ref, REPORT_TEMPLATES)),
            target=ref.name, out_subdir="",
            salt=x.salt(ref),
        ))


def register(plugins: Plugins) -> None:
    plugins.tasks.add(EmbeddingTask.name, EmbeddingTask())
    plugins.runtimes.add("sentence-transformers", Runtime(
        "sentence-transformers", "sentence_transformers.SentenceTransformer.encode (models that ship its config)",
        "reference", tasks=("embedding",), numeric="library",
        runner="qeffbuild.tasks.embedding.validate:sentence_transformers_encode"))
