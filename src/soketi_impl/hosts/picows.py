"""One port for the WebSocket endpoint and the HTTP API.

:class:`FrontDoor` is the asyncio protocol every accepted socket starts with. It
parses the request head with httptools. A WebSocket upgrade is handed to picows:
the transport is switched to a picows ``WSProtocol`` built the way
``picows.ws_create_server`` builds it, and the bytes read so far are fed to it, so
from then on picows reads the socket directly and the front door costs the
WebSocket path nothing. Every other request stays here and goes to the HTTP
handler, with keep-alive.

picows is pinned exactly (``picows==2.3.1``) because the hand-off builds its
protocol object with positional arguments; ``tests/test_frontdoor.py`` checks it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import httptools
from picows import WSAutoPingStrategy, WSListener, WSMsgType
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in picows's stubs

from ..connection import Connection
from ..http.types import REASONS as _REASONS
from ..http.types import HttpHandler, HttpRequest, HttpResponse
from ..router import Router
from ..twins._wsglue import shrink_idle_buffers

__all__ = ["FrontDoor", "FrontDoorOptions", "PusherListener"]

log = logging.getLogger("soketi_impl.http")
# One shared logger for every picows connection: a plain Logger would make picows
# create a child Logger per connection (memory that is never given back).
_picows_log = logging.LoggerAdapter(logging.getLogger("soketi_impl.picows"), {})

#: Unsent bytes a WebSocket connection may have queued before it is closed with 4100.
MAX_WRITE_BUFFER = 4 * 1024 * 1024

# Shared empty values for a front door that handed its socket to picows.
_EMPTY = bytearray()
_NO_HEADERS: dict[str, str] = {}
_NO_BODY: list[bytes] = []

@dataclass(slots=True)
class FrontDoorOptions:
    """Limits and picows settings shared by every connection of one listening socket."""

    max_head: int = 16 * 1024
    max_body: int = 100 * 1024 * 1024
    head_timeout: float = 10.0
    max_frame_size: int = 100 * 1024
    read_buffer_init_size: int = 2048
    handshake_timeout: float = 5.0


class PusherListener(WSListener):
    """The picows listener of one WebSocket connection: feeds the router.

    It is the ``native`` of its :class:`Connection` (``send``/``close``) and gives the
    fan-out a raw write path: pre-framed bytes straight to the socket transport.
    """

    __slots__ = ("router", "path", "conn", "transport", "socket_id", "max_message", "fragments", "fragments_size")

    def __init__(self, router: Router, path: str, socket_id: str, max_message: int = 101 * 1024) -> None:
        self.router = router
        self.path = path
        self.socket_id = socket_id
        self.conn: Connection | None = None
        self.transport: Any = None
        #: largest message reassembled from fragments (a single frame is bounded by picows)
        self.max_message = max_message
        #: the frames so far of a fragmented text message, or None
        self.fragments: list[bytes] | None = None
        self.fragments_size = 0

    # -- native socket interface for Connection --
    def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            message = message.encode()
        self.transport.send(WSMsgType.TEXT, message)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        t = self.transport
        if t is None or t.is_disconnected:
            return
        if not t.is_close_frame_sent:
            t.send_close(code or 1000, (reason or "").encode()[:120])
        # A peer that is over capacity (4100) is not reading: a graceful close would
        # wait for its full write buffer to drain, so abort.
        t.disconnect(code != 4100)

    def raw_write(self, data: bytes) -> None:
        """Pre-framed bytes straight to the socket, until our close frame is out.

        picows writes a close frame at once (a protocol error, or the reply to the
        peer's close) while replies queued in the same loop iteration are flushed
        later: RFC 6455 5.5.1 allows no data frame after the close frame, so drop them.
        """
        t = self.transport
        if t is not None and not t.is_close_frame_sent:
            under = t.underlying_transport
            under.write(data)
            # Backpressure lives here rather than in the Sink, which saves every
            # connection a bound method: a peer that does not read is cut off (4100).
            if under.get_write_buffer_size() > MAX_WRITE_BUFFER:
                log.info("socket %s cannot keep up (write buffer over %d bytes): closing with 4100",
                         self.socket_id, MAX_WRITE_BUFFER)
                self.close(4100, "Over capacity: the client is not reading fast enough.")

    __call__ = raw_write

    # -- picows callbacks --
    def on_ws_connected(self, transport: Any) -> None:
        self.transport = transport
        # picows keeps the upgrade request and response on the transport for the
        # connection's lifetime; their header maps are ~1.5 KB per connection that
        # nothing reads after the handshake.
        for message in (transport.request, transport.response):
            if message is not None:
                message.headers = message.version = None
                if message is transport.request:
                    message.path = message.method = None
        shrink_idle_buffers(transport)  # picows's 1 KiB write buffer sits idle: ~1 KB back
        # The listener itself is the raw writer (``__call__``): no bound method to keep.
        self.conn = Connection(self.socket_id, self, path=self.path, raw_write=self)
        self.router.feed("new", self.conn)

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT:
            if not frame.fin:
                # A fragmented message (legal, though no Pusher client sends one):
                # reassemble it, or the first fragment would be parsed as a whole message.
                self.fragments = [frame.get_payload_as_bytes()]
                self.fragments_size = frame.payload_size
            elif self.conn is not None:
                self.router.feed("message", self.conn, frame.get_payload_as_bytes())
        elif kind == WSMsgType.CONTINUATION and self.fragments is not None:
            self.fragments.append(frame.get_payload_as_bytes())
            self.fragments_size += frame.payload_size
            if self.fragments_size > self.max_message:
                self.fragments = None
                self.close(1009, "Message too big.")
            elif frame.fin:
                message = b"".join(self.fragments)
                self.fragments = None
                if self.conn is not None:
                    self.router.feed("message", self.conn, message)
        elif kind == WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code())
            transport.disconnect()
        elif kind == WSMsgType.BINARY or kind == WSMsgType.CONTINUATION:
            # Pusher speaks JSON text only; fragmented messages are not sent by any client.
            log.debug("socket %s sent a %s frame: closing with 1003", self.socket_id, kind.name)
            self.close(1003, "Only text frames are accepted.")

    def on_ws_disconnected(self, transport: Any) -> None:
        conn = self.conn
        if conn is None:
            return
        code, reason = None, None
        hs = transport.close_handshake
        if hs is not None and hs.recv is not None:
            code, reason = int(hs.recv.code), hs.recv.reason
        conn.closed = True
        self.router.feed("closed", conn, code, reason)
        self.conn = None
        self.transport = None


class FrontDoor(asyncio.Protocol):
    """Reads a request head; upgrades go to picows, other requests to ``http_handler``."""

    # uvloop keeps a bound method of the first protocol after ``set_protocol``, so this
    # object outlives the upgrade: slots keep that leftover small.
    __slots__ = (
        "router", "http_handler", "options", "new_socket_id", "transport", "parser", "first",
        "in_first", "url", "headers", "body", "body_size", "head_size", "queue", "busy",
        "closing", "out", "close_after_flush", "head_timer",
    )

    def __init__(
        self,
        router: Router,
        http_handler: HttpHandler,
        options: FrontDoorOptions,
        new_socket_id: Callable[[], str],
    ) -> None:
        self.router = router
        self.http_handler = http_handler
        self.options = options
        self.new_socket_id = new_socket_id
        self.transport: asyncio.Transport | None = None
        self.parser: Any = httptools.HttpRequestParser(self)
        self.first = bytearray()  # raw bytes of the first request, for the picows hand-off
        self.in_first = True
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.body_size = 0
        self.head_size = 0
        self.queue: deque[HttpRequest] | None = None  # made on the first plain HTTP request
        self.busy = False
        self.closing = False
        self.out: list[bytes] = []
        self.close_after_flush = False
        self.head_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.head_timer = asyncio.get_running_loop().call_later(self.options.head_timeout, self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self.closing = True
        self.queue = None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.in_first:
            self.first += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade()
        except httptools.HttpParserError as exc:
            if not self.closing:
                self._reply_and_close(400, f"Malformed HTTP request: {exc}")

    # -- httptools callbacks --
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.body = []
        self.body_size = 0
        self.head_size = 0
        if self.head_timer is None and self.transport is not None:
            self.head_timer = asyncio.get_running_loop().call_later(self.options.head_timeout, self._head_timeout)

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._cancel_timer()
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.options.max_body:
            self._reply_and_close(413, f"Request body over {self.options.max_body} bytes.")

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.options.max_body:
            self._reply_and_close(413, f"Request body over {self.options.max_body} bytes.")
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.closing or self.parser.should_upgrade():
            return  # an upgrade: feed_data raises HttpParserUpgrade next
        self.in_first = False
        self.first = bytearray()
        parsed = httptools.parse_url(self.url)
        request = HttpRequest(
            method=self.parser.get_method().decode(),
            path=(parsed.path or b"/").decode("utf-8", "replace"),
            query=(parsed.query or b"").decode("utf-8", "replace"),
            headers=self.headers,
            body=b"".join(self.body),
            keep_alive=self.parser.should_keep_alive(),
        )
        if self.queue is None:
            self.queue = deque()
        self.queue.append(request)
        if not self.busy:
            self._next()

    # -- internals --
    def _count_head(self, n: int) -> None:
        self.head_size += n
        if self.head_size > self.options.max_head and not self.closing:
            self._reply_and_close(431, "Request head too large.")

    def _cancel_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timeout(self) -> None:
        self.head_timer = None
        if not self.closing and self.transport is not None:
            log.debug("closing a connection whose request head did not arrive in time")
            self.closing = True
            self.transport.close()

    def _next(self) -> None:
        """Answer queued requests one at a time, in order (pipelining-safe).

        The answers to every request that one read brought in leave in one write.
        """
        while self.queue and not self.closing and not self.close_after_flush:
            request = self.queue.popleft()
            try:
                result = self.http_handler(request)
            except Exception:
                log.exception("HTTP handler failed on %s %s", request.method, request.path)
                result = HttpResponse(500, b'{"error":"Internal server error"}')
            if inspect.isawaitable(result):
                self.busy = True
                task = asyncio.ensure_future(result)
                task.add_done_callback(partial(self._done, request=request))
                break
            assert isinstance(result, HttpResponse)
            self._write(result, request.keep_alive)
        self._flush()

    def _done(self, task: asyncio.Future[HttpResponse], *, request: HttpRequest) -> None:
        self.busy = False
        if self.closing:
            return
        if task.cancelled():
            response = HttpResponse(503, b'{"error":"Server shutting down"}')
        elif task.exception() is not None:
            log.error("HTTP handler failed on %s %s", request.method, request.path, exc_info=task.exception())
            response = HttpResponse(500, b'{"error":"Internal server error"}')
        else:
            response = task.result()
        self._write(response, request.keep_alive)
        self._next()

    def _write(self, response: HttpResponse, keep_alive: bool) -> None:
        """Queue one response; :meth:`_flush` writes what is queued."""
        reason = _REASONS.get(response.status, "Unknown")
        lines = [f"HTTP/1.1 {response.status} {reason}"]
        if response.status != 204:  # a 204 has no content, so no content headers
            lines.append(f"Content-Type: {response.content_type}")
            lines.append(f"Content-Length: {len(response.body)}")
        lines += [f"{k}: {v}" for k, v in response.headers]
        if not keep_alive:
            lines.append("Connection: close")
        self.out.append(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body)
        if not keep_alive:
            self.close_after_flush = True

    def _flush(self) -> None:
        t = self.transport
        if not self.out:
            return
        data = b"".join(self.out) if len(self.out) > 1 else self.out[0]
        self.out.clear()
        if t is None or t.is_closing():
            return
        t.write(data)
        if self.close_after_flush:
            self.closing = True
            t.close()

    def _reply_and_close(self, status: int, message: str) -> None:
        import orjson

        self.closing = True
        self._cancel_timer()
        log.debug("HTTP %d: %s", status, message)
        if self.transport is not None and not self.transport.is_closing():
            body = orjson.dumps({"error": message})
            self.transport.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
            )
            self.transport.close()

    def _upgrade(self) -> None:
        """Hand the socket to picows, replaying what was read so far."""
        self._cancel_timer()
        transport = self.transport
        if transport is None:
            return
        if not self.in_first or self.parser.get_method() != b"GET":
            self._reply_and_close(400, "A WebSocket upgrade must be the first request, with GET.")
            return
        path = self.url.decode("utf-8", "replace")
        socket_id = self.new_socket_id()
        router = self.router

        def factory(request: Any) -> PusherListener:
            return PusherListener(router, path, socket_id, self.options.max_frame_size)

        opts = self.options
        ws = WSProtocol(
            None, None, False, factory, _picows_log, True, opts.handshake_timeout,
            False, 20.0, 20.0, WSAutoPingStrategy.PING_WHEN_IDLE, True,
            opts.max_frame_size, None, opts.read_buffer_init_size,
        )
        data = bytes(self.first)
        self.closing = True  # this protocol is done with the socket
        # uvloop may keep a reference to this protocol's data_received after the
        # switch: drop everything this object holds so only its shell stays alive.
        self.first = _EMPTY
        self.parser = None
        self.headers = _NO_HEADERS
        self.body = _NO_BODY
        self.out = _NO_BODY
        self.url = b""
        self.transport = None
        transport.set_protocol(ws)
        ws.connection_made(transport)
        view = memoryview(data)
        while view:
            buf = ws.get_buffer(len(view))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            ws.buffer_updated(n)
            view = view[n:]
