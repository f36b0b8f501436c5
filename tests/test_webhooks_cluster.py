"""Webhooks from running servers: presence and client events, on one node and across two (Redis, NATS, workers).

A user's connections on two nodes are one member: ``member_added`` once, when the
first joins anywhere, and ``member_removed`` once, after the last leaves everywhere
(and after the 3 s debounce). Real WebSocket clients, a real receiver; presence
auth comes from :func:`soketi_impl.signing.authorize_channel`, the helper an
embedding app's auth endpoint uses.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from cluster_util import cluster_env, node_adapter
from conftest import APP_KEY, APP_SECRET, base_env
from soketi_impl.config import load_config
from soketi_impl.server import Server
from soketi_impl.signing import authorize_channel
from test_server_webhooks_metrics import Receiver, recv_event, start_receiver

TYPES = ["member_added", "member_removed", "client_event"]
CHANNEL = "presence-hooks"


@contextlib.asynccontextmanager
async def node(url: str, cluster: tuple[str, str] | None = None) -> AsyncIterator[Server]:
    """A server alone, or a node of ``cluster`` (driver, prefix)."""
    hooks = [{"url": url, "event_types": TYPES}]
    env = cluster_env(*cluster) if cluster else {}
    config = load_config(None, environ=base_env(0, SOKETI_DEFAULT_APP_WEBHOOKS=json.dumps(hooks), **env))
    async with node_adapter(*cluster, config) if cluster else contextlib.nullcontext() as adapter:
        server = Server(config, adapter=adapter)
        await server.start()
        try:
            yield server
        finally:
            await server.stop(0)


@contextlib.asynccontextmanager
async def member(server: Server, user_id: str) -> AsyncIterator[ClientConnection]:
    async with connect(f"ws://127.0.0.1:{server.port}/app/{APP_KEY}?protocol=7") as ws:
        established = await recv_event(ws, "pusher:connection_established")
        socket_id = json.loads(established["data"])["socket_id"]
        auth = authorize_channel(APP_KEY, APP_SECRET, socket_id, CHANNEL, {"user_id": user_id, "user_info": {}})
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": CHANNEL, **auth}}))
        await recv_event(ws, "pusher_internal:subscription_succeeded")
        yield ws


def _count(events: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((e["name"], e.get("user_id", "")) for e in events)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    runner, url = await start_receiver(rec)
    try:
        yield rec, url
    finally:
        await runner.cleanup()


async def test_presence_and_client_event_webhooks_on_one_node(receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    async with node(url) as server:
        async with member(server, "u1"), member(server, "u1") as second:
            await rec.wait_for(lambda ev: ("member_added", "u1") in _count(ev))
            await second.send(json.dumps({"event": "client-hi", "channel": CHANNEL, "data": {"a": 1}}))
            await rec.wait_for(lambda ev: any(e["name"] == "client_event" for e in ev))
        await rec.wait_for(lambda ev: ("member_removed", "u1") in _count(ev), timeout=15)
    (client_event,) = [e for e in rec.events if e["name"] == "client_event"]
    assert client_event["user_id"] == "u1" and client_event["event"] == "client-hi"
    assert client_event["data"] == {"a": 1} and client_event["channel"] == CHANNEL
    assert _count(rec.events) == {("member_added", "u1"): 1, ("client_event", "u1"): 1, ("member_removed", "u1"): 1}



async def test_one_member_across_two_nodes(receiver: tuple[Receiver, str], cluster: tuple[str, str]) -> None:
    rec, url = receiver
    async with node(url, cluster) as a, node(url, cluster) as b:
        async with member(a, "u1"):
            await rec.wait_for(lambda ev: ("member_added", "u1") in _count(ev))
            async with member(b, "u1"), member(b, "u2"):
                await rec.wait_for(lambda ev: ("member_added", "u2") in _count(ev))
            # u2 left everywhere; u1 is still on node a
            await rec.wait_for(lambda ev: ("member_removed", "u2") in _count(ev), timeout=15)
            async with member(b, "marker"):
                await rec.wait_for(lambda ev: ("member_added", "marker") in _count(ev))
            assert ("member_removed", "u1") not in _count(rec.events)
        await rec.wait_for(lambda ev: ("member_removed", "u1") in _count(ev), timeout=15)
        async with member(a, "end"), member(b, "end2"):
            await rec.wait_for(lambda ev: {("member_added", "end"), ("member_added", "end2")} <= set(_count(ev)))
    counts = _count(rec.events)
    for uid in ("u1", "u2"):
        assert counts[("member_added", uid)] == 1, counts
        assert counts[("member_removed", uid)] == 1, counts
