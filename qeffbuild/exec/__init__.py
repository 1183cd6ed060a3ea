"""The exec room: the Executor protocol and the result of running one step.

``local.py`` schedules a plan's uncached steps on this machine; ``ray_cluster.py`` on a Ray
cluster; ``runner.py`` runs one step (either way); ``worker.py`` is the process a Python step
runs in; ``progress.py`` carries a long step's progress to the display.
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
    report: dict[str, bytes] | None = None  # a failed validation's report files, laid out under out/
    where: str = ""  # the machine (Ray node) that ran it, when not this one
    dispatch_s: float | None = None  # Ray: time from submitting the task to its result, less the step's own
    remote: dict[str, int] | None = None  # Ray over a remote cache: what the node moved (bytes_up, bytes_down …)


class Executor(Protocol):
    def run(self) -> dict[str, StepResult]:
        """Run every uncached step of the plan; return a result per step that was due."""
        ...
