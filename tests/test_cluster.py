"""The multi-node suite, on every adapter (Redis, NATS, workers): two or three server processes, one app.

Each test runs once per driver (``redis``, ``nats``, ``workers``), each with a prefix
of its own; the services must run (see :mod:`cluster_util`). With ``workers`` the two
nodes are the two workers of one ``soketi-impl start --workers 2`` process (each on a
port of its own), or in-process servers on a hub of the test's. The subprocess tests drive the
nodes like a user does (the Python ``pusher`` SDK for HTTP, raw WebSocket clients);
the crash test kills a node with SIGKILL and watches its members leave within the
lease, with the webhook sent once. What only one adapter has (Redis' Lua and
proxy cuts, NATS reconnection) is tested in ``test_redis_adapter.py`` and
``test_nats_adapter.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from websockets.exceptions import ConnectionClosed

from cluster_util import (
    DRIVERS,
    TIMEOUT,
    Client,
    Sub,
    cleanup,
    cluster_env,
    leftovers,
    marker,
    need,
    new_prefix,
    run_workers,
    sdk,
    sign,
    worker_pids,
)
from conftest import APP_KEY, ServerProcess, base_env, free_port, run_process, run_server
from soketi_impl.twins import _speedups
from test_server_webhooks_metrics import Receiver, start_receiver

MODE = "py" if _speedups.NO_EXTENSIONS else "c"
T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end from sync code, whether or not a loop runs here."""
    result: list[T] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(coro)))
    thread.start()
    thread.join(TIMEOUT * 3)
    assert result, "timed out"
    return result[0]


#: the drivers with a service (the tests of what happens when it is away, or of leases)
SERVICES = [d for d in DRIVERS if d != "workers"]


@contextlib.contextmanager
def two_nodes(driver: str, env: dict[str, str]) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two server processes of ``driver``'s cluster, or the two workers of one process."""
    if driver == "workers":
        with run_workers(env, 2, MODE) as (_, (a, b)):
            yield a, b
        return
    with run_server(MODE, env=env) as a, run_server(MODE, env=env) as b:
        yield a, b


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    """The adapter of the test's cluster; its service must run."""
    need(request.param)
    return str(request.param)


@pytest.fixture
def prefix(driver: str) -> Iterator[str]:
    """A prefix of this test alone; what it holds is deleted afterwards."""
    value = new_prefix(driver)
    try:
        yield value
    finally:
        run_sync(cleanup(driver, value))


