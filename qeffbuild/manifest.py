"""The manifest format: frozen pydantic models of everything a TOML manifest says."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

Dtype = Literal["float32", "float16", "bfloat16"]
Task = Literal["embedding", "speech-seq2seq"]
Pooling = Literal["mean", "cls", "max", "avg", "none"]
Device = Literal["cpu", "cuda"]


class Table(BaseModel):
    """Base of every manifest table: immutable, and unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ProjectTable(Table):
    name: str = Field(description="Project name, shown in reports.")
    description: str = ""
    salt: str = Field("", description="Mixed into every step key; change it to force a full rebuild.")
    default: list[str] | None = Field(
        None, description="Targets built by `qeffbuild build` with no target (default: all)."
    )


class PathSource(Table):
    path: str = Field(description="A local Hugging Face directory, relative to this manifest.")


class HubSource(Table):
    hf: str = Field(description="Hub id, resolved offline from the Hugging Face cache.")
    revision: str = "main"


class PackageSource(Table):
    package: str = Field(description="An installed Python package that ships a model directory.")
    subdir: str = "model"


class RandomSource(Table):
    random: str = Field(description="A transformers architecture class, e.g. BertModel.")
    config: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    tokenizer: PathSource | PackageSource | None = Field(
        None, description="Where the tokenizer or feature extractor comes from."
    )


def _source_kind(value: Any) -> str | None:
    """The source kind is the one of path/hf/package/random that the table names."""
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if not isinstance(value, dict):
        return None
    kinds = [k for k in SOURCE_KINDS if k in value]
    return kinds[0] if len(kinds) == 1 else None


Source = Annotated[
    Annotated[PathSource, Tag("path")]
    | Annotated[HubSource, Tag("hf")]
    | Annotated[PackageSource, Tag("package")]
    | Annotated[RandomSource, Tag("random")],
    Discriminator(
        _source_kind,
        custom_error_type="source_kind",
        custom_error_message="expected a table with exactly one of the keys path, hf, package, random",
    ),
]
SOURCE_KINDS: dict[str, type[Table]] = {
    "path": PathSource,
    "hf": HubSource,
    "package": PackageSource,
    "random": RandomSource,
}


class ModelTable(Table):
    source: Source
    task: Task
    pooling: Pooling = Field("mean", description="Embedding pooling head; 'none' keeps last_hidden_state.")
    normalize: bool = Field(False, description="L2-normalise pooled embeddings.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Config overrides.")
    trust_remote_code: bool = False


class SpecializationTable(Table):
    model: str
    batch_size: int = Field(1, ge=1)
    seq_len: list[int] = Field(default_factory=list, description="Embedding: one compiled graph per entry.")
    ctx_len: int | None = Field(None, ge=1, description="Decoder KV-cache length (speech-seq2seq).")
    encoder_ctx_len: int | None = Field(None, ge=1, description="Encoder positions (speech-seq2seq).")
    dtype: Dtype = "float32"
    compile: list[str] = Field(default_factory=lambda: ["ort", "aoti"], description="Compile backends.")
    device: Device = "cpu"
    opset: int = Field(18, ge=11)

    @field_validator("seq_len", mode="before")
    @classmethod
    def _one_seq_len(cls, v: Any) -> Any:
        return [v] if isinstance(v, int) else v

    @field_validator("seq_len")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(n < 1 for n in v):
            raise ValueError("every seq_len must be ≥ 1")
        if len(set(v)) != len(v):
            raise ValueError("seq_len values must be distinct")
        return sorted(v)


class Thresholds(Table):
    mad: float | None = Field(None, ge=0, description="Maximum mean absolute difference.")
    max_abs: float | None = Field(None, ge=0, description="Maximum absolute difference.")
    cosine: float | None = Field(None, le=1, description="Minimum cosine similarity.")
    token_agreement: float | None = Field(
        None, ge=0, le=1, description="Minimum fraction of tokens equal to the reference."
    )
    wer: float | None = Field(None, ge=0, description="Maximum word error rate against transcripts.")


class ValidationTable(Table):
    model: str
    specializations: list[str] = Field(min_length=1)
    runtimes: list[str] = Field(min_length=1)
    inputs: str = Field(description="Sentences file (embedding) or a folder of WAVs (speech).")
    checks: dict[str, Thresholds] = Field(default_factory=dict)
    max_new_tokens: int = Field(
        24, ge=1, description="Speech: greedy decode steps compared per utterance (≥ 20, EOS does not stop them)."
    )
    language: str | None = Field("en", description="Speech: language token of the decoder prompt (None: omit).")


class StepTable(Table):
    cmd: list[str] = Field(min_length=1, description="argv; {out}, {root} and {dep:NAME} are expanded.")
    inputs: list[str] = Field(default_factory=list, description="Files read, relative to this manifest.")
    outputs: list[str] = Field(min_length=1, description="Files the command writes under {out}.")
    env: dict[str, str] = Field(default_factory=dict)
    deps: list[str] = Field(default_factory=list, description="Targets whose outputs this step reads.")


class Manifest(Table):
    """One manifest file."""

    project: ProjectTable
    models: dict[str, ModelTable] = Field(default_factory=dict)
    specializations: dict[str, SpecializationTable] = Field(default_factory=dict)
    validations: dict[str, ValidationTable] = Field(default_factory=dict)
    steps: dict[str, StepTable] = Field(default_factory=dict)


TABLES = ("models", "specializations", "validations", "steps")
