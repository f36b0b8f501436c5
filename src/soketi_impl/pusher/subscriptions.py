"""Subscribing and unsubscribing: the per-kind policy, the per-connection limit, the table.

``pusher:subscribe`` goes through the channel's policy (:mod:`.channels`), the
connection's channel limit, then either enters the channel at once or, for
presence channels, after the adapter answered the join (:mod:`.presence`).
Entering a channel puts the connection's sink in the app's broadcast table,
sends ``subscription_succeeded`` (and the cached event of a cache channel) and
tells the observers; this node's new count goes to the adapter, and the
cluster-wide decisions (occupied, vacated, subscription counts) are made on the
total it reports (:mod:`.counts`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from ..errors import ProtocolError
from ..twins._protocol import valid_channel_name
from . import cache, messages
from .channels import ChannelPolicy, SubscriptionRefused, policy_for
from .presence import local_members
from .state import Socket

if TYPE_CHECKING:
    from .core import PusherServer

__all__ = ["Subscriptions", "data_object"]


def data_object(data: Any, event: str) -> dict[str, Any]:
    """A client event's ``data`` as an object (parsed when it came as a JSON string)."""
    if isinstance(data, str):
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ProtocolError(f"{event}: data is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"{event}: data must be an object.")
    return data


class Subscriptions:
    """The core's subscribe and unsubscribe (one per core)."""

    def __init__(self, core: PusherServer) -> None:
        self.core = core
        self.max_per_connection = int(getattr(core.config, "max_channels_per_connection", 100))

    def on_subscribe(self, sock: Socket, _channel: str | None, data: Any) -> None:
        """``pusher:subscribe``."""
        data = data_object(data, "pusher:subscribe")
        channel = data.get("channel")
        if not isinstance(channel, str) or not channel:
            raise ProtocolError("pusher:subscribe: channel must be a non-empty string.")
        try:
            self.subscribe(sock, channel, data)
        except SubscriptionRefused as exc:
            sock.send(messages.subscription_error(channel, exc.kind, exc.message, exc.status))
            if self.core.observers and sock.app is not None:
                self.core.observers.tell(
                    "error_sent", sock.app.config, sock.id, exc.status, f"{exc.kind}: {exc.message}", channel
                )

    def subscribe(self, sock: Socket, channel: str, data: dict[str, Any]) -> None:
        """Authorize and subscribe; :class:`SubscriptionRefused` when refused."""
        app = sock.app
        assert app is not None
        cfg = app.config
        if not valid_channel_name(channel, cfg.max_channel_name_length):
            if len(channel) > 1024:  # do not echo a huge name back
                raise ProtocolError(f"Channel name too long ({len(channel)} characters).")
            raise SubscriptionRefused(
                "InvalidChannel",
                f"Invalid channel name (allowed: A-Z a-z 0-9 _-=@,.; up to {cfg.max_channel_name_length}).",
                400,
            )
        policy = policy_for(channel)
        member = policy.authorize(cfg, sock.id, sock.user_id, channel, data)
        if sock.in_channel(channel):
            # Subscribing twice is harmless: confirm again, change nothing.
            members = local_members(app, channel) if policy.presence else None
            sock.send(messages.subscription_succeeded(channel, members))
            return
        limit = self.max_per_connection
        if 0 <= limit <= sock.channel_count():
            raise SubscriptionRefused(
                "LimitReached", f"A connection may subscribe to at most {limit} channels.", 400
            )
        if policy.signed:
            sock.auth_deadline = 0.0  # an authorized subscription counts as authenticated
        sock.add_channel(channel)
        if member is not None:
            try:
                self.core.presence.join(sock, channel, member)
            except SubscriptionRefused:  # the channel is full
                sock.discard_channel(channel)
                raise
            return
        self.enter(sock, channel, policy, messages.subscription_succeeded(channel))

    def enter(self, sock: Socket, channel: str, policy: ChannelPolicy, succeeded: bytes) -> None:
        """Put ``sock`` in the channel's broadcast table and confirm the subscription."""
        app = sock.app
        assert app is not None
        core = self.core
        added = policy.tabled and app.table.add(channel, sock.sink)
        sock.send(succeeded)
        if added:
            # occupied, subscription_count: decided on the cluster total (see .counts)
            core.counts.channel_changed(app, channel)
        observers = core.observers
        if policy.cache:
            cached = cache.lookup(app, channel)
            if cached is not None:
                sock.send(cached)
            else:
                sock.send(messages.cache_miss(channel))
                if observers:
                    observers.tell("cache_miss", app.config, channel)
        if observers:
            observers.tell("subscribed", app.config, sock.id, channel)

    def on_unsubscribe(self, sock: Socket, _channel: str | None, data: Any) -> None:
        """``pusher:unsubscribe``."""
        data = data_object(data, "pusher:unsubscribe")
        channel = data.get("channel")
        if not isinstance(channel, str):
            raise ProtocolError("pusher:unsubscribe: channel must be a string.")
        self.unsubscribe(sock, channel)

    def unsubscribe(self, sock: Socket, channel: str) -> None:
        """Leave one channel (nothing when not subscribed)."""
        app = sock.app
        assert app is not None
        if not sock.discard_channel(channel):
            return
        policy = policy_for(channel)
        removed = policy.tabled and app.table.remove(channel, sock.sink)
        if policy.presence:
            self.core.presence.leave(sock, channel)
        if (removed or not policy.tabled) and self.core.observers:
            self.core.observers.tell("unsubscribed", app.config, sock.id, channel)
        if removed:
            # vacated, subscription_count: decided on the cluster total (see .counts)
            self.core.counts.channel_changed(app, channel)
