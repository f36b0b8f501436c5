"""What the multi-node tests share, for every adapter: services, env vars, clients, a TCP proxy.

``DRIVERS`` are the adapters the cluster suite runs on. :func:`cluster_env` gives
the variables that make a server a node of ``driver`` under a prefix of its own
(:func:`new_prefix`), so parallel test workers never share state; the ``workers``
driver is ``soketi-impl start --workers N`` with no service: its subprocess
"nodes" are the workers of one process (:func:`run_workers`, each worker on a port
of its own besides the shared one) and its in-process nodes are servers whose
:class:`~soketi_impl.adapters.local_ipc.HubAdapter` connects to a hub run in the
test's event loop (:func:`node_adapter`);
:func:`leftovers` lists what a prefix still holds (nothing, after clean stops) and
:func:`cleanup` deletes it. The services must run (Redis at 127.0.0.1:6379, NATS
with JetStream at 127.0.0.1:4222): without one, :func:`need` fails the test with a
message that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import itertools
import json
import os
import random
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pusher
import pytest
from websockets.sync.client import ClientConnection, connect

from conftest import APP_KEY, APP_SECRET, ServerProcess, base_env, free_port

TIMEOUT = 5.0
DRIVERS = ("redis", "nats", "workers")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
NATS_HOST, NATS_PORT = "127.0.0.1", 4222


# ---------------------------------------------------------------- services


@functools.cache
def service_error(driver: str) -> str | None:
    """Why ``driver``'s service cannot be used, or None."""
    if driver == "workers":
        return None  # no service: the supervisor's hub
    host, port, probe, answer = (
        (REDIS_HOST, REDIS_PORT, b"PING\r\n", b"+PONG") if driver == "redis"
        else (NATS_HOST, NATS_PORT, b"", b"INFO ")
    )
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.settimeout(2)
            if probe:
                s.sendall(probe)
            if not s.recv(16).startswith(answer):
                return "it did not answer as expected"
    except OSError as exc:
        return str(exc)
    return None


def need(driver: str) -> None:
    """Fail (not skip) the test when ``driver``'s service is not running."""
    error = service_error(driver)
    if error is not None:
        where, start = (
            (f"a Redis server at {REDIS_HOST}:{REDIS_PORT}", "`redis-server --daemonize yes`")
            if driver == "redis" else
            (f"a NATS server with JetStream at {NATS_HOST}:{NATS_PORT}", "`nats-server -js`")
        )
        pytest.fail(f"these tests need {where} ({error}); start one (e.g. {start})", pytrace=False)


def new_prefix(driver: str) -> str:
    """A prefix of one test alone."""
    return f"soketi-impl-test-{uuid.uuid4().hex[:12]}" + {"redis": ":", "nats": "."}.get(driver, "")


def cluster_env(driver: str, prefix: str, **extra: str) -> dict[str, str]:
    """The variables that make a server a node of ``driver``'s cluster under ``prefix``.

    ``workers``: none (a subprocess cluster is :func:`run_workers`; an in-process
    node gets its adapter from :func:`node_adapter`).
    """
    if driver == "workers":
        env: dict[str, str] = {}
    elif driver == "redis":
        env = {
            "SOKETI_ADAPTER_DRIVER": "redis", "SOKETI_DB_REDIS_HOST": REDIS_HOST,
            "SOKETI_DB_REDIS_PORT": str(REDIS_PORT), "SOKETI_DB_REDIS_KEY_PREFIX": prefix,
        }
    else:
        env = {
            "SOKETI_ADAPTER_DRIVER": "nats", "SOKETI_ADAPTER_NATS_SERVERS": f"{NATS_HOST}:{NATS_PORT}",
            "SOKETI_ADAPTER_NATS_PREFIX": prefix,
        }
    env.update(extra)
    return env


def make_adapter(config: Any, **timing: float) -> Any:
    """The adapter ``config`` names, with test timings (``heartbeat_interval``, ``dead_after`` ...)."""
    if config.adapter_driver == "redis":
        from soketi_impl.adapters.redis import RedisAdapter

        return RedisAdapter(config, **timing)
    from soketi_impl.adapters.nats import NatsAdapter

    return NatsAdapter(config, **timing)


