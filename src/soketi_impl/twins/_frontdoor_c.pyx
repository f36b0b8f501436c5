# cython: language_level=3, annotation_typing=False
"""The HTTP front door's request handling, compiled twin of ``_frontdoor_py``.

The same code as the pure twin (see its docstring), with the connection's flags,
sizes and deadline as C fields: the httptools callbacks and the answer loop run
without the interpreter.
"""

import asyncio
import inspect
import logging
from collections import deque
from functools import partial

import httptools
import orjson

from libc.string cimport memchr, memcmp, memcpy

from soketi_impl.http.types import REASONS, HttpRequest, HttpResponse
from soketi_impl.twins._ws import accept_response

__all__ = ["EXPRESS_ANSWER", "FrontDoorBase", "answer_head"]

log = logging.getLogger("soketi_impl.http")

_REASONS = {**REASONS, 408: "Request Timeout", 426: "Upgrade Required"}
cdef dict _STATUS_LINES = {status: f"HTTP/1.1 {status} {reason}\r\n" for status, reason in _REASONS.items()}
cdef dict _NO_HEADERS = {}
cdef object _new_request = HttpRequest.__new__
cdef list _NO_OUT = []  # shared by closed connections: nothing is appended once closing

# The header names clients send, as they spell them, to their lower-cased str: one dict
# lookup instead of a decode and a lower() per header. Fixed: other names are decoded.
cdef dict _HEADER_NAMES = {
    spelling.encode("latin-1"): spelling.lower()
    for name in (
        "Host", "User-Agent", "Accept", "Accept-Encoding", "Accept-Language", "Connection",
        "Content-Type", "Content-Length", "Transfer-Encoding", "Expect", "Origin",
        "X-Pusher-Library", "Authorization", "Upgrade", "Sec-WebSocket-Key",
        "Sec-WebSocket-Version", "Sec-WebSocket-Extensions", "Sec-WebSocket-Protocol",
        "Cache-Control", "Pragma", "X-Forwarded-For", "X-Real-IP", "X-Requested-With",
        "Access-Control-Request-Method", "Access-Control-Request-Headers",
    )
    for spelling in (name, name.lower())
}


cdef extern from "Python.h":
    char* PyBytes_AS_STRING(object o)
    Py_ssize_t PyBytes_GET_SIZE(object o)
    bytes PyBytes_FromStringAndSize(const char* v, Py_ssize_t n)
    str PyUnicode_DecodeLatin1(const char* s, Py_ssize_t size, const char* errors)
    str PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void* PyUnicode_DATA(object o)

# FrontDoorBase._simple_request: the bytes of a plain request's target (unreserved,
# sub-delimiters, ":@/?%") and of its header names (letters, digits, "-").
cdef bint _URL_OK[256]
cdef bint _NAME_OK[256]
for _c in range(256):
    _URL_OK[_c] = chr(_c) in (
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/?%"
    )
    _NAME_OK[_c] = chr(_c) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-"


# The lower-case names of _HEADER_NAMES, for _simple_request to take a header's key
# without making its name a bytes object first.
cdef list _KNOWN_NAMES = sorted(set(_HEADER_NAMES.values()))
cdef bytes _KNOWN_JOINED = b"".join([name.encode("latin-1") for name in _KNOWN_NAMES])
cdef Py_ssize_t _KNOWN_COUNT = len(_KNOWN_NAMES)
cdef Py_ssize_t _KNOWN_LENGTHS[64]
for _c, _name in enumerate(_KNOWN_NAMES):
    _KNOWN_LENGTHS[_c] = len(_name)


cdef object _known_name(const unsigned char* name, Py_ssize_t n):
    """The lower-case str of a header name of _HEADER_NAMES spelt in any case, or None."""
    cdef const char* known = PyBytes_AS_STRING(_KNOWN_JOINED)
    cdef Py_ssize_t i
    for i in range(_KNOWN_COUNT):
        if _KNOWN_LENGTHS[i] == n and _lower_is(name, known, n):
            return _KNOWN_NAMES[i]
        known += _KNOWN_LENGTHS[i]
    return None


# The last answer's head and what decided it: a publisher gets the same answer over
# and over, and its head is then reused rather than formatted (one entry, all connections).
# (status, content type, headers, body length, keep-alive, head): one tuple, replaced
# whole, so a reader never sees half of one answer and half of another.
cdef tuple _LAST = None


cpdef bytes answer_head(status, str content_type, list headers, Py_ssize_t length, bint keep_alive):
    """The head of an answer as :meth:`FrontDoorBase._write` writes it."""
    line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n"
    extra = "".join([f"{k}: {v}\r\n" for k, v in headers]) if headers else ""
    if not keep_alive:
        extra += "Connection: close\r\n"
    if status != 204:  # a 204 has no content, so no content headers
        head = f"{line}Content-Type: {content_type}\r\nContent-Length: {length}\r\n{extra}\r\n"
    else:
        head = f"{line}{extra}\r\n"
    return head.encode("latin-1")


