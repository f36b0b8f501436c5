"""Several server processes serving one set of apps, through Redis (soketi's horizontal scaling).

``SOKETI_ADAPTER_DRIVER=redis`` makes :class:`~soketi_impl.server.Server` use
:class:`RedisAdapter`. Every node keeps its own connections, as with the local
adapter, and Redis carries what must cross nodes:

Events
    :meth:`RedisAdapter.publish` delivers on this node at once and PUBLISHes the
    already-encoded event, with the channel name, the excluded socket id and this
    node's id, on ``{prefix}events#{app id}``. Every other node broadcasts it to its
    own subscribers (a node skips its own messages). Socket ids are unique across
    nodes: their random part is drawn per socket (and Python reseeds ``random`` in
    a forked child), so the excluded socket is found only on the node that owns it.
    Every Redis command of a node goes through one ordered, pipelined queue on one
    connection, so a node's events reach the other nodes in the order it sent them.

Queries (``channels``, ``channel``, ``presence_members``, ``terminate_user``)
    The asking node answers from its own state and PUBLISHes a request on
    ``{prefix}requests``; every other node answers on ``{prefix}replies#{node id}``.
    PUBLISH returns how many subscribers received the request, which is the number
    of nodes (the asker included) at that instant, without the race of a separate
    ``PUBSUB NUMSUB``; the asker waits for that many replies or ``requests_timeout``
    (2 s) and merges what it has: subscription counts add up, presence members are
    the union (user counts are distinct users), a cached event comes from any node,
    and ``terminate_user`` closes the user's connections everywhere.

Presence
    "One member per user id" holds across nodes through Redis state changed only
    by Lua scripts (atomic): ``{prefix}presence#{app}#{channel}`` maps user id ->
    user_info, ``...#counts`` maps user id -> how many *nodes* have that user in
    the channel, and ``{prefix}node#{node id}`` lists what this node registered.
    A node runs a script only for a user's first connection in a channel on that
    node and for its last one, so member_added goes out when the user's first
    connection anywhere joins and member_removed after the last one anywhere
    leaves. The script that moves a count 0 -> 1 or 1 -> 0 PUBLISHes the member
    event itself, to every node (the node that ran it sends the webhook, once).
    The join script then PUBLISHes "joined" with the member hash to the joining
    node, and only when that message arrives does the connection get its
    ``subscription_succeeded`` and enter the channel's broadcast list. Redis
    delivers one connection's pub/sub messages in the order the commands ran, so
    the new subscriber sees exactly the member events that came after its member
    list: none missed, none twice. The member limit
    (``max_presence_members_per_channel``) is enforced in the join script too.

    The trade-off is what happens when a node dies with members registered. Every
    node writes a heartbeat (Redis ``TIME``) into the sorted set ``{prefix}nodes``
    every ``heartbeat_interval`` (5 s); the heartbeat script also reaps every node
    silent for ``dead_after`` (15 s): it removes that node's registrations and
    returns the users who left the channel because of it, and the reaping node
    publishes their ``member_removed``. So a crashed node's members linger for up
    to ``dead_after`` + ``heartbeat_interval``, and a node cut off from Redis for
    longer than ``dead_after`` is reaped while alive: when it comes back (its
    heartbeat finds itself missing) or after any failed Redis call, it reconciles
    the ``node#`` hash with its local members (registering the missing ones,
    withdrawing the stale ones, with the events that follow). A shorter
    ``dead_after`` reaps crashed nodes sooner but reaps a slow node sooner too. A
    clean stop withdraws the node at once. The alternative, asking the live nodes
    on every join, needs no cleanup, but every presence subscription then waits
    for the slowest node, and its answers race with concurrent joins; here the
    scripts serialise joins and leaves. The scripts touch keys they do not declare
    (the reaper walks a dead node's hash), so this is for one Redis server (or a
    primary with replicas), not Redis Cluster.

When Redis goes away
    At start a node that cannot reach Redis (connect timeout ``connect_timeout``,
    3 s) refuses to start: :class:`RedisUnavailable` ("cannot connect to Redis at
    host:port: ...") and exit code 1. Later, events keep being delivered on the
    node that receives them, queries answer from this node, presence falls back
    to this node's members, and a warning at most every 10 s says cross-node
    delivery is failing. Commands are retried after a second, the subscriber
    reconnects with backoff, and the heartbeat reconciles presence when Redis is
    back. Each heartbeat also publishes a beat to this node: a subscriber
    connection that hears nothing for ``dead_after`` is replaced (a vanished peer
    sends no RST). Events published while Redis was away are not replayed (Redis
    pub/sub keeps nothing).

Cache channels are cached on every node (each node stores the event it receives),
so ``info=cache`` and late subscribers see the last event wherever they connect.
The channel_occupied / channel_vacated / subscription_count webhooks and the
user watchlist stay per node. Apps are those of the configuration at start.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..config import Config
from ..errors import SoketiError
from ..pusher.server import _subscription_error
from ..twins._protocol import PRESENCE, channel_kind, encode_event
from .base import Adapter, join_locally, leave_locally

if TYPE_CHECKING:
    from ..pusher.server import AppState, PusherServer, Socket

__all__ = ["RedisAdapter", "RedisUnavailable"]

log = logging.getLogger("soketi_impl.redis")

#: A user's first connection on this node joins: register it (HSETNX-like, so a
#: reconciliation is idempotent) and enforce the member limit. Status 1: the user is
#: new in the channel, and the script PUBLISHes its member_added (ARGV[7]) on the
#: app's event channel; 0: already a member; -1: refused, the channel is full.
#: Then, when ARGV[8] names the joining node's reply channel, it PUBLISHes
#: [token, status, member hash] there: Redis delivers one connection's pub/sub
#: messages in the order the commands ran, so the joining node sees every member
#: event of the scripts before this one before that message, and every later one
#: after it.
_JOIN = """
local status = 0
if ARGV[4] == '1' and redis.call('HEXISTS', KEYS[3], ARGV[3]) == 0 then
  local max = tonumber(ARGV[5])
  if max >= 0 and redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0
      and redis.call('HLEN', KEYS[1]) >= max then
    status = -1
  else
    redis.call('HSET', KEYS[3], ARGV[3], '1')
    if redis.call('HINCRBY', KEYS[2], ARGV[1], 1) == 1 then
      redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
      redis.call('PUBLISH', ARGV[6], ARGV[7])
      status = 1
    end
  end
