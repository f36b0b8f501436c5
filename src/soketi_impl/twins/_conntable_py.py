"""Connection table, pure-Python twin of ``_conntable_c``: id -> connection object.

Keys are any hashable object with dict semantics (``1``, ``1.0`` and ``True`` are one
key; an unhashable key raises ``TypeError``), in both twins.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from ..errors import DuplicateConnection

__all__ = ["ConnectionTable"]


class ConnectionTable:
    """A table of live connections keyed by their id.

    >>> t = ConnectionTable(); t.add("1.2", "conn"); t.add(42, "other"); t.get("1.2")
    'conn'
    """

    __slots__ = ("_items", "_view")

    def __init__(self) -> None:
        self._items: dict[Hashable, Any] = {}
        self._view: Mapping[Hashable, Any] = MappingProxyType(self._items)

    def add(self, key: Hashable, value: Any) -> None:
        """Add ``value`` under ``key``; a key already present raises :class:`DuplicateConnection`."""
        if key in self._items:
            raise DuplicateConnection(f"connection id {key!r} is already tracked")
        self._items[key] = value

    def remove(self, key: Hashable) -> Any:
        """Remove ``key`` and return its value, or ``None`` when it was not there."""
        return self._items.pop(key, None)

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value under ``key``, or ``default``."""
        return self._items.get(key, default)

    def values(self) -> list[Any]:
        """A snapshot list of the values (safe to iterate while the table changes)."""
        return list(self._items.values())

    def keys(self) -> list[Hashable]:
        """A snapshot list of the keys."""
        return list(self._items)

    def mapping(self) -> Mapping[Hashable, Any]:
        """A read-only live view of the table."""
        return self._view

    def clear(self) -> None:
        """Remove everything."""
        self._items.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._items.values()))
