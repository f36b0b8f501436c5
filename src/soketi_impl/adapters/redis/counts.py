"""Cluster-wide counts: per-node shares in Redis, changed only by Lua scripts (atomic).

``{prefix}count#{app}#{kind}#{name}`` maps node id -> that node's count (a
channel's subscriptions, a user's signed-in connections); the total is the sum of
its values. ``{prefix}ncount#{node id}`` maps ``[app, kind, name]`` -> the same
share, so the reaper finds a dead node's shares (see :mod:`.heartbeat`, which
removes them with the node's presence registrations, under the same lease).

:data:`COUNT` sets this node's share and computes the total before and after in
one script. A change of the total is a *count fact*
``{"k": kind, "c": name, "t": total, "p": previous, "o": origin node, "a": at_ms,
"app": app id}``
(``a``: Redis ``TIME`` in ms): the script PUBLISHes it on the app's event channel
(every node hears it) when it crosses zero or when the core asked for every node,
otherwise on the origin node's reply channel only. The origin too acts on the
fact when it arrives through pub/sub, not on the script's reply, so on every node
the facts of one name come in the order the scripts ran (one connection, one
order). When this node is not subscribed at the time of the call, the script's
reply is used instead. A failed call marks the adapter dirty: the heartbeat then
re-registers :meth:`~soketi_impl.adapters.base.AdapterHost.local_counts`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from .adapter import RedisAdapter

__all__ = ["COUNT", "DistributedCounts", "count_fact_args"]

log = logging.getLogger("soketi_impl.redis")

#: KEYS[1] the name's count hash, KEYS[2] this node's ``ncount#`` hash. ARGV: node id,
#: the new share, the node field ([app, kind, name]), the app's event channel, '1' for
#: every node, this node's reply channel ('' : none, the reply is used), kind, name, app id.
#: Returns {total, previous, at_ms} (at_ms 0 when the total did not change).
COUNT = """
local prev = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do prev = prev + tonumber(v) end
local n = tonumber(ARGV[2])
if n > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], n)
  redis.call('HSET', KEYS[2], ARGV[3], n)
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[3])
end
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
if total == prev then return {total, prev, 0} end
local t = redis.call('TIME')
local at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fact = cjson.encode({k = ARGV[7], c = ARGV[8], t = total, p = prev, o = ARGV[1], a = at, app = ARGV[9]})
if ARGV[5] == '1' or (prev == 0) ~= (total == 0) then
  redis.call('PUBLISH', ARGV[4], fact)
elseif ARGV[6] ~= '' then
  redis.call('PUBLISH', ARGV[6], fact)
end
return {total, prev, at}
"""

#: The totals of KEYS (count hashes), in order.
TOTALS = """
local out = {}
for i, k in ipairs(KEYS) do
  local s = 0
  for _, v in ipairs(redis.call('HVALS', k)) do s = s + tonumber(v) end
  out[i] = s
end
return out
"""


def count_fact_args(base: str, app_id: str, kind: str, name: str) -> tuple[str, bytes]:
    """The count hash of a name and this node's field for it."""
    return f"{base}count#{app_id}#{kind}#{name}", orjson.dumps([app_id, kind, name])


class DistributedCounts:
    """Count changes through Redis, their facts, and reconciliation (one per adapter)."""

    def __init__(self, adapter: RedisAdapter) -> None:
        self.adapter = adapter

    def change(self, app_id: str, kind: str, name: str, local_count: int, every_node: bool) -> asyncio.Future[Any]:
        """Run the count script; the fact comes back through pub/sub (or the reply)."""
        a = self.adapter
        key, field = count_fact_args(a.base, app_id, kind, name)
        subscribed = a._subscribed
        fut = a.pipeline.command(
            "EVAL", COUNT, 2, key, a.count_node_key,
            a.node_id, max(0, local_count), field, a.base + "events#" + app_id,
            "1" if every_node else "0", a.replies_channel if subscribed else "", kind, name, app_id,
        )
        fut.add_done_callback(lambda f: self._changed(f, app_id, kind, name, subscribed))
        return fut

    def _changed(self, fut: asyncio.Future[Any], app_id: str, kind: str, name: str, subscribed: bool) -> None:
        if fut.cancelled():
            return
        a = self.adapter
        exc = fut.exception()
        if exc is not None:
            a.pipeline.failing(exc)  # marks the adapter dirty: re-registered at the next heartbeat
            return
        if subscribed:
            return  # the fact comes through pub/sub, in order with the others
        total, previous, at_ms = (int(x) for x in fut.result())
        if total != previous:
            a.host.count_total_changed(app_id, kind, name, total, previous, True, at_ms)

    def on_fact(self, app_id: Any, fact: dict[str, Any]) -> None:
        """A count fact from pub/sub (this node's own ones included)."""
        kind, name = fact["k"], fact["c"]
        if not isinstance(app_id, str) or not isinstance(kind, str) or not isinstance(name, str):
            raise ValueError("a count fact needs an app, a kind and a name")
        total, previous, at_ms = int(fact["t"]), int(fact["p"]), int(fact["a"])
        origin = fact["o"] == self.adapter.node_id
        self.adapter.host.count_total_changed(app_id, kind, name, total, previous, origin, at_ms)

    async def totals(self, app_id: str, kind: str, names: list[str]) -> list[int]:
        """The cluster totals of ``names``; zeros when Redis does not answer."""
        if not names:
            return []
        a = self.adapter
        keys = [count_fact_args(a.base, app_id, kind, n)[0] for n in names]
        try:
            reply = await asyncio.wait_for(a.pipeline.command("EVAL", TOTALS, len(keys), *keys), a.requests_timeout)
        except Exception as exc:  # Redis away or slow: what this node cannot know is 0
            log.debug("count totals unavailable: %s", exc)
            return [0] * len(names)
        return [int(x) for x in reply]

    async def reconcile(self) -> None:
        """Make this node's shares in Redis match the core's counts (the changes are reported)."""
        a = self.adapter
        stored = await a.pipeline.command("HGETALL", a.count_node_key)
        existing: dict[bytes, int] = {}
        if isinstance(stored, dict):
            existing = {k: int(v) for k, v in stored.items()}
        else:  # a flat list, depending on the client's protocol
            existing = {stored[i]: int(stored[i + 1]) for i in range(0, len(stored) - 1, 2)}
        wanted: dict[bytes, tuple[str, str, str, int]] = {}
        for app_id, kind, name, n in a.host.local_counts():
            wanted[orjson.dumps([app_id, kind, name])] = (app_id, kind, name, n)
        futures = []
        for field, (app_id, kind, name, n) in wanted.items():
            if existing.get(field) != n:
                futures.append(self.change(app_id, kind, name, n, True))
        for field in existing.keys() - wanted.keys():
            app_id, kind, name = orjson.loads(field)
            futures.append(self.change(app_id, kind, name, 0, True))
        for fut in futures:
            await fut
        if futures:
            log.info("counts reconciled with Redis: %d shares fixed", len(futures))
