"""Hostile HTTP clients against the picows host's front door (issue 9).

Each test pins one row: what the client observes (answers, closes) and the front
door's own accounting of what it holds (:meth:`FrontDoor.pending`), never timings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conftest import APP_ID, APP_KEY
from hostile import frame, open_raw, raw_ws, read_http_response, tracked_server, wait_for
from soketi_impl.hosts.picows import FrontDoor, FrontDoorOptions
from soketi_impl.http.types import HttpRequest, HttpResponse
from soketi_impl.router import Router

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    async with tracked_server(monkeypatch, idle_timeout=60.0) as srv:
        yield srv


# ---------------------------------------------------------------- row 2: pipelining


async def test_pipelined_api_flood_is_bounded_and_freed(server: Any) -> None:
    """10 MB of unsigned pipelined ``GET /apps/{id}/channels`` from a client that never
    reads: the queue and what the front door holds stay under their bounds, the client
    gets 401s (then a 429, unless the reset overtakes it), and everything is let go at close."""
    request = f"GET /apps/{APP_ID}/channels HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    n = 10 * 1024 * 1024 // len(request)
    reader, writer = await open_raw(server.port, rcvbuf=4096)
    writer.write(request * n)
    await wait_for(lambda: server.doors)
    door = server.doors[0]
    peak = [0, 0]

    def closed() -> bool:
        queued, held = door.pending()
        peak[0], peak[1] = max(peak[0], queued), max(peak[1], held)
        return door.transport is None

    statuses = []
    try:
        while True:
            statuses.append((await read_http_response(reader))[0])
            closed()
    except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
        pass  # the rest of the flood is refused: a reset may overtake the final 429
    await wait_for(closed)
    assert statuses and statuses[0] == 401 and set(statuses) <= {401, 429}, statuses[-3:]
    assert len(statuses) < n // 10  # most of the flood was never even parsed
    assert peak[0] <= server.options.max_pipeline
    assert peak[1] < 512 * 1024, peak
    assert door.pending() == (0, 0)
    writer.transport.abort()


async def test_non_reader_stops_the_reading_and_is_freed() -> None:
    """Pipelined requests with large answers from a client that never reads: the front
    door stops reading while the transport's write buffer is over its mark, holds a
    bounded amount meanwhile, and lets go of everything at close."""
    doors: list[FrontDoor] = []

    def big(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, b"z" * 20_000)

    def make() -> FrontDoor:
        doors.append(FrontDoor(Router(), big, FrontDoorOptions(), lambda: "1.1"))
        return doors[-1]

    listener = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
    reader, writer = await open_raw(listener.sockets[0].getsockname()[1], rcvbuf=4096)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 200_000)  # 5.6 MB, 4 GB of answers
        await wait_for(lambda: doors and doors[0].reading_paused)
        door = doors[0]
        for _ in range(20):  # and stays stopped: the client still has megabytes to send
            await asyncio.sleep(0.05)
            assert door.reading_paused
            queued, held = door.pending()
            assert queued <= door.options.max_pipeline and held < 512 * 1024, (queued, held)
        assert writer.transport.get_write_buffer_size() > 1024 * 1024, "the client could send it all"
        writer.transport.abort()
        await wait_for(lambda: door.transport is None)
        assert door.pending() == (0, 0)
    finally:
        listener.close()


async def test_pipelined_requests_are_answered_in_order(server: Any) -> None:
    paths = ["/", "/nope", f"/apps/{APP_ID}/channels", "/ready"] * 5
    reader, writer = await open_raw(server.port)
    try:
        writer.write(b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths))
        statuses = [(await read_http_response(reader))[0] for _ in paths]
        assert statuses == [200, 404, 401, 200] * 5
    finally:
        writer.transport.abort()


async def test_too_many_pipelined_requests_get_429(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow (async) handler and more requests in one read than the queue takes."""
    gate = asyncio.Event()

    async def slow(request: HttpRequest) -> HttpResponse:
        await gate.wait()
        return HttpResponse(200, b"{}")

    opts = FrontDoorOptions(max_pipeline=4)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: FrontDoor(Router(), slow, opts, lambda: "1.1"), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    reader, writer = await open_raw(port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 10)
        await asyncio.sleep(0.2)  # let the server read it all before any answer exists
        gate.set()
        statuses = []
        while True:
            try:
                statuses.append((await read_http_response(reader))[0])
            except asyncio.IncompleteReadError:
                break
        assert statuses[-1] == 429 and set(statuses[:-1]) == {200} and len(statuses) <= 1 + 4 + 1, statuses
    finally:
        writer.transport.abort()
        listener.close()


# ---------------------------------------------------------------- row 4: timeouts


