"""Durable webhooks (``SOKETI_QUEUE_DRIVER=redis``) and ``SOKETI_MODE``, with real processes.

Servers and workers are ``soketi-impl start`` subprocesses; the receiver is an
aiohttp server in the test; every test has its own Redis key prefix. The retry
schedule is shortened through ``SOKETI_WEBHOOKS_MAX_BACKOFF`` and the worker lease
through ``SOKETI_QUEUE_REDIS_LEASE`` (the defaults are 5 minutes and 15 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp import web
from websockets.asyncio.client import connect

from conftest import (
    APP_KEY,
    ServerProcess,
    base_env,
    free_port,
    run_process,
    run_server,
)
from soketi_impl.twins import _speedups

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
MODE = "py" if _speedups.NO_EXTENSIONS else "c"
KEY_HEADER = "X-Pusher-Idempotency-Key"
WORKER_READY = "processing the webhook queue"
# The servers are subprocesses: the test's own loop is only the receiver's, one kind is enough.
ONE_LOOP = pytest.mark.asyncio(loop_factories=["asyncio"])


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


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted after."""
    name = f"test-durable-{uuid.uuid4().hex[:10]}:"
    yield name
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=5)
    keys = list(client.scan_iter(match=name + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def queued_jobs(prefix: str) -> int:
    """Jobs not delivered yet, as the queue counts them."""
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=5)
    try:
        return int(client.hget(f"{prefix}soketi#webhooks#stats", "jobs") or 0)
    finally:
        client.close()


async def until(predicate: Any, timeout: float = 10, what: str = "") -> None:
    """Check ``predicate`` (against Redis or a process, which push no events) until true."""
    async def loop() -> None:
        while not predicate():
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(loop(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what or predicate}") from None


class Receiver:
    """Records every request (headers, body); answers 503 while ``down``; with ``hold``
    set, takes each request in (recorded) but answers only once ``hold`` is set."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.hold: asyncio.Event | None = None
        self.attempts: list[tuple[str, dict[str, Any]]] = []  # (idempotency key, body)
        self.times: list[float] = []
        self.delivered: list[tuple[str, dict[str, Any]]] = []
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        entry = (request.headers.get(KEY_HEADER, ""), json.loads(await request.read()))
        self.attempts.append(entry)
        self.times.append(asyncio.get_running_loop().time())
        self.changed.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.down:
            return web.Response(status=503)
        self.delivered.append(entry)
        return web.Response(text="ok")

    async def wait(self, predicate: Any, timeout: float = 15) -> None:
        async def loop() -> None:
            while not predicate(self):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)

    def channels(self) -> set[str]:
        return {e["channel"] for _, body in self.delivered for e in body["events"]}


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield rec, f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


def env_for(prefix: str, url: str, **extra: str) -> dict[str, str]:
    hooks = [{"url": url, "event_types": ["channel_occupied"]}]
    env = {
        "SOKETI_DEFAULT_APP_WEBHOOKS": json.dumps(hooks),
        "SOKETI_QUEUE_DRIVER": "redis",
        "SOKETI_DB_REDIS_KEY_PREFIX": prefix,
        "SOKETI_QUEUE_REDIS_LEASE": "1000",
        "SOKETI_WEBHOOKS_MAX_BACKOFF": "200",
        "SOKETI_METRICS_SERVER_PORT": str(free_port()),
    }
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def started(cm: contextlib.AbstractContextManager[ServerProcess]) -> AsyncIterator[ServerProcess]:
    """Enter a run_server / run_process context off the loop (the receiver keeps answering)."""
    proc = await asyncio.to_thread(cm.__enter__)
    try:
        yield proc
    finally:
        await asyncio.to_thread(cm.__exit__, None, None, None)


def worker(env: dict[str, str]) -> contextlib.AbstractContextManager[ServerProcess]:
    argv = [sys.executable, "-m", "soketi_impl", "start"]
    return run_process(argv, WORKER_READY, free_port(), {**env, "SOKETI_MODE": "worker"}, mode=MODE)


async def occupy(server: ServerProcess, *channels: str) -> None:
    """Subscribe to ``channels`` (each sends channel_occupied), then leave."""
    async with connect(f"ws://127.0.0.1:{server.port}/app/{APP_KEY}?protocol=7") as ws:
        await asyncio.wait_for(ws.recv(), 10)  # pusher:connection_established
        for channel in channels:
            await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
            while json.loads(await asyncio.wait_for(ws.recv(), 10))["event"] != (
                "pusher_internal:subscription_succeeded"
            ):
                pass


def metric(text: str, name: str) -> float:
    values = [line.split()[-1] for line in text.splitlines() if line.startswith(name + "{")]
    assert values, f"{name} not in the scrape"
    return float(values[0])


class RedisProxy:
    """A TCP relay to Redis that the test can cut (``down``) and restore (``up``)."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(REDIS_HOST, REDIS_PORT)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}


def kill(server: ServerProcess) -> None:
    server.proc.kill()  # SIGKILL: no shutdown, no flush
    server.proc.wait(10)


# ------------------------------------------------------------------------------ tests


@ONE_LOOP
async def test_queued_webhook_survives_sigkill(receiver: tuple[Receiver, str], prefix: str) -> None:
    """Taken by the worker, refused by the receiver, the server SIGKILLed: the next process
    delivers it, with the idempotency key of the first attempt."""
    rec, url = receiver
    rec.down = True
    env = env_for(prefix, url)
    async with started(run_server(MODE, env)) as server:
        await occupy(server, "before-kill")
        await rec.wait(lambda r: len(r.attempts) >= 1)
        kill(server)
    assert queued_jobs(prefix) == 1  # still in Redis: the dead worker's or waiting for a retry
    assert rec.delivered == []
    rec.down = False
    async with started(run_server(MODE, env)) as server:
        await rec.wait(lambda r: r.delivered)
        await until(lambda: queued_jobs(prefix) == 0, what="the job acknowledged")
    assert rec.channels() == {"before-kill"}
    keys = {key for key, _ in rec.attempts}
    assert len(keys) == 1 and keys != {""}  # every attempt, before and after the kill


@ONE_LOOP
async def test_redelivery_after_a_kill_carries_the_same_key(
    receiver: tuple[Receiver, str], prefix: str
) -> None:
    """The receiver took the request in, the server died before the answer: the next
    process sends it again (at-least-once), with the same idempotency key and body."""
    rec, url = receiver
    rec.hold = asyncio.Event()
    env = env_for(prefix, url)
    async with started(run_server(MODE, env)) as server:
        await occupy(server, "dup")
        await rec.wait(lambda r: len(r.attempts) == 1)
        kill(server)  # while the request waits for its answer
    rec.hold.set()
    async with started(run_server(MODE, env)):
        await rec.wait(lambda r: len(r.attempts) == 2)
        await until(lambda: queued_jobs(prefix) == 0, what="the job acknowledged")
    (key1, body1), (key2, body2) = rec.attempts
    assert key1 and key1 == key2 and body1 == body2
    assert len({key for key, _ in rec.delivered}) == 1  # what a receiver de-duplicates on


@ONE_LOOP
async def test_gives_up_after_retry_for(receiver: tuple[Receiver, str], prefix: str) -> None:
    """Refused until SOKETI_WEBHOOKS_RETRY_FOR is over: the last attempt falls on it, then
    the job is given up (logged) and leaves the queue."""
    rec, url = receiver
    rec.down = True
    env = env_for(prefix, url, SOKETI_WEBHOOKS_RETRY_FOR="1500", SOKETI_WEBHOOKS_MAX_BACKOFF="1000")
    async with started(run_server(MODE, env)) as server:
        await occupy(server, "doomed")
        await until(lambda: any("giving up on" in line for line in server.log), what="the give-up")
        assert queued_jobs(prefix) == 0
    assert rec.delivered == [] and len(rec.attempts) >= 2
    assert rec.times[-1] - rec.times[0] >= 1.4  # retried until the end of the 1.5 s


@ONE_LOOP
async def test_receiver_outage_loses_nothing(receiver: tuple[Receiver, str], prefix: str) -> None:
    """The receiver refuses for a while; every event arrives once it answers again."""
    rec, url = receiver
    rec.down = True
    channels = [f"outage-{i}" for i in range(5)]
    env = env_for(prefix, url, SOKETI_QUEUE_REDIS_CONCURRENCY="3")
    async with started(run_server(MODE, env)) as server:
        await occupy(server, *channels)
        # each job refused at least twice, with the backoff between
        await rec.wait(lambda r: len(r.attempts) >= 2 * len(channels))
        assert rec.delivered == []
        rec.down = False
        await rec.wait(lambda r: r.channels() == set(channels))
        await until(lambda: queued_jobs(prefix) == 0, what="every job acknowledged")
    by_channel: dict[str, set[str]] = {}
    for key, body in rec.attempts:
        by_channel.setdefault(body["events"][0]["channel"], set()).add(key)
    # one key per request, the same on each of its retries
    assert all(len(keys) == 1 for keys in by_channel.values())
    assert len({k for keys in by_channel.values() for k in keys}) == len(channels)
    # time_ms is when the server formed the request: the same body on every retry
    first = {body["events"][0]["channel"]: body for _, body in rec.attempts}
    assert all(body == first[body["events"][0]["channel"]] for _, body in rec.delivered)


@ONE_LOOP
async def test_redis_away_for_a_while(receiver: tuple[Receiver, str], prefix: str) -> None:
    """Redis unreachable while events happen: the server keeps them (bounded) and the
    worker waits; both carry on once Redis is back, and nothing is lost."""
    rec, url = receiver
    proxy = RedisProxy()
    await proxy.up()
    env = env_for(prefix, url, SOKETI_DB_REDIS_PORT=str(proxy.port))
    async with started(run_server(MODE, env)) as server:
        await occupy(server, "before")
        await rec.wait(lambda r: r.channels() == {"before"})
        await proxy.down()
        await occupy(server, "while-away")
        await until(lambda: any("cannot queue in Redis" in line for line in server.log),
                    what="the server noticing")
        assert rec.channels() == {"before"}
        await proxy.up()
        await rec.wait(lambda r: r.channels() == {"before", "while-away"})
        await until(lambda: queued_jobs(prefix) == 0, what="every job acknowledged")
        await proxy.down()  # the server's stop must not hang on a dead Redis either
        loop = asyncio.get_running_loop()
        began = loop.time()
    assert server.proc.returncode == 0 and loop.time() - began < 8
    assert any(line.endswith("stopped") for line in server.log)


@ONE_LOOP
async def test_server_mode_enqueues_and_worker_delivers(
    receiver: tuple[Receiver, str], prefix: str
) -> None:
    rec, url = receiver
    env = env_for(prefix, url, SOKETI_MODE="server")
    async with started(run_server(MODE, env)) as server:
        await occupy(server, "for-the-worker")
        await until(lambda: queued_jobs(prefix) == 1, what="the job in Redis")
        assert rec.attempts == []  # the server sends nothing itself
        wenv = {**env, "SOKETI_PORT": str(free_port()), "SOKETI_METRICS_SERVER_PORT": str(free_port()),
                "SOKETI_METRICS_ENABLED": "true"}
        async with started(worker(wenv)) as w:
            await rec.wait(lambda r: r.channels() == {"for-the-worker"})
            await until(lambda: queued_jobs(prefix) == 0, what="the job acknowledged")
            # the worker listens on its metrics port only
            base = f"http://127.0.0.1:{wenv['SOKETI_METRICS_SERVER_PORT']}"
            async with aiohttp.ClientSession() as http:
                for path in ("/ready", "/usage"):
                    async with http.get(base + path, timeout=aiohttp.ClientTimeout(total=5)) as r:
                        assert r.status == 200, path
                async with http.get(base + "/metrics") as r:
                    assert metric(await r.text(), "soketi_webhook_sent_total") == 1
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", int(wenv["SOKETI_PORT"])), timeout=2).close()
            assert any(WORKER_READY in line for line in w.log)


@ONE_LOOP
async def test_queue_bound_drops_the_oldest(receiver: tuple[Receiver, str], prefix: str) -> None:
    """Over SOKETI_QUEUE_REDIS_MAX_JOBS the oldest waiting jobs go: logged and counted."""
    rec, url = receiver
    env = env_for(prefix, url, SOKETI_MODE="server", SOKETI_QUEUE_REDIS_MAX_JOBS="2",
                  SOKETI_METRICS_ENABLED="true")
    async with started(run_server(MODE, env)) as server:
        await occupy(server, "b0", "b1", "b2", "b3")
        await until(lambda: any("Redis queue is full" in line for line in server.log),
                    what="the overflow logged")
        assert queued_jobs(prefix) == 2
        metrics = f"http://127.0.0.1:{env['SOKETI_METRICS_SERVER_PORT']}/metrics"
        async with aiohttp.ClientSession() as http, http.get(metrics) as r:
            text = await r.text()
        assert metric(text, "soketi_webhook_dropped_total") == 2
        wenv = {**env, "SOKETI_PORT": str(free_port()), "SOKETI_METRICS_SERVER_PORT": str(free_port())}
        async with started(worker(wenv)):
            await rec.wait(lambda r: r.channels() == {"b2", "b3"})
            await until(lambda: queued_jobs(prefix) == 0, what="the jobs acknowledged")
    assert rec.channels() == {"b2", "b3"}


def _start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "soketi_impl", "start"], env={**base_env(free_port()), **env},
        capture_output=True, text=True, timeout=30,
    )


