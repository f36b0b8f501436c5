"""The HTTP front door's request handling, pure-Python twin of ``_frontdoor_c``.

:class:`FrontDoorBase` is everything :class:`soketi_impl.hosts.picows.FrontDoor` does
with HTTP: httptools callbacks, bounds, keep-alive, pipelining, early answers, the
answers' bytes. That module's docstring describes the behaviour; the subclass there
adds the WebSocket hand-off. The compiled twin runs the same code with typed fields
(the signed HTTP publish path spends most of its interpreted time here).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import httptools
import orjson

from ..http.types import REASONS, HttpRequest, HttpResponse
from ._ws import accept_response

if TYPE_CHECKING:
    from ..hosts.picows import FrontDoorOptions
    from ..http.types import HttpHandler
    from ..router import Router

__all__ = ["EXPRESS_ANSWER", "FrontDoorBase", "answer_head"]

log = logging.getLogger("soketi_impl.http")

_REASONS = {**REASONS, 408: "Request Timeout", 426: "Upgrade Required"}
_STATUS_LINES = {status: f"HTTP/1.1 {status} {reason}\r\n" for status, reason in _REASONS.items()}
_NO_HEADERS: dict[str, str] = {}
_NO_OUT: list[bytes] = []  # shared by closed connections: nothing is appended once closing


def answer_head(status: int, content_type: str, headers: list[tuple[str, str]], length: int, keep_alive: bool) -> bytes:
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
_FAILED = b'{"error":"Internal server error"}'

# The header names clients send, as they spell them, to their lower-cased str: one dict
# lookup instead of a decode and a lower() per header. Fixed: other names are decoded.
_HEADER_NAMES: dict[bytes, str] = {
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

HeadCheck = Callable[[HttpRequest], "HttpResponse | None"]

# FrontDoor.flags: one int instead of a slot per flag (the shell of every upgraded
# connection stays alive, see FrontDoor.__slots__).
_FIRST = 1  # still in the first request (an upgrade must be the first)
_BUSY = 2  # an async handler is running
_CLOSING = 4  # done with the socket: input is discarded
_CLOSE_AFTER = 8  # close once the queued answers are written
_WPAUSED = 16  # the transport's write buffer is over its high-water mark
_RPAUSED = 32  # reading is paused
_IN_BODY = 64  # the head is done, the body is being read
_OVERFLOW = 128  # too many pipelined requests: answer the queued ones, then 429
# A deadline to set once the current read is parsed (the head's, or the body's): one
# timer move per read rather than one per parser callback; a read that brings a whole
# request only moves it once, to the idle deadline after the answer.
_ARM_HEAD = 256
_ARM_BODY = 512
_ARM_IDLE = 16384  # (and the idle deadline, once the read's answers are out)
_ARMS = _ARM_HEAD | _ARM_BODY | _ARM_IDLE
_IN_MESSAGE = 1024  # httptools is inside a request (from its first byte to its end)
_SIMPLE_BODY = 4096  # a plain request's head was read here, its body is still coming
_READING = 8192  # inside data_received: answers wait in ``out`` for one write at the read's end
_OUT_BATCH = 16  # answers held for one write at most (see _next)

# FrontDoorBase._simple_request: the bytes of a plain request's target (unreserved,
# sub-delimiters, ":@/?%") and of its header names (letters, digits, "-").
_REQUEST_LINE = re.compile(rb"POST (/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*) HTTP/1\.1")
# a value of printable ASCII, without leading or trailing space
_HEADER_LINE = re.compile(rb"([A-Za-z0-9\-]+): ([\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)")
_NOT_PLAIN = (b"transfer-encoding", b"upgrade", b"expect")


class FrontDoorBase:
    """Reads a request head; upgrades go to :meth:`_hand_off`, other requests to ``http_handler``.

    ``check_head`` (optional) may answer a request from its head alone, before the
    body is read: see :meth:`soketi_impl.service.Pusher.check_http_head`.
    """

    # uvloop keeps a bound method of the first protocol after ``set_protocol``, so this
    # object outlives the upgrade: slots keep that leftover small.
    __slots__ = (
        "router", "http_handler", "check_head", "options", "new_socket_id", "transport", "parser",
        "url", "headers", "request", "body", "head_size", "queue", "out", "timer",
        "deadline", "flags", "simple", "body_left",
    )

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
        self.new_socket_id = new_socket_id
        self.transport: asyncio.Transport | None = None
        self.parser: Any = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[str, str] = _NO_HEADERS
        self.request: HttpRequest | None = None  # the request whose body is being read
        self.body: bytes | bytearray = b""
        self.head_size = 0
        self.body_left = 0  # while _SIMPLE_BODY: the bytes of the body still to come
        self.queue: deque[HttpRequest] | None = None  # made on the first plain HTTP request
        self.out: list[bytes] = []
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0
        self.flags = _FIRST
        #: Whole plain requests are read without httptools (see _simple_request). Off in
        #: this twin: read in Python it costs more than httptools' C reading does (the
        #: compiled twin has it on); tests switch it on and off to compare the two readings.
        self.simple = False

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
        self._arm(self.options.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: the socket is gone; let go of everything this connection held."""
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

    def _received(self, data: bytes) -> None:
        flags = self.flags
        if flags & (_CLOSING | _OVERFLOW):
            return
        used = 0
        if flags & _SIMPLE_BODY:
            # the rest of a body whose head _simple_request read (a client that sends the
            # head and the body in two writes, as urllib3 does): no httptools either
            data = bytes(data)
            used = self._simple_body(data)
        if self.simple and type(data) is bytes:
            # Requests of the plain kind, read here; whatever else is left, httptools reads
            while not self.flags & (_CLOSING | _OVERFLOW | _IN_MESSAGE):
                end = self._simple_request(data, used)
                if end < 0:
                    break
                used = end
        if used:
            data = data[used:] if used < len(data) and not self.flags & _CLOSING else b""
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

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade(data[exc.args[0]:])
        except httptools.HttpParserError as exc:
            if not self.flags & _CLOSING:
                self._reply_and_close(400, f"Malformed HTTP request: {exc}")

    def _simple_body(self, data: bytes) -> int:
        """Up to ``body_left`` bytes of ``data`` taken into the body of the plain request
        being read, which ends when the last arrives; the number taken."""
        take = min(self.body_left, len(data))
        self.on_body(data if take == len(data) else data[:take])
        self.body_left -= take
        if not self.body_left:
            self.flags &= ~_SIMPLE_BODY
            self.on_message_complete()
        return take

    def _simple_request(self, data: bytes, pos: int) -> int:
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
        n = len(data)
        if n - pos < 20 or not data.startswith(b"POST /", pos):
            return -1
        line_end = data.find(b"\r\n", pos)
        line = _REQUEST_LINE.fullmatch(data, pos, line_end) if line_end > 0 else None
        if line is None:
            return -1
        url = line[1]
        headers: list[tuple[bytes, bytes]] = []
        length = -1
        head = len(url)
        i = line_end + 2
        while True:
            end = data.find(b"\r\n", i)
            if end < 0:
                return -1
            if end == i:
                i += 2
                break
            if len(headers) == 32:
                return -1
            header = _HEADER_LINE.fullmatch(data, i, end)
            if header is None:
                return -1
            name, value = header[1], header[2]
            lower = name.lower()
            if lower == b"content-length":
                if length >= 0 or len(value) > 10 or not value.isdigit():
                    return -1
                length = int(value)
            elif lower in _NOT_PLAIN or (lower == b"connection" and value.lower() != b"keep-alive"):
                return -1
            headers.append((name, value))
            head += len(name) + len(value)
            i = end + 2
        if length <= 0 or head > self.options.max_head or length > self.options.max_body:
            return -1
        if i + length <= n and not self.queue and not self.flags & _BUSY:
            express = self.options.express
            if express is not None and self._express(express, url, data[i : i + length]):
                return i + length
        # what llhttp's callbacks would do, in their order
        self.on_message_begin()
        self.on_url(url)
        for name, value in headers:
            self.on_header(name, value)
        self._headers_complete(b"POST", True)
        if self.flags & _CLOSING:
            return n  # answered from its head: the rest of this read is not read
        if i + length > n:  # the body's rest comes in later reads
            if n > i:
                self.on_body(data[i:])
            self.body_left = i + length - n
            self.flags |= _SIMPLE_BODY
            return n
        self.on_body(data[i : i + length])
        self.on_message_complete()
        return i + length

    def _express(self, express: Callable[[str, str, bytes], bool], url: bytes, body: bytes) -> bool:
        """A whole plain request offered to ``options.express`` before any request object is
        made: True when it took it (a signed trigger, done), and its answer is queued."""
        path, mark, query = url.partition(b"?")
        if not mark:
            return False  # (a signed request has a query)
        # (the target's characters are ASCII: _REQUEST_LINE)
        try:
            if not express(path.decode("ascii"), query.decode("ascii"), body):
                return False
            answer = EXPRESS_ANSWER
        except Exception:  # (what it did stays done: answered as _next answers a handler's failure)
            log.exception("HTTP handler failed on POST %s", path.decode("ascii"))
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
        self.flags |= _IN_MESSAGE
        self.url = b""
        self.headers = {}
        self.body = b""
        self.head_size = 0
        self.flags |= _ARM_HEAD  # data_received arms it if the head is not complete

    def on_url(self, url: bytes) -> None:
        """httptools: part of the request target."""
        self.url += url
        self.head_size += len(url)
        if self.head_size > self.options.max_head:
            self._head_too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        """httptools: one header (names lower-cased; a repeated one keeps the last value)."""
        # inline, not a call per header: this runs ~10 times per request
        self.head_size += len(name) + len(value)
        if self.head_size > self.options.max_head:
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

    def _headers_complete(self, method: bytes, keep_alive: bool) -> None:
        self.flags &= ~_FIRST
        opts = self.options
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > opts.max_body:
            self._reply_and_close(413, f"Request body over {opts.max_body} bytes.")
            return
        url = self.url
        if url[:1] == b"/" and b"#" not in url:
            # origin-form, as every client sends (llhttp checked its characters): what
            # httptools.parse_url answers, without its cost
            path, _, query = url.partition(b"?")
        else:
            parsed = httptools.parse_url(url)
            path, query = parsed.path or b"/", parsed.query or b""
        request = HttpRequest(
            method.decode(), path.decode("utf-8", "replace"),
            query.decode("utf-8", "replace") if query else "", self.headers, b"", keep_alive,
        )
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

    def on_body(self, body: bytes) -> None:
        """httptools: part of the body, kept in one buffer."""
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
    def _head_too_large(self) -> None:
        if not self.flags & _CLOSING:
            self._reply_and_close(431, "Request head too large.")

    def _arm(self, delay: float) -> None:
        """Move this connection's one deadline; a single timer handle follows it lazily."""
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

    def _update_reading(self) -> None:
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

    def _next(self) -> None:
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

    def _write(self, response: HttpResponse, keep_alive: bool) -> int:
        """Queue one response (:meth:`_flush` writes what is queued); returns its size."""
        body = response.body
        data = answer_head(response.status, response.content_type, response.headers, len(body), keep_alive) + body
        self.out.append(data)
        if not keep_alive:
            self.flags |= _CLOSE_AFTER
        return len(data)

    def _flush(self) -> None:
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

    def _reply_and_close(self, status: int, message: str) -> None:
        log.debug("HTTP %d: %s", status, message)
        self._answer_and_linger(HttpResponse(status, orjson.dumps({"error": message})))

    def _answer_and_linger(self, response: HttpResponse) -> None:
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

    def _linger(self, t: asyncio.Transport) -> None:
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

    def _upgrade(self, rest: bytes) -> None:
        """Answer the upgrade and hand the socket to the WebSocket side with ``rest``
        (what the client sent after the head)."""
        transport = self.transport
        if transport is None or self.flags & _CLOSING:
            return
        if not self.flags & _FIRST or self.parser.get_method() != b"GET":
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
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        path = self.url.decode("utf-8", "replace")
        self.flags |= _CLOSING  # this protocol is done with the socket
        # uvloop may keep a reference to this protocol's data_received after the
        # switch: drop everything this object holds so only its shell stays alive.
        self.body = self.url = b""
        self.parser = None
        self.headers = _NO_HEADERS
        self.out = _NO_OUT
        self.transport = None
        self._hand_off(transport, response, rest, path)