async def test_slow_body_is_cut_with_408(monkeypatch: pytest.MonkeyPatch) -> None:
    async with tracked_server(monkeypatch, body_timeout=0.5) as srv:
        reader, writer = await open_raw(srv.port)
        try:
            # auth parameters that pass the head check (the signature is checked with the body)
            query = f"auth_key={APP_KEY}&auth_timestamp={int(time.time())}&auth_version=1.0&body_md5=0&auth_signature=0"
            writer.write(f"POST /apps/{APP_ID}/events?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{".encode())
            status, headers, _ = await read_http_response(reader)
            assert status == 408 and headers.get("connection") == "close"
            assert await asyncio.wait_for(reader.read(), 10) == b""
        finally:
            writer.transport.abort()


async def test_idle_keep_alive_connection_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    async with tracked_server(monkeypatch, idle_timeout=0.5) as srv:
        reader, writer = await open_raw(srv.port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_http_response(reader))[0] == 200
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, no answer needed
        finally:
            writer.transport.abort()


async def test_slow_head_is_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    async with tracked_server(monkeypatch, head_timeout=0.5) as srv:
        reader, writer = await open_raw(srv.port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
            assert await asyncio.wait_for(reader.read(), 10) == b""
        finally:
            writer.transport.abort()


async def test_silent_connections_are_cut_and_an_upgraded_one_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections that never send a byte share one timer for their first head (compiled
    front door): every one of a burst is cut after ``head_timeout``; a connection that
    upgraded in the meantime is not, and nothing stays watched."""
    async with tracked_server(monkeypatch, head_timeout=0.5) as srv:
        silent = [await open_raw(srv.port) for _ in range(30)]
        async with raw_ws(srv.port) as ws:
            try:
                for reader, _ in silent:
                    assert await asyncio.wait_for(reader.read(), 10) == b""
                ws.send(frame(0x1, b'{"event":"pusher:ping","data":{}}'))
                got = await ws.next_frame()
                assert got is not None and b"pusher:pong" in got[1], got
            finally:
                for _, writer in silent:
                    writer.transport.abort()
        heads = srv.options.first_heads
        if heads is not None:  # the pure-Python twin keeps a timer per connection
            await wait_for(lambda: len(heads) == 0)


# ---------------------------------------------------------------- row 5: early answers


async def _early_answer_server(check: Any) -> tuple[Any, list[HttpRequest], list[FrontDoor]]:
    seen: list[HttpRequest] = []
    doors: list[FrontDoor] = []

    def handler(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        return HttpResponse(200, str(len(request.body)).encode())

    def make() -> FrontDoor:
        door = FrontDoor(Router(), handler, FrontDoorOptions(), lambda: "1.1", check)
        doors.append(door)
        return door

    listener = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
    return listener, seen, doors


async def test_refused_from_the_head_before_the_body() -> None:
    """A 90 MB body to an unknown app: the answer comes from the head; the body is never sent."""

    def check(request: HttpRequest) -> HttpResponse | None:
        return HttpResponse(404, b'{"error":"Unknown app"}') if "unknown" in request.path else None

    listener, seen, doors = await _early_answer_server(check)
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await open_raw(port)
        writer.write(f"POST /apps/unknown/events HTTP/1.1\r\nHost: x\r\nContent-Length: {90 << 20}\r\n\r\n".encode())
        status, headers, _ = await read_http_response(reader)
        assert status == 404 and headers["connection"] == "close"
        writer.write(b"x" * (1 << 20))  # what a client sends anyway is discarded, not held
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert doors[0].pending() == (0, 0) and seen == []
        writer.transport.abort()
    finally:
        listener.close()


async def test_body_is_held_once() -> None:
    """A body read in many chunks is held in one buffer (no list of chunks, no copy of
    the raw request bytes beside it) and reaches the handler whole."""
    listener, seen, doors = await _early_answer_server(lambda r: None)
    port = listener.sockets[0].getsockname()[1]
    size, sent = 4 << 20, 0
    try:
        reader, writer = await open_raw(port)
        writer.write(f"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
        chunk = b"y" * (256 << 10)
        while sent < size // 2:
            writer.write(chunk)
            sent += len(chunk)
            await writer.drain()
        await wait_for(lambda: doors[0].pending()[1] >= sent - (1 << 20))
        assert doors[0].pending()[1] <= sent + 4096
        writer.write(b"y" * (size - sent))
        status, _, body = await read_http_response(reader)
        assert status == 200 and body == str(size).encode() and len(seen) == 1
        writer.transport.abort()
    finally:
        listener.close()


async def test_unknown_app_refused_from_the_head_by_the_server(server: Any) -> None:
    """The real API answers an unknown app id from the head (``Pusher.check_http_head``)."""
    from soketi_impl.service import Pusher

    if not callable(getattr(getattr(server.service, "_api_object", None), "check_head", None)):
        pytest.skip("the HTTP API has no check_head yet")
    assert isinstance(server.service, Pusher)
    reader, writer = await open_raw(server.port)
    try:
        writer.write(f"POST /apps/nope/events HTTP/1.1\r\nHost: x\r\nContent-Length: {90 << 20}\r\n\r\n".encode())
        status, _, _ = await read_http_response(reader)
        assert status in (401, 404)
    finally:
        writer.transport.abort()