async def _nats_bucket(prefix: str, action: str) -> list[str]:
    import nats
    from nats.js.errors import BucketNotFoundError, NoKeysError

    from soketi_impl.adapters.nats.adapter import bucket_name

    nc = await nats.connect(f"nats://{NATS_HOST}:{NATS_PORT}", connect_timeout=2, max_reconnect_attempts=1)
    try:
        js = nc.jetstream(timeout=TIMEOUT)
        try:
            if action == "delete":
                await js.delete_key_value(bucket_name(prefix))
                return []
            kv = await js.key_value(bucket_name(prefix))
            left = []
            for key in await kv.keys():
                value = json.loads((await kv.get(key)).value or b"{}")
                # a count whose total went to 0 keeps its key a while (see adapters/nats/counts.py)
                if not key.startswith("c.") or any(value.get("s", {}).values()):
                    left.append(key)
            return left
        except (BucketNotFoundError, NoKeysError):
            return []
        except Exception as exc:  # a stream that is not there: nothing left
            if "not found" in str(exc).lower():
                return []
            raise
    finally:
        await nc.close()


def _redis_keys(prefix: str) -> list[bytes]:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=TIMEOUT)
    try:
        return list(client.scan_iter(match=prefix.replace("*", r"\*") + "*", count=1000))
    finally:
        client.close()


async def leftovers(driver: str, prefix: str) -> list[Any]:
    """What ``prefix`` still holds: Redis keys, or the NATS bucket's members and non-zero counts."""
    if driver == "workers":
        return []  # the hub ends with its process
    if driver == "redis":
        return await asyncio.to_thread(_redis_keys, prefix)
    return await _nats_bucket(prefix, "keys")


async def cleanup(driver: str, prefix: str) -> None:
    """Delete what ``prefix`` holds."""
    if driver == "workers":
        return
    if driver == "redis":
        import redis

        keys = await asyncio.to_thread(_redis_keys, prefix)
        if keys:
            client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=TIMEOUT)
            try:
                client.delete(*keys)
            finally:
                client.close()
    else:
        await _nats_bucket(prefix, "delete")


# ---------------------------------------------------------------- clients


