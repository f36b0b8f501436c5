"""The adapter interface: what crosses between nodes, and what the core offers adapters.

An adapter carries *facts* between server nodes: already-encoded event frames,
presence joins and leaves, and the answers to queries. It never builds a client
message and never touches a socket: it reports what it learns back to the core
through :class:`AdapterHost` (implemented by
:class:`~soketi_impl.pusher.PusherServer`), and the core builds and sends every
message.

- :meth:`Adapter.publish` takes a frame the core has delivered on this node
  already, to the other nodes, which hand it to :meth:`AdapterHost.deliver`.
- :meth:`Adapter.ask` gathers the other nodes' answers to a query
  (``channels``, ``channel``, ``members``, ``terminate``); each node answers with
  :meth:`AdapterHost.answer` and the core merges.
- :meth:`Adapter.presence_join` / :meth:`Adapter.presence_leave`: a user's first
  connection on this node joined a presence channel, or its last one left. The
  adapter decides whether the user is new (or gone) across nodes and reports
  ``remote_member_added`` / ``remote_member_removed`` (to every node: the core
  broadcasts the member event to its subscribers), ``notify_member_*`` (once, on
  one node: observers, webhooks) and, for a join, ``presence_joined`` with the
  member list the joining connection gets.

This module imports nothing from :mod:`soketi_impl.pusher`: the core depends on
adapters, never the other way round.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["Adapter", "AdapterHost", "LocalAdapter", "PresenceJoin"]


class PresenceJoin:
    """One connection joining a presence channel, waiting for :meth:`AdapterHost.presence_joined`.

    ``first_here`` tells whether it is the user's first connection in the channel
    on this node; ``max_members`` is the app's member limit (-1: none). ``handle``
    belongs to the core (adapters pass it back untouched).
    """

    __slots__ = ("app_id", "channel", "first_here", "handle", "max_members", "user_id", "user_info")

    def __init__(
        self, app_id: str, channel: str, user_id: str, user_info: Any, first_here: bool, handle: object,
        max_members: int = -1,
    ) -> None:
        self.app_id = app_id
        self.channel = channel
        self.user_id = user_id
        self.user_info = user_info
        self.first_here = first_here
        self.handle = handle
        self.max_members = max_members

    def __repr__(self) -> str:
        return f"<PresenceJoin {self.app_id}/{self.channel} {self.user_id}>"


class AdapterHost(Protocol):
    """What the core offers its adapter (:class:`~soketi_impl.pusher.PusherServer` implements it)."""

    def app_ids(self) -> Iterable[str]:
        """The ids of the apps this node serves."""
        ...

    def deliver(
        self, app_id: str, channel: str, payload: bytes, except_socket_id: str | None, cache: bool
    ) -> int:
        """A frame published on another node: send it to this node's subscribers (and cache it)."""
        ...

    def answer(self, app_id: str, op: str, arg: str | None) -> Any:
        """This node's part of a query, as JSON-able data the core knows how to merge."""
        ...

    def remote_member_added(self, app_id: str, channel: str, user_id: str, user_info: Any) -> None:
        """A user joined a presence channel (on some node): tell this node's subscribers."""
        ...

    def remote_member_removed(self, app_id: str, channel: str, user_id: str) -> None:
        """A user left a presence channel everywhere: tell this node's subscribers."""
        ...

    def notify_member_added(self, app_id: str, channel: str, user_id: str, user_info: Any) -> None:
        """Tell the observers (once across nodes) that a member was added."""
        ...

    def notify_member_removed(self, app_id: str, channel: str, user_id: str) -> None:
        """Tell the observers (once across nodes) that a member was removed."""
        ...

    def presence_joined(
        self, join: PresenceJoin, members: dict[str, Any] | None, *, full: bool = False
    ) -> None:
        """Finish a join: ``members`` (user id -> info) for its subscription_succeeded, or
        None for this node's own members; ``full`` refuses it (the channel is full)."""
        ...

    def local_members(self) -> Iterable[tuple[str, str, str, Any]]:
        """Every presence member on this node: (app id, channel, user id, user_info)."""
        ...


class Adapter:
    """The interface; :class:`LocalAdapter` is the one-node implementation."""

    host: AdapterHost

    def attach(self, host: AdapterHost) -> None:
        """Called once by the core that uses this adapter."""
        self.host = host

    async def start(self) -> None:
        """Connect to the other nodes, if any; called before the server listens.

        Raises a :class:`~soketi_impl.errors.SoketiError` when that is impossible.
        """

    async def close(self) -> None:
        """Release connections to other nodes, if any."""

    def publish(
        self, app_id: str, channel: str, payload: bytes, except_socket_id: str | None, cache: bool
    ) -> None:
        """Carry an encoded frame (already delivered on this node) to the other nodes.

        ``cache``: the frame is the channel's cached event (cache channels).
        """
        raise NotImplementedError

    async def ask(self, app_id: str, op: str, arg: str | None) -> list[Any]:
        """The other nodes' answers to a query (those that answered in time)."""
        raise NotImplementedError

    def presence_join(self, join: PresenceJoin) -> None:
        """A connection joins a presence channel; end with ``host.presence_joined(join, ...)``."""
        raise NotImplementedError

    def presence_leave(self, app_id: str, channel: str, user_id: str) -> None:
        """The user's last connection on this node left the presence channel."""
        raise NotImplementedError


class LocalAdapter(Adapter):
    """One node: nothing to carry; presence is this node's."""

    def publish(
        self, app_id: str, channel: str, payload: bytes, except_socket_id: str | None, cache: bool
    ) -> None:
        """Nothing to do: the core delivered on this node already."""

    async def ask(self, app_id: str, op: str, arg: str | None) -> list[Any]:
        """No other node: no other answers."""
        return []

    def presence_join(self, join: PresenceJoin) -> None:
        """The user is new in the channel when it is new on this node."""
        host = self.host
        if join.first_here:
            host.remote_member_added(join.app_id, join.channel, join.user_id, join.user_info)
            host.notify_member_added(join.app_id, join.channel, join.user_id, join.user_info)
        host.presence_joined(join, None)

    def presence_leave(self, app_id: str, channel: str, user_id: str) -> None:
        """The user is gone when its last connection here left."""
        self.host.remote_member_removed(app_id, channel, user_id)
        self.host.notify_member_removed(app_id, channel, user_id)
