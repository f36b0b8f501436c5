"""The front door's own reading of plain requests (``FrontDoorBase._simple_request``)
against httptools' reading of the same bytes: the same requests reach the handler, the
same answers leave, the connection ends the same way, for either twin.

Requests are drawn from plain ones and from every way of being not quite plain (other
methods and versions, odd targets, header spellings and spacing, framing headers,
partial bodies, garbage), then cut into reads at random places.
"""

from __future__ import annotations

import asyncio
import importlib
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soketi_impl.hosts.picows import FrontDoorOptions
from soketi_impl.http.types import HttpRequest, HttpResponse
from soketi_impl.router import Router


def _module(kind: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"soketi_impl.twins._frontdoor_{kind}")
    except ImportError:  # the pure build; tests/test_speedups.py says whether that is expected
        return None


class _Transport:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.out.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.events.append("pause")

    def resume_reading(self) -> None:
        self.events.append("resume")

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.events.append("eof")

    def close(self) -> None:
        self.events.append("close")
        self.closing = True

    def abort(self) -> None:
        self.events.append("abort")
        self.closing = True


def _door(kind: str, simple: bool) -> tuple[Any, _Transport, list[Any]]:
    module = _module(kind)
    assert module is not None
    seen: list[Any] = []

    def handler(request: HttpRequest) -> HttpResponse:
        seen.append((request.method, request.path, request.query, dict(request.headers), bytes(request.body),
                     request.keep_alive))
        return HttpResponse(200, repr(seen[-1][:3]).encode())

    def check_head(request: HttpRequest) -> HttpResponse | None:
        seen.append(("head", request.method, request.path, request.query, dict(request.headers)))
        return HttpResponse(401, b'{"error":"no"}') if request.path == "/refuse" else None

    class Door(module.FrontDoorBase):  # type: ignore[name-defined,misc]
        __slots__ = ()

        def _hand_off(self, transport: Any, response: bytes, rest: bytes, path: str) -> None:
            seen.append(("upgrade", path, response, rest))

    options = FrontDoorOptions(max_head=600, max_body=300, max_pipeline=4)
    door = Door(Router(), handler, options, lambda: "1.1", check_head)
    door.simple = simple
    transport = _Transport()
    door.connection_made(transport)
    return door, transport, seen


