"""Default check thresholds per runtime and dtype, merged with a manifest's ``checks``.

Float32 defaults are at least as strict as QEfficient's tests (ONNX Runtime MAD ≤ 1e-5);
the transformed PyTorch program must match to float rounding. Half-precision
specializations are compared with the float32 reference, so their bounds are wider.
"""

from __future__ import annotations

from typing import Any

from .manifest import ValidationTable

_FLOAT32: dict[str, dict[str, float]] = {
    "pytorch-transformed": {"mad": 1e-6, "max_abs": 1e-5, "cosine": 0.999999},
    "onnxruntime": {"mad": 1e-5, "cosine": 0.99999},
    "aoti": {"mad": 1e-5, "cosine": 0.99999},
    "sentence-transformers": {"mad": 1e-5, "cosine": 0.99999},
}
_HALF: dict[str, dict[str, float]] = {
    "float16": {"mad": 2e-3, "cosine": 0.999},
    "bfloat16": {"mad": 2e-2, "cosine": 0.99},
}
# Generation (speech): tokens must equal the reference's.
_TOKENS: dict[str, float] = {"float32": 1.0, "float16": 0.0, "bfloat16": 0.0}


def default_checks(runtime: str, dtype: str, task: str) -> dict[str, float]:
    if runtime == "pytorch":
        return {}
    if task != "embedding":
        return {"token_agreement": _TOKENS[dtype]}
    if dtype in _HALF and runtime != "sentence-transformers":
        return dict(_HALF[dtype])
    return dict(_FLOAT32.get(runtime, {"mad": 1e-5}))


def resolve_checks(v: ValidationTable, specs: list[dict[str, Any]], task: str = "embedding") -> dict[str, Any]:
    """``{runtime: {spec: {metric: bound}}}``: defaults, overridden by the manifest's checks."""
    out: dict[str, Any] = {}
    for runtime in v.runtimes:
        given = v.checks.get(runtime)
        overrides = given.model_dump(exclude_none=True) if given else {}
        out[runtime] = {s["name"]: {**default_checks(runtime, s["dtype"], task), **overrides} for s in specs}
    return out
