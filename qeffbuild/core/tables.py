"""The manifest tables every family shares: frozen pydantic models of what a TOML manifest says.

A family (``tasks/<family>``) subclasses :class:`ModelBase`, :class:`SpecializationBase`
and :class:`ValidationBase` with its own fields; backends add option sub-tables to
specializations (``core/schema.py`` assembles the classes). Every table forbids unknown
keys, refuses NaN and infinities, and is immutable once loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

# int8: dynamic int8 of the linear layers — weights stored int8, activations quantized at run time — applied to the
# float32 export by the compile backend (a cached ONNX pass for `ort`); a backend that cannot says so at plan time.
Dtype = Literal["float32", "float16", "bfloat16", "int8"]
Device = Literal["cpu", "cuda"]
MAX_CONFIG_DEPTH = 16  # config and override values nest at most this deep


def graph_dtype(dtype: str) -> str:
    """The precision a specialization's graph is exported in: int8 quantizes the float32 export, so it
    shares that export (and its cache entry) with float32 specializations of the same model."""
    return "float32" if dtype == "int8" else dtype


class Table(BaseModel):
    """Base of every manifest table: immutable, unknown keys and non-finite floats are errors.

    ``defer_build`` keeps importing a family cheap: a table's validator is built the first
    time a manifest uses it, so a no-op build of command steps never builds model tables.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, defer_build=True)


def check_config_tree(value: Any, depth: int = 0) -> Any:
    """A config or overrides value: finite numbers, string keys, bounded nesting."""
    if depth > MAX_CONFIG_DEPTH:
        raise ValueError(f"nests deeper than {MAX_CONFIG_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number; use a finite value")
    if isinstance(value, dict):
        for v in value.values():
            check_config_tree(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            check_config_tree(v, depth + 1)
    return value


class ProjectTable(Table):
    name: str = Field(description="Project name, shown in reports.", min_length=1, max_length=200)
    description: str = ""
    salt: str = Field("", description="Mixed into every step key; change it to force a full rebuild.")
    default: list[str] | None = Field(
        None, description="Targets built by `qeffbuild build` with no target (default: all)."
    )
    trusted_keys: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}:[A-Za-z0-9+/]{43}=$")]] = Field(
        default_factory=list, description="Public keys (name:base64, from `qeffbuild cache keygen`) whose signed "
                                          "entries a remote cache may serve; QEFFBUILD_TRUSTED_KEYS adds more.")


class PathSource(Table):
    path: str = Field(description="A local Hugging Face directory, relative to this manifest.")


class HubSource(Table):
    hf: str = Field(description="Hub id, resolved offline from the Hugging Face cache (never downloaded).")
    revision: str = "main"


class PackageSource(Table):
    package: str = Field(description="An installed Python package that ships a model directory.")
    subdir: str = Field("model", description="The model's folder inside the package (a relative path in it).")

    @field_validator("subdir")
    @classmethod
    def _inside(cls, v: str) -> str:
        from pathlib import PurePosixPath

        if not v or PurePosixPath(v).is_absolute() or ".." in PurePosixPath(v).parts or "\\" in v or "\0" in v:
            raise ValueError("subdir must be a folder inside the package (a relative path without '..')")
        return v


