"""Cluster-wide webhooks and counts with two real server nodes, on every adapter (Redis, NATS, workers).

occupied once when a channel's first subscriber anywhere arrives, vacated once
after the last one anywhere left (and after the 3 s debounce, which a reload onto
the other node also cancels), a node killed with SIGKILL leaving the totals when
its lease runs out, ``subscription_count`` webhooks and
``pusher_internal:subscription_count`` with the cluster total on both nodes, and
watchlist online / offline across nodes. Real WebSocket clients, a real webhook
receiver.

Nodes get their adapter from :func:`cluster_env` (environment variables) and, for
the in-process survivor of the SIGKILL test, :func:`cluster_util.node_adapter` (short
lease timings): the one place that names the adapter; every test runs once per
driver of :data:`cluster_util.DRIVERS`, with a prefix of its own. With ``workers``
the in-process nodes (:func:`cluster_util.node`) share a hub run by the test
and the subprocess node is a worker of that hub (:func:`cluster_util.worker_env`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from cluster_util import DRIVERS, cleanup, need, new_prefix, worker_env
from cluster_util import cluster_env as driver_env
from cluster_util import node as cluster_node
from conftest import APP_ID, APP_KEY, APP_SECRET, run_server
from soketi_impl.adapters.base import CHANNEL, USER
from soketi_impl.pusher import Observer
from soketi_impl.server import Server
from test_server_webhooks_metrics import Receiver, recv_event, start_receiver

TIMEOUT = 10.0
HOOKS = ["channel_occupied", "channel_vacated", "subscription_count"]


#: prefix -> the driver of the test that made it
_DRIVER_OF: dict[str, str] = {}


def cluster_env(prefix: str) -> dict[str, str]:
    """The environment that makes a node join the cluster under ``prefix``."""
    return driver_env(_DRIVER_OF[prefix], prefix)


@pytest.fixture(params=DRIVERS)
async def prefix(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A prefix of this test alone, on one driver; what it holds is deleted afterwards."""
    driver = str(request.param)
    need(driver)
    name = new_prefix(driver)
    _DRIVER_OF[name] = driver
    try:
        yield name
    finally:
        del _DRIVER_OF[name]
        await cleanup(driver, name)


