"""The server side of a WebSocket connection over an asyncio transport, pure Python twin.

The front door reads the upgrade request (httptools), writes the ``101`` itself
(:func:`accept_response`) and switches the transport to a :class:`WSConn`, which
from then on reads the client's frames and writes the server's (RFC 6455):

- a whole TEXT or BINARY frame with valid UTF-8 is one message, fed to the router
  (binary frames are parsed as JSON text, as uWebSockets and so soketi do);
- a client frame must be masked; an unknown opcode, a fragmented or oversized
  (over 125 bytes) control frame, a length not in its shortest form, RSV bits (no
  extension is negotiated), a new data frame inside a fragmented message or a stray
  continuation close with 1002; invalid UTF-8 with 1007; a frame over ``max_frame``,
  or a message over it in more fragments, or in more than :data:`MAX_FRAGMENTS`, 1009;
- pings are answered under the write-buffer bound (4100 for a peer that sends pings
  and never reads); any frame counts as client activity;
- the close handshake echoes the peer's code when a close frame may carry it (never
  0, 1004-1006 or 1015 on the wire), and no data frame follows a close frame.

Bounds: an incomplete frame is held (one ``bytearray``, up to ``max_frame`` plus its
header: the header is checked before the payload is waited for), a fragmented
message up to ``max_frame`` and :data:`MAX_FRAGMENTS` frames, unsent bytes up to
:data:`MAX_WRITE_BUFFER`. Per connection: one object with the slots below, and the
:class:`~soketi_impl.connection.Connection` it drives.

The compiled twin (``_ws_c.pyx``) does the same, reading frames in place.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from typing import Any

from ..connection import Connection

__all__ = [
    "MAX_FRAGMENTS", "MAX_WRITE_BUFFER", "WSConn", "accept_response", "frame", "wire_close_code",
]

log = logging.getLogger("soketi_impl.http")

#: Unsent bytes a WebSocket connection may have queued before it is closed with 4100.
MAX_WRITE_BUFFER = 4 * 1024 * 1024
#: Frames one fragmented message may take (first frame included); over it: 1009.
MAX_FRAGMENTS = 256

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_101 = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
# Close codes a client's close frame may carry below 3000 (as picows accepted them);
# 3000 and over are the applications' own.
_KNOWN_CODES = frozenset((1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))

_CLOSE_SENT = 1  # our close frame is out: nothing more is written or read
_GONE = 2  # the transport is lost


def accept_response(key: str | None) -> bytes | None:
    """The ``101`` answering a ``Sec-WebSocket-Key``, or None when the key is not 16 bytes in base64.

    >>> accept_response("dGhlIHNhbXBsZSBub25jZQ==").split(b"\\r\\n")[3]
    b'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo='
    >>> accept_response("short") is None
    True
    """
    if not key or len(key) != 24 or not key.isascii():
        return None
    raw = key.encode("ascii")
    try:
        if len(base64.b64decode(raw, validate=True)) != 16:
            return None
    except binascii.Error:
        return None
    return _101 + base64.b64encode(hashlib.sha1(raw + _GUID).digest()) + b"\r\n\r\n"


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


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked server frame (FIN set) of ``opcode`` carrying ``payload``."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


def _unmask(data: bytes | bytearray, start: int, n: int, mask: bytes) -> bytes:
    if n == 0:
        return b""
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(data[start:start + n], "little") ^ key).to_bytes(n, "little")


def _is_utf8(data: bytes | bytearray) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class WSConn:
    """The protocol of one upgraded connection: frames in, the router fed, bytes out.

    It is the native of its :class:`Connection` (``send``/``close``) and its raw
    writer (``__call__``: pre-framed bytes straight to the transport), so the
    connection keeps no bound method.
    """

    __slots__ = (
        "router", "conn", "transport", "fragments", "partial", "cork", "recv_reason",
        "flags", "recv_code", "fragment_count", "max_frame",
    )

    def __init__(self, router: Any, max_frame: int = 100 * 1024) -> None:
        self.router = router
        self.conn: Connection | None = None
        self.transport: Any = None
        #: the payload so far of a fragmented message, or None
        self.fragments: bytearray | None = None
        #: the bytes of an incomplete frame, or None
        self.partial: bytearray | None = None
        #: the 101 and what follows it, until they are written together (one write)
        self.cork: bytes | None = None
        self.recv_reason = ""
        self.flags = 0
        #: the code of the peer's close frame (0: none in it), -1 until one arrives
        self.recv_code = -1
        self.fragment_count = 0
        self.max_frame = max_frame

    def start(self, transport: Any, response: bytes, rest: bytes, socket_id: str, path: str) -> Connection:
        """Take over ``transport``: write ``response`` (the 101), register the connection
        with the router, then read ``rest`` (frames that came with the upgrade request).

        What the router sends while it admits the connection goes out with the 101 in
        one write.
        """
        self.transport = transport
        self.cork = response
        transport.set_protocol(self)
        self.conn = conn = Connection(socket_id, self, path=path, raw_write=self)
        try:
            self.router.feed("new", conn)
            if rest and not self.flags:
                self.data_received(rest)
        except BaseException:
            self._uncork()
            raise
        if self.cork is not None:
            # Nothing written yet: the core's greeting leaves with the outbox flush,
            # later in this loop iteration; the 101 waits for it (one write, not two),
            # or for this callback, whichever comes first.
            asyncio.get_running_loop().call_soon(self._uncork)
        return conn

    def _uncork(self) -> None:
        cork = self.cork
        if cork is not None:
            self.cork = None
            if not self.flags & _GONE:
                self.transport.write(cork)

    # -- native socket interface for Connection --
    def send(self, message: str | bytes) -> None:
        """Send one text message (the :class:`Connection` native interface)."""
        if isinstance(message, str):
            message = message.encode()
        self(frame(0x1, message))

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Send a close frame (a code valid on the wire) and drop the socket."""
        flags = self.flags
        if flags & _GONE or self.transport is None:
            return
        if not flags & _CLOSE_SENT:
            self.flags = flags | _CLOSE_SENT
            body = frame(0x8, wire_close_code(code).to_bytes(2, "big") + (reason or "").encode()[:120])
            if self.cork is not None:
                self.cork += body
            else:
                self.transport.write(body)  # no bound check: the socket is being let go
        self.fragments = self.partial = None
        self._uncork()
        # A peer that is over capacity (4100) is not reading: a graceful close would
        # wait for its full write buffer to drain, so abort.
        if code == 4100:
            self.transport.abort()
        else:
            self.transport.close()

    def __call__(self, data: bytes) -> None:
        """Pre-framed bytes straight to the socket, until our close frame is out."""
        if not self.flags:
            self._write(data)

    def _write(self, data: bytes) -> None:
        if self.cork is not None:
            # the first write after the 101 takes it along
            self.cork += data
            self._uncork()
            return
        t = self.transport
        t.write(data)
        # Backpressure lives here rather than in the Sink, which saves every
        # connection a bound method: a peer that does not read is cut off (4100).
        if t.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self._over_capacity()

    def _over_capacity(self) -> None:
        conn = self.conn
        log.info("socket %s cannot keep up (write buffer over %d bytes): closing with 4100",
                 conn.id if conn is not None else "?", MAX_WRITE_BUFFER)
        self.close(4100, "Over capacity: the client is not reading fast enough.")

    # -- asyncio protocol --
    def connection_made(self, transport: Any) -> None:
        """Not called: :meth:`start` takes over a transport that is already connected."""

    def data_received(self, data: bytes) -> None:
        """Frames from the client: each whole one handled, an incomplete one kept."""
        if self.flags:
            return
        buf: bytes | bytearray
        partial = self.partial
        if partial is not None:
            partial += data
            buf = partial
        else:
            buf = data
        n = len(buf)
        pos = 0
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            opcode = b0 & 0x0F
            if not b1 & 0x80:
                self._fail(1002, "A client frame must be masked.")
                return
            if b0 & 0x70:
                self._fail(1002, "RSV bits set without a negotiated extension.")
                return
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 4], "big")
                head = 4
                if length < 126:
                    self._fail(1002, "A frame length not in its shortest form.")
                    return
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                head = 10
                if length >> 63 or length < 65536:
                    self._fail(1002, "A frame length not in its shortest form.")
                    return
            if opcode & 0x8:
                if opcode > 0xA:
                    self._fail(1002, f"Unknown opcode {opcode:#x}.")
                    return
                if not b0 & 0x80:
                    self._fail(1002, "A fragmented control frame.")
                    return
                if length > 125:
                    self._fail(1002, "A control frame over 125 bytes.")
                    return
            elif opcode > 0x2:
                self._fail(1002, f"Unknown opcode {opcode:#x}.")
                return
            elif length > self.max_frame:
                self._fail(1009, "Message too big.")
                return
            start = pos + head + 4
            if n - start < length:
                break
            payload = _unmask(buf, start, length, bytes(buf[pos + head:start]))
            pos = start + length
            if (opcode == 0x1 or opcode == 0x2) and b0 & 0x80 and self.fragments is None:
                if not _is_utf8(payload):
                    self._fail(1007, "Text is not valid UTF-8.")
                    return
                conn = self.conn
                if conn is not None:
                    self.router.feed("message", conn, payload)
            else:
                self._other_frame(b0, payload)
            if self.flags:
                return  # closing: the rest of the read is not looked at
        if pos == n:
            self.partial = None
        elif partial is None:
            self.partial = bytearray(memoryview(buf)[pos:])
        else:
            del partial[:pos]

    def _other_frame(self, b0: int, payload: bytes) -> None:
        opcode = b0 & 0x0F
        fin = b0 & 0x80
        if opcode == 0x8:
            self._close_received(payload)
            return
        self._touch()
        if opcode == 0x9:
            # answered here, under the same write-buffer bound as everything else
            self._write(frame(0xA, payload))
        elif opcode == 0xA:
            pass
        elif opcode == 0x1 or opcode == 0x2:
            if self.fragments is not None:
                self._fail(1002, "A new data frame inside a fragmented message.")
            else:
                self.fragments = bytearray(payload)
                self.fragment_count = 1
        else:  # a continuation
            fragments = self.fragments
            if fragments is None:
                self._fail(1002, "A continuation frame outside a fragmented message.")
                return
            self.fragment_count += 1
            if len(fragments) + len(payload) > self.max_frame:
                self._fail(1009, "Message too big.")
            elif self.fragment_count > MAX_FRAGMENTS:
                self._fail(1009, f"Message in more than {MAX_FRAGMENTS} fragments.")
            else:
                fragments += payload
                if fin:
                    self.fragments = None
                    message = bytes(fragments)
                    if not _is_utf8(message):
                        self._fail(1007, "Text is not valid UTF-8.")
                    elif self.conn is not None:
                        self.router.feed("message", self.conn, message)

    def _close_received(self, payload: bytes) -> None:
        code = 0
        reason = ""
        if len(payload) == 1:
            self._fail(1002, "A close frame with a one-byte body.")
            return
        if len(payload) >= 2:
            code = int.from_bytes(payload[:2], "big")
            if code < 3000 and code not in _KNOWN_CODES:
                self._fail(1002, f"A close frame with an invalid code {code}.")
                return
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                self._fail(1007, "A close reason that is not valid UTF-8.")
                return
        self.recv_code = code
        self.recv_reason = reason
        # Echo the peer's code when a close frame may carry it: an empty close frame
        # must never be answered with 0.
        self.close(wire_close_code(code))

    def _touch(self) -> None:
        # Frames the core never sees (pings, pongs, fragments) still show the client
        # is there; ``touch`` is the core's hook for that, when it has one.
        conn = self.conn
        if conn is not None:
            touch = getattr(conn.state, "touch", None)
            if touch is not None:
                touch()

    def _fail(self, code: int, reason: str) -> None:
        conn = self.conn
        log.debug("socket %s: closing with %d (%s)", conn.id if conn is not None else "?", code, reason)
        self.close(code, reason)

    def eof_received(self) -> None:
        """The peer will send no more: the transport closes."""

    def pause_writing(self) -> None:
        """The write buffer is over the transport's high-water mark: the 4100 bound decides."""

    def resume_writing(self) -> None:
        """The write buffer drained."""

    def connection_lost(self, exc: BaseException | None) -> None:
        """The socket is gone; tell the router (the core forgets the connection)."""
        self.flags |= _GONE | _CLOSE_SENT
        self.fragments = self.partial = self.cork = None
        conn = self.conn
        if conn is None:
            return
        code: int | None = None
        reason: str | None = None
        if self.recv_code >= 0:
            # no code in the peer's close frame: RFC 6455 calls that 1005
            code, reason = self.recv_code or 1005, self.recv_reason
        conn.closed = True
        self.conn = None
        self.transport = None
        self.router.feed("closed", conn, code, reason)