def sign(text: str) -> str:
    return hmac.new(APP_SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()


class Sub:
    """A raw Pusher WebSocket client on one node (sync); ``recv`` skips pings."""

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
            data["auth"] = f"{APP_KEY}:{sign(to_sign)}"
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


def sdk(server: ServerProcess) -> pusher.Pusher:
    from conftest import APP_ID

    return pusher.Pusher(
        app_id=APP_ID, key=APP_KEY, secret=APP_SECRET,
        host="127.0.0.1", port=server.port, ssl=False, timeout=TIMEOUT,
    )


def marker(client: pusher.Pusher, channel: str, s: Sub, label: str) -> list[dict[str, Any]]:
    """Trigger a marker event and return what ``s`` received before it.

    A node sends its cross-node traffic in order, so whatever the node behind
    ``client`` published before the marker reaches ``s`` before it: this is how a
    test sees that an event was *not* sent, without sleeping.
    """
    client.trigger(channel, "marker", label)
    before = []
    while True:
        msg = s.recv()
        if msg["event"] == "marker" and msg["data"] == label:
            return before
        before.append(msg)


class Client:
    """A raw Pusher client (``websockets`` asyncio) for the in-process tests."""

    def __init__(self, ws: Any, socket_id: str) -> None:
        self.ws = ws
        self.socket_id = socket_id

    @classmethod
    async def open(cls, port: int) -> Client:
        from websockets.asyncio.client import connect as aconnect

        url = f"ws://127.0.0.1:{port}/app/{APP_KEY}?protocol=7"
        ws = await aconnect(url, open_timeout=TIMEOUT, close_timeout=1)
        established = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        return cls(ws, json.loads(established["data"])["socket_id"])

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        while True:
            msg: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if msg["event"] != "pusher:ping":
                return msg

    async def subscribe(self, channel: str) -> None:
        await self.ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        assert (await self.recv())["event"] == "pusher_internal:subscription_succeeded"

    async def join(self, channel: str, user_id: str) -> list[str]:
        data = json.dumps({"user_id": user_id})
        auth = f"{APP_KEY}:{sign(f'{self.socket_id}:{channel}:{data}')}"
        await self.ws.send(json.dumps(
            {"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth, "channel_data": data}}
        ))
        ok = await self.recv()
        assert ok["event"] == "pusher_internal:subscription_succeeded", ok
        ids: list[str] = json.loads(ok["data"])["presence"]["ids"]
        return ids


#: prefix -> [hub, nodes using it] (the in-process hubs of the ``workers`` driver)
_HUBS: dict[str, list[Any]] = {}
_HUB_INDEXES = itertools.count(100)


def hub_path(prefix: str) -> str:
    """The unix socket of the in-process hub of ``prefix`` (``workers`` driver)."""
    return os.path.join(tempfile.gettempdir(), prefix + ".hub")


@contextlib.asynccontextmanager
async def hub(prefix: str) -> AsyncIterator[str]:
    """The hub of ``prefix`` in this event loop, started by the first user and closed by the last."""
    from soketi_impl.adapters.local_ipc import Hub

    entry = _HUBS.get(prefix)
    if entry is None:
        path = hub_path(prefix)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        entry = _HUBS[prefix] = [Hub(path), 0]
        await entry[0].start()
    entry[1] += 1
    try:
        yield entry[0].path
    finally:
        entry[1] -= 1
        if entry[1] == 0:
            del _HUBS[prefix]
            await entry[0].close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry[0].path)


def worker_env(prefix: str) -> dict[str, str]:
    """The variables that make a ``soketi-impl start`` subprocess a worker of the in-process hub
    of ``prefix`` (a worker index of its own; the hub must run: :func:`hub`)."""
    from soketi_impl.workers import HUB_ENV, WORKER_ENV

    return {HUB_ENV: hub_path(prefix), WORKER_ENV: str(next(_HUB_INDEXES))}


@contextlib.asynccontextmanager
async def node_adapter(driver: str, prefix: str, config: Any, **timing: float) -> AsyncIterator[Any]:
    """The adapter of an in-process node of ``driver``'s cluster (with test timings, if any);
    None: the one ``config`` names."""
    if driver != "workers":
        yield make_adapter(config, **timing) if timing or config.adapter_driver != "local" else None
        return
    from soketi_impl.adapters.local_ipc import HubAdapter

    async with hub(prefix) as path:
        yield HubAdapter(path, next(_HUB_INDEXES))


@contextlib.asynccontextmanager
async def node(driver: str, prefix: str, *, env: dict[str, str] | None = None, **timing: float) -> AsyncIterator[Any]:
    """An in-process server node of ``driver``'s cluster, with test timings for its adapter."""
    from soketi_impl.config import load_config
    from soketi_impl.server import Server

    config = load_config(None, environ=base_env(0, **cluster_env(driver, prefix, **(env or {}))))
    async with node_adapter(driver, prefix, config, **timing) as adapter:
        server = Server(config, adapter=adapter)
        await server.start()
        try:
            yield server
        finally:
            await server.stop(0)


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free ports, below the ephemeral range (where the
    tests' own client connections leave ports in TIME_WAIT), bindable as a server binds
    (``SO_REUSEADDR``)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32000 - n)
        try:
            with contextlib.ExitStack() as stack:
                for i in range(n):
                    s = stack.enter_context(socket.socket())
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {n} consecutive free ports")


@contextlib.contextmanager
def run_workers(
    env: dict[str, str] | None = None, count: int = 2, mode: str = "c", args: tuple[str, ...] = ()
) -> Iterator[tuple[ServerProcess, list[ServerProcess]]]:
    """``soketi-impl start --workers count``: the supervisor (on the shared port) and one
    ServerProcess per worker, on the worker's own port (the same process and log)."""
    from conftest import run_process
    from soketi_impl.workers import PORT_BASE_ENV

    base = free_ports(count)
    argv = [sys.executable, "-m", "soketi_impl", "start", "--workers", str(count), *args]
    full_env = {**(env or {}), PORT_BASE_ENV: str(base)}
    with run_process(argv, "workers on", free_port(), full_env, mode=mode) as sup:
        workers = [
            ServerProcess(sup.proc, base + i, log=sup.log, log_closed=sup.log_closed) for i in range(count)
        ]
        yield sup, workers


def worker_pids(supervisor: ServerProcess) -> dict[int, int]:
    """worker index -> pid, of the live workers of a supervisor process (from /proc)."""
    from soketi_impl.workers import WORKER_ENV

    pids: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != supervisor.proc.pid:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
        except (OSError, IndexError, ValueError):
            continue
        index = env.get(WORKER_ENV.encode())
        if index is not None:
            pids[int(index)] = int(entry)
    return pids


async def wait_for(predicate: Any, timeout: float = TIMEOUT) -> None:
    """Poll a condition that no event announces (state in another process: Redis, NATS)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


class Proxy:
    """A TCP proxy to a service that a test can cut (closing every connection) and restore."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = free_port()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
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
