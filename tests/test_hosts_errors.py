"""The 500 and 503 answers: a handler that crashes, one cancelled by a shutdown, /ready
once shutdown began, on the picows front door and on the ASGI and aiohttp hosts.

The crashing handler is ours (a function raising, or the service's ``handle_http``
replaced by one): what is pinned is the host's answer to it, a JSON 500 (or 503), a
log line at ERROR with the request, and a connection that keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from conftest import APP_ID, base_env, free_port, signed_query
from hostile import open_raw, read_http_response
from soketi_impl.config import load_config
from soketi_impl.hosts.picows import FrontDoor, FrontDoorOptions
from soketi_impl.http.types import HttpRequest, HttpResponse
from soketi_impl.router import Router

pytestmark = pytest.mark.timeout(60)

Handler = Callable[[HttpRequest], "HttpResponse | Awaitable[HttpResponse]"]


async def _front_door(handler: Handler, check: Any = None) -> tuple[asyncio.Server, int]:
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        lambda: FrontDoor(Router(), handler, FrontDoorOptions(), lambda: "1.1", check), "127.0.0.1", 0
    )
    return listener, listener.sockets[0].getsockname()[1]


def _crash_on_boom(request: HttpRequest) -> HttpResponse:
    if request.path == "/boom":
        raise RuntimeError("the handler broke")
    return HttpResponse(200, b'{"ok":true}')


async def _async_crash_on_boom(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(0)
    if request.path == "/boom":
        raise RuntimeError("the handler broke")
    if request.path == "/cancelled":
        raise asyncio.CancelledError  # what a shutdown does to an answer in flight
    return HttpResponse(200, b'{"ok":true}')


@pytest.mark.parametrize("handler", [_crash_on_boom, _async_crash_on_boom], ids=["sync", "async"])
async def test_front_door_answers_500_and_keeps_serving(handler: Handler, caplog: pytest.LogCaptureFixture) -> None:
    listener, port = await _front_door(handler)
    reader, writer = await open_raw(port)
    try:
        with caplog.at_level(logging.ERROR, "soketi_impl.http"):
            writer.write(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = await read_http_response(reader)
        assert status == 500 and json.loads(body) == {"error": "Internal server error"}
        assert headers.get("connection") != "close"
        assert any(r.levelno == logging.ERROR and "GET /boom" in r.getMessage() for r in caplog.records)
        # the same keep-alive connection is still served
        writer.write(b"GET /fine HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_http_response(reader))[0] == 200
    finally:
        writer.transport.abort()
        listener.close()


async def test_front_door_answers_503_to_a_cancelled_handler() -> None:
    listener, port = await _front_door(_async_crash_on_boom)
    reader, writer = await open_raw(port)
    try:
        # pipelined: the 503 comes in order, and the next request is still answered
        writer.write(b"GET /cancelled HTTP/1.1\r\nHost: x\r\n\r\nGET /fine HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = await read_http_response(reader)
        assert status == 503 and json.loads(body) == {"error": "Server shutting down"}
        assert (await read_http_response(reader))[0] == 200
    finally:
        writer.transport.abort()
        listener.close()


async def test_front_door_answers_500_when_the_head_check_crashes(caplog: pytest.LogCaptureFixture) -> None:
    def check(request: HttpRequest) -> HttpResponse | None:
        raise RuntimeError("the head check broke")

    listener, port = await _front_door(_crash_on_boom, check)
    reader, writer = await open_raw(port)
    try:
        with caplog.at_level(logging.ERROR, "soketi_impl.http"):
            writer.write(b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
            status, headers, body = await read_http_response(reader)
        assert status == 500 and json.loads(body) == {"error": "Internal server error"}
        assert headers.get("connection") == "close"  # the body was never read
        assert any("HTTP head check failed on POST /apps/1/events" in r.getMessage() for r in caplog.records)
    finally:
        writer.transport.abort()
        listener.close()


# ---------------------------------------------------------------- the ASGI host


class _Peer:
    def __init__(self, *incoming: dict[str, Any]) -> None:
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for message in incoming:
            self.incoming.put_nowait(message)
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.incoming.get(), 5)

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


async def _asgi_get(app: Any, path: str, query: str = "") -> tuple[int, bytes]:
    peer = _Peer({"type": "http.request", "body": b"", "more_body": False})
    scope = {"type": "http", "method": "GET", "path": path, "query_string": query.encode(),
             "headers": [(b"host", b"x")]}
    await asyncio.wait_for(app(scope, peer.receive, peer.send), 5)
    return peer.sent[0]["status"], peer.sent[1].get("body", b"")


async def test_asgi_host_answers_500_on_a_crash_and_503_on_ready_once_stopping(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from soketi_impl.asgi import create_app

    app = create_app(load_config(None, environ=base_env(0)), handle_signals=False)
    life = _Peer({"type": "lifespan.startup"})
    life_task = asyncio.ensure_future(app({"type": "lifespan"}, life.receive, life.send))
    try:
        async def started() -> None:
            while not life.sent:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(started(), 5)
        assert await _asgi_get(app, "/ready") == (200, b"OK")
        real = app.pusher.handle_http

        def crash(request: HttpRequest) -> Any:
            if request.path == f"/apps/{APP_ID}/channels":
                raise RuntimeError("the handler broke")
            return real(request)

        app.pusher.handle_http = crash  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR):
            path = f"/apps/{APP_ID}/channels"
            status, body = await _asgi_get(app, path, signed_query("GET", path, b""))
        assert status == 500 and json.loads(body) == {"error": "Internal server error"}
        assert any(f"HTTP handler failed on GET /apps/{APP_ID}/channels" in r.getMessage() for r in caplog.records)
        app.pusher.handle_http = real  # type: ignore[method-assign]
        life.incoming.put_nowait({"type": "lifespan.shutdown"})
        await asyncio.wait_for(life_task, 10)
        assert life.sent[-1] == {"type": "lifespan.shutdown.complete"}
        assert (await _asgi_get(app, "/ready"))[0] == 503
    finally:
        if not life_task.done():
            life_task.cancel()
        await app.stop()


# ---------------------------------------------------------------- the aiohttp host


async def test_aiohttp_host_answers_500_on_a_crash_and_503_on_ready_once_stopping(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import soketi_impl.aiohttp

    for name, value in base_env(0).items():
        monkeypatch.setenv(name, value)
    web_app = web.Application()
    pusher = soketi_impl.aiohttp.setup(web_app)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stopped = False
    try:
        real = pusher.handle_http

        def crash(request: HttpRequest) -> Any:
            if request.path == f"/apps/{APP_ID}/channels":
                raise RuntimeError("the handler broke")
            return real(request)

        pusher.handle_http = crash  # type: ignore[method-assign]
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            with caplog.at_level(logging.ERROR):
                path = f"/apps/{APP_ID}/channels"
                async with session.get(f"http://127.0.0.1:{port}{path}?{signed_query('GET', path, b'')}") as r:
                    assert r.status == 500 and await r.json() == {"error": "Internal server error"}
            assert any(f"HTTP handler failed on GET /apps/{APP_ID}/channels" in r.getMessage() for r in caplog.records)
            async with session.get(f"http://127.0.0.1:{port}/ready") as r:
                assert r.status == 200
            await pusher.stop()  # shutdown began: the load balancer must hear it
            stopped = True
            async with session.get(f"http://127.0.0.1:{port}/ready") as r:
                assert r.status == 503
    finally:
        if not stopped:
            await pusher.stop()
        await runner.cleanup()


async def test_asgi_lifespan_reports_a_failed_start() -> None:
    """The Redis adapter cannot connect: the ASGI server hears ``lifespan.startup.failed``
    with the reason (and can exit), instead of serving without its adapter."""
    from soketi_impl.asgi import create_app

    env = base_env(0, SOKETI_ADAPTER_DRIVER="redis", SOKETI_DB_REDIS_PORT=str(free_port()))
    app = create_app(load_config(None, environ=env), handle_signals=False)
    life = _Peer({"type": "lifespan.startup"})
    await asyncio.wait_for(app({"type": "lifespan"}, life.receive, life.send), 30)
    assert life.sent[-1]["type"] == "lifespan.startup.failed"
    assert "Redis" in life.sent[-1]["message"]


async def test_asgi_refuses_an_unknown_scope_and_starts_once() -> None:
    from soketi_impl.asgi import create_app

    app = create_app(load_config(None, environ=base_env(0)), handle_signals=False)
    with pytest.raises(ValueError, match="unsupported ASGI scope type 'telepathy'"):
        await app({"type": "telepathy"}, _Peer().receive, _Peer().send)
    try:
        await asyncio.wait_for(asyncio.gather(app.start(), app.start(), app.start()), 10)
        assert await _asgi_get(app, "/ready") == (200, b"OK")
    finally:
        await app.stop()