def _head(method: bytes = b"POST", target: bytes = b"/apps/1/events?a=1&b=2", version: bytes = b"HTTP/1.1",
          headers: tuple[tuple[bytes, bytes], ...] = (), sep: bytes = b": ") -> bytes:
    lines = [method + b" " + target + b" " + version]
    lines += [name + sep + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


_good_target = st.sampled_from([b"/apps/1/events?a=1&b=2", b"/refuse", b"/x", b"/~_.-!$&'()*+,;=:@/?%"])
_bad_target = st.sampled_from([
    b"/a b", b"/a#frag", b"/%41%zz", b"/\xc3\xa9", b'/"q"', b"/a?x=<y>", b"http://h/abs", b"*", b"/" + b"p" * 700,
])
_good_name = st.sampled_from([b"Host", b"host", b"HOST", b"Content-Type", b"X-Pusher-Library", b"Origin", b"X-Custom-1"])
_good_value = st.sampled_from([b"x", b"127.0.0.1:1", b"application/json", b"a b", b"v" * 100])
_bad_header = st.sampled_from([
    (b"Bad Name", b"x"), (b"Bad:Name", b"x"), (b"Transfer-Encoding", b"chunked"), (b"Upgrade", b"websocket"),
    (b"Expect", b"100-continue"), (b"Connection", b"close"), (b"Connection", b"Upgrade"), (b"", b"x"),
    (b"Host", b" lead"), (b"Host", b"trail "), (b"Host", b"a\tb"), (b"Host", b""), (b"Host", b"caf\xc3\xa9"),
    (b"X-Long", b"v" * 500),
])
_good_connection = st.sampled_from([(b"Connection", b"keep-alive"), (b"connection", b"Keep-Alive")])
_mutations = ["method", "version", "sep", "target", "header", "no_length", "short", "long", "twice", "bad_length",
              "plus_length", "empty_body", "big_body"]


@st.composite
def _request(draw: st.DrawFn) -> bytes:
    """A plain request, or one with one thing about it not plain (half of them)."""
    body = draw(st.sampled_from([b"{}", b'{"name":"ev","channel":"c","data":"x"}', b"b" * 290]))
    headers = list(draw(st.lists(st.tuples(_good_name, _good_value), max_size=4)))
    if draw(st.booleans()):
        headers.append(draw(_good_connection))
    mutation = draw(st.sampled_from(["none"] * len(_mutations) + _mutations))
    method, version, sep, target = b"POST", b"HTTP/1.1", b": ", draw(_good_target)
    if mutation == "method":
        method = draw(st.sampled_from([b"GET", b"post", b"PUT", b"POSTX"]))
    elif mutation == "version":
        version = draw(st.sampled_from([b"HTTP/1.0", b"HTTP/2", b"http/1.1"]))
    elif mutation == "sep":
        sep = draw(st.sampled_from([b":", b":  ", b" : ", b":\t"]))
    elif mutation == "target":
        target = draw(_bad_target)
    elif mutation == "header":
        headers.append(draw(_bad_header))
    elif mutation == "empty_body":
        body = b""
    elif mutation == "big_body":
        body = b"z" * 301
    length = str(len(body)).encode()
    if mutation == "short":
        length = str(len(body) - 1).encode()
    elif mutation == "long":
        length = str(len(body) + 3).encode()
    elif mutation == "bad_length":
        length = b"1x"
    elif mutation == "plus_length":
        length = b"+" + length
    if mutation != "no_length":
        headers.append((b"Content-Length", length))
    if mutation == "twice":
        headers.append((b"content-length", length))
    draw(st.randoms()).shuffle(headers)
    return _head(method=method, target=target, version=version, headers=tuple(headers), sep=sep) + body


_KEY = (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ==")
_upgrade_mutations = [
    "method", "version", "sep", "target", "no_upgrade", "upgrade_h2c", "upgrade_twice", "no_connection",
    "connection_close", "connection_list", "no_key", "bad_key", "key_twice", "version_8", "no_version",
    "content_length", "header", "frames_after", "long_head",
]


@st.composite
def _upgrade(draw: st.DrawFn) -> bytes:
    """A WebSocket upgrade request, or one with one thing about it different (most of them)."""
    headers = list(draw(st.lists(st.tuples(_good_name, _good_value), max_size=3)))
    headers += [(b"Upgrade", draw(st.sampled_from([b"websocket", b"WebSocket"]))),
                (b"Connection", draw(st.sampled_from([b"Upgrade", b"upgrade", b"keep-alive, Upgrade"]))),
                _KEY, (b"Sec-WebSocket-Version", b"13")]
    mutation = draw(st.sampled_from(["none"] * 6 + _upgrade_mutations))
    method, version, sep, target = b"GET", b"HTTP/1.1", b": ", draw(st.sampled_from(
        [b"/app/key?protocol=7&client=js&version=8.4.0", b"/app/key", b"/x"]))
    after = b""

    def drop(name: bytes) -> None:
        headers[:] = [h for h in headers if h[0] != name]

    if mutation == "method":
        method = draw(st.sampled_from([b"POST", b"get", b"HEAD"]))
    elif mutation == "version":
        version = draw(st.sampled_from([b"HTTP/1.0", b"http/1.1"]))
    elif mutation == "sep":
        sep = draw(st.sampled_from([b":", b":  ", b" : "]))
    elif mutation == "target":
        target = draw(_bad_target)
    elif mutation == "no_upgrade":
        drop(b"Upgrade")
    elif mutation == "upgrade_h2c":
        drop(b"Upgrade")
        headers.append((b"Upgrade", b"h2c"))
    elif mutation == "upgrade_twice":
        headers.append((b"upgrade", b"websocket"))
    elif mutation == "no_connection":
        drop(b"Connection")
    elif mutation == "connection_close":
        drop(b"Connection")
        headers.append((b"Connection", b"close"))
    elif mutation == "connection_list":
        drop(b"Connection")
        headers.append((b"Connection", draw(st.sampled_from([b"upgrade,keep-alive", b"x, upgradex", b"Upgrade ,x"]))))
    elif mutation == "no_key":
        drop(_KEY[0])
    elif mutation == "bad_key":
        drop(_KEY[0])
        headers.append((_KEY[0], draw(st.sampled_from([b"short", b"dGhlIHNhbXBsZSBub25jZQ=!", b"dGhlIHNhbXBsZSBub25jZXM="]))))
    elif mutation == "key_twice":
        headers.append((b"sec-websocket-key", b"AAAAAAAAAAAAAAAAAAAAAA=="))
    elif mutation == "version_8":
        drop(b"Sec-WebSocket-Version")
        headers.append((b"Sec-WebSocket-Version", b"8"))
    elif mutation == "no_version":
        drop(b"Sec-WebSocket-Version")
    elif mutation == "content_length":
        headers.append((b"Content-Length", b"0"))
    elif mutation == "header":
        headers.append(draw(_bad_header))
    elif mutation == "frames_after":
        after = draw(st.binary(min_size=1, max_size=30))
    elif mutation == "long_head":
        headers.append((b"X-Long", b"v" * 560))
    draw(st.randoms()).shuffle(headers)
    return _head(method=method, target=target, version=version, headers=tuple(headers), sep=sep) + after


_stream = st.one_of(
    st.lists(_request(), min_size=1, max_size=6).map(b"".join),
    st.tuples(st.lists(_request(), max_size=2).map(b"".join), st.binary(max_size=40)).map(b"".join),
    _upgrade(),
    st.tuples(_request(), _upgrade()).map(b"".join),
)


def _run(kind: str, simple: bool, chunks: list[bytes]) -> Any:
    door, transport, seen = _door(kind, simple)
    for chunk in chunks:
        door.data_received(chunk)
    # (the flags of reading state: _IN_MESSAGE, _ARM_HEAD/_ARM_BODY, _SIMPLE_BODY)
    return b"".join(transport.out), transport.events, seen, door.flags & ~(1024 | 256 | 512 | 4096)


@pytest.mark.parametrize("kind", ["py", pytest.param("c", marks=pytest.mark.skipif(
    _module("c") is None, reason="the compiled twin is not built"))])
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=_stream, cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=4))
def test_plain_requests_are_read_as_httptools_reads_them(
    loop: asyncio.AbstractEventLoop, kind: str, stream: bytes, cuts: list[int]
) -> None:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)]) if b > a]

    async def both() -> tuple[Any, Any]:
        return _run(kind, True, chunks), _run(kind, False, chunks)

    mine, theirs = loop.run_until_complete(both())
    assert mine == theirs


