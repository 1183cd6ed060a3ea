"""Runtimes: the registry of names, the tasks each runs and the artifact each opens."""

from __future__ import annotations

from dataclasses import dataclass

from .registry import Registry


@dataclass(frozen=True)
class RuntimeInfo:
    name: str
    tasks: tuple[str, ...]
    opens: str  # "reference" (the HF model) | "transformed" (torch.export program) | a backend name
    description: str


RUNTIMES: Registry[RuntimeInfo] = Registry("runtime")
for _info in (
    RuntimeInfo(
        "pytorch", ("embedding", "speech-seq2seq"), "reference", "the unmodified Hugging Face model (reference)"
    ),
    RuntimeInfo(
        "pytorch-transformed", ("embedding", "speech-seq2seq"), "transformed", "the transformed torch.export program"
    ),
    RuntimeInfo("onnxruntime", ("embedding", "speech-seq2seq"), "ort", "ONNX Runtime on the `ort` compile artifact"),
    RuntimeInfo("aoti", ("embedding", "speech-seq2seq"), "aoti", "the AOTInductor package"),
    RuntimeInfo(
        "sentence-transformers",
        ("embedding",),
        "reference",
        "sentence_transformers.SentenceTransformer.encode (models that ship its config)",
    ),
):
    RUNTIMES.add(_info.name, _info)
