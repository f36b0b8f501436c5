"""``Connection``: one client connection, wrapping any native socket's send and close.

The native object can come from any WebSocket framework: it needs ``send(message)``
and ``close(code=None, reason=None)``, each either a plain function or a coroutine
function. Or pass the two callables directly::

    conn = Connection("1.2", native_ws)
    conn = Connection("1.2", send=ws.send, close=ws.close)
    await conn.send("Hello!")
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

__all__ = ["Connection", "NativeSocket"]

log = logging.getLogger("soketi_impl.connection")

SendFn = Callable[[Any], Any]
CloseFn = Callable[..., Any]


class NativeSocket(Protocol):
    """What :class:`Connection` needs from a framework's socket object."""

    def send(self, message: Any) -> Any: ...

    def close(self, code: int | None = None, reason: str | None = None) -> Any: ...


class Connection:
    """A connection with an ``id``, wrapping a native socket.

    ``send`` and ``close`` never raise into the caller: a send on a closed connection,
    or one that the native socket fails, returns ``False`` (and marks the connection
    closed when the socket failed).

    ``state`` is free for the protocol that drives the connection (the Pusher server
    keeps its per-connection data there).
    """

    __slots__ = (
        "id", "_native", "_send", "_close", "closed", "state", "_queue", "path", "raw_write",
        "write_buffer_size", "__weakref__",
    )

    def __init__(
        self,
        id: str,
        native: NativeSocket | None = None,
        *,
        send: SendFn | None = None,
        close: CloseFn | None = None,
        path: str | None = None,
        raw_write: Callable[[bytes], Any] | None = None,
        write_buffer_size: Callable[[], int] | None = None,
    ) -> None:
        if native is None and (send is None or close is None):
            raise TypeError("Connection needs a native socket or both send= and close=")
        # With a native socket its methods are looked up per call rather than kept as
        # two bound-method objects: 128 bytes less per connection.
        self._native = native
        self.id = id
        #: The request path and query the client connected with (``/app/KEY?protocol=7``):
        #: the Pusher handlers read the app key from it.
        self.path = path
        #: Optional fast path for transports that can take pre-framed WebSocket bytes
        #: (picows): the fan-out writes coalesced frames through it in one call.
        self.raw_write = raw_write
        #: Optional: the transport's write buffer size, for backpressure.
        self.write_buffer_size = write_buffer_size
        self._send: SendFn | None = send
        self._close: CloseFn | None = close
        self.closed = False
        self.state: Any = None
        # Messages waiting behind an async native send, so order is kept.
        self._queue: deque[Any] | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.id!r}{' closed' if self.closed else ''}>"

    async def send(self, message: str | bytes) -> bool:
        """Send one message; ``True`` when the native socket took it."""
        if self.closed:
            return False
        if self._queue:
            # Earlier fire-and-forget sends are still in flight: keep the order.
            self._queue.append(message)
            return True
        try:
            result = (self._send or self._native.send)(message)  # type: ignore[union-attr]
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # the socket went away under us
            log.debug("send on %s failed: %r", self.id, exc)
            self.closed = True
            return False
        return True

    async def send_json(self, obj: Any) -> bool:
        """Send ``obj`` encoded as JSON text (orjson)."""
        return await self.send(orjson.dumps(obj).decode())

    def send_nowait(self, message: str | bytes) -> bool:
        """Send without awaiting: for synchronous callers such as the fan-out flush.

        An async native send is scheduled; further messages queue behind it, so the
        order of messages is the order of calls.
        """
        if self.closed:
            return False
        if self._queue is not None and self._queue:
            self._queue.append(message)
            return True
        try:
            result = (self._send or self._native.send)(message)  # type: ignore[union-attr]
        except Exception as exc:
            log.debug("send on %s failed: %r", self.id, exc)
            self.closed = True
            return False
        if inspect.isawaitable(result):
            if self._queue is None:
                self._queue = deque()
            self._queue.append(None)  # marks "a send is in flight"
            asyncio.ensure_future(self._drain(result))
        return True

    async def _drain(self, first: Awaitable[Any]) -> None:
        assert self._queue is not None
        try:
            await first
            self._queue.popleft()
            while self._queue and not self.closed:
                result = (self._send or self._native.send)(self._queue[0])  # type: ignore[union-attr]
                if inspect.isawaitable(result):
                    await result
                self._queue.popleft()
        except Exception as exc:
            log.debug("send on %s failed: %r", self.id, exc)
            self.closed = True
            self._queue.clear()

    async def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close the native socket (once); errors from it are logged, not raised."""
        if self._close is _noop:
            return
        close = self._close or self._native.close  # type: ignore[union-attr]
        self._close = _noop
        self.closed = True
        try:
            if code is None and reason is None:
                result = close()
            else:
                result = close(code, reason)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            log.debug("close of %s failed: %r", self.id, exc)


def _noop(*args: Any) -> None:
    return None
