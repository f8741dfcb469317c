"""One registry for named catalogue entries (architectures, datasets), as torchvision's
`register_model` / `get_model` / `list_models`: a name is registered once, and an unknown name
raises an error that lists the known ones."""

from __future__ import annotations

from typing import Generic, TypeVar

from models.errors import CatalogueError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        """The entry named `name`; CatalogueError listing the known names otherwise."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self._entries))
            raise CatalogueError(f"{self.kind} '{name}' is unknown; known: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[T]:
        """All entries, sorted by name."""
        return [self._entries[name] for name in self.names()]
