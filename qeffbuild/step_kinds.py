"""Every step kind qeffbuild knows, registered by name with its version and toolchain.

Bump a kind's ``version`` whenever its behaviour changes: every key of that kind changes
and the next build re-runs those steps (and says why in ``plan`` and ``explain``).
"""

from __future__ import annotations

from .steps import STEP_KINDS, StepKind

_MODEL_TOOLCHAIN = ("python", "torch", "transformers", "tokenizers", "safetensors")

KINDS = (
    StepKind("command", 1, "", runs_in="command", description="a user's command with declared inputs and outputs"),
    StepKind("load", 2, "qeffbuild.step_load:run", _MODEL_TOOLCHAIN,
             description="resolve a model source, apply config overrides, save it in the HF layout"),
    StepKind("transform", 1, "qeffbuild.step_transform:run", _MODEL_TOOLCHAIN,
             description="PyTorch rewrites (pooling, KV retained state) and torch.export"),
    StepKind("export", 1, "qeffbuild.step_export:run", (*_MODEL_TOOLCHAIN, "onnx", "onnxscript"),
             description="ONNX through the dynamo exporter"),
    StepKind("compile", 1, "qeffbuild.step_compile:run", (*_MODEL_TOOLCHAIN, "onnx", "onnxruntime"),
             description="a backend's artifact for one fixed shape"),
    StepKind("validate", 1, "qeffbuild.step_validate:run",
             (*_MODEL_TOOLCHAIN, "onnx", "onnxruntime", "numpy", "sentence-transformers"),
             description="run every runtime on the inputs and check them against the reference"),
)


def register_all() -> None:
    for kind in KINDS:
        if kind.name not in STEP_KINDS:
            STEP_KINDS.add(kind.name, kind)


register_all()
