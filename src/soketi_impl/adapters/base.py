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
- :meth:`Adapter.count_changed` / :meth:`Adapter.count_totals`: cluster-wide counts
  of three kinds (:data:`CHANNEL`: a channel's subscriptions; :data:`USER`: a user's
  signed-in connections; :data:`SOCKETS`: one node's connections of an app, under a
  name of that node's own). The core reports this node's count of a name whenever it
  changes; the adapter keeps the per-node shares, sums them over the live nodes and
  reports each change of the total back with :meth:`AdapterHost.count_total_changed`.
  The core decides from those facts: channel_occupied / channel_vacated (with the
  debounce), the subscription_count webhook, ``pusher_internal:subscription_count``
  and watchlist online / offline.

This module imports nothing from :mod:`soketi_impl.pusher`: the core depends on
adapters, never the other way round.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["CHANNEL", "SOCKETS", "USER", "Adapter", "AdapterHost", "LocalAdapter", "PresenceJoin", "crosses_zero"]

#: Count kind: the number of subscriptions of a channel (the name is the channel name).
CHANNEL = "channel"
#: Count kind: the number of signed-in connections of a user (the name is the user id).
USER = "user"
#: Count kind: one node's connections of an app (the name is that node's own token, so
#: each such count has one share and every node learns every node's count: maxConnections).
SOCKETS = "sockets"


def crosses_zero(total: int, previous: int) -> bool:
    """Whether a change of a total from ``previous`` to ``total`` crosses zero (a transition)."""
    return (previous == 0) != (total == 0)


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

    def count_total_changed(
        self, app_id: str, kind: str, name: str, total: int, previous: int, origin: bool, at_ms: int
    ) -> None:
        """The cluster total of a count changed from ``previous`` to ``total`` (never equal).

        ``kind`` is :data:`CHANNEL`, :data:`USER` or :data:`SOCKETS`. Called:

        - with ``origin=True`` on exactly one node, the node that made the change:
          the node whose :meth:`Adapter.count_changed` it was, or the node that
          removed a dead node's shares (see :meth:`Adapter.count_changed`). That
          node tells the observers (webhooks), so each change reaches them once;
        - with ``origin=False`` on every other node, but only for a change that
          crosses zero (:func:`crosses_zero`) or that was reported with
          ``every_node=True``.

        For one (app, kind, name) every node gets its calls in the order the
        changes were applied cluster-wide, and the totals chain: each call's
        ``previous`` is the ``total`` of the change before it (on the nodes that
        hear every change). ``at_ms`` is when the change was applied, in
        milliseconds on one clock shared by every node (the adapter's: Redis'
        ``TIME`` for Redis, the wall clock for one node), so every node computes
        the same interval between two changes; the core compares it with the
        webhook debounce window to decide whether a channel came back in time.
        Called from the event loop, never re-entrantly from inside
        :meth:`Adapter.count_changed` except by :class:`LocalAdapter`, which calls
        it synchronously before ``count_changed`` returns.
        """
        ...

    def local_counts(self) -> Iterable[tuple[str, str, str, int]]:
        """Every non-zero count of this node: (app id, kind, name, count).

        The adapter re-registers them when its shares may have been lost (the node
        was taken for dead while it was only cut off; the other nodes' store lost
        its data), reporting the resulting changes as usual.
        """
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

    def count_changed(self, app_id: str, kind: str, name: str, local_count: int, every_node: bool = False) -> None:
        """This node's count of ``name`` (``kind``: :data:`CHANNEL`, :data:`USER` or :data:`SOCKETS`) is now ``local_count``.

        The core calls it each time its own count changes (a subscription added
        or removed; a connection signed in or out), in order, with the new
        absolute value (>= 0; 0 withdraws this node's share). The adapter stores
        this node's share, atomically with computing the cluster total (the sum of
        the live nodes' shares), and reports the change of the total with
        :meth:`AdapterHost.count_total_changed` (``origin=True`` here; to the other
        nodes when it crosses zero, or always when ``every_node``). It never
        blocks: the result comes later (or at once, :class:`LocalAdapter`).

        ``every_node``: the other nodes must hear this change even when it does
        not cross zero (the core sends the total to clients on every node:
        ``pusher_internal:subscription_count``).

        Crash semantics: a node's shares are tied to its liveness, as its
        presence members are (the same lease). When a node dies without
        withdrawing, the node that declares it dead removes its shares and reports
        each resulting change as its own (``origin=True`` there, the usual rules
        for the other nodes), so a vacated channel or an offline user is then
        decided. A clean :meth:`close` withdraws this node's shares the same way.
        While the other nodes cannot be reached, changes are not reported; when
        they can again, the adapter re-registers :meth:`AdapterHost.local_counts`
        and reports what that changes.
        """
        raise NotImplementedError

    async def count_totals(self, app_id: str, kind: str, names: list[str]) -> list[int]:
        """The current cluster totals of ``names`` (same order), over the nodes not declared dead.

        A read, for the core's decisions that need a total it was not told: a new
        watchlist's initial state, and the confirmation of a ``channel_vacated``
        when its debounce window ends (a return whose fact this node missed shows
        here). It reflects every change applied before the call. When the other
        nodes cannot be reached the adapter answers what it can (0 for what it
        does not know) within its requests timeout, rather than raising.
        """
        raise NotImplementedError


class LocalAdapter(Adapter):
    """One node: nothing to carry; presence and counts are this node's."""

    def __init__(self) -> None:
        #: (app id, kind, name) -> this node's (and so the cluster's) count, non-zero only
        self._counts: dict[tuple[str, str, str], int] = {}

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

    def count_changed(self, app_id: str, kind: str, name: str, local_count: int, every_node: bool = False) -> None:
        """The total is this node's count: reported at once (``origin=True``)."""
        key = (app_id, kind, name)
        previous = self._counts.get(key, 0)
        if local_count == previous:
            return
        if local_count > 0:
            self._counts[key] = local_count
        else:
            del self._counts[key]
        self.host.count_total_changed(app_id, kind, name, local_count, previous, True, int(time.time() * 1000))

    async def count_totals(self, app_id: str, kind: str, names: list[str]) -> list[int]:
        """This node's counts."""
        counts = self._counts
        return [counts.get((app_id, kind, n), 0) for n in names]