#: The answer to a trigger done by ``options.express`` (TriggerPath.express): what
#: HttpResponse(200, b"{}", headers=[("Access-Control-Allow-Origin", "*")]) is written as.
EXPRESS_ANSWER = answer_head(200, "application/json", [("Access-Control-Allow-Origin", "*")], 2, True) + b"{}"
cdef bytes _EXPRESS_ANSWER = EXPRESS_ANSWER
cdef bytes _FAILED = b'{"error":"Internal server error"}'


cdef bint _plain(list headers):
    """True when every header is a (str, str) tuple (so equal lists give equal heads)."""
    for item in headers:
        if type(item) is not tuple or len(<tuple>item) != 2:
            return False
        if type((<tuple>item)[0]) is not str or type((<tuple>item)[1]) is not str:
            return False
    return True


cdef inline str _ascii(const char* p, Py_ssize_t n):
    """A str of ``n`` ASCII bytes: what their latin-1 decoding gives, without its scan."""
    cdef str text = PyUnicode_New(n, 127)
    memcpy(PyUnicode_DATA(text), p, n)
    return text


cdef inline bint _lower_is(const unsigned char* s, const char* lower, Py_ssize_t n) noexcept:
    """``s[:n]`` equals ``lower`` (lower-case letters and "-") case-insensitively."""
    cdef Py_ssize_t i
    for i in range(n):
        if (s[i] | 0x20) != <unsigned char>lower[i]:
            return False
    return True


cdef inline Py_ssize_t _header_line(const unsigned char* s, Py_ssize_t n, Py_ssize_t i,
                                    Py_ssize_t* colon, Py_ssize_t* value_start) noexcept:
    """A plain header line ``Name: value`` starting at ``s[i]`` (the name letters, digits and
    ``-``; the value printable ASCII without leading or trailing space, then CRLF): the
    end of its value (its CR), with the colon's and the value's positions; -1 otherwise."""
    cdef Py_ssize_t start = i
    while i < n and _NAME_OK[s[i]]:
        i += 1
    colon[0] = i
    if i == start or n - i < 3 or s[i] != 58 or s[i + 1] != 32:  # ": "
        return -1
    i += 2
    value_start[0] = i
    while i < n and 32 <= s[i] <= 126:
        i += 1
    if i == value_start[0] or n - i < 2 or s[i] != 13 or s[i + 1] != 10:
        return -1
    if s[value_start[0]] == 32 or s[i - 1] == 32:
        return -1
    return i


# FrontDoorBase.flags: one C int for every flag.
cdef int _FIRST = 1  # still in the first request (an upgrade must be the first)
cdef int _BUSY = 2  # an async handler is running
cdef int _CLOSING = 4  # done with the socket: input is discarded
cdef int _CLOSE_AFTER = 8  # close once the queued answers are written
cdef int _WPAUSED = 16  # the transport's write buffer is over its high-water mark
cdef int _RPAUSED = 32  # reading is paused
cdef int _IN_BODY = 64  # the head is done, the body is being read
cdef int _OVERFLOW = 128  # too many pipelined requests: answer the queued ones, then 429
# A deadline to set once the current read is parsed (the head's, or the body's): one
# timer move per read rather than one per parser callback; a read that brings a whole
# request only moves it once, to the idle deadline after the answer.
cdef int _ARM_HEAD = 256
cdef int _ARM_BODY = 512
cdef int _ARM_IDLE = 16384  # (and the idle deadline, once the read's answers are out)
cdef int _ARMS = _ARM_HEAD | _ARM_BODY | _ARM_IDLE
cdef int _IN_MESSAGE = 1024  # httptools is inside a request (from its first byte to its end)
cdef int _WATCHED = 2048  # waiting for its first request under the listener's _FirstHeads
cdef int _SIMPLE_BODY = 4096  # a plain request's head was read here, its body is still coming
cdef int _READING = 8192  # inside data_received: answers wait in ``out`` for one write at the read's end
cdef Py_ssize_t _OUT_BATCH = 16  # answers held for one write at most (see _next)


cdef class FrontDoorBase


cdef class _FirstHeads:
    """The connections of one listener waiting for their first request head, and one
    timer for all of them (instead of a timer per connection, ~8k instructions each).

    Every connection gets the same ``head_timeout``, so the order they came in is the
    order of their deadlines (a dict keeps it). The timer follows the oldest deadline,
    at most ``granularity`` late, so a burst of connections costs a few timer moves, not
    one each. A connection leaves on its first read that does not finish its head (it
    then has its own timer, as before), its upgrade, or its end.
    """

    cdef dict doors
    cdef object loop
    cdef object timer
    cdef object fire_cb
    cdef double granularity

    def __init__(self, loop, double head_timeout):
        self.doors = {}
        self.loop = loop
        self.timer = None
        self.fire_cb = self._fire
        self.granularity = min(0.25, head_timeout / 10)

    cdef add(self, FrontDoorBase door, double deadline):
        self.doors[door] = deadline
        if self.timer is None:
            self.timer = self.loop.call_at(deadline, self.fire_cb)

    cdef discard(self, FrontDoorBase door):
        if door in self.doors:
            del self.doors[door]

    def _fire(self):
        self.timer = None
        cdef double now = self.loop.time()
        cdef list expired = []
        cdef double deadline = 0.0
        for door, when in self.doors.items():
            deadline = when
            if deadline > now:
                break
            expired.append(door)
        for door in expired:
            del self.doors[door]
            (<FrontDoorBase>door).flags &= ~_WATCHED
        for door in expired:
            (<FrontDoorBase>door)._on_timer()
        if self.doors and self.timer is None:
            deadline = next(iter(self.doors.values()))
            self.timer = self.loop.call_at(max(deadline, now + self.granularity), self.fire_cb)

    def __len__(self):
        return len(self.doors)