@pytest.mark.parametrize("kind", ["py", pytest.param("c", marks=pytest.mark.skipif(
    _module("c") is None, reason="the compiled twin is not built"))])
def test_an_sdk_request_is_read_without_httptools(loop: asyncio.AbstractEventLoop, kind: str) -> None:
    raw = _head(headers=((b"Host", b"127.0.0.1:6001"), (b"Connection", b"keep-alive"),
                         (b"Content-Type", b"application/json"), (b"Content-Length", b"2"))) + b"{}"

    async def run() -> None:
        door, transport, seen = _door(kind, True)
        door.parser = None  # httptools must not be needed
        door.data_received(raw * 2)
        assert len([s for s in seen if s[0] == "POST"]) == 2
        assert b"".join(transport.out).count(b"HTTP/1.1 200 OK") == 2

    loop.run_until_complete(run())


@pytest.mark.parametrize("kind", ["py", pytest.param("c", marks=pytest.mark.skipif(
    _module("c") is None, reason="the compiled twin is not built"))])
def test_a_body_sent_after_its_head_is_read_without_httptools(loop: asyncio.AbstractEventLoop, kind: str) -> None:
    """urllib3 (the Python SDK's requests) writes the head and the body in two sends."""
    head = _head(headers=((b"Host", b"127.0.0.1:6001"), (b"Content-Length", b"10")))

    async def run() -> None:
        door, transport, seen = _door(kind, True)
        door.parser = None  # httptools must not be needed
        door.data_received(head)
        assert [s[0] for s in seen] == ["head"]  # the head check ran on the head alone
        door.data_received(b'{"a":')
        door.data_received(b'1234}' + head + b"0123")  # the body's end, the next request's head and start
        door.data_received(b"456789")
        posts = [s for s in seen if s[0] == "POST"]
        assert [p[4] for p in posts] == [b'{"a":1234}', b"0123456789"]
        assert door.parser is None  # (the compiled twin makes its httptools parser when one is needed)
        assert b"".join(transport.out).count(b"HTTP/1.1 200 OK") == 2

    loop.run_until_complete(run())


