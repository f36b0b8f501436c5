"""The pub/sub reader: one subscriber connection, its messages dispatched to the adapter's parts.

Channels (all under ``{redis_key_prefix}{adapter_redis_prefix}soketi#``):

``events#{app id}``
    ``[node, channel, except socket id, cache]\\n<frame>``: an event another node
    published (a node skips its own); or a member fact
    ``{"m": "+"|"-", "c": channel, "u": user id, "i": user_info}`` from a
    presence script (every node, this one included, acts on it); or a count fact
    ``{"k": kind, "c": name, "t": total, "p": previous, "o": origin node, "a": at_ms}``
    (:mod:`.counts`).
``requests``
    a query from another node (:mod:`.requests`).
``replies#{node id}``
    ``beat`` (the heartbeat's liveness probe), ``drain`` (a closing node's last
    message to itself: everything before it was dispatched), ``[token, status, members]`` from a
    join script (:mod:`.presence`), a count fact for this node only (with its
    ``"app"``), or ``{"id", "data"}``, an answer to our query.

The reader reconnects with backoff when the connection drops. A malformed message
is skipped with one warning line (no traceback), at most one every 10 s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

from .pipeline import Throttle, quietly

if TYPE_CHECKING:
    from .adapter import RedisAdapter

__all__ = ["Reader"]

log = logging.getLogger("soketi_impl.redis")


class Reader:
    """Reads the subscriber connection and dispatches (one per adapter)."""

    def __init__(self, adapter: RedisAdapter) -> None:
        self.adapter = adapter
        self._bad = Throttle()
        #: malformed messages skipped so far
        self.malformed = 0

    def channels(self) -> list[bytes]:
        """Every channel this node subscribes to."""
        a = self.adapter
        return [a.requests_channel, a.replies_channel, *a.app_channels]

    async def run(self, pubsub: Any) -> None:
        """Dispatch pub/sub messages; resubscribe with backoff when the connection drops."""
        a = self.adapter
        assert a.sub_client is not None
        backoff = 0.2
        while True:
            try:
                if pubsub is None:
                    pubsub = a.sub_client.pubsub(ignore_subscribe_messages=True)
                    await pubsub.subscribe(*self.channels())
                    a._subscribed = True
                    a.dirty = True  # we may have missed member facts: re-register
                    backoff = 0.2
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if msg is not None and msg.get("type") == "message":
                        self.dispatch(msg["channel"], msg["data"])
            except asyncio.CancelledError:
                if pubsub is not None:
                    await quietly(pubsub.aclose())
                raise
            except (RedisError, OSError) as exc:
                a._subscribed = False
                a.pipeline.failing(exc)
                if pubsub is not None:
                    await quietly(pubsub.aclose())
                pubsub = None
                await asyncio.sleep(backoff)
                backoff = min(5.0, backoff * 2)

    def dispatch(self, channel: bytes, data: bytes) -> None:
        """Act on one message; a malformed one is logged (rate-limited) and skipped."""
        a = self.adapter
        a.last_heard = time.monotonic()
        try:
            app_id = a.app_channels.get(channel)
            if app_id is not None:
                self._on_event(app_id, data)
            elif channel == a.replies_channel:
                if data == b"beat":
                    return
                if data == b"drain":  # the closing node's last message to itself
                    if a.drained is not None:
                        a.drained.set()
                    return
                reply = orjson.loads(data)
                if isinstance(reply, list):  # [token, status, members] from a join script
                    a.presence.on_joined(str(reply[0]), int(reply[1]), reply[2])
                elif "k" in reply:  # a count fact for this node only
                    a.counts.on_fact(reply.get("app"), reply)
                else:
                    a.requests.on_reply(reply)
            elif channel == a.requests_channel:
                a.requests.on_request(orjson.loads(data))
        except Exception as exc:  # a malformed message must not stop the reader
            self.malformed += 1
            if self._bad.ready():
                log.warning(
                    "skipped a malformed message on Redis channel %s (%s: %s; %d so far; "
                    "logged at most every %.0f s)",
                    channel.decode(errors="replace")[:200], type(exc).__name__, str(exc)[:200],
                    self.malformed, self._bad.every,
                )

    def _on_event(self, app_id: str, data: bytes) -> None:
        host = self.adapter.host
        if data[:1] == b"{":
            fact = orjson.loads(data)
            if "k" in fact:
                self.adapter.counts.on_fact(app_id, fact)
                return
            channel, user_id = fact["c"], fact["u"]
            if not isinstance(channel, str) or not isinstance(user_id, str):
                raise ValueError("a member fact needs a channel and a user id")
            if fact["m"] == "+":
                host.remote_member_added(app_id, channel, user_id, fact.get("i"))
            elif fact["m"] == "-":
                host.remote_member_removed(app_id, channel, user_id)
            else:
                raise ValueError(f"unknown member fact {fact['m']!r}")
            return
        header, sep, payload = data.partition(b"\n")
        node, channel, except_socket_id, cache = orjson.loads(header)
        if not sep or not isinstance(channel, str):
            raise ValueError("an event needs a header line and a channel")
        if node == self.adapter.node_id:
            return
        host.deliver(app_id, channel, payload, except_socket_id if isinstance(except_socket_id, str) else None,
                     bool(cache))