@pytest.mark.parametrize("mode", ["full", "worker"])
def test_redis_absent_is_a_clear_failure(mode: str) -> None:
    dead = free_port()
    done = _start(env_for("unused:", "http://127.0.0.1:1/hook", SOKETI_MODE=mode,
                          SOKETI_DB_REDIS_PORT=str(dead)))
    assert done.returncode == 1, done.stderr
    assert f"cannot connect to Redis at 127.0.0.1:{dead} for the webhook queue" in done.stderr


def test_worker_mode_needs_the_redis_driver() -> None:
    done = _start({"SOKETI_MODE": "worker"})
    assert done.returncode == 2
    assert "SOKETI_QUEUE_DRIVER=redis" in done.stderr


def test_queue_and_mode_settings(tmp_path: Any) -> None:
    from soketi_impl.config import load_config
    from soketi_impl.errors import ConfigError

    cfg = load_config(None, environ={})
    assert (cfg.mode, cfg.queue_driver, cfg.queue_redis_concurrency) == ("full", "sync", 1)
    assert (cfg.webhooks_retry_for_ms, cfg.queue_redis_lease_ms) == (300_000, 15_000)
    cfg = load_config(None, environ={
        "SOKETI_MODE": "worker", "SOKETI_QUEUE_DRIVER": "redis",
        "SOKETI_QUEUE_REDIS_CONCURRENCY": "4", "SOKETI_WEBHOOKS_RETRY_FOR": "60000",
    })
    assert (cfg.mode, cfg.queue_driver, cfg.queue_redis_concurrency) == ("worker", "redis", 4)
    assert cfg.webhooks_retry_for_ms == 60_000 and not cfg.warnings
    path = tmp_path / "soketi.json"
    path.write_text(json.dumps({"mode": "server", "queue": {"driver": "redis", "redis": {"concurrency": 2}}}))
    cfg = load_config(str(path), environ={})
    assert (cfg.mode, cfg.queue_driver, cfg.queue_redis_concurrency) == ("server", "redis", 2)
    for name, bad in (("SOKETI_QUEUE_DRIVER", "sqs"), ("SOKETI_MODE", "both"),
                      ("SOKETI_QUEUE_REDIS_CONCURRENCY", "0")):
        with pytest.raises(ConfigError, match=name):
            load_config(None, environ={name: bad})


