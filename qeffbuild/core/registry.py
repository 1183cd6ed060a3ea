"""A named registry for plug-ins: unknown names are refused with the list of known ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from ..errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to plug-ins of one kind (tasks, backends, runtimes, metrics, step kinds)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}
        self.broken: list[str] = []  # plug-ins that failed to load: a missing name may be theirs

    def add(self, name: str, item: T, *, replace: bool = False) -> T:
        """Register ``item``; a second plug-in of the same name is a mistake unless ``replace``."""
        if name in self._items and not replace:
            raise ValueError(f"{self.what} {name!r} registered twice")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(item: T) -> T:
            return self.add(name, item)

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.what, name, list(self._items), self.broken) from None

    def unloaded_note(self) -> str:
        """For a message about a missing name: the plug-ins that failed to load, which may have held it."""
        return "".join(f"; it may belong to {b}" for b in self.broken)

    def names(self) -> list[str]:
        return sorted(self._items)

    def values(self) -> list[T]:
        return [self._items[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)