@pytest.fixture
def nodes(driver: str, prefix: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two server processes on two ports sharing one prefix."""
    with two_nodes(driver, cluster_env(driver, prefix)) as (a, b):
        yield a, b
    # Both nodes stopped cleanly: they withdrew everything they had registered.
    assert run_sync(leftovers(driver, prefix)) == []


@pytest.fixture
def subs() -> Iterator[list[Sub]]:
    made: list[Sub] = []
    yield made
    for s in made:
        try:
            s.close()
        except Exception:
            pass


def new_sub(server: ServerProcess, subs: list[Sub]) -> Sub:
    s = Sub(server)
    subs.append(s)
    return s


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
    late = new_sub(b, subs)
    # B got the event once A's marker (published after it) reached B's subscriber.
    assert [m["data"] for m in marker(sdk(a), "private-chat", receiver, "m2")] == ["m1"]
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


def test_presence_member_limit_holds_across_nodes(driver: str, prefix: str, subs: list[Sub]) -> None:
    env = cluster_env(driver, prefix, SOKETI_PRESENCE_MAX_MEMBERS="2")
    with two_nodes(driver, env) as (a, b):
        new_sub(a, subs).join("presence-small", "u1")
        new_sub(b, subs).join("presence-small", "u2")
        refused = new_sub(b, subs).subscribe("presence-small", {"user_id": "u3"})
        assert refused["event"] == "pusher:subscription_error"
        assert refused["data"]["type"] == "LimitReached"
        # A member already in may open another connection anywhere.
        new_sub(a, subs).join("presence-small", "u2")
        assert sdk(a).channel_info("presence-small", ["user_count"])["user_count"] == 2


async def test_concurrent_joins_make_one_member_and_respect_the_limit(driver: str, prefix: str) -> None:
    """Joins race on two nodes: the limit holds across them, and a user is added and removed once."""
    from cluster_util import node

    env = {"SOKETI_PRESENCE_MAX_MEMBERS": "3"}

    async def try_join(c: Client, channel: str, uid: str) -> bool:
        data = json.dumps({"user_id": uid})
        auth = f"{APP_KEY}:{sign(f'{c.socket_id}:{channel}:{data}')}"
        await c.ws.send(json.dumps({"event": "pusher:subscribe", "data": {
            "channel": channel, "auth": auth, "channel_data": data}}))
        answer = await c.recv()
        return bool(answer["event"] == "pusher_internal:subscription_succeeded")

    async def member_events(c: Client, until: str) -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        while not seen or seen[-1][0] != until:
            msg = await c.recv()
            if msg["event"].startswith("pusher_internal:member_"):
                seen.append((msg["event"].rsplit("_", 1)[1], json.loads(msg["data"])["user_id"]))
        return seen

    async with node(driver, prefix, env=env) as a, node(driver, prefix, env=env) as b:
        app_id = a.pusher.config.apps[0].id
        # Six users, one connection each, alternating nodes, race for the two free places.
        watcher = await Client.open(a.port)
        assert await watcher.join("presence-rush", "watcher") == ["watcher"]
        racers = [await Client.open((a, b)[i % 2].port) for i in range(6)]
        results = await asyncio.gather(*(try_join(c, "presence-rush", f"u{i}") for i, c in enumerate(racers)))
        admitted = {f"u{i}" for i, ok in enumerate(results) if ok}
        assert len(admitted) == 2, results
        for node_ in (a, b):
            assert sorted(await node_.pusher.presence_users(app_id, "presence-rush")) == sorted(
                admitted | {"watcher"}
            )
        # One user, six connections on both nodes at once: added once, removed once.
        spy = await Client.open(b.port)
        await spy.join("presence-dup", "spy")
        dups = [await Client.open((a, b)[i % 2].port) for i in range(6)]
        assert all(await asyncio.gather(*(try_join(c, "presence-dup", "dup") for c in dups)))
        await asyncio.gather(*(c.ws.close() for c in dups))
        assert await member_events(spy, "removed") == [("added", "dup"), ("removed", "dup")]
        for c in (*racers, watcher, spy):
            await c.ws.close()


# ---------------------------------------------------------------- users


def test_terminate_user_connections_on_the_other_node(
    nodes: tuple[ServerProcess, ServerProcess], subs: list[Sub]
) -> None:
    a, b = nodes
    target, bystander = new_sub(b, subs), new_sub(b, subs)
    for s, uid in ((target, "t-1"), (bystander, "t-2")):
        user_data = json.dumps({"id": uid})
        s.send("pusher:signin", {
            "auth": f"{APP_KEY}:{sign(f'{s.socket_id}::user::{user_data}')}", "user_data": user_data,
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


# ---------------------------------------------------------------- start without the service


@pytest.mark.parametrize("driver", SERVICES, indirect=True)  # workers: no service to miss
def test_unreachable_service_exits_1_with_one_clear_line(driver: str) -> None:
    dead_port = free_port()  # nothing listens there
    if driver == "redis":
        extra = {"SOKETI_DB_REDIS_PORT": str(dead_port)}
        wanted = f"cannot connect to Redis at 127.0.0.1:{dead_port}: "
    else:
        extra = {"SOKETI_ADAPTER_NATS_SERVERS": f"127.0.0.1:{dead_port}", "SOKETI_ADAPTER_NATS_TIMEOUT": "1000"}
        wanted = f"cannot connect to NATS at nats://127.0.0.1:{dead_port}: "
    env = base_env(free_port(), SOKETI_ADAPTER_DRIVER=driver, **extra)
    proc = subprocess.run(
        [sys.executable, "-m", "soketi_impl", "start"], env=env,
        capture_output=True, text=True, timeout=20, check=False,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "cannot connect to" in line]
    assert len(errors) == 1, proc.stderr
    assert wanted in errors[0]
    assert "listening on" not in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- a node killed with SIGKILL


HEARTBEAT, LEASE = 0.2, 1.0
NODE_SCRIPT = str(Path(__file__).with_name("cluster_node.py"))


@pytest.mark.parametrize("driver", SERVICES, indirect=True)  # workers: the next test
async def test_a_node_killed_with_sigkill_loses_its_members_within_the_lease(
    driver: str, prefix: str
) -> None:
    receiver = Receiver()
    runner, url = await start_receiver(receiver)
    hooks = json.dumps([{"url": url, "event_types": ["member_added", "member_removed"]}])
    env = cluster_env(driver, prefix, SOKETI_DEFAULT_APP_WEBHOOKS=hooks)
    argv = [sys.executable, NODE_SCRIPT, str(HEARTBEAT), str(LEASE)]

    def removed(uid: str) -> int:
        return sum(1 for e in receiver.events if (e["name"], e.get("user_id")) == ("member_removed", uid))

    try:
        with run_process(argv, "listening on", free_port(), env, mode=MODE) as a, \
                run_process(argv, "listening on", free_port(), env, mode=MODE) as c, \
                run_process(argv, "listening on", free_port(), env, mode=MODE) as b:
            watcher, other = await Client.open(a.port), await Client.open(c.port)
            await watcher.join("presence-crash", "watcher")
            await other.join("presence-crash", "other")
            ghost = await Client.open(b.port)
            assert sorted(await ghost.join("presence-crash", "ghost")) == ["ghost", "other", "watcher"]
            for s in (watcher, other):
                while (await s.recv())["event"] != "pusher_internal:member_added" or False:
                    pass
            await receiver.wait_for(lambda ev: any(e.get("user_id") == "ghost" for e in ev))

            os.kill(b.proc.pid, signal.SIGKILL)
            b.proc.wait(TIMEOUT)
            killed = time.monotonic()
            for s in (watcher, other):
                while True:
                    msg = await s.recv(timeout=LEASE + 4 * HEARTBEAT + TIMEOUT)
                    if msg["event"] == "pusher_internal:member_removed":
                        break
                assert json.loads(msg["data"]) == {"user_id": "ghost"}
            # within the lease and a heartbeat or two (and the test's own latency)
            assert time.monotonic() - killed < LEASE + 5 * HEARTBEAT + 1.5
            await receiver.wait_for(lambda ev: removed("ghost") >= 1, timeout=15)
            # Markers: a member leaves on each surviving node; a second (duplicate)
            # ghost removal would have been sent before them.
            await watcher.ws.close()
            await other.ws.close()
            await receiver.wait_for(lambda ev: removed("watcher") and removed("other"), timeout=15)
            assert removed("ghost") == 1, receiver.events
        assert await leftovers(driver, prefix) == []
    finally:
        await runner.cleanup()


async def test_a_worker_killed_with_sigkill_loses_its_members_at_once() -> None:
    """``--workers 3``: the hub sees the worker's connection end, so its members leave at
    once (member_removed everywhere, the webhook once), and the supervisor restarts it."""
    receiver = Receiver()
    runner, url = await start_receiver(receiver)
    hooks = json.dumps([{"url": url, "event_types": ["member_added", "member_removed"]}])

    def removed(uid: str) -> int:
        return sum(1 for e in receiver.events if (e["name"], e.get("user_id")) == ("member_removed", uid))

    try:
        with run_workers({"SOKETI_DEFAULT_APP_WEBHOOKS": hooks}, 3, MODE) as (sup, (a, c, b)):
            watcher, other = await Client.open(a.port), await Client.open(c.port)
            await watcher.join("presence-crash", "watcher")
            await other.join("presence-crash", "other")
            ghost = await Client.open(b.port)
            assert sorted(await ghost.join("presence-crash", "ghost")) == ["ghost", "other", "watcher"]
            for s in (watcher, other):
                while (await s.recv())["event"] != "pusher_internal:member_added":
                    pass
            await receiver.wait_for(lambda ev: any(e.get("user_id") == "ghost" for e in ev))

            os.kill(worker_pids(sup)[2], signal.SIGKILL)
            for s in (watcher, other):
                while True:
                    msg = await s.recv()
                    if msg["event"] == "pusher_internal:member_removed":
                        break
                assert json.loads(msg["data"]) == {"user_id": "ghost"}
            await receiver.wait_for(lambda ev: removed("ghost") >= 1, timeout=15)
            # The supervisor restarts worker 2, which starts empty and serves again.
            restarted = await asyncio.to_thread(
                wait_line, sup, "soketi-impl worker 2 listening on", 2
            )
            assert restarted
            assert any("worker 2 (pid" in line and "SIGKILL" in line for line in sup.log), sup.log
            back = await Client.open(b.port)
            assert sorted(await back.join("presence-crash", "back")) == ["back", "other", "watcher"]
            await back.ws.close()
            await watcher.ws.close()
            await other.ws.close()
            await receiver.wait_for(lambda ev: removed("watcher") and removed("other"), timeout=15)
            assert removed("ghost") == 1, receiver.events
    finally:
        await runner.cleanup()


def wait_line(server: ServerProcess, text: str, times: int, timeout: float = 20) -> bool:
    """Whether ``text`` appears ``times`` times in the log within ``timeout`` (lines come from a thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(1 for line in list(server.log) if text in line) >= times:
            return True
        time.sleep(0.05)
    return False
