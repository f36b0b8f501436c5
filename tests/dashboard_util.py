"""Helpers of the dashboard tests: a server with the dashboard on, its feed read as SSE."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import websockets

from conftest import APP_KEY, base_env
from soketi_impl.config import Config, load_config
from soketi_impl.server import Server

TOKEN = "t0ken-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT = 10.0


def dash_config(**extra: str) -> Config:
    """The test app on a free port, with the dashboard on the metrics port (a free one)."""
    env = base_env(
        0, SOKETI_DASHBOARD_ENABLED="true", SOKETI_DASHBOARD_TOKEN=TOKEN,
        SOKETI_METRICS_SERVER_PORT="0", SOKETI_METRICS_HOST="127.0.0.1",
    )
    env.update(extra)
    return load_config(None, environ=env)


@dataclass
class Dash:
    """A running in-process server with the dashboard, and an HTTP client for it."""

    server: Server
    http: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.service.metrics_server.port}/dashboard"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/app/{APP_KEY}?protocol=7&client=js&version=8.6.0"

    async def feed(self, headers: dict[str, str] | None = None) -> Sse:
        response = await self.http.get(self.base + "/api/feed", headers=BEARER if headers is None else headers)
        assert response.status == 200, response.status
        return Sse(response)


@contextlib.asynccontextmanager
async def start_dash(config: Config | None = None) -> AsyncIterator[Dash]:
    """Start a server (the dashboard config unless given) and stop it after."""
    server = Server(config if config is not None else dash_config())
    await server.start()
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
    try:
        yield Dash(server, http)
    finally:
        await http.close()
        await asyncio.wait_for(server.stop(0), TIMEOUT)


class Sse:
    """A server-sent events stream: :meth:`next` is the next ``(event, data)``."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.seen: list[dict[str, Any]] = []

    async def next(self, timeout: float = TIMEOUT) -> tuple[str, Any]:
        event, data = "message", b""
        while True:
            line = await asyncio.wait_for(self.response.content.readline(), timeout)
            assert line, "the feed ended"
            if line == b"\n":
                if data:
                    return event, orjson.loads(data)
                continue
            if line.startswith(b"event: "):
                event = line[7:].strip().decode()
            elif line.startswith(b"data: "):
                data += line[6:].rstrip(b"\n")

    async def entry(self, pred: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT) -> dict[str, Any]:
        """The first log entry (seen before or coming) for which ``pred`` is true."""
        for e in self.seen:
            if pred(e):
                return e
        while True:
            event, data = await self.next(timeout)
            if event == "hello":
                found = data["recent"]
            elif event == "log":
                found = data["entries"]
            else:
                continue
            self.seen.extend(found)
            for e in found:
                if pred(e):
                    return e

    def close(self) -> None:
        self.response.close()


async def pusher_client(url: str, *channels: str) -> tuple[Any, str]:
    """A raw Pusher protocol client (``websockets``) subscribed to ``channels``; and its socket id."""
    ws = await websockets.connect(url, open_timeout=TIMEOUT)
    hello = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    sid = json.loads(hello["data"])["socket_id"]
    for ch in channels:
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": ch}}))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if msg["event"] == "pusher_internal:subscription_succeeded" and msg["channel"] == ch:
                break
    return ws, sid
