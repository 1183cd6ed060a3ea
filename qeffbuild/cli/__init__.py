"""The CLI room: click commands, each a thin call into :class:`qeffbuild.api.Project`.

``app.py`` holds the group, the options every command shares and the error handling; the
command modules register themselves on it.
"""

from __future__ import annotations

import click

from . import build, cache, inspect, use  # noqa: F401  (register their commands)
from .app import add_project_options, main

for _name, _command in main.commands.items():  # every command that reads the manifests or the cache
    if isinstance(_command, click.Group):
        for _sub in _command.commands.values():
            add_project_options(_sub)
    elif _name not in ("init", "schema"):
        add_project_options(_command)

__all__ = ["main"]
