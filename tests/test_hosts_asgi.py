"""The ASGI app spoken to directly, as an ASGI server would, with no server and no socket.

The real-server cases (uvicorn, Starlette mount) are in test_clients_*.py,
test_hosts_lifecycle.py and test_hosts_examples.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from conftest import APP_ID, APP_KEY, base_env, signed_query
from soketi_impl.asgi import create_app
from soketi_impl.config import load_config
from soketi_impl.hosts.asgi import PusherASGI, route_path


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ({"path": "/app/k", "root_path": ""}, "/app/k"),
        ({"path": "/pusher/app/k", "root_path": "/pusher"}, "/app/k"),
        ({"path": "/pusher/app/k", "raw_path": b"/pusher/app/k", "root_path": "/pusher"}, "/app/k"),
        # the raw path keeps percent-escapes for the API to decode, as picows gives it
        ({"path": "/apps/1/channels/#a", "raw_path": b"/apps/1/channels/%23a", "root_path": ""},
         "/apps/1/channels/%23a"),
        ({"path": "/pusherx/app/k", "raw_path": b"/pusherx/app/k", "root_path": "/pusher"},
         "/pusherx/app/k"),
        ({"path": "/pusher", "root_path": "/pusher"}, "/"),
    ],
)
def test_route_path_is_below_the_mount(scope: dict[str, Any], expected: str) -> None:
    assert route_path(scope) == expected


class Peer:
    """One ASGI conversation: what the app receives, and what it sent."""

    def __init__(self, *incoming: dict[str, Any]) -> None:
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for message in incoming:
            self.incoming.put_nowait(message)
        self.sent: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        self.changed.set()

    async def next_sent(self, n: int) -> dict[str, Any]:
        """The n-th message the app sent (0-based), waiting for it."""
        async def wait() -> None:
            while len(self.sent) <= n:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), 5)
        return self.sent[n]


@pytest.fixture
def app() -> PusherASGI:
    # a 0.1 MB request limit, so the 413 case stays small
    config = load_config(None, environ=base_env(0, SOKETI_HTTP_MAX_REQUEST_SIZE="0.1"))
    return create_app(config, handle_signals=False)


async def lifespan(app: PusherASGI, peer: Peer) -> asyncio.Task[None]:
    task = asyncio.ensure_future(app({"type": "lifespan"}, peer.receive, peer.send))
    assert (await peer.next_sent(0))["type"] == "lifespan.startup.complete"
    return task


async def test_lifespan_websocket_and_http(app: PusherASGI) -> None:
    life = Peer({"type": "lifespan.startup"})
    life_task = await lifespan(app, life)

    ws = Peer({"type": "websocket.connect"})
    scope = {"type": "websocket", "path": f"/app/{APP_KEY}", "query_string": b"protocol=7", "headers": []}
    ws_task = asyncio.ensure_future(app(scope, ws.receive, ws.send))
    assert (await ws.next_sent(0)) == {"type": "websocket.accept"}
    established = await ws.next_sent(1)
    assert established["type"] == "websocket.send" and "text" in established  # a text frame
    assert json.loads(established["text"])["event"] == "pusher:connection_established"
    ws.incoming.put_nowait({"type": "websocket.receive", "text": json.dumps(
        {"event": "pusher:subscribe", "data": {"channel": "news"}})})
    assert "subscription_succeeded" in (await ws.next_sent(2))["text"]
    assert (await app.pusher.channel(APP_ID, "news"))["subscription_count"] == 1

    # the HTTP API: unsigned, so refused, with a JSON error
    http = Peer({"type": "http.request", "body": b"", "more_body": False})
    scope = {"type": "http", "method": "GET", "path": f"/apps/{APP_ID}/channels", "query_string": b"",
             "headers": [(b"host", b"x")]}
    await app(scope, http.receive, http.send)
    assert http.sent[0]["type"] == "http.response.start" and http.sent[0]["status"] == 401
    assert "error" in json.loads(http.sent[1]["body"])

    # the client leaves (no close frame from us): the core forgets the socket
    ws.incoming.put_nowait({"type": "websocket.disconnect", "code": 1006})
    await asyncio.wait_for(ws_task, 5)
    assert (await app.pusher.channel(APP_ID, "news"))["subscription_count"] == 0

    # shutdown: a new socket is closed with 4200 after its pusher:error
    ws2 = Peer({"type": "websocket.connect"})
    scope = {"type": "websocket", "path": f"/app/{APP_KEY}", "query_string": b"", "headers": []}
    ws2_task = asyncio.ensure_future(app(scope, ws2.receive, ws2.send))
    await ws2.next_sent(1)
    life.incoming.put_nowait({"type": "lifespan.shutdown"})
    error = await ws2.next_sent(2)
    assert json.loads(error["text"])["data"]["code"] == 4200
    assert (await ws2.next_sent(3)) == {
        "type": "websocket.close", "code": 4200, "reason": "Server is restarting, reconnect.",
    }
    ws2.incoming.put_nowait({"type": "websocket.disconnect", "code": 4200})
    await asyncio.wait_for(ws2_task, 5)
    await asyncio.wait_for(life_task, 5)
    assert life.sent[-1] == {"type": "lifespan.shutdown.complete"}


async def test_body_over_the_limit_is_413_without_the_handler(app: PusherASGI) -> None:
    limit = app.max_body
    size = limit // 2 + 1
    chunks = [{"type": "http.request", "body": b"x" * size, "more_body": True} for _ in range(3)]
    chunks[-1]["more_body"] = False
    http = Peer(*chunks)
    path = f"/apps/{APP_ID}/events"
    query = signed_query("POST", path, b"x" * size * 3).encode()  # signed: past the head check
    scope = {"type": "http", "method": "POST", "path": path, "query_string": query, "headers": []}
    await app(scope, http.receive, http.send)
    assert http.sent[0]["status"] == 413
    assert json.loads(http.sent[1]["body"]) == {"error": f"Request body over {limit} bytes."}
    assert http.incoming.qsize() == 1  # it stopped reading past the limit


async def test_binary_json_is_read_as_text_and_bad_utf8_is_1007(app: PusherASGI) -> None:
    """As on the picows host (and soketi): JSON in a binary frame is served."""
    life = Peer({"type": "lifespan.startup"})
    life_task = await lifespan(app, life)
    ws = Peer({"type": "websocket.connect"})
    scope = {"type": "websocket", "path": f"/app/{APP_KEY}", "query_string": b"protocol=7", "headers": []}
    task = asyncio.ensure_future(app(scope, ws.receive, ws.send))
    assert json.loads((await ws.next_sent(1))["text"])["event"] == "pusher:connection_established"
    ws.incoming.put_nowait({"type": "websocket.receive", "bytes": b'{"event":"pusher:ping","data":{}}'})
    assert json.loads((await ws.next_sent(2))["text"])["event"] == "pusher:pong"
    ws.incoming.put_nowait({"type": "websocket.receive", "bytes": b"\xff\xfe"})
    closed = await ws.next_sent(3)
    assert (closed["type"], closed["code"]) == ("websocket.close", 1007)
    ws.incoming.put_nowait({"type": "websocket.disconnect", "code": 1007})
    await asyncio.wait_for(task, 5)
    life.incoming.put_nowait({"type": "lifespan.shutdown"})
    await asyncio.wait_for(life_task, 10)