end
local members = {}
if status ~= -1 then members = redis.call('HGETALL', KEYS[1]) end
if ARGV[8] ~= '' then
  redis.call('PUBLISH', ARGV[8], cjson.encode({ARGV[9], status, members}))
end
return {status, members}
"""

#: A user's last connection on this node left: 1 when it was the last node with
#: it, and then the script PUBLISHes its member_removed (ARGV[4]) on ARGV[3].
_LEAVE = """
if redis.call('HDEL', KEYS[3], ARGV[2]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) > 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""

#: ARGV[4] '1': heartbeat this node, then reap every node silent for ARGV[2] ms;
#: '0': reap this node (a clean stop). PUBLISHes the member_removed of every user
#: who left a channel that way; returns {1 if this node was not registered, the
#: node fields ([app, channel, user]) of those users}.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = 0
local dead
if ARGV[4] == '1' then
  added = redis.call('ZADD', KEYS[1], now, ARGV[1])
  dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
else
  dead = {ARGV[1]}
end
local removed = {}
for _, node in ipairs(dead) do
  local nk = ARGV[3] .. 'node#' .. node
  for _, f in ipairs(redis.call('HKEYS', nk)) do
    local e = cjson.decode(f)
    local mk = ARGV[3] .. 'presence#' .. e[1] .. '#' .. e[2]
    if redis.call('HINCRBY', mk .. '#counts', e[3], -1) <= 0 then
      redis.call('HDEL', mk .. '#counts', e[3])
      redis.call('HDEL', mk, e[3])
      removed[#removed + 1] = f
      local event = cjson.encode({event = 'pusher_internal:member_removed', channel = e[2],
                                  data = cjson.encode({user_id = e[3]})})
      redis.call('PUBLISH', ARGV[3] .. 'events#' .. e[1],
                 cjson.encode({'', e[2], '', 0}) .. '\\n' .. event)
    end
  end
  redis.call('DEL', nk)
  redis.call('ZREM', KEYS[1], node)
end
return {added, removed}
"""

_WARN_EVERY = 10.0  # seconds between two "cross-node delivery is failing" lines
_MAX_QUEUE = 100_000  # commands waiting for Redis; beyond, new ones fail at once
_BATCH = 1024  # commands per pipeline round trip


#: A presence join in flight: socket, channel, user id, user_info, first here.
_Join = tuple["Socket", str, str, Any, bool]


class RedisUnavailable(SoketiError):
    """Redis could not be reached when the adapter started (the server exits with 1)."""


class _Pending:
    """The replies to one cross-node request."""

    __slots__ = ("done", "expected", "replies")

    def __init__(self) -> None:
        self.replies: list[Any] = []
        self.expected: int | None = None
        self.done = asyncio.Event()

    def check(self) -> None:
        if self.expected is not None and len(self.replies) >= self.expected:
            self.done.set()


class RedisAdapter(Adapter):
    """The Redis adapter (see the module docstring for the design).

    ``RedisAdapter(config)`` reads ``redis_host``, ``redis_port``, ``redis_db``,
    ``redis_username``, ``redis_password``, ``redis_key_prefix`` and
    ``adapter_redis_prefix``; every key and pub/sub channel starts with
    ``{redis_key_prefix}{adapter_redis_prefix}soketi#``. The timing knobs are
    constructor arguments, in seconds.
    """

    server: PusherServer

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
        self._app_channels: dict[bytes, str] = {}
        self._redis: aioredis.Redis | None = None
        self._sub: aioredis.Redis | None = None
        self._queue: collections.deque[tuple[tuple[Any, ...], asyncio.Future[Any] | None]] = (
            collections.deque()
        )
        self._wake: asyncio.Event | None = None
        self._retry_at = 0.0  # while monotonic() < this, commands fail at once
        self._pending: dict[str, _Pending] = {}
        #: presence joins waiting for their "joined" message, by token
        self._joins: dict[str, _Join] = {}
        self._request_ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = False
        self._down = False
        self._last_warn = -_WARN_EVERY
        self._dirty = False  # presence in Redis may differ from ours: reconcile
        self._closed = False
        self._last_heard = time.monotonic()  # anything from the subscriber connection

    # ------------------------------------------------------------------ life cycle

    def attach(self, server: PusherServer) -> None:
        self.server = server

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
        self._redis = self._client(socket_timeout=max(5.0, self.connect_timeout))
        self._sub = self._client(socket_timeout=None)
        self._wake = asyncio.Event()
        for app_id in self.server.apps:
            self._app_channels[(self.base + "events#" + app_id).encode()] = app_id
        pubsub: Any = self._sub.pubsub(ignore_subscribe_messages=True)
        try:
            await asyncio.wait_for(self._command_now("PING"), self.connect_timeout + 1)
            await asyncio.wait_for(
                pubsub.subscribe(self.requests_channel, self.replies_channel, *self._app_channels),
                self.connect_timeout + 1,
            )
            await self._heartbeat_once(first=True)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            await _quietly(pubsub.aclose())
            await self._close_clients()
            reason = str(exc) or type(exc).__name__
            raise RedisUnavailable(f"cannot connect to Redis at {self.address}: {reason}") from None
        self._subscribed = True
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._reader(pubsub)),
            loop.create_task(self._writer()),
            loop.create_task(self._heartbeat()),
        ]

    async def close(self) -> None:
        """Withdraw this node (its members leave, with member_removed), then disconnect."""
        if self._closed or self._redis is None:
            return
        self._closed = True
        writer = self._tasks[1] if len(self._tasks) > 1 else None
        for task in self._tasks:
            if task is not writer:
                task.cancel()
        if writer is not None:
            try:
                # What was queued (leaves of the closing connections) goes first.
                await asyncio.wait_for(self._command("PING"), 2.0)
                await self._reap(
                    await asyncio.wait_for(
                        self._command(*self._heartbeat_args(beat=False)),
                        2.0,
                    )
                )
                await asyncio.wait_for(self._command("PING"), 2.0)
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                log.warning("could not withdraw this node from Redis at %s: %s", self.address, exc)
            writer.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_clients()

    async def _close_clients(self) -> None:
        for client in (self._redis, self._sub):
            if client is not None:
                await _quietly(client.aclose())

    # ------------------------------------------------------------------ commands

    async def _command_now(self, *args: Any) -> Any:
        """One command straight on the client (before the ordered queue runs)."""
        client: Any = self._redis  # redis-py leaves execute_command untyped
        return await client.execute_command(*args)

    def _command(self, *args: Any) -> asyncio.Future[Any]:
        """Queue one Redis command behind every earlier one; the future gets its reply."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._enqueue(args, fut):
            fut.set_exception(ConnectionError(f"Redis at {self.address} is unreachable"))
        return fut

    def _enqueue(self, args: tuple[Any, ...], fut: asyncio.Future[Any] | None) -> bool:
        if self._wake is None:
            return False
        if len(self._queue) >= _MAX_QUEUE or (self._retry_at and time.monotonic() < self._retry_at):
            return False
        self._queue.append((args, fut))
        self._wake.set()
        return True

    async def _writer(self) -> None:
        """Send queued commands in order, pipelined; fail them (and pause 1 s) when Redis is away."""
        assert self._wake is not None and self._redis is not None
        queue = self._queue
        while True:
            await self._wake.wait()
            self._wake.clear()
            while queue:
                batch = [queue.popleft() for _ in range(min(_BATCH, len(queue)))]
                pipe = self._redis.pipeline(transaction=False)
                for args, _ in batch:
                    pipe.execute_command(*args)
                try:
                    results = await pipe.execute(raise_on_error=False)
                except asyncio.CancelledError:
                    _fail(batch, ConnectionError("the adapter is closing"))
                    raise
                except (RedisError, OSError) as exc:
                    self._failing(exc)
                    _fail(batch, exc)
                    _fail([queue.popleft() for _ in range(len(queue))], exc)
                    self._retry_at = time.monotonic() + 1.0
                    continue
                self._retry_at = 0.0
                self._recovered()
                for (_, fut), result in zip(batch, results):
                    if fut is not None and not fut.done():
                        if isinstance(result, Exception):
                            fut.set_exception(result)
                        else:
                            fut.set_result(result)

    def _failing(self, exc: BaseException) -> None:
        self._down = True
        self._dirty = True
        now = time.monotonic()
        if now - self._last_warn >= _WARN_EVERY:
            self._last_warn = now
            log.warning(
                "cross-node delivery is failing: Redis at %s: %s (events reach this node only; retrying)",
                self.address, exc,
            )

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            self._last_warn = -_WARN_EVERY
            log.warning("Redis at %s is reachable again: cross-node delivery restored", self.address)

    # ------------------------------------------------------------------ events

    def publish(self, app: AppState, channel: str, payload: bytes, except_socket_id: str | None) -> int:
        exclude = None
        if except_socket_id:
            sock = app.sockets.get(except_socket_id)
            if sock is not None:
                exclude = sock.sink
        n: int = app.table.broadcast(channel, payload, exclude)
        cached = app.cache.get(channel)
        # PusherServer.publish stores the event before calling us: cache it elsewhere too.
        cache = 1 if cached is not None and cached[0] is payload else 0
        header = orjson.dumps([self.node_id, channel, except_socket_id, cache])
        self._enqueue(("PUBLISH", self.base + "events#" + app.config.id, header + b"\n" + payload), None)
        return n

    def _on_event(self, app_id: str, data: bytes) -> None:
        header, _, payload = data.partition(b"\n")
        node, channel, except_socket_id, cache = orjson.loads(header)
        if node == self.node_id:
            return
        app = self.server.apps.get(app_id)
        if app is None:
            return
        if cache:
            app.cache[channel] = (payload, time.monotonic() + self.server.config.channel_cache_ttl)
        exclude = None
        if except_socket_id:
            sock = app.sockets.get(except_socket_id)
            if sock is not None:
                exclude = sock.sink
        app.table.broadcast(channel, payload, exclude)

    async def _reader(self, pubsub: Any) -> None:
        """Dispatch pub/sub messages; resubscribe with backoff when the connection drops."""
        assert self._sub is not None
        backoff = 0.2
        while True:
            try:
                if pubsub is None:
                    pubsub = self._sub.pubsub(ignore_subscribe_messages=True)
                    await pubsub.subscribe(self.requests_channel, self.replies_channel, *self._app_channels)
                    self._subscribed = True
                    self._dirty = True  # we may have missed member events
                    backoff = 0.2
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if msg is not None and msg.get("type") == "message":
                        self._dispatch(msg["channel"], msg["data"])
            except asyncio.CancelledError:
                if pubsub is not None:
                    await _quietly(pubsub.aclose())
                raise
            except (RedisError, OSError) as exc:
                self._subscribed = False
                self._failing(exc)
                if pubsub is not None:
                    await _quietly(pubsub.aclose())
                pubsub = None
                await asyncio.sleep(backoff)
                backoff = min(5.0, backoff * 2)

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        self._last_heard = time.monotonic()
        try:
            app_id = self._app_channels.get(channel)
            if app_id is not None:
                self._on_event(app_id, data)
            elif channel == self.replies_channel:
                if data == b"beat":
                    return
                reply = orjson.loads(data)
                if isinstance(reply, list):  # [token, status, members] from a join script
                    self._on_joined(str(reply[0]), int(reply[1]), reply[2])
                    return
                pending = self._pending.get(reply["id"])
                if pending is not None:
                    pending.replies.append(reply["data"])
                    pending.check()
            elif channel == self.requests_channel:
                self._on_request(orjson.loads(data))
        except Exception:  # a malformed message must not stop the reader
            log.exception("bad message on Redis channel %r", channel)

    # ------------------------------------------------------------------ queries

    def _on_request(self, request: dict[str, Any]) -> None:
        if request["node"] == self.node_id:
            return
        app = self.server.apps.get(request["app"])
        data = None if app is None else self._answer(app, request["op"], request["arg"])
        reply = orjson.dumps({"id": request["id"], "data": data})
        self._enqueue(("PUBLISH", self.base + "replies#" + request["node"], reply), None)

    def _answer(self, app: AppState, op: str, arg: str | None) -> Any:
        """This node's part of a query, in a form that merges (and crosses Redis as JSON)."""
        if op == "channels":
            result: dict[str, list[Any]] = {}
            for name in app.table.channels():
                if name.startswith("#server-to-user-") or (arg and not name.startswith(arg)):
                    continue
                members = app.presence.get(name)
                result[name] = [app.table.count(name), None if members is None else list(members)]
            return result
        if op == "channel":
            assert arg is not None
            cached = app.cache.get(arg)
            left = cached[1] - time.monotonic() if cached is not None else 0.0
            return [
                app.table.count(arg),
                list(app.presence.get(arg, ())),
                cached[0].decode() if cached is not None and left > 0 else None,
            ]
        if op == "members":
            return {uid: entry[1] for uid, entry in app.presence.get(arg or "", {}).items()}
        if op == "terminate":
            socks = list(app.users.get(arg or "", ()))
            for sock in socks:
                self.server.close_socket(sock, 4009, "The app terminated this user's connections.")
            return len(socks)
        raise ValueError(op)

    async def _ask(self, app: AppState, op: str, arg: str | None) -> list[Any]:
        """This node's answer followed by every other node's (those that replied in time)."""
        answers = [self._answer(app, op, arg)]
        if self._redis is None:
            return answers
        rid = f"{self.node_id}:{next(self._request_ids)}"
        pending = self._pending[rid] = _Pending()
        request = orjson.dumps({"id": rid, "node": self.node_id, "app": app.config.id, "op": op, "arg": arg})
        try:
            receivers = int(await self._command("PUBLISH", self.requests_channel, request))
            pending.expected = receivers - (1 if self._subscribed else 0)
            pending.check()
            if not pending.done.is_set():
                await asyncio.wait_for(pending.done.wait(), self.requests_timeout)
        except asyncio.TimeoutError:
            log.info(
                "%s request: %d of %s nodes answered within %.1f s",
                op, len(pending.replies) + 1, (pending.expected or 0) + 1, self.requests_timeout,
            )
        except (RedisError, OSError) as exc:
            self._failing(exc)
        finally:
            del self._pending[rid]
        answers.extend(r for r in pending.replies if r is not None)
        return answers

    async def channels(self, app: AppState, prefix: str | None) -> dict[str, dict[str, int]]:
        counts: dict[str, int] = {}
        users: dict[str, set[str]] = {}
        for answer in await self._ask(app, "channels", prefix):
            for name, (count, uids) in answer.items():
                counts[name] = counts.get(name, 0) + count
                if uids is not None:
                    users.setdefault(name, set()).update(uids)
        result: dict[str, dict[str, int]] = {}
        for name, count in counts.items():
            info = {"subscription_count": count}
            if name in users:
                info["user_count"] = len(users[name])
            result[name] = info
        return result

    async def channel(self, app: AppState, channel: str) -> dict[str, Any]:
        count = 0
        users: set[str] = set()
        cache: str | None = None
        for n, uids, cached in await self._ask(app, "channel", channel):
            count += n
            users.update(uids)
            cache = cache or cached
        info: dict[str, Any] = {"occupied": count > 0, "subscription_count": count}
        if channel_kind(channel) == PRESENCE:
            info["user_count"] = len(users)
        if cache is not None:
            info["cache"] = orjson.loads(cache)
        return info

    async def presence_members(self, app: AppState, channel: str) -> dict[str, Any]:
        members: dict[str, Any] = {}
        for answer in await self._ask(app, "members", channel):
            for uid, info in answer.items():
                members.setdefault(uid, info)
        return members

    async def terminate_user(self, app: AppState, user_id: str) -> int:
        answers = await self._ask(app, "terminate", user_id)
        # The in-process API reports the connections closed here.
        return int(answers[0])

    # ------------------------------------------------------------------ presence

    def _keys(self, app_id: str, channel: str) -> tuple[str, str, str]:
        members = f"{self.base}presence#{app_id}#{channel}"
        return members, members + "#counts", self.node_key

    @staticmethod
    def _field(app_id: str, channel: str, user_id: str) -> bytes:
        return orjson.dumps([app_id, channel, user_id])

    def _member_message(
        self, app: AppState, channel: str, user_id: str, user_info: Any, *, added: bool
    ) -> tuple[str, bytes, bytes]:
        """(pub/sub channel, message for every node, local payload) of a member event."""
        if added:
            name = "pusher_internal:member_added"
            data = orjson.dumps({"user_id": user_id, "user_info": user_info}).decode()
        else:
            name = "pusher_internal:member_removed"
            data = orjson.dumps({"user_id": user_id}).decode()
        payload = encode_event(name, channel, data)
        # No node id: every node, this one included, broadcasts it when it arrives.
        message = orjson.dumps(["", channel, None, 0]) + b"\n" + payload
        return self.base + "events#" + app.config.id, message, payload

    def _webhook(self, app: AppState, channel: str, user_id: str, *, added: bool) -> None:
        wh = self.server.webhooks
        if wh is not None:
            if added:
                wh.member_added(app.config, channel, user_id)
            else:
                wh.member_removed(app.config, channel, user_id)

    def presence_join(self, sock: Socket, channel: str, user_id: str, user_info: Any) -> None:
        app = sock.app
        assert app is not None
        register = join_locally(app, sock, channel, user_id, user_info)
        # The connection enters the broadcast list when the join script's "joined"
        # message arrives: at its place in the stream of member events.
        app.table.remove(channel, sock.sink)
        token = str(next(self._request_ids))
        self._joins[token] = (sock, channel, user_id, user_info, register)
        events, message, _ = self._member_message(app, channel, user_id, user_info, added=True)
        fut = self._command(
            "EVAL", _JOIN, 3, *self._keys(app.config.id, channel),
            user_id, orjson.dumps(user_info), self._field(app.config.id, channel, user_id),
            "1" if register else "0", app.config.max_presence_members_per_channel,
            events, message, self.replies_channel if self._subscribed else "", token,
        )
        fut.add_done_callback(lambda f: self._join_replied(f, token, app, channel, user_id, user_info))

    def _join_replied(
        self, fut: asyncio.Future[Any], token: str, app: AppState, channel: str, user_id: str,
        user_info: Any,
    ) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self._failing(exc)
            pending = self._joins.pop(token, None)
            if pending is not None:
                # This node's members only; member_added (if any) to this node only.
                if pending[4]:
                    _, _, payload = self._member_message(app, channel, user_id, user_info, added=True)
                    app.table.broadcast(channel, payload, None)
                    self._webhook(app, channel, user_id, added=True)
                self._join_done(pending, None, None)
            return
        status, flat = fut.result()
        if status == 1:
            self._webhook(app, channel, user_id, added=True)
        if token in self._joins:
            if not self._subscribed:
                self._join_fallback(token, status, flat, app, channel)
            else:
                # The "joined" message normally follows at once; if the subscriber
                # connection broke meanwhile it never will.
                asyncio.get_running_loop().call_later(
                    self.requests_timeout, self._join_fallback, token, status, flat, app, channel
                )

    def _join_fallback(self, token: str, status: int, flat: Any, app: AppState, channel: str) -> None:
        pending = self._joins.pop(token, None)
        if pending is None:
            return
        if status == 1:
            # Its member_added went out through pub/sub, which this node may have missed.
            _, _, payload = self._member_message(app, channel, pending[2], pending[3], added=True)
            app.table.broadcast(channel, payload, None)
        self._join_done(pending, status, flat)

    def _on_joined(self, token: str, status: int, flat: Any) -> None:
        pending = self._joins.pop(token, None)
        if pending is not None:
            self._join_done(pending, status, flat)

    def _join_done(self, pending: _Join, status: int | None, flat: Any) -> None:
        """Send subscription_succeeded (members from Redis, or this node's when ``flat`` is None)."""
        sock, channel, user_id, _, _ = pending
        app = sock.app
        assert app is not None
        if sock.closing or sock.presence is None or sock.presence.get(channel) != user_id:
            return  # left meanwhile; its leave was queued after this join
        if status == -1:
            self._refuse_full(app, sock, channel, user_id)
            return
        app.table.add(channel, sock.sink)
        if flat is None:
            sock.send(self.server._succeeded(app, channel, PRESENCE))
            return
        ids: list[str] = []
        infos: dict[str, Any] = {}
        # A Lua empty table comes out of cjson as {}, not [].
        items = flat if isinstance(flat, list) else []
        for i in range(0, len(items), 2):
            uid = items[i].decode() if isinstance(items[i], bytes) else items[i]
            ids.append(uid)
            infos[uid] = orjson.loads(items[i + 1])
        presence = {"ids": ids, "hash": infos, "count": len(ids)}
        sock.send(encode_event(
            "pusher_internal:subscription_succeeded", channel, orjson.dumps({"presence": presence}).decode()
        ))

    def _refuse_full(self, app: AppState, sock: Socket, channel: str, user_id: str) -> None:
        assert sock.presence is not None
        sock.presence.pop(channel, None)
        if channel in sock.channels:
            sock.channels.remove(channel)
        members = app.presence.get(channel)
        entry = members.get(user_id) if members is not None else None
        if members is not None and entry is not None:
            entry[0] -= 1
            if entry[0] <= 0:
                del members[user_id]
                if not members:
                    del app.presence[channel]
            else:
                self._dirty = True  # another connection of the user still counts on it
        limit = app.config.max_presence_members_per_channel
        sock.send(_subscription_error(
            channel, "LimitReached", f"The presence channel is full ({limit} members).", 400
        ))

    def presence_leave(self, sock: Socket, channel: str, user_id: str) -> None:
        app = sock.app
        assert app is not None
        if not leave_locally(app, channel, user_id):
            return
        events, message, payload = self._member_message(app, channel, user_id, None, added=False)
        subscribed = self._subscribed
        fut = self._command(
            "EVAL", _LEAVE, 3, *self._keys(app.config.id, channel),
            user_id, self._field(app.config.id, channel, user_id), events, message,
        )
        fut.add_done_callback(lambda f: self._left(f, app, channel, user_id, payload, subscribed))

    def _left(
        self, fut: asyncio.Future[Any], app: AppState, channel: str, user_id: str, payload: bytes,
        subscribed: bool,
    ) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self._failing(exc)
        elif fut.result() != 1:
            return
        if exc is not None or not (subscribed and self._subscribed):
            # This node will not (or may not) see the script's member_removed.
            app.table.broadcast(channel, payload, None)
        self._webhook(app, channel, user_id, added=False)

    # ------------------------------------------------------------------ heartbeat

    def _heartbeat_args(self, *, beat: bool) -> tuple[Any, ...]:
        dead_ms = int(self.dead_after * 1000)
        return ("EVAL", _HEARTBEAT, 1, self.nodes_key, self.node_id, dead_ms, self.base, "1" if beat else "0")

    async def _heartbeat_once(self, first: bool = False) -> None:
        if first:
            # Before the writer runs: straight on the client.
            reply = await self._command_now(*self._heartbeat_args(beat=True))
        else:
            reply = await self._command(*self._heartbeat_args(beat=True))
        if reply[0] == 1 and not first:
            self._dirty = True  # reaped while cut off (or Redis lost its data)
        await self._reap(reply)

    async def _reap(self, reply: Any) -> None:
        """The script published the member_removed events; the webhooks are ours to send."""
        for field in reply[1]:
            app_id, channel, user_id = orjson.loads(field)
            app = self.server.apps.get(app_id)
            if app is not None:
                if not self._subscribed:  # this node will not hear the script's event
                    _, _, payload = self._member_message(app, channel, user_id, None, added=False)
                    app.table.broadcast(channel, payload, None)
                self._webhook(app, channel, user_id, added=False)

    async def _heartbeat(self) -> None:
        silent_limit = max(self.dead_after, 3 * self.heartbeat_interval)
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._heartbeat_once()
                if self._dirty:
                    await self._reconcile()
            except (RedisError, OSError) as exc:
                self._failing(exc)
                continue
            # Commands work; the subscriber connection must hear our own beats too,
            # or it is dead without knowing (no RST from a vanished peer): replace it.
            self._enqueue(("PUBLISH", self.replies_channel, b"beat"), None)
            if self._subscribed and time.monotonic() - self._last_heard > silent_limit:
                log.warning("Redis subscriber connection went silent: reconnecting it")
                self._last_heard = time.monotonic()
                self._subscribed = False
                reader = self._tasks[0]
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                self._tasks[0] = asyncio.get_running_loop().create_task(self._reader(None))

    async def _reconcile(self) -> None:
        """Make this node's registrations in Redis match its local presence members."""
        self._dirty = False
        existing = set(await self._command("HKEYS", self.node_key))
        wanted: dict[bytes, tuple[AppState, str, str, Any]] = {}
        for app in self.server.apps.values():
            for channel, members in app.presence.items():
                for uid, entry in members.items():
                    wanted[self._field(app.config.id, channel, uid)] = (app, channel, uid, entry[1])
        futures: list[tuple[asyncio.Future[Any], AppState, str, str, bool]] = []
        for field, (app, channel, uid, info) in wanted.items():
            if field not in existing:
                events, message, _ = self._member_message(app, channel, uid, info, added=True)
                fut = self._command(
                    "EVAL", _JOIN, 3, *self._keys(app.config.id, channel),
                    uid, orjson.dumps(info), field, "1", -1, events, message, "", "",
                )
                futures.append((fut, app, channel, uid, True))
        for field in existing - wanted.keys():
            app_id, channel, uid = orjson.loads(field)
            owner = self.server.apps.get(app_id)
            if owner is None:
                continue
            events, message, _ = self._member_message(owner, channel, uid, None, added=False)
            fut = self._command(
                "EVAL", _LEAVE, 3, *self._keys(app_id, channel), uid, field, events, message
            )
            futures.append((fut, owner, channel, uid, False))
        for fut, app, channel, uid, join in futures:
            result = await fut
            # The scripts published the member events; webhooks are ours to send.
            if (result[0] if join else result) == 1:
                self._webhook(app, channel, uid, added=join)
        if futures:
            log.info("presence reconciled with Redis: %d registrations fixed", len(futures))


def _fail(batch: list[tuple[tuple[Any, ...], asyncio.Future[Any] | None]], exc: BaseException) -> None:
    for _, fut in batch:
        if fut is not None and not fut.done():
            fut.set_exception(exc)


async def _quietly(aw: Any) -> None:
    """Await a close of a connection that may be broken already; its failure changes nothing."""
    with contextlib.suppress(RedisError, OSError, RuntimeError):
        await aw
