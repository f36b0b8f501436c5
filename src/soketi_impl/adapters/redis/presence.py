"""Distributed presence: one member per user id across nodes, through Lua scripts (atomic).

``{prefix}presence#{app}#{channel}`` maps user id -> user_info,
``...#counts`` maps user id -> how many *nodes* have that user in the channel, and
``{prefix}node#{node id}`` lists what this node registered. A node runs a script
only for a user's first connection in a channel on that node and for its last one,
so a member is added when the user's first connection anywhere joins and removed
after the last one anywhere leaves. The script that moves a count 0 -> 1 or 1 -> 0
PUBLISHes the fact (``{"m": "+"|"-", "c": channel, "u": user id, "i": info}``) to
every node, whose core builds the member event; the node that ran it tells its
observers (webhooks), once. The join script then PUBLISHes "joined" with the
member hash to the joining node, and only then does the connection get its
``subscription_succeeded`` and enter the broadcast table. Redis delivers one
connection's pub/sub messages in the order the commands ran, so the new subscriber
sees exactly the member events that came after its member list. The member limit
is enforced in the join script too. The scripts keep membership; they never build
a client message.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson

from ..base import PresenceJoin

if TYPE_CHECKING:
    from .adapter import RedisAdapter

__all__ = ["DistributedPresence", "member_fact"]

log = logging.getLogger("soketi_impl.redis")

#: the most registrations remembered as told during one Redis outage (see ``_told``)
_MAX_TOLD = 100_000

#: A user's first connection on this node joins: register it (idempotent, so a
#: reconciliation can repeat it) and enforce the member limit. Status 1: the user is
#: new in the channel, and the script PUBLISHes its fact (ARGV[7]) on the app's event
#: channel; 0: already a member; -1: refused, the channel is full. Then, when ARGV[8]
#: names the joining node's reply channel, it PUBLISHes [token, status, member hash]
#: there.
JOIN = """
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
#: it, and then the script PUBLISHes its fact (ARGV[4]) on ARGV[3].
LEAVE = """
if redis.call('HDEL', KEYS[3], ARGV[2]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) > 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""


def member_fact(channel: str, user_id: str, user_info: Any = None, *, added: bool) -> bytes:
    """The pub/sub message that says a member was added or removed (a fact, not a client message)."""
    if added:
        return orjson.dumps({"m": "+", "c": channel, "u": user_id, "i": user_info})
    return orjson.dumps({"m": "-", "c": channel, "u": user_id})


def _members(flat: Any) -> dict[str, Any]:
    """user id -> user_info from HGETALL's flat list (a Lua empty table comes out of cjson as {})."""
    items = flat if isinstance(flat, list) else []
    members: dict[str, Any] = {}
    for i in range(0, len(items) - 1, 2):
        uid = items[i].decode() if isinstance(items[i], bytes) else str(items[i])
        members[uid] = orjson.loads(items[i + 1])
    return members


