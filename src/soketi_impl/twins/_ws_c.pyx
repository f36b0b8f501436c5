# cython: language_level=3
"""The server side of a WebSocket connection over an asyncio transport, compiled twin of ``_ws_py``.

Same behaviour and names as the pure-Python twin (its docstring has the rules and
bounds). Here a frame is read in place from the bytes uvloop hands over: the header
checked, the payload unmasked eight bytes at a time straight into the ``bytes`` the
router gets, its UTF-8 checked with the protocol twin's routine. An idle connection
is one ``WSConn`` (its C fields below) and its ``Connection``: no read or write buffer
of its own until a frame arrives split across reads.
"""

from asyncio import get_running_loop as _get_running_loop
import logging

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

from soketi_impl.connection import Connection

from soketi_impl.twins._fanout_c cimport frame_text
from soketi_impl.twins._protocol_c cimport utf8_valid

__all__ = [
    "MAX_FRAGMENTS", "MAX_WRITE_BUFFER", "WSConn", "accept_response", "frame", "wire_close_code",
]

log = logging.getLogger("soketi_impl.http")

cdef Py_ssize_t _MAX_WRITE_BUFFER = 4 * 1024 * 1024
cdef int _MAX_FRAGMENTS = 256
MAX_WRITE_BUFFER = _MAX_WRITE_BUFFER
MAX_FRAGMENTS = _MAX_FRAGMENTS

cdef bytes _101 = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "

cdef enum:
    _CLOSE_SENT = 1  # our close frame is out: nothing more is written or read
    _GONE = 2  # the transport is lost


cdef extern from "soketi_wskey.h":
    # csrc/soketi_wskey.h: SHA-1 and base64 of the handshake in C (hashlib and base64
    # cost ~12k instructions a connection through their Python objects)
    int skw_accept(const unsigned char* key, size_t n, char* out) nogil

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL


def accept_response(key):
    """The ``101`` answering a ``Sec-WebSocket-Key``, or None when the key is not 16 bytes in base64."""
    if type(key) is not str or not (<str>key).isascii():
        return None
    cdef Py_ssize_t n
    cdef const char* k = PyUnicode_AsUTF8AndSize(key, &n)
    cdef Py_ssize_t head = PyBytes_GET_SIZE(_101)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, head + 32)
    cdef char* p = PyBytes_AS_STRING(out)
    if not skw_accept(<const unsigned char*>k, <size_t>n, p + head):
        return None
    memcpy(p, PyBytes_AS_STRING(_101), head)
    memcpy(p + head + 28, b"\r\n\r\n", 4)
    return out


cpdef int wire_close_code(object code) except -1:
    """``code`` if a close frame may carry it (1000-1003, 1007-1011, 3000-4999), else 1000."""
    if code is None:
        return 1000
    cdef long c = code
    if 1000 <= c <= 1003 or 1007 <= c <= 1011 or 3000 <= c <= 4999:
        return <int>c
    return 1000


cdef inline bint _known_code(long c) noexcept:
    # Close codes a client's close frame may carry below 3000 (as picows accepted them).
    return (1000 <= c <= 1003) or (1006 <= c <= 1014)


cpdef bytes frame(int opcode, bytes payload):
    """One unmasked server frame (FIN set) of ``opcode`` carrying ``payload``."""
    if opcode == 0x1:
        return frame_text(payload)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    cdef bytes out
    cdef unsigned char* p
    if n < 126:  # control frames: always this size
        out = PyBytes_FromStringAndSize(NULL, n + 2)
        p = <unsigned char*>PyBytes_AS_STRING(out)
        p[0] = <unsigned char>(0x80 | opcode)
        p[1] = <unsigned char>n
        memcpy(p + 2, PyBytes_AS_STRING(payload), <size_t>n)
        return out
    # a longer frame: frame_text's header with this opcode (its bytes are new, ours alone)
    out = frame_text(payload)
    (<unsigned char*>PyBytes_AS_STRING(out))[0] = <unsigned char>(0x80 | opcode)
    return out


cdef bytes _unmask(const unsigned char* src, Py_ssize_t n, const unsigned char* mask):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef unsigned char* dst = <unsigned char*>PyBytes_AS_STRING(out)
    cdef uint64_t m8, w
    cdef unsigned char m4[8]
    cdef Py_ssize_t i = 0
    memcpy(m4, mask, 4)
    memcpy(m4 + 4, mask, 4)
    memcpy(&m8, m4, 8)
    while i + 8 <= n:
        memcpy(&w, src + i, 8)
        w ^= m8
        memcpy(dst + i, &w, 8)
        i += 8
    while i < n:
        dst[i] = src[i] ^ mask[i & 3]
        i += 1
    return out


