"""Each framework's own socket passed as ``native``, with the real library on both ends.

The same seed-style Router runs behind a `websockets` server, an aiohttp server and
Starlette under uvicorn; ids are ints, as in the seed's example. Every case checks
that str goes out as a TEXT frame and bytes as BINARY (``send_text_nowait`` turns
the Pusher core's bytes into text), that queued sends keep their order, that
``close(code, reason)`` reaches the client, and that the close reaches the Router.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import uvicorn
from aiohttp import WSMsgType, web
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from soketi_impl import Connection, Connections, Router

WAIT = 10
HELLO = b'{"event":"hello"}'


class App:
    """The seed's broadcast server, framework-neutral: a Router and a Connections."""

    def __init__(self) -> None:
        self.router, self.conns = Router(), Connections()
        self.ids = itertools.count(10_000, 7919)  # numeric ids, as the seed's example
        self.closed: asyncio.Queue[tuple[Connection, Any]] = asyncio.Queue()
        self.router.on_new_connection(self.greet)
        self.router.on_message(self.message)
        self.router.on_connection_closed(self.gone)

    def connection(self, native: object) -> Connection:
        return Connection(next(self.ids), native)

    async def greet(self, conn: Connection) -> None:
        await self.conns.new_connection(conn)
        # The first goes out while the next two queue behind it: order must hold.
        assert conn.send_text_nowait(HELLO)
        assert await conn.send(b"\x00\x01bin")
        assert await conn.send("plain")

    async def message(self, conn: Connection, message: Any) -> None:
        if message == "close me":
            await conn.close(4200, "restart")
        else:
            for other in self.conns:  # the Pusher core hands bytes: still a TEXT frame
                other.send_text_nowait(f"{conn.id}:{message}".encode())

    async def gone(self, conn: Connection, code: int | None, reason: str | None) -> None:
        assert self.conns.discard(conn.id)
        await self.closed.put((conn, code))


async def _websockets_server(app: App) -> AsyncGenerator[str, None]:
    async def handler(ws: ServerConnection) -> None:
        conn = app.connection(ws)
        await app.router.handle_new_connection(conn)
        try:
            async for message in ws:
                await app.router.handle_message(conn, message)
        except ConnectionClosed:  # a close code other than 1000/1001: not an error here
            pass
        finally:
            await app.router.handle_connection_closed(conn, ws.close_code, ws.close_reason)

    async with serve(handler, "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"


async def _aiohttp_server(app: App) -> AsyncGenerator[str, None]:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = app.connection(ws)
        await app.router.handle_new_connection(conn)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await app.router.handle_message(conn, msg.data)
        finally:
            await app.router.handle_connection_closed(conn, ws.close_code, None)
        return ws

    web_app = web.Application()
    web_app.router.add_get("/ws", handler)
    runner = web.AppRunner(web_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        await runner.cleanup()


async def _starlette_server(app: App) -> AsyncGenerator[str, None]:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        conn = app.connection(websocket)
        await app.router.handle_new_connection(conn)
        code = None
        try:
            while True:
                await app.router.handle_message(conn, await websocket.receive_text())
        except WebSocketDisconnect as exc:
            code = exc.code
        except RuntimeError:  # receive after our own close: Starlette says so this way
            pass
        await app.router.handle_connection_closed(conn, code, None)

    star = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    # A socket bound and listening before uvicorn starts: clients can connect at once.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    config = uvicorn.Config(star, ws="websockets-sansio", lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        yield f"ws://127.0.0.1:{sock.getsockname()[1]}/ws"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, WAIT)
        sock.close()


SERVERS: dict[str, Callable[[App], AsyncGenerator[str, None]]] = {
    "websockets": _websockets_server,
    "aiohttp": _aiohttp_server,
    "starlette": _starlette_server,
}


@asynccontextmanager
async def running(kind: str, app: App) -> AsyncIterator[str]:
    gen = SERVERS[kind](app)
    url = await gen.__anext__()
    try:
        yield url
    finally:
        await gen.aclose()


@pytest.mark.parametrize("kind", list(SERVERS))
async def test_native_socket_with_websockets_client(kind: str) -> None:
    app = App()
    async with running(kind, app) as url, connect(url, open_timeout=WAIT) as a:
        assert await asyncio.wait_for(a.recv(), WAIT) == HELLO.decode()  # str: a TEXT frame
        assert await asyncio.wait_for(a.recv(), WAIT) == b"\x00\x01bin"  # bytes: BINARY
        assert await asyncio.wait_for(a.recv(), WAIT) == "plain"
        (conn,) = list(app.conns)
        assert isinstance(conn.id, int)
        async with connect(url, open_timeout=WAIT) as b:
            for _ in range(3):
                await asyncio.wait_for(b.recv(), WAIT)
            await b.send("hi")
            assert await asyncio.wait_for(a.recv(), WAIT) == f"{conn.id + 7919}:hi"
            assert await asyncio.wait_for(b.recv(), WAIT) == f"{conn.id + 7919}:hi"
        gone, _ = await asyncio.wait_for(app.closed.get(), WAIT)  # b left: the Router heard
        assert gone.id == conn.id + 7919 and len(app.conns) == 1
        await a.send("close me")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(a.recv(), WAIT)
        assert a.close_code == 4200 and a.close_reason == "restart"
        gone, _ = await asyncio.wait_for(app.closed.get(), WAIT)
        assert gone is conn and conn.closed and len(app.conns) == 0


async def test_aiohttp_server_and_client() -> None:
    app = App()
    async with running("aiohttp", app) as url, aiohttp.ClientSession() as session:
        async with session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_receive=WAIT)) as ws:
            kinds = [(m.type, m.data) for m in [await ws.receive() for _ in range(3)]]
            assert kinds == [
                (WSMsgType.TEXT, HELLO.decode()), (WSMsgType.BINARY, b"\x00\x01bin"), (WSMsgType.TEXT, "plain")
            ]
            await ws.send_str("close me")
            msg = await ws.receive()
            assert msg.type == WSMsgType.CLOSE and msg.data == 4200 and msg.extra == "restart"
        conn, _ = await asyncio.wait_for(app.closed.get(), WAIT)
        assert conn.closed and len(app.conns) == 0


async def test_aiohttp_client_socket_as_native() -> None:
    """aiohttp's client socket has the same send_str/send_bytes/close: it works as native too."""
    app = App()
    async with running("websockets", app) as url, aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            client = Connection(1, ws)
            for _ in range(3):
                await ws.receive()
            assert await client.send("from aiohttp")
            msg = await ws.receive()
            assert msg.type == WSMsgType.TEXT and msg.data.endswith(":from aiohttp")
            await client.close(4001, "bye")
            assert ws.closed and ws.close_code == 4001
        await asyncio.wait_for(app.closed.get(), WAIT)


async def test_send_on_a_dropped_websockets_socket_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    """A real send failure (the peer is gone) is a WARNING, once, and marks the connection closed."""
    app = App()
    async with running("websockets", app) as url:
        async with connect(url) as a:
            for _ in range(3):
                await a.recv()
        conn, _ = await asyncio.wait_for(app.closed.get(), WAIT)
        with caplog.at_level(logging.DEBUG, logger="soketi_impl.connection"):
            assert await conn.send("late") is False
            assert conn.send_nowait("later") is False
            await conn.close(1000)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "failed" in warnings[0].getMessage(), caplog.text
        assert conn.closed

