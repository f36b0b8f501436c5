"""Cluster-wide counts in the core: occupied, vacated, subscription counts and watchlists.

No sockets: cores driven through fake native sockets (test_core_protocol.Peer), the
webhook sender's debounce on a clock the test moves (test_webhooks_observer.FakeTimers),
and, for several nodes, :class:`MemoryCluster`: an adapter that keeps the per-node
shares in memory and reports each change exactly as the adapter interface says
(:meth:`soketi_impl.adapters.base.Adapter.count_changed`), so the core's decisions
are tested apart from any transport. The same scenarios run over Redis with real
servers in tests/test_cluster_counts.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from soketi_impl import Router
from soketi_impl.adapters.base import LocalAdapter, crosses_zero
from soketi_impl.config import load_config
from soketi_impl.pusher import PusherServer
from soketi_impl.webhooks import WebhookSender
from test_core_protocol import APP, KEY, SECRET, FakeClock, Peer, closed_with
from test_webhooks_observer import FakeTimers

HOOKS = ["channel_occupied", "channel_vacated", "subscription_count"]


class RecordingSender(WebhookSender):
    """The real sender (its debounce on fake timers); what it would deliver is recorded."""

    def __init__(self, timers: FakeTimers) -> None:
        super().__init__(call_later=timers.call_later)
        self.sent: list[tuple[Any, ...]] = []

    def _enqueue_event(self, app: Any, event: dict[str, Any]) -> None:
        self.sent.append(tuple(event.values()))


class MemoryCluster:
    """Nodes sharing counts in memory; a killed node's shares are removed by a survivor."""

    def __init__(self, timers: FakeTimers) -> None:
        self.timers = timers
        self.nodes: list[MemoryNode] = []
        #: nodes cut off from the others: they hear no fact of another node's change
        self.deaf: set[MemoryNode] = set()
        self.shares: dict[tuple[str, str, str], dict[MemoryNode, int]] = {}

    def change(self, node: MemoryNode, key: tuple[str, str, str], n: int, every: bool, origin: MemoryNode) -> None:
        shares = self.shares.setdefault(key, {})
        previous = sum(shares.values())
        if n > 0:
            shares[node] = n
        else:
            shares.pop(node, None)
        total = sum(shares.values())
        if total == previous:
            return
        at_ms = int(self.timers.now * 1000)
        for other in self.nodes:
            if other is origin:
                other.host.count_total_changed(*key, total, previous, True, at_ms)
            elif (every or crosses_zero(total, previous)) and other not in self.deaf:
                other.host.count_total_changed(*key, total, previous, False, at_ms)

    def kill(self, node: MemoryNode) -> None:
        """The node dies without withdrawing; the first survivor reaps its shares."""
        self.nodes.remove(node)
        reaper = self.nodes[0]
        for key, shares in list(self.shares.items()):
            if node in shares:
                self.change(node, key, 0, True, reaper)


class MemoryNode(LocalAdapter):
    def __init__(self, cluster: MemoryCluster) -> None:
        super().__init__()
        self.cluster = cluster
        cluster.nodes.append(self)

    def publish(self, app_id: str, channel: str, payload: bytes, except_socket_id: str | None, cache: bool) -> None:
        for other in self.cluster.nodes:
            if other is not self:
                other.host.deliver(app_id, channel, payload, except_socket_id, cache)

    def count_changed(self, app_id: str, kind: str, name: str, local_count: int, every_node: bool = False) -> None:
        self.cluster.change(self, (app_id, kind, name), local_count, every_node, self)

    async def count_totals(self, app_id: str, kind: str, names: list[str]) -> list[int]:
        return [sum(self.cluster.shares.get((app_id, kind, n), {}).values()) for n in names]

    async def ask(self, app_id: str, op: str, arg: str | None) -> list[Any]:
        answers = (other.host.answer(app_id, op, arg) for other in self.cluster.nodes if other is not self)
        return [a for a in answers if a is not None]


def make_node(timers: FakeTimers, adapter: LocalAdapter | None = None, **env: str) -> tuple[PusherServer, RecordingSender]:
    base = {
        "SOKETI_DEFAULT_APP_ID": APP, "SOKETI_DEFAULT_APP_KEY": KEY, "SOKETI_DEFAULT_APP_SECRET": SECRET,
        "SOKETI_DEFAULT_APP_WEBHOOKS": json.dumps([{"url": "http://127.0.0.1:9/", "event_types": HOOKS}]),
        **env,
    }
    sender = RecordingSender(timers)
    core = PusherServer(load_config(None, environ=base), Router(), webhooks=sender, adapter=adapter, clock=FakeClock())
    return core, sender


