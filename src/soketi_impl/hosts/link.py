"""``Link``: one framework WebSocket tied to the Pusher core, for the ASGI and aiohttp hosts.

A framework hands its host an async ``send_text`` and an async ``send_close``; the
host feeds what the client sends. The link does the rest, the same way on every
framework:

- it makes the :class:`~soketi_impl.connection.Connection` the core knows, with a
  socket id from :func:`~soketi_impl.pusher.server.new_socket_id`;
- every message the core sends leaves as a **text** frame (bytes are UTF-8 text),
  in order, through one writer task; the close frame leaves after what was queued
  before it (a ``pusher:error`` is on the wire before its close);
- the bytes waiting for the framework's async send are counted: over
  :data:`MAX_QUEUED` (4 MiB, the picows host's write buffer limit) the queue is
  dropped and the socket is closed with 4100, so a client that does not read costs
  bounded memory;
- the core hears exactly once that the socket is gone: when the close is decided
  (so a closing socket leaves its channels at once), or when the framework says the
  client left, whichever is first. Hosts call :meth:`Link.finish` in a ``finally``,
  so no end of the socket is missed;
- a close that the client never answers (a peer that stopped reading) is given up
  after ``close_timeout`` seconds through the host's ``abort``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ..connection import Connection
from ..pusher.server import new_socket_id
from ..router import Router

__all__ = ["CLOSE_TIMEOUT", "MAX_QUEUED", "Link", "wait_closed"]

log = logging.getLogger("soketi_impl.hosts")

#: Bytes a connection may have waiting for the framework's send before it is closed with 4100.
MAX_QUEUED = 4 * 1024 * 1024
#: Seconds a close may wait for the client before the host aborts the connection.
CLOSE_TIMEOUT = 10.0

OVER_CAPACITY = "Over capacity: the client is not reading fast enough."


def _close_reason(reason: str | None) -> str:
    """A close reason that fits a control frame (123 bytes of UTF-8)."""
    data = (reason or "").encode()
    return data[:123].decode("utf-8", "ignore") if len(data) > 123 else (reason or "")


class Link:
    """One WebSocket of a framework host; see the module docstring.

    ``send_text(text)`` and ``send_close(code, reason)`` are the framework's async
    sends; ``abort()`` drops the connection when a close is not answered in time.
    """

    __slots__ = (
        "router", "conn", "_send_text", "_send_close", "_abort", "limit", "close_timeout",
        "_queue", "queued", "_writer", "closing", "close_code", "close_reason", "close_sent",
        "reported", "gave_up", "done", "_timer", "_closed_event",
    )

    def __init__(
        self,
        router: Router,
        path: str,
        send_text: Callable[[str], Awaitable[Any]],
        send_close: Callable[[int, str], Awaitable[Any]],
        abort: Callable[[], Any],
        *,
        limit: int = MAX_QUEUED,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        self.router = router
        self._send_text = send_text
        self._send_close = send_close
        self._abort = abort
        self.limit = limit
        self.close_timeout = close_timeout
        self._queue: deque[tuple[str, int]] = deque()
        #: bytes waiting for the framework's send
        self.queued = 0
        self._writer: asyncio.Task[None] | None = None
        self.closing = False
        self.close_code = 1000
        self.close_reason = ""
        self.close_sent = False
        self.reported = False
        self.gave_up = False
        #: the close frame went out, or the socket ended
        self.done = False
        self._timer: asyncio.TimerHandle | None = None
        self._closed_event: asyncio.Event | None = None
        self.conn = Connection(
            new_socket_id(), send=self.send, close=self.close, path=path,
            write_buffer_size=self.buffer_size,
        )

    # -- what the host feeds --

    def open(self) -> None:
        """Tell the core about the new connection (it greets or refuses it)."""
        self.router.feed("new", self.conn)

    def receive(self, message: str | bytes) -> None:
        """One text message from the client."""
        if not self.closing:
            self.router.feed("message", self.conn, message)

    def receive_binary(self, data: bytes) -> None:
        """One binary message: read as text, as soketi does (JSON in a binary frame is
        served); bytes that are not UTF-8 close the connection with 1007."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self.close(1007, "Text is not valid UTF-8.")
            return
        self.receive(text)

    def finish(self, code: int | None, reason: str | None = None) -> None:
        """The framework's socket ended (any way at all): tell the core, drop what is queued."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        self.queued = 0
        self.closing = True
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
        self._report(code, reason)
        self._set_closed()

    # -- what the core calls through the Connection --

    def send(self, message: str | bytes) -> None:
        """Queue one message as a text frame; over the limit, close with 4100."""
        if self.closing:
            return
        if isinstance(message, str):
            text, size = message, len(message)
        else:
            size = len(message)
            text = bytes(message).decode("utf-8", "replace")
        self._queue.append((text, size))
        self.queued += size
        if self.queued > self.limit:
            log.info("socket %s cannot keep up (over %d bytes queued): closing with 4100",
                     self.conn.id, self.limit)
            self.close(4100, OVER_CAPACITY)
            return
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write())

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close after what is queued (4100: drop the queue first); the core hears of it now."""
        if self.closing:
            return
        self.closing = True
        self.close_code = code or 1000
        self.close_reason = _close_reason(reason)
        self.conn.closed = True
        if self.close_code == 4100:
            self._queue.clear()
            self.queued = 0
        loop = asyncio.get_running_loop()
        # Not now: the core may be inside a broadcast over this socket's channel.
        loop.call_soon(self._report, self.close_code, self.close_reason)
        self._timer = loop.call_later(self.close_timeout, self._give_up)
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write())

    def buffer_size(self) -> int:
        """Bytes waiting for the framework (the core's backpressure check reads it)."""
        return self.queued

    async def wait_closed(self) -> None:
        """Until the close frame is sent or the socket ended."""
        if self.done:
            return
        if self._closed_event is None:
            self._closed_event = asyncio.Event()
        await self._closed_event.wait()

    # -- internals --

    async def _write(self) -> None:
        try:
            while self._queue:
                text, size = self._queue.popleft()
                self.queued -= size
                await self._send_text(text)
            if self.closing and not self.close_sent:
                self.close_sent = True
                await self._send_close(self.close_code, self.close_reason)
        except Exception as exc:  # the framework says the socket is gone
            log.debug("send on %s failed: %r", self.conn.id, exc)
            self._queue.clear()
            self.queued = 0
            self.closing = True
            self.conn.closed = True
        finally:
            self._writer = None
            if self.close_sent:
                self._set_closed()

    def _report(self, code: int | None, reason: str | None) -> None:
        if not self.reported:
            self.reported = True
            self.conn.closed = True
            self.router.feed("closed", self.conn, code, reason)

    def _set_closed(self) -> None:
        self.done = True
        if self._closed_event is not None:
            self._closed_event.set()

    def _give_up(self) -> None:
        self._timer = None
        log.debug("socket %s did not close within %.0f s: aborting", self.conn.id, self.close_timeout)
        self.gave_up = True
        try:
            self._abort()
        except Exception as exc:
            log.debug("abort of %s failed: %r", self.conn.id, exc)


async def wait_closed(links: set[Link], timeout: float) -> None:
    """Until every link in ``links`` sent its close frame or ended, at most ``timeout`` seconds."""
    pending = [asyncio.ensure_future(link.wait_closed()) for link in list(links)]
    if not pending:
        return
    done, not_done = await asyncio.wait(pending, timeout=timeout)
    for task in not_done:
        task.cancel()
