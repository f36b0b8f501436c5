"""Where channel, presence and user state is read and where events are published.

:class:`PusherServer` keeps the connections of *this* node (sockets, sinks,
channel membership) itself; everything that may have to cross nodes goes through
an :class:`Adapter`: publishing an event, and the queries of the HTTP API. The
queries are ``async`` so that a Redis-backed adapter (several server processes)
can answer them by asking the other nodes; :class:`LocalAdapter` answers from this
node's state at once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from .._protocol import PRESENCE, channel_kind

if TYPE_CHECKING:
    from .server import AppState, PusherServer

__all__ = ["Adapter", "LocalAdapter"]


class Adapter:
    """The interface. Subclasses implement every method."""

    def attach(self, server: PusherServer) -> None:
        """Called once by the server that uses this adapter."""
        raise NotImplementedError

    def publish(self, app: AppState, channel: str, payload: bytes, except_socket_id: str | None) -> int:
        """Deliver a server-encoded event to the channel's subscribers on every node.

        Returns the number of local recipients.
        """
        raise NotImplementedError

    async def channels(self, app: AppState, prefix: str | None) -> dict[str, dict[str, int]]:
        """Occupied channels with ``subscription_count`` (and ``user_count`` for presence)."""
        raise NotImplementedError

    async def channel(self, app: AppState, channel: str) -> dict[str, Any]:
        """``occupied``, ``subscription_count``, ``user_count`` (presence), ``cache`` of one channel."""
        raise NotImplementedError

    async def presence_members(self, app: AppState, channel: str) -> dict[str, Any]:
        """user id -> user_info of a presence channel."""
        raise NotImplementedError

    async def terminate_user(self, app: AppState, user_id: str) -> int:
        """Close every connection of ``user_id`` with 4009; returns how many were closed here."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections to other nodes, if any."""


class LocalAdapter(Adapter):
    """One node: everything is answered from this process's state."""

    server: PusherServer

    def attach(self, server: PusherServer) -> None:
        self.server = server

    def publish(self, app: AppState, channel: str, payload: bytes, except_socket_id: str | None) -> int:
        exclude = None
        if except_socket_id:
            sock = app.sockets.get(except_socket_id)
            if sock is not None:
                exclude = sock.sink
        n: int = app.table.broadcast(channel, payload, exclude)
        return n

    async def channels(self, app: AppState, prefix: str | None) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        for name in app.table.channels():
            if name.startswith("#server-to-user-") or (prefix and not name.startswith(prefix)):
                continue
            info = {"subscription_count": app.table.count(name)}
            members = app.presence.get(name)
            if members is not None:
                info["user_count"] = len(members)
            result[name] = info
        return result

    async def channel(self, app: AppState, channel: str) -> dict[str, Any]:
        count = app.table.count(channel)
        info: dict[str, Any] = {"occupied": count > 0, "subscription_count": count}
        if channel_kind(channel) == PRESENCE:
            info["user_count"] = len(app.presence.get(channel, ()))
        cached = app.cache.get(channel)
        if cached is not None and cached[1] > time.monotonic():
            info["cache"] = orjson.loads(cached[0])
        return info

    async def presence_members(self, app: AppState, channel: str) -> dict[str, Any]:
        return {uid: entry[1] for uid, entry in app.presence.get(channel, {}).items()}

    async def terminate_user(self, app: AppState, user_id: str) -> int:
        socks = list(app.users.get(user_id, ()))
        for sock in socks:
            self.server.close_socket(sock, 4009, "The app terminated this user's connections.")
        return len(socks)