cdef inline bint _utf8(bytes b) noexcept:
    return utf8_valid(<const unsigned char*>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))


cdef class WSConn:
    """The protocol of one upgraded connection: frames in, the router fed, bytes out.

    It is the native of its :class:`Connection` (``send``/``close``) and its raw
    writer (``__call__``: pre-framed bytes straight to the transport), so the
    connection keeps no bound method.
    """

    cdef public object router
    cdef public object conn
    cdef public object transport
    cdef public object fragments     # the payload so far of a fragmented message, or None
    cdef public object partial       # the bytes of an incomplete frame (bytearray), or None
    cdef public object cork          # bytes: the 101 and what follows it, until they are written together
    cdef public object recv_reason
    cdef public int flags
    cdef public int recv_code        # the peer's close code (0: none in its frame), -1 until one arrives
    cdef public int fragment_count
    cdef public Py_ssize_t max_frame

    def __init__(self, router, Py_ssize_t max_frame=100 * 1024):
        self.router = router
        self.conn = None
        self.transport = None
        self.fragments = None
        self.partial = None
        self.cork = None
        self.recv_reason = ""
        self.flags = 0
        self.recv_code = -1
        self.fragment_count = 0
        self.max_frame = max_frame

    def start(self, transport, bytes response, bytes rest, socket_id, path):
        """Take over ``transport``: write ``response`` (the 101), register the connection
        with the router, then read ``rest`` (frames that came with the upgrade request)."""
        self.transport = transport
        self.cork = response
        transport.set_protocol(self)
        conn = Connection(socket_id, self, path=path, raw_write=self)
        self.conn = conn
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
            _get_running_loop().call_soon(self._uncork)
        return conn

    def _uncork(self):
        cork = self.cork
        if cork is not None:
            self.cork = None
            if not self.flags & _GONE:
                self.transport.write(cork)

    # -- native socket interface for Connection --
    def send(self, message):
        """Send one text message (the :class:`Connection` native interface)."""
        if isinstance(message, str):
            message = (<str>message).encode()
        if not self.flags:
            self._write(frame_text(message))

    def close(self, code=None, reason=None):
        """Send a close frame (a code valid on the wire) and drop the socket."""
        cdef int flags = self.flags
        if flags & _GONE or self.transport is None:
            return
        cdef bytes body
        if not flags & _CLOSE_SENT:
            self.flags = flags | _CLOSE_SENT
            body = frame(0x8, wire_close_code(code).to_bytes(2, "big") + (reason or "").encode()[:120])
            if self.cork is not None:
                self.cork = self.cork + body
            else:
                self.transport.write(body)  # no bound check: the socket is being let go
        self.fragments = None
        self.partial = None
        self._uncork()
        # A peer that is over capacity (4100) is not reading: a graceful close would
        # wait for its full write buffer to drain, so abort.
        if code == 4100:
            self.transport.abort()
        else:
            self.transport.close()

    def __call__(self, bytes data):
        """Pre-framed bytes straight to the socket, until our close frame is out."""
        if not self.flags:
            self._write(data)

    cdef _write(self, bytes data):
        if self.cork is not None:
            # the first write after the 101 takes it along
            self.cork = self.cork + data
            self._uncork()
            return
        t = self.transport
        t.write(data)
        # Backpressure lives here rather than in the Sink: a peer that does not read
        # is cut off (4100).
        if t.get_write_buffer_size() > _MAX_WRITE_BUFFER:
            self._over_capacity()

    cdef _over_capacity(self):
        conn = self.conn
        log.info("socket %s cannot keep up (write buffer over %d bytes): closing with 4100",
                 conn.id if conn is not None else "?", _MAX_WRITE_BUFFER)
        self.close(4100, "Over capacity: the client is not reading fast enough.")

    # -- asyncio protocol --
    def connection_made(self, transport):
        """Not called: :meth:`start` takes over a transport that is already connected."""

    def data_received(self, data):
        """Frames from the client: each whole one handled, an incomplete one kept."""
        if self.flags:
            return
        cdef object buf
        cdef object partial = self.partial
        cdef const unsigned char* s
        cdef Py_ssize_t n
        if partial is not None:
            partial += data
            buf = partial
            s = <const unsigned char*>PyByteArray_AS_STRING(partial)
            n = PyByteArray_GET_SIZE(partial)
        else:
            if type(data) is not bytes:
                data = bytes(data)
            buf = data
            s = <const unsigned char*>PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t pos = 0, head, start
        cdef unsigned char b0, b1, opcode
        cdef uint64_t length
        cdef int i
        cdef bytes payload
        while n - pos >= 2:
            b0 = s[pos]
            b1 = s[pos + 1]
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
                length = (<uint64_t>s[pos + 2] << 8) | s[pos + 3]
                head = 4
                if length < 126:
                    self._fail(1002, "A frame length not in its shortest form.")
                    return
            elif length == 127:
                if n - pos < 10:
                    break
                length = 0
                for i in range(8):
                    length = (length << 8) | s[pos + 2 + i]
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
            elif length > <uint64_t>self.max_frame:
                self._fail(1009, "Message too big.")
                return
            start = pos + head + 4
            if n - start < <Py_ssize_t>length:  # (length is bounded by now: max_frame or 125)
                break
            payload = _unmask(s + start, <Py_ssize_t>length, s + pos + head)
            pos = start + <Py_ssize_t>length
            if (opcode == 0x1 or opcode == 0x2) and b0 & 0x80 and self.fragments is None:
                if not _utf8(payload):
                    self._fail(1007, "Text is not valid UTF-8.")
                    return
                if self.conn is not None:
                    self.router.feed("message", self.conn, payload)
            else:
                self._other_frame(b0, payload)
            if self.flags:
                return  # closing: the rest of the read is not looked at
            if partial is not None:
                # the buffer may not have moved (nothing appends to it during a
                # callback), but read its address again rather than assume
                s = <const unsigned char*>PyByteArray_AS_STRING(partial)
        if pos == n:
            self.partial = None
        elif partial is None:
            self.partial = bytearray(memoryview(buf)[pos:])
        else:
            del partial[:pos]

    cdef _other_frame(self, unsigned char b0, bytes payload):
        cdef unsigned char opcode = b0 & 0x0F
        cdef bint fin = (b0 & 0x80) != 0
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
            if len(fragments) + PyBytes_GET_SIZE(payload) > self.max_frame:
                self._fail(1009, "Message too big.")
            elif self.fragment_count > _MAX_FRAGMENTS:
                self._fail(1009, f"Message in more than {_MAX_FRAGMENTS} fragments.")
            else:
                fragments += payload
                if fin:
                    self.fragments = None
                    message = bytes(fragments)
                    if not _utf8(message):
                        self._fail(1007, "Text is not valid UTF-8.")
                    elif self.conn is not None:
                        self.router.feed("message", self.conn, message)

    cdef _close_received(self, bytes payload):
        cdef long code = 0
        reason = ""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(payload)
        if n == 1:
            self._fail(1002, "A close frame with a one-byte body.")
            return
        if n >= 2:
            code = (p[0] << 8) | p[1]
            if code < 3000 and not _known_code(code):
                self._fail(1002, f"A close frame with an invalid code {code}.")
                return
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                self._fail(1007, "A close reason that is not valid UTF-8.")
                return
        self.recv_code = <int>code
        self.recv_reason = reason
        # Echo the peer's code when a close frame may carry it: an empty close frame
        # must never be answered with 0.
        self.close(wire_close_code(code))

    cdef _touch(self):
        # Frames the core never sees (pings, pongs, fragments) still show the client
        # is there; ``touch`` is the core's hook for that, when it has one.
        conn = self.conn
        if conn is not None:
            touch = getattr(conn.state, "touch", None)
            if touch is not None:
                touch()

    cdef _fail(self, int code, str reason):
        conn = self.conn
        log.debug("socket %s: closing with %d (%s)", conn.id if conn is not None else "?", code, reason)
        self.close(code, reason)

    def eof_received(self):
        """The peer will send no more: the transport closes."""

    def pause_writing(self):
        """The write buffer is over the transport's high-water mark: the 4100 bound decides."""

    def resume_writing(self):
        """The write buffer drained."""

    def connection_lost(self, exc):
        """The socket is gone; tell the router (the core forgets the connection)."""
        self.flags |= _GONE | _CLOSE_SENT
        self.fragments = None
        self.partial = None
        self.cork = None
        conn = self.conn
        if conn is None:
            return
        code = None
        reason = None
        if self.recv_code >= 0:
            # no code in the peer's close frame: RFC 6455 calls that 1005
            code, reason = (self.recv_code or 1005), self.recv_reason
        conn.closed = True
        self.conn = None
        self.transport = None
        self.router.feed("closed", conn, code, reason)