async def advance(timers: FakeTimers, seconds: float) -> None:
    """Move the debounce clock, then let the confirmations of ended windows run."""
    timers.advance(seconds)
    for _ in range(3):
        await asyncio.sleep(0)


def names(*senders: RecordingSender) -> list[tuple[Any, ...]]:
    """Every node's recorded webhooks, without subscription_count."""
    return [e for s in senders for e in s.sent if e[0] != "subscription_count"]


def counts_of(peer: Peer, channel: str) -> list[int]:
    return [m["data"]["subscription_count"] for m in peer.events("pusher_internal:subscription_count")
            if m["channel"] == channel]


# ---------------------------------------------------------------- one node


async def test_one_node_occupied_vacated_count_and_reload() -> None:
    timers = FakeTimers()
    core, sender = make_node(timers)
    a, b = Peer(core).open(), Peer(core).open()
    a.subscribe("news")
    b.subscribe("news")
    a.send("pusher:unsubscribe", {"channel": "news"})
    b.send("pusher:unsubscribe", {"channel": "news"})
    assert sender.sent == [
        ("channel_occupied", "news"), ("subscription_count", "news", 1), ("subscription_count", "news", 2),
        ("subscription_count", "news", 1), ("subscription_count", "news", 0),
    ]
    await advance(timers, 2.9)
    b.subscribe("news")  # a reload: neither the vacated nor a second occupied
    await advance(timers, 10)
    assert names(sender) == [("channel_occupied", "news")]
    b.send("pusher:unsubscribe", {"channel": "news"})
    await advance(timers, 3)
    assert names(sender) == [("channel_occupied", "news"), ("channel_vacated", "news")]
    # no pusher_internal:subscription_count unless the app enables it
    assert counts_of(a, "news") == [] and counts_of(b, "news") == []


async def test_subscription_count_messages_only_when_enabled_and_not_for_presence() -> None:
    core, _ = make_node(FakeTimers(), SOKETI_DEFAULT_APP_ENABLE_SUBSCRIPTION_COUNT="true")
    a, b = Peer(core).open(), Peer(core).open()
    a.subscribe("news")
    await a.settle()
    b.subscribe("news")
    await a.settle()
    b.send("pusher:unsubscribe", {"channel": "news"})
    await a.settle()
    assert counts_of(a, "news") == [1, 2, 1]
    assert counts_of(b, "news") == [2]
    # after subscription_succeeded, never before it
    got = [m["event"] for m in b.got if m.get("channel") == "news"]
    assert got == ["pusher_internal:subscription_succeeded", "pusher_internal:subscription_count"]
    a.subscribe("presence-room", {"user_id": "u1"})
    b.subscribe("presence-room", {"user_id": "u2"})
    await a.settle()
    assert counts_of(a, "presence-room") == [] and counts_of(b, "presence-room") == []


async def test_a_burst_of_subscriptions_sends_the_latest_count_once() -> None:
    core, _ = make_node(FakeTimers(), SOKETI_DEFAULT_APP_ENABLE_SUBSCRIPTION_COUNT="true")
    peers = [Peer(core).open() for _ in range(50)]
    for p in peers:  # all within one loop iteration
        p.subscribe("crowd")
    await peers[0].settle()
    assert all(counts_of(p, "crowd") == [50] for p in peers)


# ---------------------------------------------------------------- two nodes


def two_nodes(**env: str) -> tuple[FakeTimers, MemoryCluster, list[tuple[PusherServer, RecordingSender]]]:
    timers = FakeTimers()
    cluster = MemoryCluster(timers)
    nodes = [make_node(timers, MemoryNode(cluster), **env) for _ in range(2)]
    return timers, cluster, nodes


async def test_occupied_once_and_vacated_only_after_the_last_node_empties() -> None:
    timers, _, [(na, sa), (nb, sb)] = two_nodes()
    a, b = Peer(na).open(), Peer(nb).open()
    a.subscribe("news")
    b.subscribe("news")
    assert names(sa, sb) == [("channel_occupied", "news")]
    a.send("pusher:unsubscribe", {"channel": "news"})  # node a is empty, node b is not
    await advance(timers, 10)
    assert names(sa, sb) == [("channel_occupied", "news")]
    b.send("pusher:unsubscribe", {"channel": "news"})
    await advance(timers, 2.9)
    assert names(sa, sb) == [("channel_occupied", "news")]
    await advance(timers, 0.1)
    assert names(sa, sb) == [("channel_occupied", "news"), ("channel_vacated", "news")]
    # the webhook counts are the cluster's, each change told once
    assert [e for s in (sa, sb) for e in s.sent if e[0] == "subscription_count"] == [
        ("subscription_count", "news", 1), ("subscription_count", "news", 1),  # node a's changes
        ("subscription_count", "news", 2), ("subscription_count", "news", 0),  # node b's
    ]


