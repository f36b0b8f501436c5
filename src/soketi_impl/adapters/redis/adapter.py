"""``RedisAdapter``: the parts of the Redis adapter put together, and its life cycle.

:meth:`RedisAdapter.start` connects (or raises :class:`RedisUnavailable`),
subscribes, registers this node and starts three tasks: the pub/sub reader
(:mod:`.pubsub`), the command writer (:mod:`.pipeline`) and the heartbeat
(:mod:`.heartbeat`). :meth:`RedisAdapter.close` withdraws this node (its members
leave) and disconnects.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ...config import Config
from ...errors import SoketiError
from ..base import Adapter, PresenceJoin
from .counts import DistributedCounts
from .heartbeat import Heartbeat
from .pipeline import CommandPipeline, quietly
from .presence import DistributedPresence
from .pubsub import Reader
from .requests import Requests

__all__ = ["RedisAdapter", "RedisUnavailable"]

log = logging.getLogger("soketi_impl.redis")


class RedisUnavailable(SoketiError):
    """Redis could not be reached when the adapter started (the server exits with 1)."""


class RedisAdapter(Adapter):
    """The Redis adapter (see :mod:`soketi_impl.adapters.redis` for the design).

    ``RedisAdapter(config)`` reads ``redis_host``, ``redis_port``, ``redis_db``,
    ``redis_username``, ``redis_password``, ``redis_key_prefix`` and
    ``adapter_redis_prefix``; every key and pub/sub channel starts with
    ``{redis_key_prefix}{adapter_redis_prefix}soketi#``. The timing knobs are
    constructor arguments, in seconds.
    """

    def __init__(
        self,
        config: Config,
        *,
        requests_timeout: float = 2.0,
        heartbeat_interval: float = 5.0,
        dead_after: float | None = None,
        connect_timeout: float = 3.0,
    ) -> None:
        self.config = config
        self.node_id = uuid.uuid4().hex[:16]
        self.requests_timeout = requests_timeout
        self.heartbeat_interval = heartbeat_interval
        self.dead_after = dead_after if dead_after is not None else 3 * heartbeat_interval
        self.connect_timeout = connect_timeout
        self.address = f"{config.redis_host}:{config.redis_port}"
        self.base = f"{config.redis_key_prefix}{config.adapter_redis_prefix}soketi#"
        self.requests_channel = (self.base + "requests").encode()
        self.replies_channel = (self.base + "replies#" + self.node_id).encode()
        self.nodes_key = self.base + "nodes"
        self.node_key = self.base + "node#" + self.node_id
        self.count_node_key = self.base + "ncount#" + self.node_id
        #: pub/sub channel -> app id
        self.app_channels: dict[bytes, str] = {}
        self.sub_client: Any = None
        #: presence in Redis may differ from ours: reconcile at the next heartbeat
        self.dirty = False
        self.last_heard = time.monotonic()  # anything from the subscriber connection
        self.pipeline = CommandPipeline(self.address, self._mark_dirty)
        self.reader = Reader(self)
        self.requests = Requests(self)
        self.presence = DistributedPresence(self)
        self.counts = DistributedCounts(self)
        self.heartbeat = Heartbeat(self)
        #: [reader, writer, heartbeat] once started
        self._tasks: list[asyncio.Task[Any] | asyncio.Future[Any]] = []
        self._subscribed = False
        self._closed = False
        #: set by the reader when our "drain" message comes back (see :meth:`_drain`)
        self.drained: asyncio.Event | None = None

    def _mark_dirty(self) -> None:
        self.dirty = True

    @property
    def _down(self) -> bool:
        """True while Redis commands fail."""
        return self.pipeline.down

    # ------------------------------------------------------------------ life cycle

    def _client(self, socket_timeout: float | None) -> aioredis.Redis:
        cfg = self.config
        return aioredis.Redis(
            host=cfg.redis_host, port=cfg.redis_port, db=cfg.redis_db,
            username=cfg.redis_username, password=cfg.redis_password,
            socket_connect_timeout=self.connect_timeout, socket_timeout=socket_timeout,
            socket_keepalive=True,
            # We retry ourselves, later, instead of stalling the caller.
            retry=Retry(NoBackoff(), 0),
            client_name=f"soketi-impl-{self.node_id}",
        )

    async def start(self) -> None:
        """Connect, subscribe, register this node; :class:`RedisUnavailable` if Redis is unreachable."""
        self.pipeline.open(self._client(socket_timeout=max(5.0, self.connect_timeout)))
        self.sub_client = self._client(socket_timeout=None)
        for app_id in self.host.app_ids():
            self.app_channels[(self.base + "events#" + app_id).encode()] = app_id
        pubsub: Any = self.sub_client.pubsub(ignore_subscribe_messages=True)
        try:
            await asyncio.wait_for(self.pipeline.command_now("PING"), self.connect_timeout + 1)
            await asyncio.wait_for(pubsub.subscribe(*self.reader.channels()), self.connect_timeout + 1)
            await self.heartbeat.once(first=True)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            await quietly(pubsub.aclose())
            await self._close_clients()
            reason = str(exc) or type(exc).__name__
            raise RedisUnavailable(f"cannot connect to Redis at {self.address}: {reason}") from None
        self._subscribed = True
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.reader.run(pubsub)),
            loop.create_task(self.pipeline.run()),
            loop.create_task(self.heartbeat.run()),
        ]

    async def restart_reader(self) -> None:
        """Replace the subscriber connection (it went silent)."""
        self._subscribed = False
        reader = self._tasks[0]
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        self._tasks[0] = asyncio.get_running_loop().create_task(self.reader.run(None))

    async def close(self) -> None:
        """Withdraw this node (its members leave, with member_removed; its count shares
        leave, with the facts that follow), then disconnect."""
        if self._closed or self.pipeline.client is None:
            return
        self._closed = True
        writer = self._tasks[1] if len(self._tasks) > 1 else None
        reader = self._tasks[0] if self._tasks else None
        for task in self._tasks[2:]:
            task.cancel()
        if writer is not None:
            try:
                # What was queued (leaves of the closing connections) goes first.
                await asyncio.wait_for(self.pipeline.command("PING"), 2.0)
                reply = await asyncio.wait_for(self.pipeline.command(*self.heartbeat.args(beat=False)), 2.0)
                self.heartbeat.reap(reply)
                await self._drain()
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                log.warning("could not withdraw this node from Redis at %s: %s", self.address, exc)
            writer.cancel()
        if reader is not None:
            reader.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_clients()

    async def _drain(self) -> None:
        """Wait until the reader has dispatched what our last commands published.

        The count facts of this node's last changes (the leaves of its closing
        connections, its withdrawal) come back through pub/sub, and this node is
        their origin: it tells its observers (webhooks) before it goes.
        """
        if not self._subscribed:
            await asyncio.wait_for(self.pipeline.command("PING"), 2.0)
            return
        self.drained = asyncio.Event()
        await asyncio.wait_for(self.pipeline.command("PUBLISH", self.replies_channel, b"drain"), 2.0)
        try:
            await asyncio.wait_for(self.drained.wait(), 2.0)
        except asyncio.TimeoutError:
            log.warning("closing: the Redis subscriber connection did not catch up within 2 s; "
                        "count changes of the last moment may not be reported")

    async def _close_clients(self) -> None:
        for client in (self.pipeline.client, self.sub_client):
            if client is not None:
                await quietly(client.aclose())

    # ------------------------------------------------------------------ the Adapter interface

    def publish(
        self, app_id: str, channel: str, payload: bytes, except_socket_id: str | None, cache: bool
    ) -> None:
        """PUBLISH the frame, with its channel, excluded socket and cache flag, to every other node."""
        header = orjson.dumps([self.node_id, channel, except_socket_id, 1 if cache else 0])
        self.pipeline.enqueue(("PUBLISH", self.base + "events#" + app_id, header + b"\n" + payload), None)

    async def ask(self, app_id: str, op: str, arg: str | None) -> list[Any]:
        """Ask every other node; their answers that came within ``requests_timeout``."""
        return await self.requests.ask(app_id, op, arg)

    def presence_join(self, join: PresenceJoin) -> None:
        """Register the member in Redis (see :mod:`.presence`)."""
        self.presence.join(join)

    def presence_leave(self, app_id: str, channel: str, user_id: str) -> None:
        """Withdraw the member from Redis (see :mod:`.presence`)."""
        self.presence.leave(app_id, channel, user_id)

    def count_changed(self, app_id: str, kind: str, name: str, local_count: int, every_node: bool = False) -> None:
        """Store this node's share in Redis; the total's change comes back as a fact (see :mod:`.counts`)."""
        self.counts.change(app_id, kind, name, local_count, every_node)

    async def count_totals(self, app_id: str, kind: str, names: list[str]) -> list[int]:
        """The totals in Redis (zeros when Redis does not answer in ``requests_timeout``)."""
        return await self.counts.totals(app_id, kind, names)
