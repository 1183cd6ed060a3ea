"""A long step's progress, from its worker to the build's display (a bar with an ETA on a terminal).

The worker writes ``{"done", "total", "unit", "what"}`` to the file named by ``QEFFBUILD_PROGRESS``
(atomically, a few times a second at most); the executor reads it while it waits for the worker.
Outside a build (no variable set) reporting costs nothing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

ENV = "QEFFBUILD_PROGRESS"
EVERY_S = 0.25


class StepProgress:
    """Count units of work (utterances, batches) done out of ``total``."""

    def __init__(self, total: int, unit: str) -> None:
        self.total, self.unit, self.done = max(0, total), unit, 0
        self.path = Path(os.environ[ENV]) if os.environ.get(ENV) else None
        self._last = 0.0
        self._write("")

    def advance(self, n: int = 1, what: str = "") -> None:
        self.done = min(self.total, self.done + n)
        if time.monotonic() - self._last >= EVERY_S or self.done == self.total:
            self._write(what)

    def _write(self, what: str) -> None:
        if self.path is None:
            return
        self._last = time.monotonic()
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"done": self.done, "total": self.total, "unit": self.unit, "what": what}))
            os.replace(tmp, self.path)
        except OSError:  # progress is a courtesy: never fail a step for it
            pass


def read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("done"), int) or not isinstance(data.get("total"), int):
        return None
    return data
