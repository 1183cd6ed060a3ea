"""Task plug-ins: how models, specializations and validations of a task become steps.

Each task module (``graph_embedding``, ``graph_speech``) provides ``expand(ws, ref, graph)``
returning the ids of the steps the target outputs. Modules are imported on first use and
must not import torch at module level: expansion is part of planning.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from .graph import Graph
from .loader import TargetRef, Workspace
from .registry import Registry


class TaskExpander(Protocol):
    def __call__(self, ws: Workspace, ref: TargetRef, graph: Graph) -> list[str]: ...


TASKS: Registry[str] = Registry("task")
TASKS.add("embedding", "qeffbuild.graph_embedding")
TASKS.add("speech-seq2seq", "qeffbuild.graph_speech")


def expand_target(ws: Workspace, ref: TargetRef, graph: Graph) -> list[str]:
    from .graph_model import model_of

    task = model_of(ws, ref).spec.task
    module = importlib.import_module(TASKS.get(task))
    expander: TaskExpander = module.expand
    return expander(ws, ref, graph)
