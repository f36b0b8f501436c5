"""What the core offers its adapter: delivery of frames, member events, join answers.

:class:`AdapterCallbacks` is mixed into :class:`~soketi_impl.pusher.PusherServer`
and implements :class:`~soketi_impl.adapters.base.AdapterHost`: the adapter reports
facts (a frame from another node, a member added or removed, the answer to a
presence join, a changed cluster total) and these methods turn them into messages for this node's
connections. Delivery is one C broadcast per frame (``ChannelTable.broadcast``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..adapters.base import PresenceJoin
from . import cache
from .channels import policy_for
from .presence import local_members
from .state import AppState

if TYPE_CHECKING:
    from ..adapters.base import Adapter
    from ..config import Config
    from .counts import Counts
    from .observing import Observers
    from .presence import Presence

__all__ = ["AdapterCallbacks"]


class AdapterCallbacks:
    """Mixed into the core (see the module docstring)."""

    apps: dict[str, AppState]
    adapter: Adapter
    config: Config
    observers: Observers
    presence: Presence
    counts: Counts

    # ------------------------------------------------------------------ delivery

    def deliver(
        self, app_id: str, channel: str, payload: bytes, except_socket_id: str | None, cache: bool = False
    ) -> int:
        """Send an encoded frame to this node's subscribers of ``channel`` (one C broadcast).

        ``cache``: keep it as the channel's cached event. Called for frames from
        other nodes too (the adapter).
        """
        app = self.apps.get(app_id)
        if app is None:
            return 0
        return self._deliver(app, channel, payload, except_socket_id, cache)

    def _deliver(
        self, app: AppState, channel: str, payload: bytes, except_socket_id: str | None, is_cache: bool
    ) -> int:
        if is_cache:
            cache.store(app, channel, payload, self.config.channel_cache_ttl)
        exclude = None
        if except_socket_id:
            sock = app.sockets.get(except_socket_id)
            if sock is not None:
                exclude = sock.sink
        n: int = app.table.broadcast(channel, payload, exclude)
        return n

    def deliver_and_publish(
        self, app: AppState, channel: str, payload: bytes, except_socket_id: str | None, *, cache: bool
    ) -> int:
        """Deliver on this node, then carry the same frame to the other nodes."""
        n = self._deliver(app, channel, payload, except_socket_id, cache)
        self.adapter.publish(app.config.id, channel, payload, except_socket_id, cache)
        return n

    def app_ids(self) -> Iterable[str]:
        """The ids of the apps this node serves."""
        return list(self.apps)

    def remote_member_added(self, app_id: str, channel: str, user_id: str, user_info: Any) -> None:
        """A user joined a presence channel: tell this node's subscribers."""
        app = self.apps.get(app_id)
        if app is not None:
            self.presence.member_added(app, channel, user_id, user_info)

    def remote_member_removed(self, app_id: str, channel: str, user_id: str) -> None:
        """A user left a presence channel everywhere: tell this node's subscribers."""
        app = self.apps.get(app_id)
        if app is not None:
            self.presence.member_removed(app, channel, user_id)

    def notify_member_added(self, app_id: str, channel: str, user_id: str, user_info: Any) -> None:
        """Tell the observers that a member was added (the adapter calls it once across nodes)."""
        app = self.apps.get(app_id)
        if app is not None and self.observers:
            self.observers.tell("member_added", app.config, channel, user_id, user_info)

    def notify_member_removed(self, app_id: str, channel: str, user_id: str) -> None:
        """Tell the observers that a member was removed (once across nodes)."""
        app = self.apps.get(app_id)
        if app is not None and self.observers:
            self.observers.tell("member_removed", app.config, channel, user_id)

    def presence_joined(
        self, join: PresenceJoin, members: dict[str, Any] | None, *, full: bool = False
    ) -> None:
        """The adapter answered a presence join (see :meth:`AdapterHost.presence_joined`)."""
        self.presence.joined(join, members, policy_for(join.channel), full)

    def local_members(self) -> Iterable[tuple[str, str, str, Any]]:
        """Every presence member on this node: (app id, channel, user id, user_info)."""
        return [
            (app.config.id, channel, uid, info)
            for app in self.apps.values()
            for channel in list(app.presence)
            for uid, info in local_members(app, channel).items()
        ]

    def count_total_changed(
        self, app_id: str, kind: str, name: str, total: int, previous: int, origin: bool, at_ms: int
    ) -> None:
        """A cluster total changed (see :meth:`AdapterHost.count_total_changed`; decided in :mod:`.counts`)."""
        self.counts.total_changed(app_id, kind, name, total, previous, origin, at_ms)

    def local_counts(self) -> Iterable[tuple[str, str, str, int]]:
        """Every non-zero count of this node: (app id, kind, name, count)."""
        return self.counts.local_counts()
