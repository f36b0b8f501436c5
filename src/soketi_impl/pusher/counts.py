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
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from ..adapters.base import CHANNEL, USER, crosses_zero
from . import messages
from .channels import policy_for
from .state import AppState

if TYPE_CHECKING:
    from .core import PusherServer

__all__ = ["DEFAULT_WINDOW_S", "MAX_REMEMBERED", "Counts"]

#: Pusher's webhook debounce: a channel back within it was never vacated.
DEFAULT_WINDOW_S: Final = 3.0
#: The most recent vacates remembered (older ones are forgotten first).
MAX_REMEMBERED: Final = 100_000


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

    def local_counts(self) -> Iterable[tuple[str, str, str, int]]:
        """Every non-zero count of this node: (app id, kind, name, count)."""
        out: list[tuple[str, str, str, int]] = []
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