@pytest.mark.skipif(_module("c") is None, reason="the compiled twin is not built")
def test_a_client_libraries_upgrade_is_read_without_httptools(loop: asyncio.AbstractEventLoop) -> None:
    raw = _head(method=b"GET", target=b"/app/key?protocol=7&client=js&version=8.4.0&flash=false", headers=(
        (b"Host", b"127.0.0.1:6001"), (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Version", b"13"), _KEY, (b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits"),
    ))

    async def run() -> None:
        door, transport, seen = _door("c", True)
        door.data_received(raw + b"\x81\x80")
        assert door.parser is None  # httptools was not needed
        assert seen == [("upgrade", "/app/key?protocol=7&client=js&version=8.4.0&flash=false",
                         _module("c").accept_response("dGhlIHNhbXBsZSBub25jZQ=="), b"\x81\x80")]

    loop.run_until_complete(run())


_ANSWERS = [
    HttpResponse(200, b"{}", headers=[("Access-Control-Allow-Origin", "*")]),
    HttpResponse(200, b"{}", headers=[("Access-Control-Allow-Origin", "*")]),
    HttpResponse(200, b"[]", headers=[("Access-Control-Allow-Origin", "*")]),
    HttpResponse(429, b"{}", headers=[("Access-Control-Allow-Origin", "*")]),
    HttpResponse(404, b'{"error":"Not found."}'),
    HttpResponse(200, b"{}", headers=[("Access-Control-Allow-Origin", "https://a")]),
    HttpResponse(200, b"{}", "text/plain", headers=[("Access-Control-Allow-Origin", "*")]),
    HttpResponse(204, b"", headers=[("Allow", "GET")]),
    HttpResponse(200, b"{}", headers=[("Retry-After", 1)]),  # type: ignore[list-item]
    HttpResponse(200, b"{}", headers=[("Retry-After", True)]),  # type: ignore[list-item]
    HttpResponse(200, b"{}", headers=[("Access-Control-Allow-Origin", "*")]),
]


@pytest.mark.skipif(_module("c") is None, reason="the compiled twin is not built")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.lists(st.integers(min_value=0, max_value=len(_ANSWERS) - 1), min_size=1, max_size=12),
       close=st.booleans())
def test_answers_heads_are_the_pure_twins(loop: asyncio.AbstractEventLoop, order: list[int], close: bool) -> None:
    """The compiled twin reuses the last answer's head when it is the same: never a stale one."""

    def outputs(kind: str) -> bytes:
        module = _module(kind)
        assert module is not None
        answers = iter([_ANSWERS[i] for i in order])

        class Door(module.FrontDoorBase):  # type: ignore[name-defined,misc]
            __slots__ = ()

        door = Door(Router(), lambda request: next(answers), FrontDoorOptions(max_pipeline=64), lambda: "1.1")
        transport = _Transport()
        door.connection_made(transport)
        last = len(order) - 1
        door.data_received(b"".join(
            b"GET /x HTTP/1.1\r\nHost: h\r\n" + (b"Connection: close\r\n" if close and i == last else b"") + b"\r\n"
            for i in range(len(order))
        ))
        return b"".join(transport.out)

    async def both() -> tuple[bytes, bytes]:
        return outputs("c"), outputs("py")

    compiled, pure = loop.run_until_complete(both())
    assert compiled == pure


@pytest.mark.parametrize("kind", ["py", pytest.param("c", marks=pytest.mark.skipif(
    _module("c") is None, reason="the compiled twin is not built"))])
