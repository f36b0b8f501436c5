"""What happens in the core, told to observers: webhooks, public hooks, metrics, dashboards.

The core calls every registered :class:`Observer` synchronously, at the moment a
thing happens, on the event loop's thread. An observer must be cheap and must not
raise: anything slow (an HTTP request, a user's coroutine) is queued by the
observer itself and done later, off the delivery path. Every method has a no-op
default, so an observer implements only what it wants.

``app`` is the app's :class:`~soketi_impl.config.AppConfig` (``app.id``, ``app.key``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import AppConfig

__all__ = ["Observer"]


class Observer:
    """The events of the Pusher core. Subclass and override what you need."""

    def connection_opened(self, app: AppConfig, socket_id: str) -> None:
        """A connection was admitted (``pusher:connection_established`` was sent)."""

    def connection_closed(self, app: AppConfig, socket_id: str, code: int | None, reason: str | None) -> None:
        """An admitted connection is gone (after it left its channels)."""

    def subscribed(self, app: AppConfig, socket_id: str, channel: str) -> None:
        """A connection joined a channel (after ``subscription_succeeded`` was queued)."""

    def unsubscribed(self, app: AppConfig, socket_id: str, channel: str) -> None:
        """A connection left a channel (unsubscribe or close)."""

    def channel_occupied(self, app: AppConfig, channel: str) -> None:
        """A channel got its first subscriber on any node (told on one node of the cluster)."""

    def channel_vacated(self, app: AppConfig, channel: str) -> None:
        """A channel lost its last subscriber on every node (told on one node of the cluster;
        the webhook sender debounces it, see :mod:`soketi_impl.pusher.counts`)."""

    def subscription_count(self, app: AppConfig, channel: str, count: int) -> None:
        """A channel's subscriber count changed; ``count`` is the cluster's (told on the node
        whose change it was; not for ``#server-to-user-`` channels)."""

    def member_added(self, app: AppConfig, channel: str, user_id: str, user_info: Any) -> None:
        """A user's first connection joined a presence channel."""

    def member_removed(self, app: AppConfig, channel: str, user_id: str) -> None:
        """A user's last connection left a presence channel."""

    def client_event(
        self, app: AppConfig, channel: str, event: str, data: Any, socket_id: str, user_id: str | None
    ) -> None:
        """A client event was accepted and forwarded."""

    def cache_miss(self, app: AppConfig, channel: str) -> None:
        """A subscriber joined a cache channel with nothing cached."""

    def signed_in(self, app: AppConfig, socket_id: str, user_id: str) -> None:
        """A connection signed in (``pusher:signin`` succeeded)."""

    def published(self, app: AppConfig, channel: str, event: str, size: int) -> None:
        """An event was published through the HTTP or in-process API (``size``: encoded bytes)."""

    def error_sent(
        self, app: AppConfig, socket_id: str, code: int | None, message: str, channel: str | None
    ) -> None:
        """A connection was sent ``pusher:error`` and stays open (a bad message, a refused
        client event), or ``pusher:subscription_error`` on ``channel`` (``code``: its status).
        Errors that close the connection are told by :meth:`connection_closed` with the code."""
