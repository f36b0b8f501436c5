"""``Connections``: a tracker of live connections, backed by the compiled connection table."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping

from .connection import Connection
from .twins._conntable import ConnectionTable

__all__ = ["Connections"]


class Connections:
    """The live connections, by id (any hashable, with dict semantics: ``1`` and ``1.0`` are one id).

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

    async def remove_connection(self, connection: Connection | Hashable) -> bool:
        """Stop tracking ``connection`` (or an id); ``False`` when it was not tracked.

        Given a :class:`Connection`, only that very object is removed: another
        connection tracked under the same id stays.
        """
        return self.discard(connection)

    def add(self, connection: Connection) -> None:
        """Synchronous :meth:`new_connection`."""
        self._table.add(connection.id, connection)

    def discard(self, connection: Connection | Hashable) -> bool:
        """Synchronous :meth:`remove_connection`."""
        if isinstance(connection, Connection):
            if self._table.get(connection.id) is not connection:
                return False
            self._table.remove(connection.id)
            return True
        # Tracked values are never None, so None means "was not there".
        return self._table.remove(connection) is not None

    def get(self, id: Hashable) -> Connection | None:
        """The connection with this id, or ``None``."""
        conn: Connection | None = self._table.get(id)
        return conn

    @property
    def connections(self) -> Mapping[Hashable, Connection]:
        """A read-only live mapping from id to :class:`Connection`."""
        return self._table.mapping()

    def __iter__(self) -> Iterator[Connection]:
        """A snapshot of the connections: safe while connections come and go."""
        return iter(self._table.values())

    def __len__(self) -> int:
        """How many connections are tracked."""
        return len(self._table)

    def __contains__(self, item: object) -> bool:
        """A :class:`Connection` is in when that very object is tracked; an id when any is."""
        if isinstance(item, Connection):
            return self._table.get(item.id) is item
        return item in self._table
