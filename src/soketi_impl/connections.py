"""``Connections``: a tracker of live connections, backed by the compiled connection table."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from .connection import Connection
from .twins._conntable import ConnectionTable

__all__ = ["Connections"]


class Connections:
    """The live connections, by id.

    >>> conns = Connections()
    >>> await conns.new_connection(conn)          # doctest: +SKIP
    >>> for c in conns: await c.send("Hello!")    # doctest: +SKIP
    >>> conns.connections.get(conn.id)            # doctest: +SKIP
    """

    __slots__ = ("_table",)

    def __init__(self) -> None:
        self._table = ConnectionTable()

    async def new_connection(self, connection: Connection) -> None:
        """Track ``connection``; an id already tracked raises :class:`~soketi_impl.errors.DuplicateConnection`."""
        self._table.add(connection.id, connection)

    async def remove_connection(self, connection: Connection | str) -> bool:
        """Stop tracking ``connection`` (or an id); ``False`` when it was not tracked."""
        return self.discard(connection)

    def add(self, connection: Connection) -> None:
        """Synchronous :meth:`new_connection`."""
        self._table.add(connection.id, connection)

    def discard(self, connection: Connection | str) -> bool:
        """Synchronous :meth:`remove_connection`."""
        key = connection if isinstance(connection, str) else connection.id
        current = self._table.get(key)
        if current is None or (not isinstance(connection, str) and current is not connection):
            return False
        self._table.remove(key)
        return True

    def get(self, id: str) -> Connection | None:
        """The connection with this id, or ``None``."""
        conn: Connection | None = self._table.get(id)
        return conn

    @property
    def connections(self) -> Mapping[str, Connection]:
        """A read-only live mapping from id to :class:`Connection`."""
        return self._table.mapping()

    def __iter__(self) -> Iterator[Connection]:
        return iter(self._table.values())

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Connection):
            return self._table.get(item.id) is item
        return item in self._table
