"""The Redis adapter: two server processes (two ports) serving one app through a real Redis.

Redis must run at 127.0.0.1:6379 (it does on CI): without it every test here fails
with a message that says so. Each test uses its own key prefix and deletes only
the keys under it.

The subprocess tests drive the nodes like a user does (the Python ``pusher`` SDK
for HTTP, raw WebSocket clients); the in-process tests use short heartbeats to see
a crashed node reaped, and a TCP proxy to take Redis away from a node and back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pusher
import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from conftest import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    ServerProcess,
    base_env,
    free_port,
    run_server,
    wait_until,
)
from soketi_impl.twins import _speedups

TIMEOUT = 5.0
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def _redis_error() -> str | None:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=2) as s:
            s.settimeout(2)
            s.sendall(b"PING\r\n")
            if not s.recv(16).startswith(b"+PONG"):
                return "it did not answer PING"
    except OSError as exc:
        return str(exc)
    return None


_REDIS_ABSENT = _redis_error()


@pytest.fixture(autouse=True)
def _need_redis() -> None:
    if _REDIS_ABSENT is not None:
        pytest.fail(
            f"these tests need a Redis server at {REDIS_HOST}:{REDIS_PORT} ({_REDIS_ABSENT}); "
            "start one (e.g. `redis-server --daemonize yes`)",
            pytrace=False,
        )


MODE = "py" if _speedups.NO_EXTENSIONS else "c"


# ---------------------------------------------------------------- helpers


class Sub:
    """A raw Pusher WebSocket client on one node; ``recv`` skips pings."""

    def __init__(self, server: ServerProcess) -> None:
        self.ws: ClientConnection = connect(
            server.ws_url, open_timeout=TIMEOUT, close_timeout=1
        ).__enter__()
        established = self.recv()
        assert established["event"] == "pusher:connection_established"
        self.socket_id: str = json.loads(established["data"])["socket_id"]

    def recv(self) -> dict[str, Any]:
        while True:
            msg: dict[str, Any] = json.loads(self.ws.recv(timeout=TIMEOUT))
            if msg["event"] != "pusher:ping":
                return msg

    def send(self, event: str, data: Any) -> None:
        self.ws.send(json.dumps({"event": event, "data": data}))

    def subscribe(self, channel: str, channel_data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Subscribe (signing private/presence channels); returns the server's answer."""
        data: dict[str, Any] = {"channel": channel}
        if channel.startswith(("private-", "presence-")):
            text = json.dumps(channel_data) if channel_data is not None else None
            to_sign = f"{self.socket_id}:{channel}" + (f":{text}" if text is not None else "")
            data["auth"] = f"{APP_KEY}:{_sign(to_sign)}"
            if text is not None:
                data["channel_data"] = text
        self.send("pusher:subscribe", data)
        return self.recv()

    def join(self, channel: str, user_id: str) -> dict[str, Any]:
        """Join a presence channel; returns the ``presence`` object of subscription_succeeded."""
        ok = self.subscribe(channel, {"user_id": user_id, "user_info": {"name": user_id}})
        assert ok["event"] == "pusher_internal:subscription_succeeded", ok
        presence: dict[str, Any] = json.loads(ok["data"])["presence"]
        return presence

    def close(self) -> None:
        self.ws.close()


def _sign(text: str) -> str:
    return hmac.new(APP_SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()


def sdk(server: ServerProcess) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=APP_ID, key=APP_KEY, secret=APP_SECRET,
        host="127.0.0.1", port=server.port, ssl=False, timeout=TIMEOUT,
    )


def _keys(prefix: str) -> list[bytes]:
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=TIMEOUT)
    try:
        return list(client.scan_iter(match=prefix.replace("*", r"\*") + "*", count=1000))
    finally:
        client.close()


def _delete_keys(prefix: str) -> None:
    keys = _keys(prefix)
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


