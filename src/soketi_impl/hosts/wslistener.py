"""The picows listener of one WebSocket connection: frames in, the router fed, bytes out.

Every client frame is checked here before the Pusher core sees it (RFC 6455 and
the rules of the protocol reference, section 2):

- a whole TEXT or BINARY frame with valid UTF-8 is one message (binary frames are
  parsed as JSON text, as uWebSockets and so soketi do);
- invalid UTF-8 closes with 1007; an RSV bit (no extension is negotiated), a new
  data frame inside a fragmented message or a stray continuation closes with 1002;
- a fragmented message is reassembled into one bytearray, bounded in size (1009)
  and in number of fragments (1009: a million empty fragments are not a message);
- WebSocket pings are answered here rather than by picows's auto-pong, so a pong
  goes through the same write-buffer bound as everything else (4100 for a peer
  that sends pings and never reads), and any frame counts as client activity;
- the close handshake never puts 0, 1004-1006 or 1015 on the wire.

Per connection this keeps eight slots and no other object (see ``__slots__``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from picows import WSAutoPingStrategy, WSListener, WSMsgType
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in picows's stubs

from ..connection import Connection
from ..router import Router
from ..twins._wsglue import (
    data_payload,
    drop_handshake_leftovers,
    drop_protocol_leftovers,
    shrink_idle_buffers,
    shrink_read_buffer,
)

__all__ = ["MAX_FRAGMENTS", "MAX_WRITE_BUFFER", "PusherListener", "hand_off", "wire_close_code"]

log = logging.getLogger("soketi_impl.http")
# One shared logger for every picows connection: a plain Logger would make picows
# create a child Logger per connection (memory that is never given back).
_picows_log = logging.LoggerAdapter(logging.getLogger("soketi_impl.picows"), {})

#: Unsent bytes a WebSocket connection may have queued before it is closed with 4100.
MAX_WRITE_BUFFER = 4 * 1024 * 1024
#: Frames one fragmented message may take (first frame included); over it: 1009.
MAX_FRAGMENTS = 256

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONT = WSMsgType.CONTINUATION
_PING = WSMsgType.PING
_PONG = WSMsgType.PONG
_CLOSE = WSMsgType.CLOSE


def wire_close_code(code: int | None) -> int:
    """``code`` if a close frame may carry it (1000-1003, 1007-1011, 3000-4999), else 1000.

    0 (no code), 1004, 1005, 1006 and 1015 are reserved for local use (RFC 6455
    7.4.1); Node's ``ws`` fails a connection whose close frame carries one.

    >>> wire_close_code(0), wire_close_code(1005), wire_close_code(4100), wire_close_code(1001)
    (1000, 1000, 4100, 1001)
    """
    if code is None:
        return 1000
    if 1000 <= code <= 1003 or 1007 <= code <= 1011 or 3000 <= code <= 4999:
        return code
    return 1000


class PusherListener(WSListener):
    """The picows listener of one WebSocket connection: feeds the router.

    It is the ``native`` of its :class:`Connection` (``send``/``close``) and gives the
    fan-out a raw write path: pre-framed bytes straight to the socket transport.
    """

    __slots__ = ("router", "path", "conn", "transport", "socket_id", "max_message", "fragments", "fragment_count")

    def __init__(self, router: Router, path: str, socket_id: str, max_message: int = 101 * 1024) -> None:
        self.router = router
        self.path = path
        self.socket_id = socket_id
        self.conn: Connection | None = None
        self.transport: Any = None
        #: largest message reassembled from fragments (a single frame is bounded by picows)
        self.max_message = max_message
        #: the payload so far of a fragmented message, or None
        self.fragments: bytearray | None = None
        self.fragment_count = 0

    # -- native socket interface for Connection --
    def send(self, message: str | bytes) -> None:
        """Send one text message (the :class:`Connection` native interface)."""
        if isinstance(message, str):
            message = message.encode()
        self.transport.send(_TEXT, message)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Send a close frame (a code valid on the wire) and drop the socket."""
        t = self.transport
        if t is None or t.is_disconnected:
            return
        if not t.is_close_frame_sent:
            t.send_close(wire_close_code(code), (reason or "").encode()[:120])
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
                self._over_capacity()

    __call__ = raw_write

    def _over_capacity(self) -> None:
        log.info("socket %s cannot keep up (write buffer over %d bytes): closing with 4100",
                 self.socket_id, MAX_WRITE_BUFFER)
        self.close(4100, "Over capacity: the client is not reading fast enough.")

    # -- picows callbacks --
    def on_ws_connected(self, transport: Any) -> None:
        """picows: the handshake is done; register the connection with the router."""
        self.transport = transport
        # picows keeps the upgrade request and response, a weak proxy and a future on
        # the transport for the connection's lifetime; nothing uses them from here on.
        drop_handshake_leftovers(transport)
        shrink_idle_buffers(transport)  # picows's 1 KiB write buffer sits idle: ~1 KB back
        # The listener itself is the raw writer (``__call__``): no bound method to keep.
        self.conn = Connection(self.socket_id, self, path=self.path, raw_write=self)
        self.router.feed("new", self.conn)

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        """picows: one frame from the client."""
        if self.fragments is None:
            payload = data_payload(frame)  # the common case: one whole, clean message
            if payload is not None:
                if self.conn is not None:
                    self.router.feed("message", self.conn, payload)
                return
        self._other_frame(transport, frame)

    def _other_frame(self, transport: Any, frame: Any) -> None:
        kind = frame.msg_type
        if kind == _CLOSE:
            # Echo the peer's code when a close frame may carry it: an empty close
            # frame reads as 0, which must never go back on the wire.
            if not transport.is_close_frame_sent:
                transport.send_close(wire_close_code(frame.get_close_code()))
            transport.disconnect()
            return
        if transport.is_close_frame_sent:
            return  # closing: the rest of the read buffer is not looked at
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            self._fail(1002, "RSV bits set without a negotiated extension.")
            return
        self._touch()
        if kind == _PING:
            # picows's auto-pong would write past our write-buffer bound.
            transport.send_pong(frame.get_payload_as_bytes())
            if transport.underlying_transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
                self._over_capacity()
        elif kind == _PONG:
            pass
        elif kind == _TEXT or kind == _BINARY:
            if self.fragments is not None:
                self._fail(1002, "A new data frame inside a fragmented message.")
            elif frame.fin:
                self._fail(1007, "Text is not valid UTF-8.")  # data_payload refused only that
            else:
                self.fragments = bytearray(frame.get_payload_as_memoryview())
                self.fragment_count = 1
        elif kind == _CONT:
            fragments = self.fragments
            if fragments is None:
                self._fail(1002, "A continuation frame outside a fragmented message.")
                return
            self.fragment_count += 1
            if len(fragments) + frame.payload_size > self.max_message:
                self._fail(1009, "Message too big.")
            elif self.fragment_count > MAX_FRAGMENTS:
                self._fail(1009, f"Message in more than {MAX_FRAGMENTS} fragments.")
            else:
                fragments += frame.get_payload_as_memoryview()
                if frame.fin:
                    self.fragments = None
                    message = bytes(fragments)
                    if not message.isascii() and not _is_utf8(message):
                        self._fail(1007, "Text is not valid UTF-8.")
                    elif self.conn is not None:
                        self.router.feed("message", self.conn, message)

    def _touch(self) -> None:
        # Frames the core never sees (pings, pongs, fragments) still show the client
        # is there; ``touch`` is the core's hook for that, when it has one.
        conn = self.conn
        if conn is not None:
            touch = getattr(conn.state, "touch", None)
            if touch is not None:
                touch()

    def _fail(self, code: int, reason: str) -> None:
        log.debug("socket %s: closing with %d (%s)", self.socket_id, code, reason)
        self.fragments = None
        self.close(code, reason)

    def on_ws_disconnected(self, transport: Any) -> None:
        """picows: the socket is gone; tell the router (the core forgets the connection)."""
        self.fragments = None
        conn = self.conn
        if conn is None:
            return
        code, reason = None, None
        hs = transport.close_handshake
        if hs is not None and hs.recv is not None:
            # 0 is picows's "no code in the frame": RFC 6455 calls that 1005.
            code, reason = int(hs.recv.code) or 1005, hs.recv.reason
        conn.closed = True
        self.router.feed("closed", conn, code, reason)
        self.conn = None
        self.transport = None


