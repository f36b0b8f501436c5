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

from ..twins._protocol import PRESENCE, channel_kind, encode_event

if TYPE_CHECKING:
    from ..pusher.server import AppState, PusherServer, Socket

__all__ = ["Adapter", "LocalAdapter"]


def join_locally(app: AppState, sock: Socket, channel: str, user_id: str, user_info: Any) -> bool:
    """Count one connection of ``user_id`` into this node's presence channel.

    True when it is the user's first connection here (the user is added to the local
    member list with ``user_info``).
    """
    members = app.presence.setdefault(channel, {})
    entry = members.get(user_id)
    if sock.presence is None:
        sock.presence = {}
    sock.presence[channel] = user_id
    if entry is None:
        members[user_id] = [1, user_info]
        return True
    entry[0] += 1
    return False


def leave_locally(app: AppState, channel: str, user_id: str) -> bool:
    """Count one connection of ``user_id`` out of this node's presence channel.

    True when it was the user's last connection here (the user is removed from the
    local member list, and the channel's list too when it is empty).
    """
    members = app.presence.get(channel)
    entry = members.get(user_id) if members is not None else None
    if members is None or entry is None:
        return False
    entry[0] -= 1
    if entry[0] > 0:
        return False
    del members[user_id]
    if not members:
        del app.presence[channel]
    return True


class Adapter:
    """The interface. Subclasses implement every method."""

    def attach(self, server: PusherServer) -> None:
        """Called once by the server that uses this adapter."""
        raise NotImplementedError

    async def start(self) -> None:
        """Connect to the other nodes, if any; called before the server listens.

        Raises a :class:`~soketi_impl.errors.SoketiError` when that is impossible.
        """

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

    def presence_join(self, sock: Socket, channel: str, user_id: str, user_info: Any) -> None:
        """``sock`` (already in the channel's table) joins a presence channel as ``user_id``.

        Records the membership, sends ``pusher_internal:subscription_succeeded`` with
        the members to ``sock`` and, when this is the user's first connection in the
        channel, ``pusher_internal:member_added`` to the other subscribers (and the
        ``member_added`` webhook). An adapter may answer later (after a round trip).
        """
        raise NotImplementedError

    def presence_leave(self, sock: Socket, channel: str, user_id: str) -> None:
        """``sock`` (already out of the channel's table) left a presence channel.

        When it was the user's last connection in the channel, sends
        ``pusher_internal:member_removed`` to the subscribers (and the webhook).
        """
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

    def presence_join(self, sock: Socket, channel: str, user_id: str, user_info: Any) -> None:
        app = sock.app
        assert app is not None
        first = join_locally(app, sock, channel, user_id, user_info)
        sock.send(self.server._succeeded(app, channel, PRESENCE))
        if first:
            added = encode_event(
                "pusher_internal:member_added", channel,
                orjson.dumps({"user_id": user_id, "user_info": user_info}).decode(),
            )
            app.table.broadcast(channel, added, sock.sink)
            if self.server.webhooks is not None:
                self.server.webhooks.member_added(app.config, channel, user_id)

    def presence_leave(self, sock: Socket, channel: str, user_id: str) -> None:
        app = sock.app
        assert app is not None
        if not leave_locally(app, channel, user_id):
            return
        removed = encode_event(
            "pusher_internal:member_removed", channel, orjson.dumps({"user_id": user_id}).decode()
        )
        app.table.broadcast(channel, removed, sock.sink)
        if self.server.webhooks is not None:
            self.server.webhooks.member_removed(app.config, channel, user_id)