async def test_a_reload_onto_the_other_node_within_the_window_sends_nothing() -> None:
    timers, _, [(na, sa), (nb, sb)] = two_nodes()
    a = Peer(na).open()
    a.subscribe("news")
    a._close(1000, "reload")
    await advance(timers, 2.5)
    b = Peer(nb).open()
    b.subscribe("news")
    await advance(timers, 10)
    assert names(sa, sb) == [("channel_occupied", "news")]
    # the channel goes on on node b: its own leave is decided there
    b.send("pusher:unsubscribe", {"channel": "news"})
    await advance(timers, 3)
    assert names(sa, sb) == [("channel_occupied", "news"), ("channel_vacated", "news")]


async def test_back_on_the_other_node_after_the_window_is_a_new_occupation() -> None:
    timers, _, [(na, sa), (nb, sb)] = two_nodes()
    a = Peer(na).open()
    a.subscribe("news")
    a.send("pusher:unsubscribe", {"channel": "news"})
    await advance(timers, 3.5)
    Peer(nb).open().subscribe("news")
    assert names(sa) == [("channel_occupied", "news"), ("channel_vacated", "news")]
    assert names(sb) == [("channel_occupied", "news")]


async def test_a_dead_node_leaves_the_totals_and_the_vacated_is_decided() -> None:
    timers, cluster, [(na, sa), (nb, sb)] = two_nodes()
    Peer(nb).open().subscribe("news")
    assert names(sa, sb) == [("channel_occupied", "news")]
    cluster.kill(cluster.nodes[1])  # node b dies with its subscriber: node a reaps it
    await advance(timers, 3)
    assert names(sa) == [("channel_vacated", "news")]


async def test_a_return_the_vacating_node_did_not_hear_of_is_caught_when_its_window_ends() -> None:
    timers, cluster, [(na, sa), (nb, sb)] = two_nodes()
    a = Peer(na).open()
    a.subscribe("news")
    a.send("pusher:unsubscribe", {"channel": "news"})
    cluster.deaf.add(cluster.nodes[0])  # node a misses what happens next
    await advance(timers, 1)
    Peer(nb).open().subscribe("news")
    await advance(timers, 10)
    # node a's vacate was confirmed with the cluster's total (1): dropped
    assert names(sa, sb) == [("channel_occupied", "news")]


async def test_subscription_count_messages_carry_the_cluster_total_on_every_node() -> None:
    _, _, [(na, _), (nb, _)] = two_nodes(SOKETI_DEFAULT_APP_ENABLE_SUBSCRIPTION_COUNT="true")
    a, b1, b2 = Peer(na).open(), Peer(nb).open(), Peer(nb).open()
    for step in (
        lambda: a.subscribe("news"), lambda: b1.subscribe("news"), lambda: b2.subscribe("news"),
        lambda: b1.send("pusher:unsubscribe", {"channel": "news"}),
    ):
        step()
        await a.settle()
        nb.outbox.flush()
    assert counts_of(a, "news") == [1, 2, 3, 2]
    assert counts_of(b2, "news") == [3, 2]


async def test_watchlist_online_and_offline_across_nodes() -> None:
    _, _, [(na, _), (nb, _)] = two_nodes()
    watcher = Peer(na).open()
    watcher.signin({"id": "w", "watchlist": ["bob"]})
    bob_b = Peer(nb).open()
    bob_b.signin({"id": "bob"})
    na.outbox.flush()
    events = watcher.events("pusher_internal:watchlist_events")
    assert [e["data"]["events"] for e in events] == [
        [{"name": "offline", "user_ids": ["bob"]}], [{"name": "online", "user_ids": ["bob"]}],
    ]
    bob_a = Peer(na).open()
    bob_a.signin({"id": "bob"})  # online already: nothing new
    bob_b._close(1000, "")  # still signed in on node a: nothing new
    na.outbox.flush()
    assert len(watcher.events("pusher_internal:watchlist_events")) == 2
    bob_a._close(1000, "")
    na.outbox.flush()
    assert watcher.events("pusher_internal:watchlist_events")[-1]["data"]["events"] == [
        {"name": "offline", "user_ids": ["bob"]}
    ]