@ONE_LOOP
async def test_sync_driver_requests_carry_the_key_too(receiver: tuple[Receiver, str]) -> None:
    """The in-memory path sends the same header, stable across its retries; ``server``
    mode with it warns that webhooks go out from the server anyway."""
    rec, url = receiver
    rec.down = True
    env = env_for("unused:", url, SOKETI_QUEUE_DRIVER="sync", SOKETI_MODE="server")
    async with started(run_server(MODE, env)) as server:
        assert any("SOKETI_MODE=server with SOKETI_QUEUE_DRIVER=sync" in line for line in server.log)
        await occupy(server, "in-memory")
        await rec.wait(lambda r: len(r.attempts) >= 1)
        rec.down = False
        await rec.wait(lambda r: r.delivered)
    keys = {key for key, _ in rec.attempts}
    assert len(rec.attempts) >= 2 and len(keys) == 1 and keys != {""}


# ------------------------------------------------ the queue's scripts, straight on Redis


def _job(i: int, size: int = 100) -> bytes:
    from soketi_impl.webhooks.queue import Job

    return Job(f"id{i}", "http://x/h", {}, b"x" * size, 1, "app").encode()


@ONE_LOOP
async def test_queue_scripts_bound_reap_and_retry(prefix: str) -> None:
    import redis.asyncio as aioredis

    from soketi_impl.webhooks.queue import Job, RedisQueue

    client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        one = len(_job(0))
        q = RedisQueue(client, prefix, max_jobs=10, max_bytes=2 * one + 10)
        # bytes: a third job drops the oldest; one over the bound is refused outright
        assert await q.push([_job(0), _job(1), _job(2)]) == [(1, 0), (1, 0), (1, 1)]
        assert await q.push([_job(9, size=3 * one)]) == [(-1, 0)]
        assert await q.totals() == (2, 2 * one)
        for worker_id in ("w1", "w2", "w3"):
            await q.beat(worker_id, 60_000)
        # both taken by a worker: nothing waiting can make room, the new job is refused
        assert Job.decode(await q.take("w1", 0.1) or b"").id == "id1"
        assert Job.decode(await q.take("w1", 0.1) or b"").id == "id2"
        assert await q.push([_job(3)]) == [(-2, 0)]
        assert await q.reap() == 0  # every worker alive
        # w1's lease is over: the reaper gives its jobs back, oldest first in line
        await client.delete(f"{prefix}worker#w1")
        assert await q.reap() == 2
        assert Job.decode(await q.take("w2", 0.1) or b"").id == "id1"
        # a failed attempt waits in `delayed` until due, then comes back
        raw = await client.lindex(q.processing("w2"), 0)
        job = Job.decode(raw)
        job.first_failed_ms, job.delay_s = 1, 1.0
        assert await q.retry("w2", raw, job, due_s=0)
        assert await q.promote() == 1
        assert await q.reap(leaving="w2") == 0  # its list is empty; it leaves the set
        assert await client.smembers(f"{prefix}workers") == {b"w3"}
        taken = [Job.decode(await q.take("w3", 0.1) or b"") for _ in range(2)]
        assert {t.id for t in taken} == {"id1", "id2"}
        assert [t.first_failed_ms for t in taken if t.id == "id1"] == [1]
        for raw in await client.lrange(q.processing("w3"), 0, -1):
            assert await q.ack("w3", raw)
        assert await q.totals() == (0, 0)
    finally:
        await client.aclose()


@ONE_LOOP
async def test_sync_sender_retries_until_retry_for(receiver: tuple[Receiver, str]) -> None:
    """The in-memory sender's last attempt falls on retry_for too (not one backoff before)."""
    from soketi_impl.config import AppConfig, WebhookConfig
    from soketi_impl.webhooks import WebhookSender

    rec, url = receiver
    rec.down = True
    app = AppConfig(id="1", key="k", secret="s",
                    webhooks=[WebhookConfig(url=url, event_types=["channel_occupied"])])
    sender = WebhookSender(first_retry_s=0.3, max_backoff_s=10.0, retry_for_s=0.5)
    await sender.start()
    try:
        sender.channel_occupied(app, "ch")
        await asyncio.wait_for(sender.wait_idle(), 10)
    finally:
        await sender.close(0.1)
    assert sender.failed == 1 and len(rec.attempts) == 3  # at 0, 0.3 and 0.5 s
    assert rec.times[-1] - rec.times[0] >= 0.45
