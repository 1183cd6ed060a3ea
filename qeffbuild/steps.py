"""Step nodes and step kinds: what the graph is made of, and the registry of kinds."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .registry import Registry


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
    deps: dict[str, str] = field(default_factory=dict)  # role -> upstream step id
    files: tuple[FileInput, ...] = ()
    target: str = ""  # the target that declared it (for messages)
    out_subdir: str = ""  # where its outputs land under out/<target>/ when a target outputs it
    root: Path | None = None  # the manifest folder, for steps that run user commands
    dep_targets: dict[str, list[str]] = field(default_factory=dict)  # command steps: {dep:NAME} -> step ids
    salt: str = ""  # the declaring project's salt
    paths: dict[str, Path] = field(default_factory=dict)  # where to read things; never part of the key


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


@dataclass(frozen=True)
class StepKind:
    """A kind of step: its version (bump on behaviour change) and how it runs.

    ``runner`` is ``module:function`` imported only inside the worker process, so planning
    never imports torch. ``toolchain`` names distributions whose versions enter the key.
    """

    name: str
    version: int
    runner: str
    toolchain: tuple[str, ...] = ()
    runs_in: Literal["worker", "command"] = "worker"
    # Validation-like steps whose failure is a check failure (exit 1, report kept).
    description: str = ""

    def load_runner(self) -> Callable[[StepContext], None]:
        module, _, func = self.runner.partition(":")
        fn: Callable[[StepContext], None] = getattr(importlib.import_module(module), func)
        return fn


STEP_KINDS: Registry[StepKind] = Registry("step kind")