@pytest.mark.parametrize("simple", [True, False])
def test_the_answers_to_one_read_leave_in_one_write(loop: asyncio.AbstractEventLoop, kind: str, simple: bool) -> None:
    """Pipelined requests that arrive together are answered with one write (one system
    call), in order; an answer from a head (here a refusal) still comes after them."""
    ok = _head(headers=((b"Host", b"x"), (b"Content-Length", b"2"))) + b"{}"
    refused = _head(target=b"/refuse", headers=((b"Host", b"x"), (b"Content-Length", b"2"))) + b"{}"

    async def run() -> None:
        door, transport, _ = _door(kind, simple)
        door.data_received(ok * 3)
        assert len(transport.out) == 1 and transport.out[0].count(b"HTTP/1.1 200 OK") == 3
        door.data_received(ok + refused)
        assert len(transport.out) == 3
        assert transport.out[1].count(b"200 OK") == 1 and transport.out[2].startswith(b"HTTP/1.1 401 ")

    loop.run_until_complete(run())


@pytest.mark.parametrize("kind", ["py", pytest.param("c", marks=pytest.mark.skipif(
    _module("c") is None, reason="the compiled twin is not built"))])
def test_express_takes_whole_plain_requests_before_any_request_object(
    loop: asyncio.AbstractEventLoop, kind: str
) -> None:
    """``options.express`` is offered (path, query, body) of a whole plain request; what it
    takes is answered with EXPRESS_ANSWER, the bytes _write gives the trigger's 200."""
    module = _module(kind)
    assert module is not None
    offered: list[tuple[str, str, bytes]] = []

    def express(path: str, query: str, body: bytes) -> bool:
        offered.append((path, query, body))
        return body == b"{}"

    async def run() -> None:
        door, transport, seen = _door(kind, True)
        door.options.express = express
        assert module.EXPRESS_ANSWER == module.answer_head(
            200, "application/json", [("Access-Control-Allow-Origin", "*")], 2, True) + b"{}"
        assert module.EXPRESS_ANSWER == _module("py").EXPRESS_ANSWER  # type: ignore[union-attr]
        taken = _head(headers=((b"Host", b"x"), (b"Content-Length", b"2"))) + b"{}"
        declined = _head(headers=((b"Host", b"x"), (b"Content-Length", b"2"))) + b"[]"
        door.data_received(taken + declined + taken)
        assert offered == [("/apps/1/events", "a=1&b=2", b"{}"), ("/apps/1/events", "a=1&b=2", b"[]"),
                           ("/apps/1/events", "a=1&b=2", b"{}")]
        assert [s[0] for s in seen] == ["head", "POST"]  # the declined one, the general way
        out = b"".join(transport.out)
        assert out.startswith(module.EXPRESS_ANSWER) and out.endswith(module.EXPRESS_ANSWER)
        assert out.count(b"HTTP/1.1 200 OK") == 3 and len(transport.out) == 1
        assert door.deadline == pytest.approx(asyncio.get_running_loop().time() + door.options.idle_timeout, abs=1)
        door.data_received(_head(headers=((b"Content-Length", b"2"),)))  # the body comes later:
        door.data_received(b"{}")  # read the general way (the head was checked on its own)
        assert len(offered) == 3 and [s[0] for s in seen][-2:] == ["head", "POST"]

    loop.run_until_complete(run())


@pytest.mark.parametrize("kind", ["py", pytest.param("c", marks=pytest.mark.skipif(
    _module("c") is None, reason="the compiled twin is not built"))])
def test_an_express_that_fails_is_answered_500_and_the_connection_goes_on(
    loop: asyncio.AbstractEventLoop, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    def express(path: str, query: str, body: bytes) -> bool:
        if body == b"{}":
            raise RuntimeError("boom")
        return False

    async def run() -> None:
        door, transport, seen = _door(kind, True)
        door.options.express = express
        request = _head(headers=((b"Content-Length", b"2"),))
        door.data_received(request + b"{}" + request + b"[]")
        out = b"".join(transport.out)
        assert out.startswith(b"HTTP/1.1 500 Internal Server Error\r\n") and out.count(b"HTTP/1.1 200 OK") == 1
        assert [s[0] for s in seen] == ["head", "POST"] and "events" in caplog.text and "boom" in caplog.text

    loop.run_until_complete(run())