@pytest.fixture
def nodes(prefix: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two server processes on two ports sharing one Redis prefix."""
    env = {
        "SOKETI_ADAPTER_DRIVER": "redis",
        "SOKETI_DB_REDIS_HOST": REDIS_HOST,
        "SOKETI_DB_REDIS_PORT": str(REDIS_PORT),
        "SOKETI_DB_REDIS_KEY_PREFIX": prefix,
    }
    with run_server(MODE, env=env) as a, run_server(MODE, env=env) as b:
        yield a, b
    # Both nodes stopped cleanly: they withdrew everything they had registered.
    assert _keys(prefix) == []


@pytest.fixture
def subs() -> Iterator[list[Sub]]:
    made: list[Sub] = []
    yield made
    for s in made:
        with contextlib.suppress(Exception):
            s.close()


def new_sub(server: ServerProcess, subs: list[Sub]) -> Sub:
    s = Sub(server)
    subs.append(s)
    return s


def marker(client: pusher.Pusher, channel: str, s: Sub, label: str) -> list[dict[str, Any]]:
    """Trigger a marker event and return what ``s`` received before it.

    A node sends its Redis traffic in order, so whatever the node behind ``client``
    published before the marker reaches ``s`` before it: this is how a test sees
    that an event was *not* sent, without sleeping.
    """
    client.trigger(channel, "marker", label)
    before = []
    while True:
        msg = s.recv()
        if msg["event"] == "marker" and msg["data"] == label:
            return before
        before.append(msg)


# ---------------------------------------------------------------- events


def test_http_trigger_on_one_node_reaches_the_other(
    nodes: tuple[ServerProcess, ServerProcess], subs: list[Sub]
) -> None:
    a, b = nodes
    on_a, on_b, excluded = new_sub(a, subs), new_sub(b, subs), new_sub(b, subs)
    for s in (on_a, on_b, excluded):
        assert s.subscribe("news")["event"] == "pusher_internal:subscription_succeeded"
    sdk(a).trigger("news", "flash", {"n": 1})
    for s in (on_a, on_b, excluded):
        got = s.recv()
        assert (got["event"], got["channel"], json.loads(got["data"])) == ("flash", "news", {"n": 1})
    # Socket ids are unique across nodes, and the exclusion crosses nodes.
    assert len({on_a.socket_id, on_b.socket_id, excluded.socket_id}) == 3
    sdk(a).trigger("news", "not-for-you", "x", socket_id=excluded.socket_id)
    assert on_b.recv()["event"] == "not-for-you"
    assert on_a.recv()["event"] == "not-for-you"
    sdk(a).trigger("news", "for-all", "y")
    assert excluded.recv()["event"] == "for-all"  # not-for-you never reached it


def test_client_events_and_cache_channels_cross_nodes(
    nodes: tuple[ServerProcess, ServerProcess], subs: list[Sub]
) -> None:
    a, b = nodes
    sender, receiver = new_sub(a, subs), new_sub(b, subs)
    for s in (sender, receiver):
        assert s.subscribe("private-chat")["event"] == "pusher_internal:subscription_succeeded"
    sender.ws.send(json.dumps({"event": "client-typing", "channel": "private-chat", "data": {"who": "ann"}}))
    got = receiver.recv()
    assert (got["event"], got["channel"]) == ("client-typing", "private-chat")
    # The sender does not get its own client event back.
    assert marker(sdk(a), "private-chat", sender, "m1") == []
    # An event on a cache channel, triggered on A, is the cached event on B too.
    sdk(a).trigger("cache-weather", "forecast", "sunny")
    # B hears of it through pub/sub, after the trigger returned: its API tells when
    info = wait_until(lambda: sdk(b).channel_info("cache-weather", ["cache"]).get("cache"), TIMEOUT, "B's cache")
    assert (info["event"], info["data"]) == ("forecast", "sunny") and 0 < info["ttl"] <= 3600
    late = new_sub(b, subs)
    assert late.subscribe("cache-weather")["event"] == "pusher_internal:subscription_succeeded"
    cached = late.recv()
    assert (cached["event"], cached["data"]) == ("forecast", "sunny")


# ---------------------------------------------------------------- queries


def test_channel_queries_aggregate_both_nodes(
    nodes: tuple[ServerProcess, ServerProcess], subs: list[Sub]
) -> None:
    a, b = nodes
    s_a, s_b, s_b2 = new_sub(a, subs), new_sub(b, subs), new_sub(b, subs)
    for s in (s_a, s_b, s_b2):
        s.subscribe("news")
    s_a.join("presence-room", "ann")
    s_b.join("presence-room", "bob")
    s_b2.join("presence-room", "ann")  # ann again, on the other node
    for client in (sdk(a), sdk(b)):
        assert client.channels_info(attributes=["subscription_count"])["channels"] == {
            "news": {"subscription_count": 3},
            "presence-room": {"subscription_count": 3},
        }
        assert client.channels_info("presence-", ["user_count"]) == {
            "channels": {"presence-room": {"user_count": 2}}
        }
        assert client.channel_info("presence-room", ["user_count", "subscription_count"]) == {
            "occupied": True, "user_count": 2, "subscription_count": 3,
        }
        assert client.channel_info("news", ["subscription_count"]) == {
            "occupied": True, "subscription_count": 3,
        }
        users = client.users_info("presence-room")["users"]
        assert sorted(u["id"] for u in users) == ["ann", "bob"]
    assert sdk(a).channel_info("empty") == {"occupied": False}


# ---------------------------------------------------------------- presence


def test_presence_one_member_per_user_across_nodes(
    nodes: tuple[ServerProcess, ServerProcess], subs: list[Sub]
) -> None:
    a, b = nodes
    watcher = new_sub(a, subs)
    assert watcher.join("presence-team", "watcher")["ids"] == ["watcher"]
    first = new_sub(a, subs)
    presence = first.join("presence-team", "u1")
    assert sorted(presence["ids"]) == ["u1", "watcher"]
    added = watcher.recv()
    assert added["event"] == "pusher_internal:member_added"
    assert json.loads(added["data"]) == {"user_id": "u1", "user_info": {"name": "u1"}}

    # The same user on the other node: listed with everyone, but no second member_added.
    second = new_sub(b, subs)
    presence = second.join("presence-team", "u1")
    assert sorted(presence["ids"]) == ["u1", "watcher"] and presence["count"] == 2
    assert presence["hash"]["watcher"] == {"name": "watcher"}
    assert marker(sdk(b), "presence-team", watcher, "after-second-join") == []

    # A member on B is announced to the watcher on A.
    other = new_sub(b, subs)
    other.join("presence-team", "u2")
    added = watcher.recv()
    assert (added["event"], json.loads(added["data"])["user_id"]) == ("pusher_internal:member_added", "u2")

    # u1 leaves A: still on B, so no member_removed ...
    first.close()
    assert marker(sdk(a), "presence-team", watcher, "after-first-leave") == []
    assert sorted(u["id"] for u in sdk(a).users_info("presence-team")["users"]) == ["u1", "u2", "watcher"]
    # ... until the last connection of u1 anywhere leaves.
    second.send("pusher:unsubscribe", {"channel": "presence-team"})
    removed = watcher.recv()
    assert removed["event"] == "pusher_internal:member_removed"
    assert json.loads(removed["data"]) == {"user_id": "u1"}
    assert sorted(u["id"] for u in sdk(b).users_info("presence-team")["users"]) == ["u2", "watcher"]


def test_presence_member_limit_holds_across_nodes(prefix: str, subs: list[Sub]) -> None:
    env = {
        "SOKETI_ADAPTER_DRIVER": "redis",
        "SOKETI_DB_REDIS_KEY_PREFIX": prefix,
        "SOKETI_PRESENCE_MAX_MEMBERS": "2",
    }
    with run_server(MODE, env=env) as a, run_server(MODE, env=env) as b:
        new_sub(a, subs).join("presence-small", "u1")
        new_sub(b, subs).join("presence-small", "u2")
        refused = new_sub(b, subs).subscribe("presence-small", {"user_id": "u3"})
        assert refused["event"] == "pusher:subscription_error"
        assert refused["data"]["type"] == "LimitReached"
        # A member already in may open another connection anywhere.
        new_sub(a, subs).join("presence-small", "u2")
        assert sdk(a).channel_info("presence-small", ["user_count"])["user_count"] == 2


# ---------------------------------------------------------------- users


def test_terminate_user_connections_on_the_other_node(
    nodes: tuple[ServerProcess, ServerProcess], subs: list[Sub]
) -> None:
    a, b = nodes
    target, bystander = new_sub(b, subs), new_sub(b, subs)
    for s, uid in ((target, "t-1"), (bystander, "t-2")):
        user_data = json.dumps({"id": uid})
        s.send("pusher:signin", {
            "auth": f"{APP_KEY}:{_sign(f'{s.socket_id}::user::{user_data}')}", "user_data": user_data,
        })
        assert s.recv()["event"] == "pusher:signin_success"
    # A message to the user, sent on A, reaches its connection on B.
    sdk(a).send_to_user("t-1", "hello", {"to": "you"})
    assert target.recv()["event"] == "hello"
    assert sdk(a).terminate_user_connections("t-1") == {}
    err = target.recv()
    assert err["event"] == "pusher:error" and err["data"]["code"] == 4009
    with pytest.raises(ConnectionClosed) as closed:
        target.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4009
    bystander.send("pusher:ping", {})
    assert bystander.recv()["event"] == "pusher:pong"


# ---------------------------------------------------------------- start without Redis


def test_unreachable_redis_exits_1_with_one_clear_line() -> None:
    dead_port = free_port()  # nothing listens there
    env = base_env(free_port(), SOKETI_ADAPTER_DRIVER="redis", SOKETI_DB_REDIS_PORT=str(dead_port))
    proc = subprocess.run(
        [sys.executable, "-m", "soketi_impl", "start"], env=env,
        capture_output=True, text=True, timeout=20, check=False,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "cannot connect to Redis" in line]
    assert len(errors) == 1, proc.stderr
    assert f"cannot connect to Redis at 127.0.0.1:{dead_port}: " in errors[0]
    assert "listening on" not in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- in-process: crashes and outages


class _Proxy:
    """A TCP proxy to Redis that a test can cut (closing every connection) and restore."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(REDIS_HOST, REDIS_PORT)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


class _Client:
    """A raw Pusher client (``websockets`` asyncio) for the in-process tests."""

    def __init__(self, ws: Any, socket_id: str) -> None:
        self.ws = ws
        self.socket_id = socket_id

    @classmethod
    async def open(cls, port: int) -> _Client:
        from websockets.asyncio.client import connect as aconnect

        url = f"ws://127.0.0.1:{port}/app/{APP_KEY}?protocol=7"
        ws = await aconnect(url, open_timeout=TIMEOUT, close_timeout=1)
        established = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        return cls(ws, json.loads(established["data"])["socket_id"])

    async def recv(self) -> dict[str, Any]:
        while True:
            msg: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
            if msg["event"] != "pusher:ping":
                return msg

    async def subscribe(self, channel: str) -> None:
        await self.ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        assert (await self.recv())["event"] == "pusher_internal:subscription_succeeded"

    async def join(self, channel: str, user_id: str) -> list[str]:
        data = json.dumps({"user_id": user_id})
        auth = f"{APP_KEY}:{_sign(f'{self.socket_id}:{channel}:{data}')}"
        await self.ws.send(json.dumps(
            {"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth, "channel_data": data}}
        ))
        ok = await self.recv()
        assert ok["event"] == "pusher_internal:subscription_succeeded", ok
        ids: list[str] = json.loads(ok["data"])["presence"]["ids"]
        return ids


@contextlib.asynccontextmanager
async def _node(prefix: str, redis_port: int = REDIS_PORT, **timing: float) -> AsyncIterator[Any]:
    from soketi_impl.adapters.redis import RedisAdapter
    from soketi_impl.config import load_config
    from soketi_impl.server import Server

    config = load_config(None, environ=base_env(
        0, SOKETI_ADAPTER_DRIVER="redis", SOKETI_DB_REDIS_KEY_PREFIX=prefix,
        SOKETI_DB_REDIS_PORT=str(redis_port),
    ))
    server = Server(config, adapter=RedisAdapter(config, **timing))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


async def _wait_for(predicate: Any, timeout: float = TIMEOUT) -> None:
    """Poll a condition that no event announces (state in another process: Redis)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


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
