"""The exec room: the Executor protocol and the result of running one step.

``local.py`` runs a plan's uncached steps as processes on this machine; ``worker.py`` is
the process a Python step runs in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass
class StepResult:
    id: str
    status: str  # built | shared | failed | check-failed | skipped | interrupted
    duration_s: float = 0.0
    message: str = ""


class Executor(Protocol):
    def run(self) -> dict[str, StepResult]:
        """Run every uncached step of the plan; return a result per step that was due."""
        ...
