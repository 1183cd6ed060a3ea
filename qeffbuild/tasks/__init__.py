"""The tasks room: one package per model family; each package's ``__init__`` is torch-free.

Every package here is a built-in family: its ``register(plugins)`` adds its Task (and any
runtime only it uses). Adding a family is adding a package; nothing else is edited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.plugins import Plugins


def register(plugins: Plugins) -> None:
    plugins.load_each(__name__)  # one family that fails to import leaves the others working
