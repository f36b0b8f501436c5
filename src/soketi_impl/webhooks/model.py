"""What the webhook sender reads from the configuration: apps and their webhooks.

:class:`AppLike` and :class:`WebhookLike` are satisfied by
:class:`~soketi_impl.config.AppConfig` and its ``WebhookConfig`` (and by any
object with the same attributes, as the tests use).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from ..config import WEBHOOK_EVENT_TYPES

__all__ = ["EVENT_TYPES", "AppLike", "WebhookLike", "matches", "wants"]

#: The event types a webhook may subscribe to (defined once, with the config).
EVENT_TYPES: frozenset[str] = WEBHOOK_EVENT_TYPES


class WebhookLike(Protocol):
    """What the sender reads from one webhook of an app."""

    @property
    def url(self) -> str: ...
    @property
    def event_types(self) -> Sequence[str]: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def filter_starts_with(self) -> str | None: ...
    @property
    def filter_ends_with(self) -> str | None: ...


class AppLike(Protocol):
    """What the sender reads from an app."""

    @property
    def id(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def secret(self) -> str: ...
    @property
    def webhooks(self) -> Sequence[WebhookLike]: ...


def matches(webhook: WebhookLike, event_type: str, channel: str) -> bool:
    """Whether ``webhook`` takes ``event_type`` events about ``channel`` (both filters must pass)."""
    if event_type not in webhook.event_types:
        return False
    starts = webhook.filter_starts_with
    if starts and not channel.startswith(starts):
        return False
    ends = webhook.filter_ends_with
    return not ends or channel.endswith(ends)


def wants(app: AppLike, event_type: str) -> bool:
    """Whether at least one of the app's webhooks takes ``event_type`` (any channel)."""
    for webhook in app.webhooks:
        if event_type in webhook.event_types:
            return True
    return False
