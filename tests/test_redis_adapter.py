"""The Redis adapter's own behaviour: Lua scripts, key cleanup, a Redis taken away and back.

The multi-node suite (events, queries, presence, the SIGKILL crash) runs on every
adapter in ``test_cluster.py``; this file keeps what only the Redis adapter has.
Redis must run at 127.0.0.1:6379 (it does on CI): without it every test here fails
with a message that says so. Each test uses its own key prefix and deletes only
the keys under it. The in-process tests use short heartbeats to see a crashed
node reaped, and a TCP proxy to take Redis away from a node and back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from cluster_util import REDIS_HOST, REDIS_PORT, TIMEOUT, Proxy, _redis_keys, need, node, wait_for
from cluster_util import Client as _Client
from conftest import APP_ID


@pytest.fixture(autouse=True)
def _need_redis() -> None:
    need("redis")


def _delete_keys(prefix: str) -> None:
    keys = _redis_keys(prefix)
    if keys:
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=TIMEOUT)
        try:
            client.delete(*keys)
        finally:
            client.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    value = f"soketi-impl-test-{uuid.uuid4().hex[:12]}:"
    try:
        yield value
    finally:
        _delete_keys(value)


def _Proxy() -> Proxy:
    return Proxy(REDIS_HOST, REDIS_PORT)


# ---------------------------------------------------------------- in-process: crashes and outages


def _node(prefix: str, redis_port: int = REDIS_PORT, **timing: float) -> Any:
    """An in-process Redis node (cluster_util.node), reaching Redis through ``redis_port``."""
    return node("redis", prefix, env={"SOKETI_DB_REDIS_PORT": str(redis_port)}, **timing)


_wait_for = wait_for


async def test_a_crashed_node_is_reaped_and_its_members_leave(prefix: str) -> None:
    timing = {"heartbeat_interval": 0.1, "dead_after": 0.5}
    async with _node(prefix, **timing) as a, _node(prefix, **timing) as b:
        watcher = await _Client.open(a.port)
        await watcher.join("presence-crash", "watcher")
        ghost = await _Client.open(b.port)
        assert sorted(await ghost.join("presence-crash", "ghost")) == ["ghost", "watcher"]
        added = await watcher.recv()
        assert json.loads(added["data"])["user_id"] == "ghost"
        # B "crashes": its Redis tasks stop without withdrawing anything.
        adapter = b.pusher.adapter
        for task in adapter._tasks:
            task.cancel()
        await asyncio.gather(*adapter._tasks, return_exceptions=True)
        adapter._closed = True
        removed = await watcher.recv()  # within dead_after + a heartbeat
        assert removed["event"] == "pusher_internal:member_removed"
        assert json.loads(removed["data"]) == {"user_id": "ghost"}
        assert await a.pusher.presence_users(APP_ID, "presence-crash") == ["watcher"]
        await watcher.ws.close()
        await ghost.ws.close()
        await adapter._close_clients()


async def test_redis_outage_keeps_local_delivery_and_recovers(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = _Proxy()
    await proxy.start()
    timing = {"heartbeat_interval": 0.1, "dead_after": 5.0, "requests_timeout": 0.5}
    async with _node(prefix, proxy.port, **timing) as a, _node(prefix, **timing) as b:
        on_a, on_b = await _Client.open(a.port), await _Client.open(b.port)
        await on_a.join("presence-out", "ann")
        await on_b.join("presence-out", "bob")
        assert json.loads((await on_a.recv())["data"])["user_id"] == "bob"

        await proxy.cut()
        with caplog.at_level("WARNING", logger="soketi_impl.redis"):
            await _wait_for(lambda: not a.pusher.adapter._subscribed)
            # Still delivered on the node that publishes, and queries answer locally.
            assert await a.pusher.trigger(APP_ID, ["presence-out"], "local", "1") == 1
            assert (await on_a.recv())["event"] == "local"
            assert await a.pusher.presence_users(APP_ID, "presence-out") == ["ann"]
            for _ in range(5):  # fewer than the client's max_queue: it must still read our close
                await a.pusher.trigger(APP_ID, ["presence-out"], "burst", "x")
            failing = [r for r in caplog.records if "cross-node delivery is failing" in r.getMessage()]
            assert len(failing) == 1  # rate-limited

        await proxy.start()
        await _wait_for(lambda: a.pusher.adapter._subscribed and not a.pusher.adapter._down)
        # Cross-node delivery works again, both ways.
        await _wait_for(lambda: bool(b.pusher.apps[APP_ID].table.count("presence-out")))

        async def crossed() -> bool:
            await a.pusher.trigger(APP_ID, ["presence-out"], "back", "2")
            while True:
                msg = await on_b.recv()
                if msg["event"] == "back":
                    return True

        assert await asyncio.wait_for(crossed(), TIMEOUT)
        assert sorted(await a.pusher.presence_users(APP_ID, "presence-out")) == ["ann", "bob"]
        await on_a.ws.close()
        await on_b.ws.close()
    await proxy.cut()


async def test_a_silent_subscriber_connection_is_replaced(prefix: str) -> None:
    timing = {"heartbeat_interval": 0.1, "dead_after": 0.5}
    async with _node(prefix, **timing) as a, _node(prefix, **timing) as b:
        on_a = await _Client.open(a.port)
        await on_a.subscribe("news")
        # A's subscriber goes deaf without an error (as behind a vanished peer).
        adapter = a.pusher.adapter
        reader = adapter._tasks[0]
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        deaf = asyncio.ensure_future(asyncio.Event().wait())
        adapter._tasks[0] = deaf
        await _wait_for(lambda: deaf.cancelled())  # the heartbeat noticed the silence
        await _wait_for(lambda: adapter._subscribed)

        async def crossed() -> None:
            while True:
                await b.pusher.trigger(APP_ID, ["news"], "again", "1")
                with contextlib.suppress(asyncio.TimeoutError):
                    if (await asyncio.wait_for(on_a.recv(), 0.5))["event"] == "again":
                        return

        await asyncio.wait_for(crossed(), TIMEOUT)
        await on_a.ws.close()


# ---------------------------------------------------------------- failure paths


async def test_the_heartbeat_survives_any_exception(prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    async with _node(prefix, heartbeat_interval=0.05, dead_after=5.0) as a:
        adapter = a.pusher.adapter
        heartbeat = adapter.heartbeat
        real_once = heartbeat.once
        calls = 0
        recovered = asyncio.Event()

        async def flaky(first: bool = False) -> None:
            nonlocal calls
            calls += 1
            if calls <= 3:
                raise (RuntimeError, KeyError, ValueError)[calls - 1]("a bug")
            await real_once(first)
            recovered.set()

        heartbeat.once = flaky
        with caplog.at_level("WARNING", logger="soketi_impl.redis"):
            await asyncio.wait_for(recovered.wait(), TIMEOUT)
        assert not adapter._tasks[2].done()  # the heartbeat task is still running
        lines = [r for r in caplog.records if "Redis heartbeat failed" in r.getMessage()]
        assert len(lines) == 1 and lines[0].exc_info is None  # rate-limited, no traceback
        assert "RuntimeError" in lines[0].getMessage()


async def test_malformed_pubsub_messages_log_one_line_and_the_reader_goes_on(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    import redis.asyncio as aioredis

    async with _node(prefix) as a:
        on_a = await _Client.open(a.port)
        await on_a.subscribe("news")
        adapter = a.pusher.adapter
        events = adapter.base + "events#" + APP_ID
        raw = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT)
        try:
            with caplog.at_level("WARNING", logger="soketi_impl.redis"):
                for channel, data in [
                    (events, b"not json at all"),
                    (events, b'{"m": "+"}'),
                    (adapter.replies_channel, b"[1]"),
                    (adapter.requests_channel, b'{"id": 1}'),
                ]:
                    await raw.publish(channel, data)
                await _wait_for(lambda: adapter.reader.malformed == 4)
                # A well-formed event from "another node" after them is still delivered.
                frame = b'{"event":"still-here","channel":"news","data":"1"}'
                await raw.publish(events, b'["another-node","news",null,0]\n' + frame)
                assert (await on_a.recv())["event"] == "still-here"
        finally:
            await raw.aclose()
        lines = [r for r in caplog.records if "malformed message" in r.getMessage()]
        assert len(lines) == 1 and lines[0].exc_info is None  # rate-limited, no traceback
        await on_a.ws.close()


class _FailingBatches:
    """Put in front of a node's command pipeline client: while ``on``, every batch sent
    from now on fails as a lost connection does (a batch already in flight still
    lands, as it would; the failure is the real one, not a flag it could reset)."""

    def __init__(self, pipeline: Any) -> None:
        self.client = pipeline.client
        self.on = True
        pipeline.client = self

    def pipeline(self, **options: Any) -> Any:
        if not self.on:
            return self.client.pipeline(**options)
        return _FailedBatch()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


class _FailedBatch:
    def execute_command(self, *args: Any) -> None:
        pass

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        raise redis.ConnectionError("injected: Redis is away")


async def test_presence_join_when_a_redis_command_fails_then_registers(prefix: str) -> None:
    timing = {"heartbeat_interval": 0.1, "dead_after": 5.0}
    async with _node(prefix, **timing) as a, _node(prefix, **timing) as b:
        watcher = await _Client.open(b.port)
        assert await watcher.join("presence-fail", "watcher") == ["watcher"]
        failing = _FailingBatches(a.pusher.adapter.pipeline)  # every command on A fails
        ann = await _Client.open(a.port)
        # The join is answered from A's own members: the connection is not left waiting.
        assert await ann.join("presence-fail", "ann") == ["ann"]
        assert await a.pusher.presence_users(APP_ID, "presence-fail") == ["ann"]
        failing.on = False  # Redis "back": the heartbeat reconciles A's members
        added = await watcher.recv()
        assert added["event"] == "pusher_internal:member_added"
        assert json.loads(added["data"])["user_id"] == "ann"
        assert sorted(await b.pusher.presence_users(APP_ID, "presence-fail")) == ["ann", "watcher"]
        await ann.ws.close()
        await watcher.ws.close()


async def test_presence_leave_when_a_redis_command_fails_is_reconciled(prefix: str) -> None:
    """A member leaves while A's commands fail: Redis still lists it, so once Redis is
    back the heartbeat's reconciliation removes the stale registration and the other
    node hears member_removed."""
    timing = {"heartbeat_interval": 0.1, "dead_after": 5.0}
    async with _node(prefix, **timing) as a, _node(prefix, **timing) as b:
        from soketi_impl.pusher import Observer

        told: list[tuple[str, str]] = []

        class Members(Observer):
            def __init__(self, node: str) -> None:
                self.node = node

            def member_removed(self, app: Any, channel: str, user_id: str) -> None:
                told.append((self.node, user_id))

        a.pusher.add_observer(Members("a"))
        b.pusher.add_observer(Members("b"))
        ann = await _Client.open(a.port)
        assert await ann.join("presence-gone", "ann") == ["ann"]
        watcher = await _Client.open(b.port)
        assert sorted(await watcher.join("presence-gone", "watcher")) == ["ann", "watcher"]
        failing = _FailingBatches(a.pusher.adapter.pipeline)  # every command on A fails
        await ann.ws.close()
        await _wait_for(lambda: not a.pusher.apps[APP_ID].presence)
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=TIMEOUT)
        key = f"{prefix}soketi#presence#{APP_ID}#presence-gone"
        try:
            assert sorted(client.hkeys(key)) == [b"ann", b"watcher"]  # the leave never reached Redis
            failing.on = False  # Redis "back": the stale registration is removed
            removed = await watcher.recv()
            assert (removed["event"], json.loads(removed["data"])) == (
                "pusher_internal:member_removed", {"user_id": "ann"},
            )
            assert client.hkeys(key) == [b"watcher"]
        finally:
            client.close()
        await watcher.ws.close()
    # One leave, one member_removed for the observers (webhooks, hooks, metrics): A told
    # it when the leave command failed, and the reconciliation does not tell it again.
    assert [t for t in told if t[1] == "ann"] == [("a", "ann")]


async def test_a_reaped_node_registers_its_members_again_after_reconnecting(prefix: str) -> None:
    proxy = _Proxy()
    await proxy.start()
    timing = {"heartbeat_interval": 0.1, "dead_after": 0.5, "requests_timeout": 0.5}
    async with _node(prefix, proxy.port, **timing) as a, _node(prefix, **timing) as b:
        ann = await _Client.open(a.port)
        await ann.join("presence-back", "ann")
        watcher = await _Client.open(b.port)
        assert sorted(await watcher.join("presence-back", "watcher")) == ["ann", "watcher"]
        await proxy.cut()  # A is cut off longer than dead_after: B reaps it
        removed = await watcher.recv()
        assert (removed["event"], json.loads(removed["data"])) == (
            "pusher_internal:member_removed", {"user_id": "ann"},
        )
        await proxy.start()  # A reconnects, finds itself reaped, registers ann again
        added = await watcher.recv()
        assert added["event"] == "pusher_internal:member_added"
        assert json.loads(added["data"])["user_id"] == "ann"
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=TIMEOUT)
        try:
            members = client.hkeys(f"{prefix}soketi#presence#{APP_ID}#presence-back")
        finally:
            client.close()
        assert sorted(members) == [b"ann", b"watcher"]
        await ann.ws.close()
        await watcher.ws.close()
    await proxy.cut()


async def test_a_reaped_node_registers_its_counts_again_after_reconnecting(prefix: str) -> None:
    from soketi_impl.pusher import Observer

    class Occupation(Observer):
        def __init__(self) -> None:
            self.calls: list[str] = []

        def channel_occupied(self, app: Any, channel: str) -> None:
            self.calls.append("occupied")

        def channel_vacated(self, app: Any, channel: str) -> None:
            self.calls.append("vacated")

    proxy = _Proxy()
    await proxy.start()
    timing = {"heartbeat_interval": 0.1, "dead_after": 0.5, "requests_timeout": 0.5}
    async with _node(prefix, proxy.port, **timing) as a, _node(prefix, **timing) as b:
        told_a, told_b = a.pusher.add_observer(Occupation()), b.pusher.add_observer(Occupation())
        on_a = await _Client.open(a.port)
        await on_a.subscribe("counted")
        await _wait_for(lambda: told_a.calls == ["occupied"])
        await proxy.cut()  # A is cut off longer than dead_after: B reaps its share
        await _wait_for(lambda: told_b.calls == ["vacated"])
        await proxy.start()  # A reconnects, finds itself reaped, registers its share again
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=TIMEOUT)
        key = f"{prefix}soketi#count#{APP_ID}#channel#counted"
        try:
            await _wait_for(lambda: client.hvals(key) == [b"1"])
        finally:
            client.close()
        # occupied again. A missed B's vacate while it was cut off, so it tells the
        # occupation too: after an outage an occupied may be told twice (README)
        await _wait_for(lambda: "occupied" in told_a.calls[1:] + told_b.calls)
        await on_a.ws.close()
        await _wait_for(lambda: "vacated" in told_a.calls)  # and gone again: A decides it
    await proxy.cut()


async def test_a_query_answers_when_a_node_stays_silent(prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    import redis.asyncio as aioredis

    async with _node(prefix, requests_timeout=0.3) as a:
        on_a = await _Client.open(a.port)
        await on_a.subscribe("news")
        adapter = a.pusher.adapter
        mute = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT)
        pubsub = mute.pubsub()
        await pubsub.subscribe(adapter.requests_channel)  # counts as a node, never answers
        try:
            with caplog.at_level("INFO", logger="soketi_impl.redis"):
                started = time.monotonic()
                assert await a.pusher.channels(APP_ID) == {"news": {"subscription_count": 1}}
                waited = time.monotonic() - started
        finally:
            await pubsub.aclose()
            await mute.aclose()
        assert waited >= 0.3  # it did wait for the silent node, then answered
        assert any("1 of 2 nodes answered" in r.getMessage() for r in caplog.records)
        assert adapter.requests._pending == {}
        await on_a.ws.close()
