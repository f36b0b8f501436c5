"""Presence channels in the core: local membership, and the join and leave flows with the adapter.

This node counts, per presence channel, the connections of each user
(``AppState.presence``). A user's first connection here and its last one are what
the adapter hears about (:meth:`Adapter.presence_join`, ``presence_leave``); the
adapter answers with the facts (member added or removed, the member list), and the
functions here build the messages. A joining connection enters the channel's
broadcast table only when its join is answered, so it sees exactly the member
events that come after its member list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..adapters.base import PresenceJoin
from . import messages
from .channels import ChannelPolicy, Member, SubscriptionRefused
from .state import AppState, Socket

if TYPE_CHECKING:
    from .core import PusherServer

__all__ = ["Presence", "join_locally", "leave_locally"]


def join_locally(app: AppState, sock: Socket, channel: str, user_id: str, user_info: Any) -> bool:
    """Count one connection of ``user_id`` into this node's presence channel.

    True when it is the user's first connection here (the user is added to the local
    member list with ``user_info``).
    """
    members = app.presence.setdefault(channel, {})
    if sock.presence is None:
        sock.presence = {}
    sock.presence[channel] = user_id
    entry = members.get(user_id)
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


def local_members(app: AppState, channel: str) -> dict[str, Any]:
    """user id -> user_info of this node's members of a channel."""
    return {uid: entry[1] for uid, entry in app.presence.get(channel, {}).items()}


class Presence:
    """The core's presence flows (one per core)."""

    def __init__(self, core: PusherServer) -> None:
        self.core = core

    def join(self, sock: Socket, channel: str, member: Member) -> None:
        """``sock`` (subscribed, not yet in the broadcast table) joins as ``member``."""
        app = sock.app
        assert app is not None
        cfg = app.config
        uid, info = member
        members = app.presence.get(channel)
        limit = cfg.max_presence_members_per_channel
        if members is not None and uid not in members and 0 <= limit <= len(members):
            raise SubscriptionRefused("LimitReached", f"The presence channel is full ({limit} members).", 400)
        first = join_locally(app, sock, channel, uid, info)
        self.core.adapter.presence_join(PresenceJoin(cfg.id, channel, uid, info, first, sock, limit))

    def joined(
        self, join: PresenceJoin, members: dict[str, Any] | None, policy: ChannelPolicy, full: bool
    ) -> None:
        """The adapter answered a join: refuse it, or let the connection in with its member list."""
        sock = join.handle
        assert isinstance(sock, Socket)
        app = sock.app
        channel, uid = join.channel, join.user_id
        if app is None or sock.closing or sock.presence is None or sock.presence.get(channel) != uid:
            return  # left meanwhile; its leave went to the adapter after this join
        if full:
            del sock.presence[channel]
            if not sock.presence:
                sock.presence = None
            sock.discard_channel(channel)
            leave_locally(app, channel, uid)
            limit = app.config.max_presence_members_per_channel
            text = f"The presence channel is full ({limit} members)."
            sock.send(messages.subscription_error(channel, "LimitReached", text, 400))
            if self.core.observers:
                self.core.observers.tell("error_sent", app.config, sock.id, 400, f"LimitReached: {text}", channel)
            return
        if members is None:
            members = local_members(app, channel)
        self.core.subscriptions.enter(sock, channel, policy, messages.subscription_succeeded(channel, members))

    def leave(self, sock: Socket, channel: str) -> None:
        """``sock`` (already out of the broadcast table) left a presence channel."""
        app = sock.app
        if app is None or sock.presence is None:
            return
        uid = sock.presence.pop(channel, None)
        if not sock.presence:
            sock.presence = None
        if uid is not None and leave_locally(app, channel, uid):
            self.core.adapter.presence_leave(app.config.id, channel, uid)

    def member_added(self, app: AppState, channel: str, user_id: str, user_info: Any) -> None:
        """Tell this node's subscribers of the channel that a user joined."""
        app.table.broadcast(channel, messages.member_added(channel, user_id, user_info), None)

    def member_removed(self, app: AppState, channel: str, user_id: str) -> None:
        """Tell this node's subscribers of the channel that a user left."""
        app.table.broadcast(channel, messages.member_removed(channel, user_id), None)
