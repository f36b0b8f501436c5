"""The in-process API of the core (``trigger``, ``channels``, ``channel``, ``presence_users``,
``terminate_user_connections``) and the node-local answers that queries merge.

A query is answered by this node (:meth:`InProcessApi.answer`) and by every other
node through the adapter (:meth:`Adapter.ask`); the answers have one JSON-able
shape per query so they cross Redis unchanged, and are merged here: subscription
counts add up, presence members are the union (user counts are distinct users), a
cached event comes from any node.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from ..twins._protocol import PRESENCE, channel_kind, encode_event, is_cache_channel
from . import cache
from .channels import SERVER_TO_USER_PREFIX
from .counts import CONNECTIONS_QUERY
from .host import AdapterCallbacks
from .presence import local_members
from .state import AppState, Socket

__all__ = ["InProcessApi"]


class InProcessApi(AdapterCallbacks):
    """Mixed into :class:`~soketi_impl.pusher.PusherServer`."""

    def close_socket(self, sock: Socket, code: int, message: str) -> None:
        """Close one connection with a Pusher code; defined by the core."""
        raise NotImplementedError

    # ------------------------------------------------------------------ publishing

    def app(self, app_id: str) -> AppState:
        """The state of the app with this id; ``KeyError`` when there is none."""
        return self.apps[app_id]

    def publish(
        self, app: AppState, channel: str, event: str, data: Any, socket_id: str | None = None
    ) -> int:
        """Deliver one event to one channel on every node; returns the local recipients.

        ``socket_id`` excludes that connection. On cache channels the event is kept
        for late subscribers (``channel_cache_ttl``).
        """
        payload = encode_event(event, channel, data)
        is_cache = bool(is_cache_channel(channel))
        n = self.deliver_and_publish(app, channel, payload, socket_id, cache=is_cache)
        if self.observers:
            self.observers.tell("published", app.config, channel, event, len(payload))
        return n

    async def trigger(
        self, app_id: str, channels: Iterable[str], event: str, data: Any, socket_id: str | None = None
    ) -> int:
        """Trigger ``event`` on ``channels`` of the app (``socket_id`` excluded); returns local deliveries.

        ``#server-to-user-{id}`` channels reach every connection signed in as that user.
        ``data`` is sent as is when it is a string (the Pusher HTTP API's form), else JSON-encoded.
        """
        app = self.apps[app_id]
        n = 0
        for channel in channels:
            n += self.publish(app, channel, event, data, socket_id)
        return n

    # ------------------------------------------------------------------ queries

    def answer(self, app_id: str, op: str, arg: str | None) -> Any:
        """This node's part of a query (``channels``, ``channel``, ``members``, ``terminate``,
        ``connections``: this node's token and count of the app's connections, see :mod:`.counts`)."""
        app = self.apps.get(app_id)
        if app is None:
            return None
        if op == "channels":
            result: dict[str, list[Any]] = {}
            for name in app.table.channels():
                if name.startswith(SERVER_TO_USER_PREFIX) or (arg and not name.startswith(arg)):
                    continue
                members = app.presence.get(name)
                result[name] = [app.table.count(name), None if members is None else list(members)]
            return result
        if op == "channel":
            name = arg or ""
            cached = cache.lookup(app, name)
            return [
                app.table.count(name),
                list(app.presence.get(name, ())),
                cached.decode() if cached is not None else None,
            ]
        if op == "members":
            return local_members(app, arg or "")
        if op == CONNECTIONS_QUERY:
            return [self.counts.token, self.counts.reported(app_id)]
        if op == "terminate":
            socks = list(app.users.get(arg or "", ()))
            for sock in socks:
                self.close_socket(sock, 4009, "The app terminated this user's connections.")
            return len(socks)
        raise ValueError(f"unknown query {op!r}")

    async def _ask(self, app_id: str, op: str, arg: str | None) -> list[Any]:
        """This node's answer first, then every other node's that came in time."""
        answers = [self.answer(app_id, op, arg)]
        answers.extend(a for a in await self.adapter.ask(app_id, op, arg) if a is not None)
        return answers

    async def channels(self, app_id: str, prefix: str | None = None) -> dict[str, dict[str, int]]:
        """Occupied channels (optionally by prefix) with ``subscription_count`` and, for presence, ``user_count``."""
        self.apps[app_id]  # KeyError for an unknown app
        counts: dict[str, int] = {}
        users: dict[str, set[str]] = {}
        for answer in await self._ask(app_id, "channels", prefix):
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

    async def channel(self, app_id: str, channel: str) -> dict[str, Any]:
        """``occupied``, ``subscription_count``, ``user_count`` (presence) and ``cache`` of one channel."""
        self.apps[app_id]
        count = 0
        users: set[str] = set()
        cached: str | None = None
        for n, uids, text in await self._ask(app_id, "channel", channel):
            count += n
            users.update(uids)
            cached = cached or text
        info: dict[str, Any] = {"occupied": count > 0, "subscription_count": count}
        if channel_kind(channel) == PRESENCE:
            info["user_count"] = len(users)
        if cached is not None:
            info["cache"] = orjson.loads(cached)
        return info

    async def presence_members(self, app_id: str, channel: str) -> dict[str, Any]:
        """user id -> user_info of a presence channel, across nodes."""
        self.apps[app_id]
        members: dict[str, Any] = {}
        for answer in await self._ask(app_id, "members", channel):
            for uid, info in answer.items():
                members.setdefault(uid, info)
        return members

    async def presence_users(self, app_id: str, channel: str) -> list[str]:
        """The user ids present in a presence channel."""
        return list(await self.presence_members(app_id, channel))

    async def terminate_user_connections(self, app_id: str, user_id: str) -> int:
        """Close every connection signed in as ``user_id`` with 4009 (on every node); returns how many here."""
        self.apps[app_id]
        answers = await self._ask(app_id, "terminate", user_id)
        return int(answers[0])

    def sockets(self) -> list[Socket]:
        """Every live socket of every app."""
        return [s for app in self.apps.values() for s in app.sockets.values()]
