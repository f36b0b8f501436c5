"""Webhooks and metrics of a running server, seen from outside: a real receiver, a real scrape."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pusher
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from conftest import APP_ID, APP_KEY, APP_SECRET, base_env, free_port
from soketi_impl.config import load_config
from soketi_impl.server import Server


class Receiver:
    """An HTTP server that records webhook bodies; fails the first ``fail_first`` requests."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), body))
        if len(self.requests) <= self.fail_first:
            return web.Response(status=503)
        self.events.extend(json.loads(body)["events"])
        self.changed.set()
        return web.Response(text="ok")

    async def wait_for(self, predicate: Any, timeout: float = 10) -> None:
        async def loop() -> None:
            while not predicate(self.events):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)

    def names(self) -> list[tuple[str, str]]:
        return [(e["name"], e.get("channel", "")) for e in self.events]


async def start_receiver(receiver: Receiver) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/hook"


async def open_server(url: str, **env: str) -> Server:
    hooks = [{"url": url, "event_types": ["channel_occupied", "channel_vacated", "member_added",
                                           "member_removed", "client_event", "cache_miss"]}]
    config = load_config(None, environ=base_env(0, SOKETI_DEFAULT_APP_WEBHOOKS=json.dumps(hooks), **env))
    server = Server(config)
    await server.start()
    return server


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver(fail_first=1)  # the first delivery fails: the server must retry it
    runner, url = await start_receiver(rec)
    try:
        yield rec, url
    finally:
        await runner.cleanup()


async def recv_event(ws: Any, name: str) -> dict[str, Any]:
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if msg["event"] == name:
            return dict(msg)


async def test_webhooks_from_a_running_server(receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    server = await open_server(url)
    try:
        ws_url = f"ws://127.0.0.1:{server.port}/app/{APP_KEY}?protocol=7"
        async with connect(ws_url) as ws:
            await recv_event(ws, "pusher:connection_established")
            await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "cache-hooks"}}))
            await recv_event(ws, "pusher:cache_miss")
            # occupied and cache_miss may travel in one batch or in two: wait for both
            await rec.wait_for(lambda ev: {("channel_occupied", "cache-hooks"), ("cache_miss", "cache-hooks")}
                               <= {(e["name"], e["channel"]) for e in ev})
        # the last subscriber left: channel_vacated after the 3 s debounce
        await rec.wait_for(lambda ev: any(e["name"] == "channel_vacated" for e in ev), timeout=15)
        assert len(rec.requests) >= 3 and rec.requests[0][1]  # the failed first one was retried
        client = pusher.Pusher(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET)
        for headers, body in rec.requests:
            assert headers["X-Pusher-Key"] == APP_KEY
            expected = hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert headers["X-Pusher-Signature"] == expected
            # the official SDK agrees
            assert client.validate_webhook(APP_KEY, headers["X-Pusher-Signature"], body.decode())
    finally:
        await server.stop(0)


async def test_quick_reconnect_sends_nothing(receiver: tuple[Receiver, str]) -> None:
    """A page reload inside the debounce window sends neither the vacated nor a second occupied.

    No waiting for the window: stopping the server releases a still-pending
    channel_vacated at once, so whatever the reload left pending is sent at the
    stop. (The 3 s window itself is pinned on a fake clock in test_webhooks_observer.py.)
    """
    rec, url = receiver
    rec.fail_first = 0
    server = await open_server(url)
    stopped = False
    try:
        ws_url = f"ws://127.0.0.1:{server.port}/app/{APP_KEY}?protocol=7"
        sub = json.dumps({"event": "pusher:subscribe", "data": {"channel": "reload"}})
        async with connect(ws_url) as ws:
            await recv_event(ws, "pusher:connection_established")
            await ws.send(sub)
            await recv_event(ws, "pusher_internal:subscription_succeeded")
        await rec.wait_for(lambda ev: len(ev) == 1)
        ws = await connect(ws_url)  # the "page reload", still connected when the server stops
        await recv_event(ws, "pusher:connection_established")
        await ws.send(sub)
        await recv_event(ws, "pusher_internal:subscription_succeeded")
        await server.stop(5000)  # the stop's own vacated is released and flushed within the grace
        stopped = True
        await ws.close()
        assert rec.names() == [("channel_occupied", "reload"), ("channel_vacated", "reload")]
    finally:
        if not stopped:
            await server.stop(0)


async def test_metrics_page_matches_what_happened() -> None:
    metrics_port = free_port()
    config = load_config(None, environ=base_env(
        0, SOKETI_METRICS_ENABLED="true", SOKETI_METRICS_SERVER_PORT=str(metrics_port),
        SOKETI_METRICS_HOST="127.0.0.1",
    ))
    server = Server(config)
    await server.start()
    try:
        ws_url = f"ws://127.0.0.1:{server.port}/app/{APP_KEY}?protocol=7"
        async with connect(ws_url) as a, connect(ws_url) as b:
            for ws in (a, b):
                await recv_event(ws, "pusher:connection_established")
                await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "m"}}))
                await recv_event(ws, "pusher_internal:subscription_succeeded")
            for _ in range(3):
                await a.send(json.dumps({"event": "pusher:ping", "data": {}}))
                await recv_event(a, "pusher:pong")
            await server.pusher.trigger(APP_ID, ["m"], "x", "{}")
            await recv_event(a, "x")
            await recv_event(b, "x")
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=aiohttp.ClientTimeout(10)) as r:
                    assert r.status == 200
                    text = await r.text()
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.labels.get("app_id") == APP_ID:
                    values[sample.name] = sample.value
        assert values["soketi_connected"] == 2
        assert values["soketi_new_connections_total"] == 2
        assert values["soketi_ws_messages_received_total"] == 5  # 2 subscribes + 3 pings
        # established x2, succeeded x2, pong x3, and the event to both
        assert values["soketi_ws_messages_sent_total"] == 9
        assert values["soketi_fanout_deliveries_total"] == 2
    finally:
        await server.stop(0)