class DistributedPresence:
    """Presence joins and leaves through Redis, and reconciliation (one per adapter)."""

    def __init__(self, adapter: RedisAdapter) -> None:
        self.adapter = adapter
        #: joins waiting for their "joined" message, by token
        self.joins: dict[str, PresenceJoin] = {}
        self._tokens = 0
        #: what this node told its observers on its own while Redis was failing
        #: (registration field -> True: member_added, False: member_removed), so that
        #: the reconciliation that follows does not tell it a second time
        self._told: dict[bytes, bool] = {}

    def _tell_alone(self, field: bytes, added: bool) -> None:
        told = self._told
        told.pop(field, None)
        if len(told) >= _MAX_TOLD:
            del told[next(iter(told))]  # a very long outage: forget the oldest
        told[field] = added

    def _keys(self, app_id: str, channel: str) -> tuple[str, str, str]:
        members = f"{self.adapter.base}presence#{app_id}#{channel}"
        return members, members + "#counts", self.adapter.node_key

    @staticmethod
    def field(app_id: str, channel: str, user_id: str) -> bytes:
        """This node's registration of one member (a field of its ``node#`` hash)."""
        return orjson.dumps([app_id, channel, user_id])

    def _events(self, app_id: str) -> str:
        return self.adapter.base + "events#" + app_id

    # ------------------------------------------------------------------ join

    def join(self, join: PresenceJoin) -> None:
        """Run the join script; the connection is let in when its "joined" message arrives."""
        a = self.adapter
        self._tokens += 1
        token = str(self._tokens)
        self.joins[token] = join
        app_id, channel, uid = join.app_id, join.channel, join.user_id
        fut = a.pipeline.command(
            "EVAL", JOIN, 3, *self._keys(app_id, channel),
            uid, orjson.dumps(join.user_info), self.field(app_id, channel, uid),
            "1" if join.first_here else "0", join.max_members,
            self._events(app_id), member_fact(channel, uid, join.user_info, added=True),
            a.replies_channel if a._subscribed else "", token,
        )
        fut.add_done_callback(lambda f: self._join_replied(f, token, join))

    def _join_replied(self, fut: asyncio.Future[Any], token: str, joined: PresenceJoin) -> None:
        if fut.cancelled():
            return
        a = self.adapter
        exc = fut.exception()
        if exc is not None:
            a.pipeline.failing(exc)
            join = self.joins.pop(token, None)
            if join is not None:
                # Redis is away: this node's members only, the member event to this node only.
                if join.first_here:
                    a.host.remote_member_added(join.app_id, join.channel, join.user_id, join.user_info)
                    a.host.notify_member_added(join.app_id, join.channel, join.user_id, join.user_info)
                    self._tell_alone(self.field(join.app_id, join.channel, join.user_id), True)
                a.host.presence_joined(join, None)
            return
        status, flat = fut.result()
        if status == 1:
            # ``joined``, not the table: the "joined" message may have come first and taken it.
            a.host.notify_member_added(joined.app_id, joined.channel, joined.user_id, joined.user_info)
        join = self.joins.get(token)
        if join is None:
            return
        if not a._subscribed:
            self._fallback(token, status, flat)
        else:
            # The "joined" message normally follows at once; if the subscriber
            # connection broke meanwhile it never will.
            asyncio.get_running_loop().call_later(a.requests_timeout, self._fallback, token, status, flat)

    def _fallback(self, token: str, status: int, flat: Any) -> None:
        join = self.joins.pop(token, None)
        if join is None:
            return
        if status == 1:
            # Its member fact went out through pub/sub, which this node may have missed.
            self.adapter.host.remote_member_added(join.app_id, join.channel, join.user_id, join.user_info)
        self._finish(join, status, flat)

    def on_joined(self, token: str, status: int, flat: Any) -> None:
        """The join script's message to this node (in order with the member facts)."""
        join = self.joins.pop(token, None)
        if join is not None:
            self._finish(join, status, flat)

    def _finish(self, join: PresenceJoin, status: int, flat: Any) -> None:
        host = self.adapter.host
        if status == -1:
            # Another connection of the user here may have counted on this join.
            self.adapter.dirty = True
            host.presence_joined(join, None, full=True)
            return
        host.presence_joined(join, _members(flat))

    # ------------------------------------------------------------------ leave

    def leave(self, app_id: str, channel: str, user_id: str) -> None:
        """Run the leave script; the member is removed when this was its last node."""
        a = self.adapter
        subscribed = a._subscribed
        fut = a.pipeline.command(
            "EVAL", LEAVE, 3, *self._keys(app_id, channel),
            user_id, self.field(app_id, channel, user_id),
            self._events(app_id), member_fact(channel, user_id, added=False),
        )
        fut.add_done_callback(lambda f: self._left(f, app_id, channel, user_id, subscribed))

    def _left(self, fut: asyncio.Future[Any], app_id: str, channel: str, user_id: str, subscribed: bool) -> None:
        if fut.cancelled():
            return
        a = self.adapter
        exc = fut.exception()
        if exc is not None:
            a.pipeline.failing(exc)
        elif fut.result() != 1:
            return
        if exc is not None or not (subscribed and a._subscribed):
            # This node will not (or may not) hear the script's fact.
            a.host.remote_member_removed(app_id, channel, user_id)
        a.host.notify_member_removed(app_id, channel, user_id)
        if exc is not None:
            self._tell_alone(self.field(app_id, channel, user_id), False)

    # ------------------------------------------------------------------ reconciliation

    async def reconcile(self) -> None:
        """Make this node's registrations in Redis match the core's local members."""
        a = self.adapter
        a.dirty = False
        told, self._told = self._told, {}
        existing = set(await a.pipeline.command("HKEYS", a.node_key))
        wanted: dict[bytes, tuple[str, str, str, Any]] = {}
        for app_id, channel, uid, info in a.host.local_members():
            wanted[self.field(app_id, channel, uid)] = (app_id, channel, uid, info)
        futures: list[tuple[asyncio.Future[Any], tuple[str, str, str, Any], bool, bool]] = []
        for field, (app_id, channel, uid, info) in wanted.items():
            if field not in existing:
                fut = a.pipeline.command(
                    "EVAL", JOIN, 3, *self._keys(app_id, channel),
                    uid, orjson.dumps(info), field, "1", -1,
                    self._events(app_id), member_fact(channel, uid, info, added=True), "", "",
                )
                futures.append((fut, (app_id, channel, uid, info), True, told.get(field) is not True))
        for field in existing - wanted.keys():
            app_id, channel, uid = orjson.loads(field)
            fut = a.pipeline.command(
                "EVAL", LEAVE, 3, *self._keys(app_id, channel), uid, field,
                self._events(app_id), member_fact(channel, uid, added=False),
            )
            futures.append((fut, (app_id, channel, uid, None), False, told.get(field) is not False))
        n = len(futures)
        for fut, (app_id, channel, uid, info), join, tell in futures:
            result = await fut
            # The scripts published the facts; the observers are ours to tell, unless
            # this node told them already while Redis was failing.
            if tell and (result[0] if join else result) == 1:
                if join:
                    a.host.notify_member_added(app_id, channel, uid, info)
                else:
                    a.host.notify_member_removed(app_id, channel, uid)
        if n:
            log.info("presence reconciled with Redis: %d registrations fixed", n)
