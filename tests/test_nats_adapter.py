"""The NATS adapter's own behaviour: NATS taken away and back, malformed messages, silent nodes.

The multi-node suite (events, queries, presence, the SIGKILL crash) runs on every
adapter in ``test_cluster.py``; this file keeps what only the NATS adapter has.
NATS with JetStream must run at 127.0.0.1:4222: without it every test here fails
with a message that says so. Each test uses its own prefix (subjects and presence
bucket) and deletes its bucket afterwards.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from cluster_util import (
    NATS_HOST,
    NATS_PORT,
    TIMEOUT,
    Client,
    Proxy,
    cleanup,
    need,
    new_prefix,
    node,
    wait_for,
)
from conftest import APP_ID, base_env
from soketi_impl.adapters.base import CHANNEL
from soketi_impl.adapters.nats.store import channel_key, count_key


@pytest.fixture(autouse=True)
def _need_nats() -> None:
    need("nats")


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    value = new_prefix("nats")
    try:
        yield value
    finally:
        await cleanup("nats", value)


async def test_nats_outage_keeps_local_delivery_and_re_registers_presence(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = Proxy(NATS_HOST, NATS_PORT)
    await proxy.start()
    timing = {"heartbeat_interval": 0.1, "dead_after": 0.5, "requests_timeout": 0.5}
    via_proxy = {"SOKETI_ADAPTER_NATS_SERVERS": f"127.0.0.1:{proxy.port}"}
    async with node("nats", prefix, env=via_proxy, **timing) as a, node("nats", prefix, **timing) as b:
        ann, watcher = await Client.open(a.port), await Client.open(b.port)
        await ann.join("presence-out", "ann")
        assert sorted(await watcher.join("presence-out", "watcher")) == ["ann", "watcher"]
        assert json.loads((await ann.recv())["data"])["user_id"] == "watcher"

        with caplog.at_level("WARNING", logger="soketi_impl.nats"):
            await proxy.cut()  # A is cut off longer than the lease: B reaps it
            removed = await watcher.recv()
            assert (removed["event"], json.loads(removed["data"])) == (
                "pusher_internal:member_removed", {"user_id": "ann"},
            )
            assert not a.pusher.adapter.connected
            # A still delivers locally, answers queries from its own state, and lets
            # a presence join in with its own members.
            assert await a.pusher.trigger(APP_ID, ["presence-out"], "local", "1") == 1
            assert (await ann.recv())["event"] == "local"
            assert await a.pusher.presence_users(APP_ID, "presence-out") == ["ann"]
            bob = await Client.open(a.port)
            assert sorted(await bob.join("presence-out", "bob")) == ["ann", "bob"]
            assert json.loads((await ann.recv())["data"])["user_id"] == "bob"
        assert any("NATS at" in r.getMessage() for r in caplog.records)

        await proxy.start()  # A reconnects, watches afresh, registers ann and bob again
        back: set[str] = set()
        while back != {"ann", "bob"}:
            msg = await watcher.recv(timeout=TIMEOUT + 2)
            if msg["event"] == "pusher_internal:member_added":
                back.add(json.loads(msg["data"])["user_id"])
        assert sorted(await b.pusher.presence_users(APP_ID, "presence-out")) == ["ann", "bob", "watcher"]
        # A's subscription counts were reaped with it, and are registered again too.
        replica = b.pusher.adapter.store.replica
        key = count_key(APP_ID, CHANNEL, "presence-out")
        await wait_for(lambda: replica.get(key, (0, {}))[1].get("s", {}) == {
            a.pusher.adapter.node_id: 2, b.pusher.adapter.node_id: 1,
        })
        assert await b.pusher.adapter.count_totals(APP_ID, CHANNEL, ["presence-out"]) == [3]

        async def crossed() -> None:
            while True:
                await a.pusher.trigger(APP_ID, ["presence-out"], "back", "2")
                msg = await watcher.recv()
                if msg["event"] == "back":
                    return

        await asyncio.wait_for(crossed(), TIMEOUT)
        for c in (ann, bob, watcher):
            await c.ws.close()
    await proxy.cut()


async def test_malformed_messages_log_one_line_and_the_node_goes_on(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with node("nats", prefix) as a:
        on_a = await Client.open(a.port)
        await on_a.subscribe("news")
        adapter = a.pusher.adapter
        raw = await nats.connect(f"nats://{NATS_HOST}:{NATS_PORT}", connect_timeout=2)
        try:
            with caplog.at_level("WARNING", logger="soketi_impl.nats"):
                for subject, data in [
                    (adapter.events_subject, b"not json at all"),
                    (adapter.requests_subject, b'{"id": 1}'),
                    (adapter.replies_subject, b"[1]"),
                    (adapter.nodes_subject, b"?what"),
                ]:
                    await raw.publish(subject, data)
                await raw.flush()
                await wait_for(lambda: adapter.malformed == 4)
                # A well-formed event from "another node" after them is still delivered.
                frame = b'{"event":"still-here","channel":"news","data":"1"}'
                await raw.publish(adapter.events_subject, b'["another-node","%s","news",null,0]\n' % APP_ID.encode() + frame)
                assert (await on_a.recv())["event"] == "still-here"
        finally:
            await raw.close()
        lines = [r for r in caplog.records if "malformed message" in r.getMessage()]
        assert len(lines) == 1 and lines[0].exc_info is None  # rate-limited, no traceback
        await on_a.ws.close()


async def test_a_query_answers_when_a_node_stays_silent(prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    async with node("nats", prefix, requests_timeout=0.3) as a:
        on_a = await Client.open(a.port)
        await on_a.subscribe("news")
        adapter = a.pusher.adapter
        mute = await nats.connect(f"nats://{NATS_HOST}:{NATS_PORT}", connect_timeout=2)
        try:
            await mute.publish(adapter.nodes_subject, b"+mute-node")  # a live node that never answers
            await mute.flush()
            await wait_for(lambda: adapter.nodes.alive() == 1)
            with caplog.at_level("INFO", logger="soketi_impl.nats"):
                started = time.monotonic()
                assert await a.pusher.channels(APP_ID) == {"news": {"subscription_count": 1}}
                waited = time.monotonic() - started
            # Its goodbye: no longer waited for.
            await mute.publish(adapter.nodes_subject, b"-mute-node")
            await mute.flush()
            await wait_for(lambda: adapter.nodes.alive() == 0)
        finally:
            await mute.close()
        assert waited >= 0.28  # it did wait for the silent node (0.3 s on the loop clock), then answered
        assert any("1 of 2 nodes answered" in r.getMessage() for r in caplog.records)
        assert adapter.requests._pending == {}
        await on_a.ws.close()


async def test_the_outbox_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    from soketi_impl.adapters.nats import NatsAdapter
    from soketi_impl.adapters.nats.outbox import MAX_QUEUE, MAX_QUEUE_BYTES
    from soketi_impl.config import load_config

    adapter = NatsAdapter(load_config(None, environ=base_env(0, SOKETI_ADAPTER_DRIVER="nats")))
    with caplog.at_level("WARNING", logger="soketi_impl.nats"):
        for _ in range(MAX_QUEUE + 3):  # no writer runs: nothing leaves the queue
            adapter.publish(APP_ID, "news", b"{}", None, False)
    assert adapter.outbox.dropped == 3
    lines = [r for r in caplog.records if "cross-node delivery is failing" in r.getMessage()]
    assert len(lines) == 1
    # bytes are bounded too
    big = NatsAdapter(load_config(None, environ=base_env(0, SOKETI_ADAPTER_DRIVER="nats")))
    frame = b"x" * (1024 * 1024)
    sent = MAX_QUEUE_BYTES // len(frame) + 2
    for _ in range(sent):
        big.publish(APP_ID, "news", frame, None, False)
    assert big.outbox.dropped >= 2 and big.outbox.dropped + len(big.outbox._queue) == sent
    assert big.outbox._bytes <= MAX_QUEUE_BYTES


def test_a_prefix_that_is_no_subject_is_refused() -> None:
    from soketi_impl.adapters.nats import NatsAdapter
    from soketi_impl.config import load_config
    from soketi_impl.errors import ConfigError

    for bad in ("two words", "a.*.b", "a..b", ".lead"):
        config = load_config(None, environ=base_env(0, SOKETI_ADAPTER_DRIVER="nats", SOKETI_ADAPTER_NATS_PREFIX=bad))
        with pytest.raises(ConfigError, match="SOKETI_ADAPTER_NATS_PREFIX"):
            NatsAdapter(config)


def test_the_nats_settings_are_read() -> None:
    from soketi_impl.config import load_config

    cfg = load_config(None, environ=base_env(
        0, SOKETI_ADAPTER_DRIVER="nats", SOKETI_ADAPTER_NATS_SERVERS='["nats://h1:4222", "h2:4223"]',
        SOKETI_ADAPTER_NATS_USER="u", SOKETI_ADAPTER_NATS_PASSWORD="p", SOKETI_ADAPTER_NATS_TOKEN="t",
        SOKETI_ADAPTER_NATS_TIMEOUT="2500", SOKETI_ADAPTER_NATS_REQUESTS_TIMEOUT="800",
        SOKETI_ADAPTER_NATS_PREFIX="eu.", SOKETI_ADAPTER_NATS_NODES_NUMBER="3",
    ))
    assert cfg.warnings == []
    assert (cfg.adapter_driver, cfg.adapter_nats_servers) == ("nats", ["nats://h1:4222", "h2:4223"])
    assert (cfg.adapter_nats_user, cfg.adapter_nats_password, cfg.adapter_nats_token) == ("u", "p", "t")
    assert (cfg.adapter_nats_timeout_ms, cfg.adapter_nats_requests_timeout_ms) == (2500, 800)
    assert (cfg.adapter_nats_prefix, cfg.adapter_nats_nodes_number) == ("eu.", 3)
    single = load_config(None, environ=base_env(0, SOKETI_ADAPTER_NATS_SERVERS="127.0.0.1:4222"))
    assert single.adapter_nats_servers == ["127.0.0.1:4222"]


def test_an_unreadable_credentials_file_stops_the_start(tmp_path: object) -> None:
    import subprocess
    import sys

    from conftest import free_port

    missing = f"{tmp_path}/missing.creds"
    env = base_env(free_port(), SOKETI_ADAPTER_DRIVER="nats", SOKETI_ADAPTER_NATS_CREDENTIALS=missing)
    proc = subprocess.run(
        [sys.executable, "-m", "soketi_impl", "start"], env=env,
        capture_output=True, text=True, timeout=20, check=False,
    )
    assert proc.returncode == 1
    assert f"SOKETI_ADAPTER_NATS_CREDENTIALS: cannot read {missing}: No such file or directory" in proc.stderr
    assert "listening on" not in proc.stderr and "Traceback" not in proc.stderr


async def test_a_node_stops_promptly_while_nats_is_away(prefix: str) -> None:
    proxy = Proxy(NATS_HOST, NATS_PORT)
    await proxy.start()
    via_proxy = {"SOKETI_ADAPTER_NATS_SERVERS": f"127.0.0.1:{proxy.port}"}
    stopping = node("nats", prefix, env=via_proxy, heartbeat_interval=0.1, dead_after=0.5)
    a = await stopping.__aenter__()
    try:
        ann = await Client.open(a.port)
        await ann.join("presence-stop", "ann")
        await ann.subscribe("news")
        await proxy.cut()
        await wait_for(lambda: not a.pusher.adapter.connected)
    finally:
        started = time.monotonic()
        await asyncio.wait_for(stopping.__aexit__(None, None, None), TIMEOUT)
    assert time.monotonic() - started < 3.0
    await proxy.cut()


# ---------------------------------------------------------------- the pure parts, no NATS


class _Recorder:
    """Records what the counts report to the core (the AdapterHost calls used here)."""

    def __init__(self) -> None:
        self.totals: list[tuple[str, int, int, bool]] = []

    def count_total_changed(
        self, app_id: str, kind: str, name: str, total: int, previous: int, origin: bool, at_ms: int
    ) -> None:
        self.totals.append((name, total, previous, origin))


def test_count_changes_are_reported_by_their_origin_and_across_zero_to_others() -> None:
    from soketi_impl.adapters.nats import NatsAdapter
    from soketi_impl.adapters.nats.counts import set_share
    from soketi_impl.config import load_config

    adapter = NatsAdapter(load_config(None, environ=base_env(0, SOKETI_ADAPTER_DRIVER="nats")))
    host = _Recorder()
    adapter.host = host  # type: ignore[assignment]
    me, other = adapter.node_id, "other-node"
    key = count_key(APP_ID, CHANNEL, "news")
    value: dict[str, Any] = {}
    assert set_share(value, other, 1, other, False) == (1, 0)
    assert set_share(value, other, 1, other, False) == (1, 1)  # no change: nothing to write
    adapter.counts.applied(key, 1, {}, copy.deepcopy(value), 1000, False)
    assert host.totals == [("news", 1, 0, False)]  # crosses zero: every node hears it
    old = copy.deepcopy(value)
    assert set_share(value, other, 2, other, False) == (2, 1)
    adapter.counts.applied(key, 2, old, copy.deepcopy(value), 1001, False)
    assert host.totals == [("news", 1, 0, False)]  # another node's change, no crossing: not ours
    # Our own change (revision 3: our share 1, total 2 -> 3) is skipped by the watch,
    # which shows revision 4 next (the other node leaves with every_node: 3 -> 1).
    old = copy.deepcopy(value)
    assert set_share(value, me, 1, me, False) == (3, 2)
    adapter.counts._own[key] = [(3, 3, 2)]
    assert set_share(value, other, 0, other, True) == (1, 3)
    adapter.counts.applied(key, 4, old, copy.deepcopy(value), 1002, False)
    assert host.totals[1:] == [("news", 3, 2, True), ("news", 1, 3, False)]  # ours first, in order
    assert key not in adapter.counts._own
    # Our own change seen by the watch: reported once, as its origin.
    old = copy.deepcopy(value)
    assert set_share(value, me, 0, me, False) == (0, 1)
    adapter.counts.applied(key, 5, old, copy.deepcopy(value), 1003, False)
    assert host.totals[3:] == [("news", 0, 1, True)]


def test_presence_edits_keep_one_member_per_user_and_the_limit() -> None:
    from soketi_impl.adapters.nats.presence import add_member, remove_member

    users: dict[str, dict[str, object]] = {}
    assert add_member(users, "n1", "ann", {"a": 1}, 2) == 1
    assert add_member(users, "n2", "ann", {"a": 2}, 2) == 0  # the same user on another node
    assert add_member(users, "n2", "bob", None, 2) == 1
    assert add_member(users, "n1", "cid", None, 2) == -1  # full
    assert add_member(users, "n1", "ann", None, 2) == 0  # a member may come back anywhere
    assert users["ann"] == {"i": {"a": 1}, "n": ["n1", "n2"]}
    assert remove_member(users, "n1", "ann") == 0  # still on n2
    assert remove_member(users, "n2", "ann") == 1
    assert remove_member(users, "n2", "ann") == 0  # idempotent
    assert list(users) == ["bob"]


async def test_a_lost_bucket_is_made_again_and_filled_by_the_nodes(prefix: str) -> None:
    """As after a NATS restart (the memory bucket is gone): the nodes register everything again."""
    from cluster_util import leftovers

    timing = {"heartbeat_interval": 0.1, "dead_after": 5.0, "requests_timeout": 0.5}
    async with node("nats", prefix, **timing) as a, node("nats", prefix, **timing) as b:
        ann, watcher = await Client.open(a.port), await Client.open(b.port)
        await ann.join("presence-lost", "ann")
        assert sorted(await watcher.join("presence-lost", "watcher")) == ["ann", "watcher"]
        keys = sorted([channel_key(APP_ID, "presence-lost"), count_key(APP_ID, CHANNEL, "presence-lost")])
        assert sorted(await leftovers("nats", prefix)) == keys  # the members, the subscription count
        await cleanup("nats", prefix)  # the bucket is gone
        bob = await Client.open(a.port)
        await bob.join("presence-lost", "bob")  # answered from A's members meanwhile

        async def refilled() -> None:
            while sorted(await leftovers("nats", prefix)) != keys:
                await asyncio.sleep(0.05)  # state in NATS: nothing announces it

        await asyncio.wait_for(refilled(), TIMEOUT)
        await wait_for(lambda: a.pusher.adapter.store.members(APP_ID, "presence-lost").keys()
                       == {"ann", "bob", "watcher"})
        for c in (ann, bob, watcher):
            await c.ws.close()
