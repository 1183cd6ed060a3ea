"""The CLI room: click commands, each a thin call into :class:`qeffbuild.api.Project`.

``app.py`` holds the group, the options every command shares and the error handling; the
command modules register themselves on it.
"""

from __future__ import annotations

from . import build, cache, inspect, use  # noqa: F401  (register their commands)
from .app import main

__all__ = ["main"]