cdef class FrontDoorBase:
    """Reads a request head; upgrades go to :meth:`_hand_off`, other requests to ``http_handler``."""

    cdef public object router, http_handler, check_head, options, new_socket_id, transport
    cdef public object parser, request, body, queue, timer
    cdef public bytes url
    cdef public dict headers
    cdef public list out
    cdef public Py_ssize_t head_size
    cdef Py_ssize_t body_left  # while _SIMPLE_BODY: the bytes of the body still to come
    cdef public double deadline
    cdef public int flags
    #: Whole plain requests are read without httptools (see _simple_request); tests
    #: switch it off to compare with httptools' reading.
    cdef public bint simple
    # options.max_head, read once: checked for every piece of every head (the options
    # of a listening socket do not change)
    cdef Py_ssize_t max_head

    def __init__(
        self,
        router: Router,
        http_handler: HttpHandler,
        options: FrontDoorOptions,
        new_socket_id: Callable[[], str],
        check_head: HeadCheck | None = None,
    ) -> None:
        self.router = router
        self.http_handler = http_handler
        self.check_head = check_head
        self.options = options
        self.max_head = options.max_head
        self.new_socket_id = new_socket_id
        self.transport = None
        self.parser = None  # httptools, made when a request is not of a plain kind
        self.url = b""
        self.headers = _NO_HEADERS
        self.request = None  # the request whose body is being read
        self.body = b""
        self.head_size = 0
        self.body_left = 0
        self.queue = None  # made on the first plain HTTP request
        self.out = []
        self.timer = None
        self.deadline = 0.0
        self.flags = _FIRST
        self.simple = True

    def pending(self) -> tuple[int, int]:
        """``(requests waiting for an answer, bytes held)`` for this connection.

        Bytes held: the body so far, answers not yet
        handed to the transport and the transport's own write buffer.
        """
        held = len(self.body) + sum(map(len, self.out))
        if self.transport is not None:
            held += self.transport.get_write_buffer_size()
        return (len(self.queue) if self.queue else 0) + (self.request is not None), held

    @property
    def reading_paused(self) -> bool:
        """True while this connection's reading is paused (backpressure)."""
        return bool(self.flags & _RPAUSED)

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """asyncio: a client connected; its head must arrive within ``head_timeout``."""
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        opts = self.options
        loop = asyncio.get_running_loop()
        cdef _FirstHeads heads = opts.first_heads
        if heads is None or heads.loop is not loop:
            heads = opts.first_heads = _FirstHeads(loop, opts.head_timeout)
        self.deadline = loop.time() + opts.head_timeout
        heads.add(self, self.deadline)
        self.flags |= _WATCHED

    cdef _unwatch(self):
        self.flags &= ~_WATCHED
        (<_FirstHeads>self.options.first_heads).discard(self)

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: the socket is gone; let go of everything this connection held."""
        if self.flags & _WATCHED:
            self._unwatch()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.flags |= _CLOSING
        self.transport = None
        self.queue = None
        self.request = None
        self.parser = None  # it refers back to us
        self.body = b""
        self.out = _NO_OUT
        self.headers = _NO_HEADERS

    def data_received(self, data: bytes) -> None:
        """asyncio: bytes from the client, fed to the HTTP parser; the answers to the
        requests it completes leave in one write (one system call, not one each)."""
        self.flags |= _READING
        try:
            self._received(data)
        finally:
            self.flags &= ~_READING
            if self.out:
                self._flush()

    cdef _received(self, data):
        cdef Py_ssize_t used = 0, end
        flags = self.flags
        if flags & (_CLOSING | _OVERFLOW):
            return
        if flags & _SIMPLE_BODY:
            # the rest of a body whose head _simple_request read (a client that sends the
            # head and the body in two writes, as urllib3 does): no httptools either
            if type(data) is not bytes:
                data = bytes(data)
            used = self._simple_body(<bytes>data)
        if self.simple and type(data) is bytes:
            if flags & _FIRST and not flags & _IN_MESSAGE and self._simple_upgrade(<bytes>data):
                return  # a WebSocket upgrade, read in place: the connection is handed off
            # Requests of the plain kind, read here; whatever else is left, httptools reads
            while not self.flags & (_CLOSING | _OVERFLOW | _IN_MESSAGE):
                end = self._simple_request(<bytes>data, used)
                if end < 0:
                    break
                used = end
        if used:
            data = (
                PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + used, len(data) - used)
                if used < len(data) and not self.flags & _CLOSING else b""
            )
        if data:
            self._feed(data)
        flags = self.flags
        if flags & _ARMS:
            self.flags = flags & ~_ARMS
            if not flags & _CLOSING:
                opts = self.options
                self._arm(
                    opts.body_timeout if flags & _ARM_BODY
                    else opts.head_timeout if flags & _ARM_HEAD
                    else opts.idle_timeout
                )
        if self.queue:
            self._update_reading()

    cdef _feed(self, data):
        if self.parser is None:
            self.parser = httptools.HttpRequestParser(self)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade(data[exc.args[0]:])
        except httptools.HttpParserError as exc:
            if not self.flags & _CLOSING:
                self._reply_and_close(400, f"Malformed HTTP request: {exc}")

    cdef Py_ssize_t _simple_body(self, bytes data) except -1:
        """Up to ``body_left`` bytes of ``data`` taken into the body of the plain request
        being read, which ends when the last arrives; the number taken."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data), take = self.body_left
        if take >= n:
            take = n
            self._body(data)
        else:
            self._body(PyBytes_FromStringAndSize(PyBytes_AS_STRING(data), take))
        self.body_left -= take
        if self.body_left == 0:
            self.flags &= ~_SIMPLE_BODY
            self._message_complete()
        return take

    cdef Py_ssize_t _simple_request(self, bytes data, Py_ssize_t pos) except -2:
        """One request of the plain kind at ``data[pos:]``, handled as the httptools
        callbacks handle it; its end, or -1 (nothing done) for any other. A head whose
        body is not all in ``data`` is read here too: the body's rest is taken from the
        next reads (``_SIMPLE_BODY``, :meth:`_simple_body`).

        The plain kind: ``POST`` to an origin-form target of unreserved, sub-delimiter and
        ``:@/?%`` characters, ``HTTP/1.1``, headers ``Name: value`` (letters, digits and
        ``-``; printable ASCII without leading or trailing space), one ``Content-Length``
        of 1 to 10 digits, none of ``Transfer-Encoding``, ``Upgrade``, ``Expect``, and
        ``Connection`` only as ``keep-alive``; within ``max_head`` and ``max_body``.
        llhttp reads every such request the same way (every piece of it is in what
        llhttp takes), so the answer is the same; the rest goes to httptools.
        """
        cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t i, url_start, url_end, name_start, colon, value_start, count = 0
        cdef Py_ssize_t head, length = -1, k, body_end
        cdef Py_ssize_t spans[4 * 32]
        if n - pos < 20 or memcmp(s + pos, b"POST /", 6) != 0:
            return -1
        i = pos + 5
        url_start = i
        while i < n and _URL_OK[s[i]]:
            i += 1
        url_end = i
        if n - i < 11 or memcmp(s + i, b" HTTP/1.1\r\n", 11) != 0:
            return -1
        i += 11
        head = url_end - url_start
        while True:
            if n - i < 2:
                return -1
            if s[i] == 13 and s[i + 1] == 10:
                i += 2
                break
            if count == 32:
                return -1
            name_start = i
            i = _header_line(s, n, i, &colon, &value_start)
            if i < 0:
                return -1
            k = colon - name_start
            if k == 14 and _lower_is(s + name_start, b"content-length", 14):
                if length >= 0 or i - value_start > 10:
                    return -1
                length = 0
                for k in range(value_start, i):
                    if not 48 <= s[k] <= 57:
                        return -1
                    length = length * 10 + (s[k] - 48)
            elif (k == 17 and _lower_is(s + name_start, b"transfer-encoding", 17)) or (
                k == 7 and _lower_is(s + name_start, b"upgrade", 7)) or (
                k == 6 and _lower_is(s + name_start, b"expect", 6)):
                return -1
            elif k == 10 and _lower_is(s + name_start, b"connection", 10):
                if i - value_start != 10 or not _lower_is(s + value_start, b"keep-alive", 10):
                    return -1
            spans[4 * count] = name_start
            spans[4 * count + 1] = colon
            spans[4 * count + 2] = value_start
            spans[4 * count + 3] = i
            count += 1
            head += (colon - name_start) + (i - value_start)
            i += 2
        if length <= 0 or head > self.max_head or length > self.options.max_body:
            return -1
        body_end = i + length
        cdef const char* c = <const char*>s
        if body_end <= n and not self.queue and not self.flags & _BUSY:
            express = self.options.express
            if express is not None and self._express(express, c, url_start, url_end, i, length):
                return body_end
        # what llhttp's callbacks would do, in their order
        self._message_begin()
        self._url(PyBytes_FromStringAndSize(c + url_start, url_end - url_start))
        for k in range(count):
            # _header(name, value) for a name of letters, digits and "-": its key is its
            # lower-case form, its value the latin-1 text (taken from ``data`` in place)
            name_start = spans[4 * k]
            colon = spans[4 * k + 1] - name_start
            value_start = spans[4 * k + 2]
            head = spans[4 * k + 3] - value_start
            key = _known_name(s + name_start, colon)
            if key is None:
                key = PyUnicode_DecodeLatin1(c + name_start, colon, NULL).lower()
            self.head_size += colon + head
            (<dict>self.headers)[key] = _ascii(c + value_start, head)  # (printable ASCII)
        self._headers_complete(b"POST", True)
        if self.flags & _CLOSING:
            return n  # answered from its head: the rest of this read is not read
        if body_end > n:  # the body's rest comes in later reads
            if n > i:
                self._body(PyBytes_FromStringAndSize(c + i, n - i))
            self.body_left = body_end - n
            self.flags |= _SIMPLE_BODY
            return n
        self._body(PyBytes_FromStringAndSize(c + i, length))
        self._message_complete()
        return body_end

    cdef bint _express(self, express, const char* c, Py_ssize_t url_start, Py_ssize_t url_end,
                       Py_ssize_t body_start, Py_ssize_t length) except -1:
        """A whole plain request offered to ``options.express`` before any request object is
        made: True when it took it (a signed trigger, done), and its answer is queued."""
        cdef const char* mark = <const char*>memchr(c + url_start, b"?", url_end - url_start)
        if mark == NULL:
            return False  # (a signed request has a query)
        # (the target's characters are ASCII: _URL_OK)
        path = _ascii(c + url_start, mark - (c + url_start))
        query = _ascii(mark + 1, c + url_end - mark - 1)
        try:
            if not express(path, query, PyBytes_FromStringAndSize(c + body_start, length)):
                return False
            answer = _EXPRESS_ANSWER
        except Exception:  # (what it did stays done: answered as _next answers a handler's failure)
            log.exception("HTTP handler failed on POST %s", path)
            answer = answer_head(500, "application/json", [], len(_FAILED), True) + _FAILED
        # what _headers_complete, _message_complete and _next do for its answer
        self.flags = (self.flags & ~(_FIRST | _ARM_HEAD | _ARM_BODY)) | _ARM_IDLE
        self.out.append(answer)
        if len(self.out) >= _OUT_BATCH:
            self._flush()
        return True

    def pause_writing(self) -> None:
        """asyncio: the write buffer is over its high-water mark: stop reading and answering."""
        self.flags |= _WPAUSED
        self._update_reading()

    def resume_writing(self) -> None:
        """asyncio: the write buffer drained: answer what waits, read again."""
        self.flags &= ~_WPAUSED
        self._next()

    # -- httptools callbacks --
    def on_message_begin(self) -> None:
        """httptools: a request starts; its head must arrive within ``head_timeout``."""
        self._message_begin()

    cdef _message_begin(self):
        self.flags |= _IN_MESSAGE
        self.url = b""
        self.headers = {}
        self.body = b""
        self.head_size = 0
        self.flags |= _ARM_HEAD  # data_received arms it if the head is not complete

    def on_url(self, bytes url) -> None:
        """httptools: part of the request target."""
        self._url(url)

    cdef _url(self, bytes url):
        self.url += url
        self.head_size += len(url)
        if self.head_size > self.max_head:
            self._head_too_large()

    def on_header(self, bytes name, bytes value) -> None:
        """httptools: one header (names lower-cased; a repeated one keeps the last value)."""
        self._header(name, value)

    cdef _header(self, bytes name, bytes value):
        self.head_size += len(name) + len(value)
        if self.head_size > self.max_head:
            self._head_too_large()
        key = _HEADER_NAMES.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
        self.headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        """httptools: the head is in; answer from it when possible, else read the body."""
        if self.flags & _CLOSING:
            return
        parser = self.parser
        if parser.should_upgrade():
            return  # feed_data raises HttpParserUpgrade next
        self._headers_complete(parser.get_method(), parser.should_keep_alive())

    cdef _headers_complete(self, bytes method, bint keep_alive):
        self.flags &= ~_FIRST
        opts = self.options
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > opts.max_body:
            self._reply_and_close(413, f"Request body over {opts.max_body} bytes.")
            return
        cdef bytes url = self.url
        cdef bytes path, query
        cdef const char* u = PyBytes_AS_STRING(url)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(url)
        cdef const char* mark
        # HttpRequest(method, path, query, headers, b"", keep_alive), its fields set here:
        # the dataclass's __init__ is a Python function (~1k instructions a request)
        request = _new_request(HttpRequest)
        request.method = method.decode()
        if n and u[0] == b"/" and memchr(u, b"#", n) == NULL:
            # origin-form, as every client sends (llhttp checked its characters): what
            # httptools.parse_url answers, without its cost, decoded from the url in place
            mark = <const char*>memchr(u, b"?", n)
            if mark == NULL:
                request.path = PyUnicode_DecodeUTF8(u, n, "replace")
                request.query = ""
            else:
                request.path = PyUnicode_DecodeUTF8(u, mark - u, "replace")
                request.query = PyUnicode_DecodeUTF8(mark + 1, n - (mark - u) - 1, "replace")
        else:
            parsed = httptools.parse_url(url)
            path, query = parsed.path or b"/", parsed.query or b""
            request.path = path.decode("utf-8", "replace")
            request.query = query.decode("utf-8", "replace") if query else ""
        request.headers = self.headers
        request.body = b""
        request.keep_alive = keep_alive
        # Only for a request with a body (without one the handler answers as soon, and
        # the connection stays open), and only when nothing is queued: an early answer
        # must not overtake earlier ones.
        has_body = (length is not None and length != "0") or "transfer-encoding" in self.headers
        if has_body and self.check_head is not None and not self.queue and not self.flags & _BUSY:
            try:
                early = self.check_head(request)
            except Exception:
                log.exception("HTTP head check failed on %s %s", request.method, request.path)
                early = HttpResponse(500, b'{"error":"Internal server error"}')
            if early is not None:
                self._answer_and_linger(early)
                return
        self.request = request
        self.flags = (self.flags & ~_ARM_HEAD) | _IN_BODY | _ARM_BODY
        expect = self.headers.get("expect")
        if has_body and expect and expect.lower() == "100-continue" and self.transport is not None and not self.queue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, bytes body) -> None:
        """httptools: part of the body, kept in one buffer."""
        self._body(body)

    cdef _body(self, bytes body):
        if self.flags & _CLOSING:
            return
        held = self.body
        if len(held) + len(body) > self.options.max_body:
            self._reply_and_close(413, f"Request body over {self.options.max_body} bytes.")
        elif not held:
            self.body = body  # one chunk, as most bodies come: no copy at all
        elif isinstance(held, bytes):
            grown = bytearray(held)
            grown += body
            self.body = grown
        else:
            held += body

    def on_message_complete(self) -> None:
        """httptools: a whole request: queue it and answer in order."""
        self._message_complete()

    cdef _message_complete(self):
        self.flags &= ~_IN_MESSAGE
        flags = self.flags
        request = self.request
        if flags & _CLOSING or request is None:
            return  # (an upgrade has no request: feed_data raises HttpParserUpgrade next)
        self.request = None
        self.flags = flags & ~(_IN_BODY | _ARMS)
        # A multi-chunk body stays the bytearray it was read into: handlers only hash,
        # measure and parse it, and a bytes copy would hold it twice for a moment.
        request.body = self.body  # type: ignore[assignment]
        self.body = b""
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()
        if len(queue) >= self.options.max_pipeline:
            # The rest of this read is dropped; the queued requests get their answers.
            self.flags |= _OVERFLOW
            self._update_reading()
            return
        queue.append(request)
        if not flags & _BUSY:
            self._next()

    # -- internals --
    cdef _head_too_large(self):
        if not self.flags & _CLOSING:
            self._reply_and_close(431, "Request head too large.")

    cdef _arm(self, double delay):
        """Move this connection's one deadline; a single timer handle follows it lazily."""
        if self.flags & _WATCHED:
            self._unwatch()
        loop = asyncio.get_running_loop()
        self.deadline = deadline = loop.time() + delay
        timer = self.timer
        if timer is not None:
            if timer.when() <= deadline:
                return  # it fires first and follows the deadline from there
            timer.cancel()
        self.timer = loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        t = self.transport
        if t is None:
            return
        loop = asyncio.get_running_loop()
        flags = self.flags
        if flags & _BUSY and not flags & _CLOSING:
            self._arm(self.options.idle_timeout)  # the handler is working: not the client's fault
            return
        if loop.time() < self.deadline:
            self.timer = loop.call_at(self.deadline, self._on_timer)
            return
        if flags & _CLOSING:
            t.abort()  # lingered long enough, or the peer does not read our last answer
        elif flags & _IN_BODY:
            self._reply_and_close(408, "Request body not received in time.")
        else:
            log.debug("closing an HTTP connection: no request within the timeout")
            self.flags |= _CLOSING
            if t.get_write_buffer_size():
                t.abort()  # the peer is not reading: a graceful close would never finish
            else:
                t.close()

    cdef _update_reading(self):
        """Read while answers can go out and nothing waits for one; else pause."""
        t = self.transport
        if t is None:
            return
        flags = self.flags
        queue = self.queue
        # Half the queue bound: a client that pipelines a few requests (as the trigger
        # benchmark does) is never paused; one that floods is, before the queue is full.
        stop = bool(flags & (_WPAUSED | _OVERFLOW)) or (queue is not None and len(queue) >= self.options.max_pipeline // 2)
        if stop and not flags & _RPAUSED:
            self.flags = flags | _RPAUSED
            t.pause_reading()
        elif not stop and flags & _RPAUSED and not flags & _CLOSING:
            self.flags = flags & ~_RPAUSED
            t.resume_reading()

    cdef _next(self):
        """Answer queued requests one at a time, in order (pipelining-safe).

        The answers to every request that one read brought in leave in one write
        (``_READING``): at most ``_OUT_BATCH`` answers are held, and answers of one
        call over 64 KiB go at once.
        """
        queue = self.queue
        stop = _CLOSING | _CLOSE_AFTER | _BUSY | _WPAUSED
        pending = 0
        while queue and not self.flags & stop:
            request = queue.popleft()
            try:
                result = self.http_handler(request)
            except Exception:
                log.exception("HTTP handler failed on %s %s", request.method, request.path)
                result = HttpResponse(500, b'{"error":"Internal server error"}')
            if type(result) is not HttpResponse and inspect.isawaitable(result):
                self.flags |= _BUSY
                task = asyncio.ensure_future(result)
                task.add_done_callback(partial(self._done, request=request))
                break
            pending += self._write(result, request.keep_alive)
            if pending > 65536:
                self._flush()  # may pause writing: the loop then stops
                pending = 0
        flags = self.flags
        if flags & _OVERFLOW and not queue and not flags & (_BUSY | _CLOSING | _CLOSE_AFTER):
            limit = self.options.max_pipeline
            body = orjson.dumps({"error": f"Too many pipelined requests (limit {limit}): read the answers first."})
            self._write(HttpResponse(429, body), False)
        if not self.flags & _READING or len(self.out) >= _OUT_BATCH:
            self._flush()  # (else data_received writes them all at the read's end)
        if not self.flags & (_BUSY | _IN_BODY | _CLOSING):
            if self.flags & _READING:
                self.flags |= _ARM_IDLE  # (data_received moves the deadline once per read)
            else:
                self._arm(self.options.idle_timeout)
        self._update_reading()

    def _done(self, task: asyncio.Future[HttpResponse], *, request: HttpRequest) -> None:
        self.flags &= ~_BUSY
        if self.flags & _CLOSING:
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

    cdef Py_ssize_t _write(self, response, bint keep_alive) except -1:
        """Queue one response (:meth:`_flush` writes what is queued); returns its size."""
        global _LAST
        status = response.status
        body = response.body
        ctype = response.content_type
        headers = response.headers
        cdef Py_ssize_t n = len(body)
        cdef bint plain = type(status) is int and type(ctype) is str and type(headers) is list and _plain(headers)
        cdef tuple last = _LAST
        if (plain and last is not None and n == <Py_ssize_t>last[3] and keep_alive == <bint>last[4]
                and status == last[0] and ctype == last[1] and headers == last[2]):
            head_bytes = last[5]  # the same head as the last answer's
        else:
            head_bytes = answer_head(status, ctype, headers, n, keep_alive)
            if plain:
                _LAST = (status, ctype, list(headers), n, keep_alive, head_bytes)
        data = head_bytes + body
        self.out.append(data)
        if not keep_alive:
            self.flags |= _CLOSE_AFTER
        return len(data)

    cdef _flush(self):
        t = self.transport
        if not self.out:
            return
        data = b"".join(self.out) if len(self.out) > 1 else self.out[0]
        self.out.clear()
        if t is None or t.is_closing():
            return
        t.write(data)
        if self.flags & _CLOSE_AFTER:
            self.flags |= _CLOSING
            self._linger(t)

    cdef _reply_and_close(self, int status, str message):
        log.debug("HTTP %d: %s", status, message)
        self._answer_and_linger(HttpResponse(status, orjson.dumps({"error": message})))

    cdef _answer_and_linger(self, response):
        """Answer and close without reading the rest of the request.

        Closing a socket with unread input makes the kernel send a reset, which can
        destroy the answer on its way: so shut the write side, discard input for up to
        ``linger`` seconds (or until the client closes), then cut.
        """
        self.flags |= _CLOSING
        self.request = None
        self.body = b""
        t = self.transport
        if t is None or t.is_closing():
            return
        if self.out:  # earlier answers of this read go first
            t.write(b"".join(self.out))
            self.out.clear()
        reason = _REASONS.get(response.status, "Error")
        headers = "".join(f"{k}: {v}\r\n" for k, v in response.headers)
        t.write(
            f"HTTP/1.1 {response.status} {reason}\r\nContent-Type: {response.content_type}\r\n"
            f"Content-Length: {len(response.body)}\r\n{headers}Connection: close\r\n\r\n".encode("latin-1")
            + response.body
        )
        self._linger(t)

    cdef _linger(self, t):
        """Shut the write side once the answers are out, discard input, cut after ``linger``."""
        if self.flags & _RPAUSED:
            self.flags &= ~_RPAUSED
            t.resume_reading()  # to see the client's close while lingering
        if t.can_write_eof():
            t.write_eof()
        else:
            t.close()  # TLS: no half-close
        # A peer that never reads its answer is cut then too: a graceful close would wait.
        self._arm(self.options.linger)

    def _hand_off(self, transport: asyncio.Transport, response: bytes, rest: bytes, path: str) -> None:
        """Switch ``transport`` to the WebSocket protocol: it writes ``response`` (the 101)
        and reads ``rest`` first (the subclass's)."""
        raise NotImplementedError

    cdef _upgrade(self, bytes rest):
        """Answer the upgrade and hand the socket to the WebSocket side with ``rest``
        (what the client sent after the head)."""
        transport = self.transport
        if transport is None or self.flags & _CLOSING:
            return
        if not self.flags & _FIRST or self.parser is None or self.parser.get_method() != b"GET":
            self._reply_and_close(400, "A WebSocket upgrade must be the first request, with GET.")
            return
        if self.headers.get("sec-websocket-version") != "13":
            self._answer_and_linger(HttpResponse(
                426, b'{"error":"Unsupported WebSocket version: use 13."}',
                headers=[("Sec-WebSocket-Version", "13")],
            ))
            return
        if (self.headers.get("upgrade") or "").lower() != "websocket":
            self._reply_and_close(400, "Upgrade: websocket is the only upgrade served here.")
            return
        response = accept_response(self.headers.get("sec-websocket-key"))
        if response is None:
            self._reply_and_close(400, "Handshake error: Sec-WebSocket-Key is not 16 bytes in base64.")
            return
        self._switch(transport, response, rest, self.url.decode("utf-8", "replace"))

    cdef _switch(self, transport, bytes response, bytes rest, str path):
        if self.flags & _WATCHED:
            self._unwatch()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.flags |= _CLOSING  # this protocol is done with the socket
        # uvloop may keep a reference to this protocol's data_received after the
        # switch: drop everything this object holds so only its shell stays alive.
        self.body = self.url = b""
        self.parser = None
        self.headers = _NO_HEADERS
        self.out = _NO_OUT
        self.transport = None
        self._hand_off(transport, response, rest, path)

    cdef bint _simple_upgrade(self, bytes data) except -1:
        """A whole WebSocket upgrade request of the plain kind in ``data`` (the first bytes
        of the connection), answered as the httptools path answers it; False (nothing
        done) for any other.

        The plain kind: ``GET`` to an origin-form target (the characters of
        :meth:`_simple_request`), ``HTTP/1.1``, headers ``Name: value`` as there, each of
        ``Upgrade: websocket``, ``Connection`` with an ``upgrade`` token,
        ``Sec-WebSocket-Version: 13`` and a valid ``Sec-WebSocket-Key`` once, none of
        ``Content-Length``, ``Transfer-Encoding``, ``Expect``; within ``max_head``. llhttp
        reads such a request as an upgrade whose head ends where this one does.
        """
        cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t i, j, url_start, url_end, name_start, colon, value_start, k, head
        cdef Py_ssize_t key_start = -1, key_end = -1, count = 0
        cdef int seen = 0  # 1 upgrade, 2 connection, 4 version, 8 key
        cdef bint token
        if n < 20 or memcmp(s, b"GET /", 5) != 0:
            return False
        i = 4
        url_start = i
        while i < n and _URL_OK[s[i]]:
            i += 1
        url_end = i
        if n - i < 11 or memcmp(s + i, b" HTTP/1.1\r\n", 11) != 0:
            return False
        i += 11
        head = url_end - url_start
        while True:
            if n - i < 2:
                return False
            if s[i] == 13 and s[i + 1] == 10:
                i += 2
                break
            count += 1
            if count > 32:
                return False
            name_start = i
            i = _header_line(s, n, i, &colon, &value_start)
            if i < 0:
                return False
            head += (colon - name_start) + (i - value_start)
            k = colon - name_start
            if k == 7 and _lower_is(s + name_start, b"upgrade", 7):
                if seen & 1 or i - value_start != 9 or not _lower_is(s + value_start, b"websocket", 9):
                    return False
                seen |= 1
            elif k == 10 and _lower_is(s + name_start, b"connection", 10):
                if seen & 2:
                    return False
                # a comma-separated list of tokens, one of them "upgrade"
                j = value_start
                token = False
                while j < i:
                    while j < i and (s[j] == 32 or s[j] == 44):
                        j += 1
                    k = j
                    while j < i and s[j] != 32 and s[j] != 44:
                        j += 1
                    if j - k == 7 and _lower_is(s + k, b"upgrade", 7):
                        token = True
                if not token:
                    return False
                seen |= 2
            elif k == 21 and _lower_is(s + name_start, b"sec-websocket-version", 21):
                if seen & 4 or i - value_start != 2 or s[value_start] != 49 or s[value_start + 1] != 51:
                    return False
                seen |= 4
            elif k == 17 and _lower_is(s + name_start, b"sec-websocket-key", 17):
                if seen & 8:
                    return False
                key_start = value_start
                key_end = i
                seen |= 8
            elif (k == 14 and _lower_is(s + name_start, b"content-length", 14)) or (
                k == 17 and _lower_is(s + name_start, b"transfer-encoding", 17)) or (
                k == 6 and _lower_is(s + name_start, b"expect", 6)):
                return False
            i += 2
        if seen != 15 or head > self.max_head:
            return False
        response = accept_response(_ascii(<const char*>s + key_start, key_end - key_start))
        if response is None:
            return False  # the httptools path answers 400
        transport = self.transport
        if transport is None:
            return False
        self._switch(
            transport, response, PyBytes_FromStringAndSize(<const char*>s + i, n - i),
            _ascii(<const char*>s + url_start, url_end - url_start),
        )
        return True
