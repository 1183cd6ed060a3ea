"""Step nodes: what the build graph is made of, and what a running step sees.

A node carries everything its key is made of (kind, version, params, input files,
upstream steps, toolchain, salt) and names the code that runs it as ``module:function``;
that code is imported only in the worker process, so planning never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What each kind of step does; the kind is part of every key.
KINDS = {
    "command": "a user's command with declared inputs and outputs",
    "load": "resolve a model source, apply config overrides, save it in the Hugging Face layout",
    "transform": "PyTorch rewrites (pooling, KV retained state) captured as a torch.export program",
    "export": "ONNX through the dynamo exporter",
    "onnx-pass": "a named, versioned ONNX rewrite a backend needs (fp16 clip, external data)",
    "compile": "a backend's artifact (one fixed shape, or every shape of a specialization)",
    "validate": "run every runtime on the inputs and check it against the reference",
}
MODEL_TOOLCHAIN = ("python", "torch", "transformers", "tokenizers", "safetensors")


@dataclass(frozen=True)
class FileInput:
    """A source file a step reads: ``label`` enters the key, ``path`` is where to read it."""

    label: str
    path: Path


@dataclass
class StepNode:
    """One step of the build graph, before its key is known."""

    id: str
    kind: str
    params: dict[str, Any]
    runner: str = ""  # module:function run in a worker; "" for a command step
    version: int = 1  # bump when the runner's behaviour changes: its keys change and it re-runs
    toolchain: tuple[str, ...] = ()  # Python distributions whose versions enter the key
    tool_versions: dict[str, str] = field(default_factory=dict)  # other versions (SDKs, GPU kind)
    deps: dict[str, str] = field(default_factory=dict)  # role -> upstream step id
    files: tuple[FileInput, ...] = ()
    target: str = ""  # the target that declared it (for messages)
    out_subdir: str = ""  # where its outputs land under out/<target>/ when a target outputs it
    root: Path | None = None  # the manifest folder, for steps that run user commands
    dep_targets: dict[str, list[str]] = field(default_factory=dict)  # command steps: {dep:NAME} -> roles
    salt: str = ""  # the declaring project's salt
    paths: dict[str, Path] = field(default_factory=dict)  # where to read things; never part of the key
    resources: dict[str, float] = field(default_factory=dict)  # what a cluster must offer to run it (not keyed)
    # it times what it runs (a validation's speed columns): the executor starts it only when no other step of the
    # build runs, and starts none beside it (scheduling only, not keyed)
    exclusive: bool = False

    @property
    def is_command(self) -> bool:
        return not self.runner


@dataclass(frozen=True)
class StepContext:
    """What a running step sees: its params, its inputs on disk, and where to write."""

    node_id: str
    params: dict[str, Any]
    inputs: dict[str, Path]  # role -> folder holding that upstream step's outputs
    files: dict[str, Path]  # label -> source file
    out: Path  # write outputs here; everything under it becomes the step's outputs
    root: Path | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # "self" and each input role -> step key (provenance)
