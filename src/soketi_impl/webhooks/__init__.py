"""Outgoing webhooks: Pusher's HTTP callbacks, configured the soketi way.

For each webhook of an app whose ``event_types`` include an event and whose
``filter`` matches the channel, the sender ``POST``\\ s::

    {"time_ms": 1700000000000, "events": [{"name": "channel_occupied", "channel": "ch"}]}

with ``Content-Type: application/json``, ``X-Pusher-Key: {app.key}``,
``X-Pusher-Signature: hex(HMAC-SHA256(app.secret, raw body))``
(:func:`soketi_impl.signing.webhook_signature`) and the webhook's own headers.
The official SDKs check it with ``validate_webhook``.

- :mod:`.sender`: :class:`WebhookSender`, the core's observer (what to send, the debounce);
- :mod:`.delivery`: the bounded queue, batching, retries with backoff, the flush at close;
- :mod:`.model`: what is read from the configuration;
- with ``SOKETI_QUEUE_DRIVER=redis``: :mod:`.queue` (the durable queue in Redis),
  :mod:`.durable` (the server enqueues) and :mod:`.worker` (sends, ``SOKETI_MODE``).

Every request carries ``X-Pusher-Idempotency-Key`` (the same on its retries and
redeliveries) so that receivers can de-duplicate: delivery is at least once.
"""

from __future__ import annotations

from .model import EVENT_TYPES, AppLike, WebhookLike
from .sender import DEFAULT_MAX_QUEUE_BYTES, WebhookSender

__all__ = ["DEFAULT_MAX_QUEUE_BYTES", "EVENT_TYPES", "AppLike", "WebhookLike", "WebhookSender"]