class RandomSource(Table):
    random: str = Field(description="A transformers architecture class, e.g. BertModel.")
    config: dict[str, Any] = Field(default_factory=dict, description="Config keyword arguments.")
    seed: int = Field(0, ge=0, lt=2**63)
    tokenizer: PathSource | PackageSource | None = Field(
        None, description="Where the tokenizer or feature extractor comes from."
    )

    @field_validator("config")
    @classmethod
    def _finite(cls, v: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = check_config_tree(v)
        return result


BASIC_SOURCES: dict[str, type[Table]] = {
    "path": PathSource,
    "hf": HubSource,
    "package": PackageSource,
    "random": RandomSource,
}


def _source_kind(value: Any) -> str | None:
    """The source kind is the one of path/hf/package/random that the table names (or encoder + decoder)."""
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if not isinstance(value, dict):
        return None
    kinds = [k for k in BASIC_SOURCES if k in value]
    if not kinds and "encoder" in value and "decoder" in value:
        return "composed"
    return kinds[0] if len(kinds) == 1 else None


_BASIC = (Annotated[PathSource, Tag("path")] | Annotated[HubSource, Tag("hf")]
          | Annotated[PackageSource, Tag("package")] | Annotated[RandomSource, Tag("random")])
_KIND_ERROR = "expected a table with exactly one of the keys path, hf, package, random"
BasicSource = Annotated[_BASIC, Discriminator(_source_kind, custom_error_type="source_kind",
                                              custom_error_message=_KIND_ERROR)]


class ComposedSource(Table):
    """An encoder and a decoder from two sources, joined as ``from_encoder_decoder_pretrained`` does."""

    encoder: BasicSource = Field(description="The encoder: any source (path, hf, package, random).")
    decoder: BasicSource = Field(description="The decoder (given cross-attention): any source.")


SOURCE_KINDS: dict[str, type[Table]] = {**BASIC_SOURCES, "composed": ComposedSource}


def random_weights(source: Any) -> bool:
    """Whether a model built from ``source`` has random weights (any side of a composed one): its
    outputs are noise, so a validation proves only that the runtimes agree with the reference."""
    if isinstance(source, ComposedSource):
        return random_weights(source.encoder) or random_weights(source.decoder)
    return isinstance(source, RandomSource)

Source = Annotated[
    _BASIC | Annotated[ComposedSource, Tag("composed")],
    Discriminator(
        _source_kind,
        custom_error_type="source_kind",
        custom_error_message=_KIND_ERROR + " (or encoder and decoder, each a source)",
    ),
]


class ModelBase(Table):
    """[models.NAME]: what every family's model table holds; families add their own fields."""

    source: Source
    task: str = Field(description="The model family that builds it: embedding | speech-seq2seq | …")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Config overrides (part of the key).")
    trust_remote_code: bool = Field(
        False, description="Run Python code shipped inside the model folder (off by default: a model is data)."
    )

    @field_validator("overrides")
    @classmethod
    def _finite(cls, v: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = check_config_tree(v)
        return result


class SpecializationBase(Table):
    """[specializations.NAME]: fixed shapes and precision to compile one model for."""

    model: str
    batch_size: int = Field(1, ge=1, le=65536)
    dtype: Dtype = "float32"
    compile: list[str] = Field(default_factory=lambda: ["ort", "aoti"], description="Compile backends.")
    device: Device = "cpu"
    opset: int = Field(18, ge=11, le=30, description="ONNX opset of the export.")


class ValidationBase(Table):
    """[validations.NAME]: run runtimes on inputs and check them against the reference model."""

    model: str
    specializations: list[str] = Field(min_length=1)
    runtimes: list[str] = Field(min_length=1)
    inputs: str = Field(description="The validation's inputs, relative to this manifest.")
    checks: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Bounds per runtime and metric, e.g. { onnxruntime = { mad = 1e-5 } }."
    )


class StepTable(Table):
    """[steps.NAME]: any command, cached like every other step."""

    cmd: list[str] = Field(min_length=1, description="argv; {out}, {root} and {dep:NAME} are expanded.")
    inputs: list[str] = Field(default_factory=list, description="Files read, relative to this manifest.")
    outputs: list[str] = Field(min_length=1, description="Files the command writes under {out}.")
    env: dict[str, str] = Field(default_factory=dict)
    deps: list[str] = Field(default_factory=list, description="Targets whose outputs this step reads.")
    resources: dict[str, float] = Field(default_factory=dict, description="With --executor ray: what the step "
                                        "asks the cluster for besides one CPU (GPU, or a custom resource some "
                                        "nodes offer, e.g. { qaic = 1 }); placement only, not part of the key.")
    exclusive: bool = Field(False, description="Run with no other step of the build beside it (a step that times "
                                               "something); scheduling only, not part of the key.")

    @field_validator("resources")
    @classmethod
    def _resources(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if not (amount > 0 and amount < 1e6):
                raise ValueError(f"resource {name!r} must be a positive amount, got {amount}")
        return v


TABLES = ("models", "specializations", "validations", "steps")


@dataclass(frozen=True)
class Manifest:
    """One manifest file's validated tables (family-specific classes for model targets)."""

    project: ProjectTable
    models: dict[str, ModelBase] = field(default_factory=dict)
    specializations: dict[str, SpecializationBase] = field(default_factory=dict)
    validations: dict[str, ValidationBase] = field(default_factory=dict)
    steps: dict[str, StepTable] = field(default_factory=dict)