def hand_off(transport: Any, data: bytes, router: Router, path: str, socket_id: str, opts: Any) -> None:
    """Switch ``transport`` to a picows ``WSProtocol`` and replay ``data`` (the upgrade request).

    The protocol is built the way ``picows.ws_create_server`` builds it (positional
    arguments: picows is pinned exactly), with auto-pong off: the listener answers
    pings itself, under its write-buffer bound. ``opts`` is the front door's options.
    """

    path = _shared_path(path)

    def factory(request: Any) -> PusherListener:
        return PusherListener(router, path, socket_id, opts.max_frame_size)

    # uvloop keeps the bound data_received of the last plain protocol a transport had;
    # a shared stand-in in between lets the front door's shell go (~240 bytes each).
    transport.set_protocol(_DETACHED)
    ws = WSProtocol(
        None, None, False, factory, _picows_log, True, opts.handshake_timeout,
        False, 20.0, 20.0, WSAutoPingStrategy.PING_WHEN_IDLE, False,
        opts.max_frame_size, None, opts.read_buffer_init_size,
    )
    transport.set_protocol(ws)
    ws.connection_made(transport)
    view = memoryview(data)
    while view:
        buf = ws.get_buffer(len(view))
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        ws.buffer_updated(n)
        view = view[n:]
    # Out of picows's callbacks now: its 2 KiB read buffer, idle, can shrink (~1.3 KB),
    # and its finished handshake future and client-side key can go (~200 bytes).
    shrink_read_buffer(ws)
    drop_protocol_leftovers(ws)


#: Request paths seen lately, each kept once: clients of one app mostly connect with
#: the same ``/app/KEY?protocol=7&client=js&version=...``, ~100 bytes a connection.
_PATHS: dict[str, str] = {}
_MAX_PATHS = 256


def _shared_path(path: str) -> str:
    """One ``str`` object for equal request paths (a bounded table, emptied when full)."""
    shared = _PATHS.get(path)
    if shared is None:
        if len(_PATHS) >= _MAX_PATHS:
            _PATHS.clear()
        _PATHS[path] = shared = path
    return shared


def _discard(data: bytes) -> None:
    """Input for a transport between two protocols: none arrives (the switch is synchronous)."""


class _Detached(asyncio.Protocol):
    """Stand-in protocol: its ``data_received`` is one function, not a bound method."""

    data_received = staticmethod(_discard)


_DETACHED = _Detached()


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
