"""Heartbeat and reaping: live nodes are known, dead nodes' presence members and counts leave.

Every node writes a heartbeat (Redis ``TIME``) into the sorted set
``{prefix}nodes`` every ``heartbeat_interval``; the heartbeat script also reaps
every node silent for ``dead_after``: it removes that node's registrations,
PUBLISHes a member-removed fact for each user who left a channel because of it,
and returns them so the reaping node tells its observers; it removes the node's
count shares too, the reaping node being the origin of the count facts that
follow (:mod:`.counts`). A node that finds itself missing (reaped while cut off,
or Redis lost its data) reconciles its registrations and its shares.
Each heartbeat also publishes a beat to this node's reply channel: a subscriber
connection that hears nothing for ``dead_after`` is replaced (a vanished peer
sends no RST). The heartbeat loop survives any exception: it logs (rate-limited)
and goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

from .pipeline import Throttle

if TYPE_CHECKING:
    from .adapter import RedisAdapter

__all__ = ["Heartbeat"]

log = logging.getLogger("soketi_impl.redis")

#: ARGV[4] '1': heartbeat this node, then reap every node silent for ARGV[2] ms;
#: '0': reap this node (a clean stop). PUBLISHes a member-removed fact for every
#: user who left a channel that way, and a count fact (this node its origin) for
#: every total a dead node's shares leave (see :mod:`.counts`); returns {1 if this
#: node was not registered, the node fields ([app, channel, user]) of those users,
#: {app, count fact} pairs}.
HEARTBEAT = """
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
local facts = {}
for _, node in ipairs(dead) do
  local nk = ARGV[3] .. 'node#' .. node
  for _, f in ipairs(redis.call('HKEYS', nk)) do
    local e = cjson.decode(f)
    local mk = ARGV[3] .. 'presence#' .. e[1] .. '#' .. e[2]
    if redis.call('HINCRBY', mk .. '#counts', e[3], -1) <= 0 then
      redis.call('HDEL', mk .. '#counts', e[3])
      redis.call('HDEL', mk, e[3])
      removed[#removed + 1] = f
      redis.call('PUBLISH', ARGV[3] .. 'events#' .. e[1], cjson.encode({m = '-', c = e[2], u = e[3]}))
    end
  end
  redis.call('DEL', nk)
  local ck = ARGV[3] .. 'ncount#' .. node
  local shares = redis.call('HGETALL', ck)
  for i = 1, #shares, 2 do
    local e = cjson.decode(shares[i])
    local key = ARGV[3] .. 'count#' .. e[1] .. '#' .. e[2] .. '#' .. e[3]
    local prev = 0
    for _, v in ipairs(redis.call('HVALS', key)) do prev = prev + tonumber(v) end
    redis.call('HDEL', key, node)
    local total = 0
    for _, v in ipairs(redis.call('HVALS', key)) do total = total + tonumber(v) end
    if total ~= prev then
      local fact = cjson.encode({k = e[2], c = e[3], t = total, p = prev, o = ARGV[1], a = now, app = e[1]})
      redis.call('PUBLISH', ARGV[3] .. 'events#' .. e[1], fact)
      facts[#facts + 1] = {e[1], fact}
    end
  end
  redis.call('DEL', ck)
  redis.call('ZREM', KEYS[1], node)
end
return {added, removed, facts}
"""


class Heartbeat:
    """The heartbeat loop and the reaping it does (one per adapter)."""

    def __init__(self, adapter: RedisAdapter) -> None:
        self.adapter = adapter
        self._errors = Throttle()

    def args(self, *, beat: bool) -> tuple[Any, ...]:
        """The heartbeat script's command (``beat`` False: withdraw this node)."""
        a = self.adapter
        dead_ms = int(a.dead_after * 1000)
        return ("EVAL", HEARTBEAT, 1, a.nodes_key, a.node_id, dead_ms, a.base, "1" if beat else "0")

    async def once(self, first: bool = False) -> None:
        """One heartbeat (and the reaping it does)."""
        a = self.adapter
        if first:
            # Before the writer runs: straight on the client.
            reply = await a.pipeline.command_now(*self.args(beat=True))
        else:
            reply = await a.pipeline.command(*self.args(beat=True))
        if reply[0] == 1 and not first:
            a.dirty = True  # reaped while cut off (or Redis lost its data)
        self.reap(reply)

    def reap(self, reply: Any) -> None:
        """The script published the member-removed facts; the observers are ours to tell.

        Count facts come back through pub/sub like the others (a closing node waits
        for them), unless this node will not hear them (not subscribed): then from
        the reply.
        """
        a = self.adapter
        for field in reply[1]:
            app_id, channel, user_id = orjson.loads(field)
            if not a._subscribed:  # this node will not hear the script's fact
                a.host.remote_member_removed(app_id, channel, user_id)
            a.host.notify_member_removed(app_id, channel, user_id)
        if len(reply) > 2 and not a._subscribed:
            for app_id, fact in reply[2]:
                a.counts.on_fact(app_id.decode() if isinstance(app_id, bytes) else str(app_id), orjson.loads(fact))

    async def run(self) -> None:
        """Beat every ``heartbeat_interval`` until cancelled, whatever fails in between."""
        a = self.adapter
        while True:
            await asyncio.sleep(a.heartbeat_interval)
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                a.pipeline.failing(exc)
            except Exception as exc:  # a bug or a surprise from Redis: log, beat again later
                a.dirty = True  # a reconciliation may have stopped half-way
                if self._errors.ready():
                    log.warning("Redis heartbeat failed (%s: %s); it goes on", type(exc).__name__, exc)

    async def _beat(self) -> None:
        a = self.adapter
        await self.once()
        if a.dirty:
            await a.presence.reconcile()
            await a.counts.reconcile()
        # Commands work; the subscriber connection must hear our own beats too,
        # or it is dead without knowing (no RST from a vanished peer): replace it.
        a.pipeline.enqueue(("PUBLISH", a.replies_channel, b"beat"), None)
        silent_limit = max(a.dead_after, 3 * a.heartbeat_interval)
        if a._subscribed and time.monotonic() - a.last_heard > silent_limit:
            log.warning("Redis subscriber connection went silent: reconnecting it")
            a.last_heard = time.monotonic()
            await a.restart_reader()