async def test_a_new_watchlist_learns_users_online_on_other_nodes_only() -> None:
    _, _, [(na, _), (nb, _)] = two_nodes()
    Peer(nb).open().signin({"id": "bob"})
    watcher = Peer(na).open()
    watcher.signin({"id": "w", "watchlist": ["bob", "carol"]})
    await watcher.settle()
    assert [e["data"]["events"] for e in watcher.events("pusher_internal:watchlist_events")] == [
        [{"name": "offline", "user_ids": ["bob", "carol"]}], [{"name": "online", "user_ids": ["bob"]}],
    ]


# ---------------------------------------------------------------- maxConnections across nodes


async def test_max_connections_counts_every_node_s_connections() -> None:
    timers, cluster, [(na, _), (nb, _)] = two_nodes(SOKETI_DEFAULT_APP_MAX_CONNS="3")
    a1, a2 = Peer(na).open(), Peer(na).open()
    await a1.settle()  # node a's count leaves at the end of its loop iteration
    assert na.apps[APP].elsewhere == 0 and nb.apps[APP].elsewhere == 2
    b1 = Peer(nb).open()
    refused = Peer(nb).open()
    assert await closed_with(refused) == 4004
    assert b1.closed_with is None and na.apps[APP].elsewhere == 1
    a2._close(1000, "")
    await a1.settle()
    Peer(nb).open()  # room again: node a has one
    await a1.settle()
    again = Peer(na).open()
    assert await closed_with(again) == 4004
    # a node that dies leaves the count when it is reaped; one that starts asks the others
    cluster.kill(cluster.nodes[1])
    assert na.apps[APP].elsewhere == 0
    nc, _ = make_node(timers, MemoryNode(cluster), SOKETI_DEFAULT_APP_MAX_CONNS="3")
    nc.counts.learn(nc.apps[APP])
    await a1.settle()
    assert nc.apps[APP].elsewhere == 1
    c1, c2 = Peer(nc).open(), Peer(nc).open()
    assert await closed_with(Peer(nc).open()) == 4004
    assert c1.closed_with is None and c2.closed_with is None


async def test_an_answer_older_than_a_fact_is_not_taken() -> None:
    """A node that answered a new node's question, then closed its connections: the new
    node hears the 0 before the answer, and keeps the 0."""
    timers, cluster, [(na, _), _] = two_nodes(SOKETI_DEFAULT_APP_MAX_CONNS="3")
    a1 = Peer(na).open()
    await a1.settle()
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    class Slow(MemoryNode):
        async def ask(self, app_id: str, op: str, arg: str | None) -> list[Any]:
            answers = await super().ask(app_id, op, arg)  # node a answers now: 1
            await gate
            return answers

    nc, _ = make_node(timers, Slow(cluster), SOKETI_DEFAULT_APP_MAX_CONNS="3")
    nc.counts.learn(nc.apps[APP])
    await a1.settle()
    a1._close(1000, "")
    await a1.settle()  # node a's 0 reaches node c before the answer
    gate.set_result(None)
    await a1.settle()
    assert nc.apps[APP].elsewhere == 0


async def test_max_connections_slack_is_the_other_nodes_admissions_of_one_delay() -> None:
    """The bound stated in soketi_impl/pusher/counts.py: nodes admitting in the same loop
    iteration (before either heard of the other) go over by the other's admissions, and no
    node goes over on its own count."""
    _, _, [(na, _), (nb, _)] = two_nodes(SOKETI_DEFAULT_APP_MAX_CONNS="2")
    peers = [Peer(core).open() for core in (na, nb, na, nb, na)]
    await peers[0].settle()
    assert [p.closed_with for p in peers] == [None, None, None, None, 4004]
    assert len(na.apps[APP].sockets) + len(nb.apps[APP].sockets) == 4  # 2 over: node b's 2
    assert na.apps[APP].elsewhere == 2 and nb.apps[APP].elsewhere == 2
    assert await closed_with(Peer(nb).open()) == 4004  # heard: no more anywhere


async def test_an_app_without_a_limit_reports_no_connection_count() -> None:
    _, cluster, [(na, _), _] = two_nodes()
    peer = Peer(na).open()
    await peer.settle()
    assert not any(kind == "sockets" for _, kind, _ in cluster.shares)
