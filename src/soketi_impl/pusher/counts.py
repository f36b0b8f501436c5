"""Cluster-wide counts: what the core decides from the totals its adapter reports.

The core reports each change of this node's counts to the adapter
(:meth:`~soketi_impl.adapters.base.Adapter.count_changed`): a channel's
subscriptions (``CHANNEL``) and a user's signed-in connections (``USER``). The
adapter answers with each change of the cluster total
(:meth:`~soketi_impl.adapters.base.AdapterHost.count_total_changed`), and
:meth:`Counts.total_changed` decides:

- ``channel_occupied`` when a channel's total goes 0 -> >0, ``channel_vacated``
  when it goes back to 0, told to the observers of one node: the node whose
  change it was. The webhook sender debounces ``channel_vacated`` (3 s) and drops
  it with the next ``channel_occupied`` of the same channel when that comes
  within the window. Across nodes the channel may come back on another node, so
  every node hears both transitions and remembers, per channel, when the last
  vacate happened and whether it was its own; a return within the window is then
  told by the node that told the vacate (its sender drops both: nothing is sent),
  otherwise by the node whose change it was. The interval is measured on the
  adapter's shared clock (``at_ms``), so every node makes the same decision. When
  the window ends, the sender asks :meth:`Counts.still_vacated` (the cluster's
  total, read from the adapter) before it sends the vacate, which catches a
  return this node did not hear of (it was cut off from the other nodes).
- the ``subscription_count`` observer event (webhook) with the cluster total, on
  the node whose change it was;
- ``pusher_internal:subscription_count`` with the cluster total to this node's
  subscribers, on every node, when the app enables it (``enableSubscriptionCount``;
  not for presence channels, whose member list says it), the latest total once per
  loop iteration;
- watchlist ``online`` when a user's total goes 0 -> >0 and ``offline`` when it
  goes back to 0, to this node's watchers, on every node.

An app's ``maxConnections`` spans the nodes (workers) the same way, with no round
trip per connection. Each node counts its connections of an app with a limit under
a name of its own (``SOCKETS``, :attr:`Counts.token`), reported once per loop
iteration and to every node, so each node knows every other node's count as of the
last change it heard (``AppState.elsewhere``, their sum). A node that starts, or
first sees an app, asks the others for their counts once (:meth:`Counts.learn`).
A connection is admitted while ``len(app.sockets) + app.elsewhere`` is below the
limit: its own connections exactly, the others' as last heard.

The slack, stated: a node's admissions reach the others one propagation delay later
(the end of its loop iteration, then the adapter: one hop through the hub for
workers, a Redis script and its pub/sub message, a NATS write and its watch). Nodes
admitting at the same moment each count the others' admissions of the last delay
as not yet there, so the app may go over its limit by at most what the *other*
nodes admitted within one delay (each node never goes over on its own count); and
a node may refuse within one delay after another node's connections closed. Two
workers on one machine: a hop through the hub is well under a millisecond, so a
burst over the limit by a few connections. A node cut off from the cluster (Redis or
NATS away), or one whose question at start was not answered yet, counts only what
it heard; a node that dies without withdrawing keeps its count until its lease runs
out (the hub: at once), as its subscriptions do.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from ..adapters.base import CHANNEL, SOCKETS, USER, crosses_zero
from . import messages
from .channels import policy_for
from .state import AppState

if TYPE_CHECKING:
    from .core import PusherServer

__all__ = ["CONNECTIONS_QUERY", "DEFAULT_WINDOW_S", "MAX_REMEMBERED", "Counts"]

log = logging.getLogger("soketi_impl.pusher")

#: Pusher's webhook debounce: a channel back within it was never vacated.
DEFAULT_WINDOW_S: Final = 3.0
#: The most recent vacates remembered (older ones are forgotten first).
MAX_REMEMBERED: Final = 100_000
#: The query (:meth:`~soketi_impl.adapters.base.Adapter.ask`) a node answers with
#: ``[its token, its connections of the app]``: how a node learns the others' counts.
CONNECTIONS_QUERY: Final = "connections"


class Counts:
    """The core's side of cluster-wide counts (one per core)."""

    def __init__(self, core: PusherServer, window_s: float = DEFAULT_WINDOW_S) -> None:
        self.core = core
        #: how long a vacated channel may come back without a new occupation
        self.window_ms = int(window_s * 1000)
        #: (app id, channel) -> (at_ms of its last vacate, told here, monotonic when heard);
        #: insertion-ordered, so the oldest are at the front
        self._vacated: OrderedDict[tuple[str, str], tuple[int, bool, float]] = OrderedDict()
        #: (app, channel) -> the total to send its subscribers at the end of this loop iteration
        self._counts_due: dict[tuple[AppState, str], int] = {}
        #: this node's name for its SOCKETS counts (one per life: a restarted node is a new name)
        self.token = uuid.uuid4().hex[:16]
        #: app id -> this node's connections as last reported (non-zero only)
        self._reported: dict[str, int] = {}
        #: apps whose connections changed in this loop iteration
        self._sockets_due: set[AppState] = set()
        #: app id -> other node's token -> its connections of the app, as last heard (non-zero)
        self._elsewhere: dict[str, dict[str, int]] = {}
        #: app ids whose other nodes were asked for their counts (or are being asked)
        self._learned: set[str] = set()
        #: app id -> the tokens heard of (facts) while its question waits for the answers
        self._asking: dict[str, set[str]] = {}

    # ------------------------------------------------------------------ this node's changes

    def channel_changed(self, app: AppState, channel: str) -> None:
        """This node's subscriptions of ``channel`` changed (a tabled channel)."""
        cfg = app.config
        every = cfg.enable_subscription_count and not policy_for(channel).presence
        self.core.adapter.count_changed(cfg.id, CHANNEL, channel, app.table.count(channel), every)

    def user_changed(self, app: AppState, user_id: str) -> None:
        """This node's signed-in connections of ``user_id`` changed."""
        conns = app.users.get(user_id)
        self.core.adapter.count_changed(app.config.id, USER, user_id, len(conns) if conns else 0)

    def sockets_changed(self, app: AppState) -> None:
        """This node's connections of ``app`` changed: report them at the end of this loop
        iteration, once however many came or went (apps with a limit, or one reported before)."""
        if app.config.max_connections < 0 and app.config.id not in self._reported:
            return
        due = self._sockets_due
        if not due:
            asyncio.get_running_loop().call_soon(self._flush_sockets)
        due.add(app)

    def _flush_sockets(self) -> None:
        due, self._sockets_due = self._sockets_due, set()
        reported, adapter = self._reported, self.core.adapter
        for app in due:
            app_id = app.config.id
            n = len(app.sockets) if app.config.max_connections >= 0 else 0
            if reported.get(app_id, 0) == n:
                continue
            if n:
                reported[app_id] = n
            else:
                del reported[app_id]
            adapter.count_changed(app_id, SOCKETS, self.token, n, True)

    def reported(self, app_id: str) -> int:
        """This node's connections of ``app_id`` as last reported to the other nodes."""
        return self._reported.get(app_id, 0)

    def room(self, app: AppState) -> bool:
        """Whether ``app`` (which has a limit) may take one more connection, across nodes."""
        if app.config.id not in self._learned:
            self.learn(app)
        return len(app.sockets) + app.elsewhere < app.config.max_connections

    def learn(self, app: AppState) -> None:
        """Ask the other nodes for their connections of ``app``, once (in the background)."""
        app_id = app.config.id
        if app_id in self._learned:
            return
        self._learned.add(app_id)
        self.core.spawn(self._learn(app))

    async def _learn(self, app: AppState) -> None:
        app_id = app.config.id
        heard = self._asking[app_id] = set()
        try:
            answers = await self.core.adapter.ask(app_id, CONNECTIONS_QUERY, None)
        except Exception as exc:  # the adapter is away: what it tells later is all we know
            log.info("the other nodes' connections of app %s are unknown: %s", app_id, exc)
            return
        finally:
            del self._asking[app_id]
        shares = self._elsewhere.setdefault(app_id, {})
        for answer in answers:
            if not isinstance(answer, list) or len(answer) != 2:
                continue
            token, n = answer
            # a fact heard since the question was sent is newer than the answer (a node that
            # answered, then left: its 0 must not be undone by its answer)
            if not isinstance(token, str) or token == self.token or token in shares or token in heard:
                continue
            if isinstance(n, int) and n > 0:
                shares[token] = n
                app.elsewhere += n
        if not shares:
            del self._elsewhere[app_id]

    def _sockets_elsewhere(self, app: AppState, token: str, total: int) -> None:
        """Another node's connections of ``app`` are now ``total``."""
        heard = self._asking.get(app.config.id)
        if heard is not None:
            heard.add(token)
        shares = self._elsewhere.setdefault(app.config.id, {})
        app.elsewhere += total - shares.get(token, 0)
        if total > 0:
            shares[token] = total
        else:
            shares.pop(token, None)
            if not shares:
                del self._elsewhere[app.config.id]

    def local_counts(self) -> Iterable[tuple[str, str, str, int]]:
        """Every non-zero count of this node: (app id, kind, name, count)."""
        out: list[tuple[str, str, str, int]] = [
            (app_id, SOCKETS, self.token, n) for app_id, n in self._reported.items()
        ]
        for app in self.core.apps.values():
            app_id = app.config.id
            for channel in app.table.channels():
                if policy_for(channel).tabled:
                    n = app.table.count(channel)
                    if n:
                        out.append((app_id, CHANNEL, channel, n))
            for uid, conns in app.users.items():
                if conns:
                    out.append((app_id, USER, uid, len(conns)))
        return out

    # ------------------------------------------------------------------ the adapter's answers

    def total_changed(
        self, app_id: str, kind: str, name: str, total: int, previous: int, origin: bool, at_ms: int
    ) -> None:
        """A cluster total changed (see :meth:`AdapterHost.count_total_changed`)."""
        app = self.core.apps.get(app_id)
        if app is None or total == previous:
            return
        if kind == CHANNEL:
            self._channel(app, name, total, previous, origin, at_ms)
        elif kind == USER and crosses_zero(total, previous):
            self.core.users.notify_watchers(app, name, online=total > 0)
        elif kind == SOCKETS and name != self.token:
            self._sockets_elsewhere(app, name, total)

    def _channel(self, app: AppState, channel: str, total: int, previous: int, origin: bool, at_ms: int) -> None:
        cfg = app.config
        observers = self.core.observers
        policy = policy_for(channel)
        if total == 0:
            self._remember(app.config.id, channel, at_ms, origin)
            if origin and observers:
                observers.tell("channel_vacated", cfg, channel)
        elif previous == 0:
            last = self._vacated.pop((cfg.id, channel), None)
            tell = last[1] if last is not None and at_ms - last[0] < self.window_ms else origin
            if tell and observers:
                observers.tell("channel_occupied", cfg, channel)
        if origin and policy.counted and observers:
            observers.tell("subscription_count", cfg, channel, total)
        if cfg.enable_subscription_count and policy.counted and not policy.presence:
            self._send_count(app, channel, total)

    def _send_count(self, app: AppState, channel: str, total: int) -> None:
        """Queue ``pusher_internal:subscription_count`` for this node's subscribers.

        Coalesced per channel and loop iteration: a burst of subscriptions (a
        reconnect storm) sends each subscriber the latest count once, not one
        message per change (which would be quadratic in the channel's size).
        """
        due = self._counts_due
        if not due:
            asyncio.get_running_loop().call_soon(self._flush_counts)
        due[(app, channel)] = total

    def _flush_counts(self) -> None:
        due, self._counts_due = self._counts_due, {}
        for (app, channel), total in due.items():
            if total > 0:
                app.table.broadcast(channel, messages.subscription_count(channel, total), None)

    async def still_vacated(self, app: Any, channel: str) -> bool:
        """Whether ``channel`` is still empty on every node (the webhook sender asks when a
        vacate's debounce window ends: a return whose fact this node missed is caught here)."""
        (total,) = await self.core.adapter.count_totals(app.id, CHANNEL, [channel])
        return total == 0

    def _remember(self, app_id: str, channel: str, at_ms: int, mine: bool) -> None:
        vacated = self._vacated
        now = time.monotonic()
        key = (app_id, channel)
        vacated.pop(key, None)
        vacated[key] = (at_ms, mine, now)
        # Forget what is past the window (with a margin for clock steps), and bound the rest.
        horizon = now - self.window_ms / 1000 - 5.0
        while vacated:
            first = next(iter(vacated.values()))
            if first[2] >= horizon and len(vacated) <= MAX_REMEMBERED:
                break
            vacated.popitem(last=False)