class Told(Observer):
    """What one node's core tells its observers about occupation (before any debounce)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    def channel_occupied(self, app: Any, channel: str) -> None:
        self.calls.append(("channel_occupied", channel))
        self.changed.set()

    def channel_vacated(self, app: Any, channel: str) -> None:
        self.calls.append(("channel_vacated", channel))
        self.changed.set()

    async def wait_for(self, call: tuple[str, str]) -> None:
        async def loop() -> None:
            while call not in self.calls:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), TIMEOUT)


def node_env(url: str, prefix: str, **extra: str) -> dict[str, str]:
    """A node's settings beyond the test app's: the webhook receiver and the cluster."""
    hooks = [{"url": url, "event_types": HOOKS}]
    return {"SOKETI_DEFAULT_APP_WEBHOOKS": json.dumps(hooks), **cluster_env(prefix), **extra}


@contextlib.asynccontextmanager
async def node(url: str, prefix: str, adapter: dict[str, float] | None = None, **extra: str) -> AsyncIterator[Server]:
    """An in-process node; ``adapter``: its lease timings (the survivor of the SIGKILL test)."""
    driver = _DRIVER_OF[prefix]
    timing = adapter if adapter and driver != "workers" else {}
    async with cluster_node(driver, prefix, env=node_env(url, prefix, **extra), **timing) as server:
        yield server


async def total_reaches(server: Server, kind: str, name: str, total: int) -> None:
    """Wait until ``server``'s adapter counts ``total`` for ``name`` (``kind``: CHANNEL or USER).

    A node's count reaches the cluster after the client got its answer, and a change
    that does not cross zero sends no client message, so there is no event to await:
    the test reads the cluster total (the adapter's own read) until it is there.
    """
    async def reached() -> None:
        while (await server.pusher.adapter.count_totals(APP_ID, kind, [name]))[0] != total:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(reached(), TIMEOUT)


def told(server: Server) -> Told:
    return server.pusher.add_observer(Told())


class Client:
    """A raw Pusher WebSocket client."""

    def __init__(self, ws: ClientConnection, socket_id: str) -> None:
        self.ws, self.socket_id = ws, socket_id

    @classmethod
    @contextlib.asynccontextmanager
    async def on(cls, port: int) -> AsyncIterator[Client]:
        async with connect(f"ws://127.0.0.1:{port}/app/{APP_KEY}?protocol=7") as ws:
            established = await recv_event(ws, "pusher:connection_established")
            yield cls(ws, json.loads(established["data"])["socket_id"])

    async def send(self, event: str, data: Any) -> None:
        await self.ws.send(json.dumps({"event": event, "data": data}))

    async def subscribe(self, channel: str) -> None:
        await self.send("pusher:subscribe", {"channel": channel})
        await self.expect("pusher_internal:subscription_succeeded")

    async def unsubscribe(self, channel: str) -> None:
        await self.send("pusher:unsubscribe", {"channel": channel})

    async def signin(self, user: dict[str, Any]) -> None:
        user_data = json.dumps(user)
        sig = hmac.new(APP_SECRET.encode(), f"{self.socket_id}::user::{user_data}".encode(), hashlib.sha256)
        await self.send("pusher:signin", {"user_data": user_data, "auth": f"{APP_KEY}:{sig.hexdigest()}"})
        await self.expect("pusher:signin_success")

    async def expect(self, event: str) -> dict[str, Any]:
        msg = await asyncio.wait_for(recv_event(self.ws, event), TIMEOUT)
        if isinstance(msg.get("data"), str):
            msg["data"] = json.loads(msg["data"])
        return msg


def named(rec: Receiver, name: str, channel: str) -> int:
    return Counter(rec.names())[(name, channel)]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    runner, url = await start_receiver(rec)
    try:
        yield rec, url
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------- occupied and vacated


async def test_occupied_once_and_vacated_after_the_last_node_empties(
    receiver: tuple[Receiver, str], prefix: str
) -> None:
    rec, url = receiver
    async with node(url, prefix) as a, node(url, prefix) as b:
        told_a, told_b = told(a), told(b)
        async with Client.on(a.port) as ca, Client.on(b.port) as cb:
            await ca.subscribe("news")
            await told_a.wait_for(("channel_occupied", "news"))
            await cb.subscribe("news")
            # node b's share reached the cluster before node a withdraws its own, or the
            # total would fall to 0 in between (vacated, then occupied again: by design)
            await total_reaches(a, CHANNEL, "news", 2)
            await ca.unsubscribe("news")  # node a is empty; node b still serves the channel
            # a marker after it on node a: its facts come after news' in Redis order
            await ca.subscribe("marker")
            await told_a.wait_for(("channel_occupied", "marker"))
            assert ("channel_vacated", "news") not in told_a.calls + told_b.calls
            await cb.unsubscribe("news")
            await told_b.wait_for(("channel_vacated", "news"))
            await rec.wait_for(lambda ev: named(rec, "channel_vacated", "news") == 1, timeout=TIMEOUT)
        assert told_a.calls.count(("channel_occupied", "news")) + told_b.calls.count(("channel_occupied", "news")) == 1
        assert named(rec, "channel_occupied", "news") == 1
        assert named(rec, "channel_vacated", "news") == 1


async def test_a_reload_onto_the_other_node_within_the_window_sends_nothing(
    receiver: tuple[Receiver, str], prefix: str
) -> None:
    rec, url = receiver
    async with node(url, prefix) as a, node(url, prefix) as b:
        async with Client.on(a.port) as ca:
            await ca.subscribe("reload")
            await rec.wait_for(lambda ev: named(rec, "channel_occupied", "reload") == 1)
        # the page reloads and lands on node b, well within the 3 s window
        async with Client.on(b.port) as cb:
            await cb.subscribe("reload")
            # a marker vacated on node a, whose window opens after the reload's would have
            async with Client.on(a.port) as cm:
                await cm.subscribe("marker")
            await rec.wait_for(lambda ev: named(rec, "channel_vacated", "marker") == 1, timeout=TIMEOUT)
            assert named(rec, "channel_vacated", "reload") == 0
            assert named(rec, "channel_occupied", "reload") == 1
        await rec.wait_for(lambda ev: named(rec, "channel_vacated", "reload") == 1, timeout=TIMEOUT)
    assert named(rec, "channel_occupied", "reload") == 1


async def test_a_node_killed_with_sigkill_leaves_the_totals_after_its_lease(
    receiver: tuple[Receiver, str], prefix: str
) -> None:
    rec, url = receiver
    # The survivor reaps nodes silent for 10 s; the killed node beats every 5 s (the default),
    # so a slow beat under load is not taken for a death.
    async with node(url, prefix, adapter={"heartbeat_interval": 0.2, "dead_after": 10.0}) as a:
        # workers: a worker of the test's hub, killed; the hub sees it at once (no lease)
        extra = worker_env(prefix) if _DRIVER_OF[prefix] == "workers" else {}
        with run_server(env={**node_env(url, prefix), **extra}) as b:
            async with Client.on(a.port) as ca:
                await ca.subscribe("crash")
                async with Client.on(b.port) as cb:
                    await cb.subscribe("crash")
                    await ca.unsubscribe("crash")  # only node b serves the channel now
                    await cb.subscribe("marker")
                    await rec.wait_for(lambda ev: named(rec, "channel_occupied", "marker") == 1)
                    b.proc.send_signal(signal.SIGKILL)
                    b.proc.wait(TIMEOUT)
                    # vacated once the lease ran out (<= 10 s + a beat) and the debounce passed
                    await rec.wait_for(
                        lambda ev: {("channel_vacated", "crash"), ("channel_vacated", "marker")} <= set(rec.names()),
                        timeout=30,
                    )
    assert named(rec, "channel_occupied", "crash") == 1
    assert named(rec, "channel_vacated", "crash") == 1
    counts = [e["subscription_count"] for e in rec.events if e["name"] == "subscription_count"
              and e["channel"] == "crash"]
    assert counts[-1] == 0


async def test_a_node_stopping_with_the_last_subscribers_sends_the_vacated(
    receiver: tuple[Receiver, str], prefix: str
) -> None:
    rec, url = receiver
    async with node(url, prefix):
        leaving = node(url, prefix)
        a = await leaving.__aenter__()
        stopped = False
        try:
            async with Client.on(a.port) as ca:
                await ca.subscribe("leaving")
                await rec.wait_for(lambda ev: named(rec, "channel_occupied", "leaving") == 1)
                stopped = True  # node a stops with its subscriber connected
                await asyncio.wait_for(leaving.__aexit__(None, None, None), TIMEOUT)
        finally:
            if not stopped:
                await leaving.__aexit__(None, None, None)
        # the stopping node was the origin of the last change: it told its webhooks, which
        # released the debounced vacated at close
        await rec.wait_for(lambda ev: named(rec, "channel_vacated", "leaving") == 1, timeout=TIMEOUT)


# ---------------------------------------------------------------- subscription counts


async def test_subscription_counts_carry_the_cluster_total_on_both_nodes(
    receiver: tuple[Receiver, str], prefix: str
) -> None:
    rec, url = receiver
    enable = {"SOKETI_DEFAULT_APP_ENABLE_SUBSCRIPTION_COUNT": "true"}
    async with node(url, prefix, **enable) as a, node(url, prefix, **enable) as b:
        async with Client.on(a.port) as c1, Client.on(b.port) as c2, Client.on(b.port) as c3:
            await c1.subscribe("counted")
            assert (await c1.expect("pusher_internal:subscription_count"))["data"] == {"subscription_count": 1}
            await c2.subscribe("counted")
            for c in (c1, c2):
                assert (await c.expect("pusher_internal:subscription_count"))["data"] == {"subscription_count": 2}
            await c3.subscribe("counted")
            for c in (c1, c2, c3):
                assert (await c.expect("pusher_internal:subscription_count"))["data"] == {"subscription_count": 3}
            await c1.unsubscribe("counted")
            for c in (c2, c3):
                assert (await c.expect("pusher_internal:subscription_count"))["data"] == {"subscription_count": 2}
            await rec.wait_for(lambda ev: len([e for e in ev if e["name"] == "subscription_count"]) >= 4)
    hooks = [e["subscription_count"] for e in rec.events if e["name"] == "subscription_count"][:4]
    assert sorted(hooks) == [1, 2, 2, 3]  # one per change, the cluster's total (HTTP order may vary)


@pytest.mark.clients
async def test_pusher_js_follows_the_cluster_count(
    receiver: tuple[Receiver, str], prefix: str, node_modules: Path
) -> None:
    from test_clients_pusherjs import check, run_scenario

    _, url = receiver
    enable = {"SOKETI_DEFAULT_APP_ENABLE_SUBSCRIPTION_COUNT": "true"}
    async with node(url, prefix, **enable) as a, node(url, prefix, **enable) as b:
        records = await asyncio.to_thread(run_scenario, "subscription_count_cluster", a.port, port2=b.port)
    counts = check(records, "counts")
    assert counts["a"] == [1, 2, 3, 2] and counts["b"] == [2, 3, 2] and counts["c"] == [3]


# ---------------------------------------------------------------- watchlists


async def test_watchlist_online_and_offline_across_nodes(receiver: tuple[Receiver, str], prefix: str) -> None:
    _, url = receiver
    async with node(url, prefix) as a, node(url, prefix) as b:
        async with Client.on(b.port) as early:
            await early.signin({"id": "early"})
            async with Client.on(a.port) as watcher:
                await watcher.signin({"id": "w", "watchlist": ["bob", "early"]})
                first = await watcher.expect("pusher_internal:watchlist_events")
                assert first["data"]["events"] == [{"name": "offline", "user_ids": ["bob", "early"]}]
                # signed in on node b only: the cluster's totals correct it
                again = await watcher.expect("pusher_internal:watchlist_events")
                assert again["data"]["events"] == [{"name": "online", "user_ids": ["early"]}]
                async with Client.on(b.port) as bob_b:
                    await bob_b.signin({"id": "bob"})
                    online = await watcher.expect("pusher_internal:watchlist_events")
                    assert online["data"]["events"] == [{"name": "online", "user_ids": ["bob"]}]
                    async with Client.on(a.port) as bob_a:
                        await bob_a.signin({"id": "bob"})
                        # both of bob's sign-ins reached the cluster's total before one leaves,
                        # or the total would dip to 0 and back (offline, online) by design
                        await total_reaches(a, USER, "bob", 2)
                        await bob_b.ws.close()  # bob is still signed in on node a
                        await early.ws.close()
                        offline = await watcher.expect("pusher_internal:watchlist_events")
                        assert offline["data"]["events"] == [{"name": "offline", "user_ids": ["early"]}]
                    offline = await watcher.expect("pusher_internal:watchlist_events")
                    assert offline["data"]["events"] == [{"name": "offline", "user_ids": ["bob"]}]
