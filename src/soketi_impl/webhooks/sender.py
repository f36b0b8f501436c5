"""The webhook sender: an :class:`~soketi_impl.pusher.events.Observer` of the core.

The core tells every observer what happens; :class:`WebhookSender` decides which
apps and events it wants (the app's webhooks, their ``event_types`` and channel
filters), encodes each event once and queues it (see :mod:`.delivery`). Its
methods are plain sync calls that only enqueue, so the loop serving WebSockets
never waits on a webhook receiver.

``channel_vacated`` and ``member_removed`` wait ``debounce_s`` (3 s, Pusher). If
the channel is occupied again (the same member added again) meanwhile, both the
pending event and the new ``channel_occupied`` (``member_added``) are dropped: a
page reload sends nothing. With several nodes the channel may come back on
another one: the core then tells this sender ``channel_occupied`` (see
:mod:`soketi_impl.pusher.counts`), and when its window ends, a vacate is
confirmed with :attr:`WebhookSender.still_vacated` (set by the core: the cluster's
total is still 0) before it is sent; an occupation told while that is being
checked still counts as a return within the window. :meth:`WebhookSender.close` releases debounced events
at once (the server is going away, so those channels are not coming back on it),
gives everything ``grace_s`` to go out and logs what is left as
"N undelivered event(s) dropped at shutdown".

Example::

    sender = WebhookSender(batching=cfg.webhooks_batching,
                           batching_ms=cfg.webhooks_batching_duration_ms,
                           max_queue_bytes=cfg.webhooks_max_queue_bytes)
    core.add_observer(sender)
    await sender.start()
    ...
    await sender.close(cfg.shutdown_grace_period_ms / 1000)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from ..pusher.events import Observer
from .delivery import Delivery, Item
from .model import AppLike, matches, wants

__all__ = ["DEFAULT_MAX_QUEUE_BYTES", "Cancellable", "WebhookSender"]

log = logging.getLogger("soketi_impl.webhooks")

#: The default bound of the queue in bytes (``SOKETI_WEBHOOKS_MAX_QUEUE_BYTES``).
DEFAULT_MAX_QUEUE_BYTES = 64 * 1024 * 1024


class Cancellable(Protocol):
    """What a scheduler returns (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None: ...


#: ``call_later(delay_s, callback, *args)``: how the debounce schedules its timers.
CallLater = Callable[..., Cancellable]


@dataclass(eq=False, slots=True)
class _Pending:
    """A debounced ``channel_vacated`` / ``member_removed`` waiting for its window."""

    app: AppLike
    event: dict[str, Any]
    handle: Cancellable | None
    #: its window ended; :attr:`WebhookSender.still_vacated` is being asked
    confirming: bool = False


class WebhookSender(Observer, Delivery):
    """Queues webhook events and delivers them in the background.

    Counters, all ints: ``sent``, ``failed``, ``retries``, ``dropped`` (see
    :class:`~soketi_impl.webhooks.delivery.Delivery`); :attr:`queue_depth` and
    :attr:`queue_bytes` are what is not delivered yet; :attr:`stats` gives them all.

    ``max_queue`` bounds the undelivered events, ``max_queue_bytes`` their encoded
    size (64 MiB; ``SOKETI_WEBHOOKS_MAX_QUEUE_BYTES``): over either, the oldest are
    dropped. ``call_later`` schedules the debounce (default: the running loop's);
    tests pass a fake to move time by hand. ``clock`` gives ``time_ms``.
    """

    def __init__(
        self,
        *,
        batching: bool = False,
        batching_ms: int = 50,
        max_queue: int = 10000,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        debounce_s: float = 3.0,
        retry_for_s: float = 300.0,
        first_retry_s: float = 1.0,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        max_backoff_s: float = 60.0,
        concurrency: int = 16,
        call_later: CallLater | None = None,
    ) -> None:
        Delivery.__init__(
            self,
            batching=batching,
            batching_ms=batching_ms,
            max_queue=max_queue,
            max_queue_bytes=max_queue_bytes,
            retry_for_s=retry_for_s,
            first_retry_s=first_retry_s,
            max_backoff_s=max_backoff_s,
            timeout_s=timeout_s,
            concurrency=concurrency,
            clock=clock,
        )
        self.debounce_s = debounce_s
        self._call_later = call_later
        self._pending: dict[tuple[str, ...], _Pending] = {}
        #: awaited when a debounced ``channel_vacated``'s window ends, ``(app, channel)``:
        #: False drops it (occupied again elsewhere); None sends it at once
        self.still_vacated: Callable[[AppLike, str], Awaitable[bool]] | None = None
        #: the running confirmations (at most one per pending vacate)
        self._confirming: set[asyncio.Future[None]] = set()
        self._closing = False
        self._closed_event = asyncio.Event()

    # -- counters -------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """``{"queue_depth", "queue_bytes", "sent", "failed", "retries", "dropped"}``."""
        return self._stats()

    @property
    def debouncing(self) -> int:
        """``channel_vacated`` / ``member_removed`` events waiting for their window."""
        return len(self._pending)

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Open the HTTP client and start delivering (events queued before are kept)."""
        if self._session is not None:
            return
        if self._closed:
            raise RuntimeError("WebhookSender is closed")
        await self._open()

    async def close(self, grace_s: float) -> None:
        """Deliver what can be delivered within ``grace_s`` seconds, then stop.

        Debounced events are released at once and sent with the rest; requests
        waiting for a retry try again at once. Whatever is still undelivered at
        the deadline is dropped, counted in ``dropped`` and logged in one line.
        Returns within about ``grace_s`` plus one second.
        """
        if self._closing:
            # a second caller waits for the first close, within its own grace
            try:
                await asyncio.wait_for(self._closed_event.wait(), max(0.0, grace_s) + 1.0)
            except asyncio.TimeoutError:
                pass
            return
        self._closing = True
        for pending in list(self._pending.values()):
            if pending.handle is not None:
                pending.handle.cancel()
            self._enqueue_event(pending.app, pending.event)
        self._pending.clear()
        for task in list(self._confirming):
            task.cancel()
        await self._flush(grace_s)
        self._closed_event.set()

    # -- what the core tells ----------------------------------------------------

    def wants(self, app: AppLike, event_type: str) -> bool:
        """True when at least one of the app's webhooks takes ``event_type``.

        Kept for cores that ask before telling; the observer methods check it themselves.
        """
        return wants(app, event_type)

    def channel_occupied(self, app: Any, channel: str) -> None:
        """The first connection subscribed to ``channel``."""
        if self._resume(("c", app.id, channel)):
            return
        self._enqueue_event(app, {"name": "channel_occupied", "channel": channel})

    def channel_vacated(self, app: Any, channel: str) -> None:
        """The last connection left ``channel``; sent after ``debounce_s``."""
        # also debounced for webhooks that take only channel_occupied: a reload must
        # not send them a second occupied
        if not (wants(app, "channel_vacated") or wants(app, "channel_occupied")):
            return
        self._debounce(("c", app.id, channel), app, {"name": "channel_vacated", "channel": channel})

    def member_added(self, app: Any, channel: str, user_id: str, user_info: Any) -> None:
        """A user's first connection joined presence ``channel`` (``user_info`` is not sent)."""
        if self._resume(("m", app.id, channel, user_id)):
            return
        self._enqueue_event(app, {"name": "member_added", "channel": channel, "user_id": user_id})

    def member_removed(self, app: Any, channel: str, user_id: str) -> None:
        """A user's last connection left presence ``channel``; sent after ``debounce_s``."""
        if not (wants(app, "member_removed") or wants(app, "member_added")):
            return
        self._debounce(
            ("m", app.id, channel, user_id),
            app,
            {"name": "member_removed", "channel": channel, "user_id": user_id},
        )

    def client_event(
        self,
        app: Any,
        channel: str,
        event: str,
        data: Any,
        socket_id: str,
        user_id: str | None,
    ) -> None:
        """A client event was sent on ``channel``; ``user_id`` on presence channels."""
        if not wants(app, "client_event"):
            return
        payload: dict[str, Any] = {
            "name": "client_event",
            "channel": channel,
            "event": event,
            "data": data,
            "socket_id": socket_id,
        }
        if user_id is not None:
            payload["user_id"] = user_id
        self._enqueue_event(app, payload)

    def cache_miss(self, app: Any, channel: str) -> None:
        """A cache channel was subscribed to while it had no cached event."""
        self._enqueue_event(app, {"name": "cache_miss", "channel": channel})

    def subscription_count(self, app: Any, channel: str, count: int) -> None:
        """The number of subscriptions of ``channel`` changed."""
        if not wants(app, "subscription_count"):
            return
        self._enqueue_event(
            app, {"name": "subscription_count", "channel": channel, "subscription_count": count}
        )

    # -- internals --------------------------------------------------------------

    def _resume(self, key: tuple[str, ...]) -> bool:
        """Cancel a debounced leave for ``key``; True when there was one.

        Gone and back within the window: neither the leave nor the new join is
        sent, so the receiver sees one uninterrupted stay.
        """
        pending = self._pending.pop(key, None)
        if pending is None:
            return False
        if pending.handle is not None:
            pending.handle.cancel()
        return True

    def _debounce(self, key: tuple[str, ...], app: AppLike, event: dict[str, Any]) -> None:
        if self._closed:
            return
        old = self._pending.pop(key, None)
        if old is not None and old.handle is not None:
            old.handle.cancel()
        if self._closing or self.debounce_s <= 0:
            # shutting down: the channel is not coming back on this server
            self._enqueue_event(app, event)
            return
        pending = _Pending(app, event, None)
        call_later = self._call_later or asyncio.get_running_loop().call_later
        pending.handle = call_later(self.debounce_s, self._debounce_fire, key, pending)
        # Bounded by what the core can have: one per channel and per presence member.
        self._pending[key] = pending

    def _debounce_fire(self, key: tuple[str, ...], pending: _Pending) -> None:
        if self._pending.get(key) is not pending:
            return
        confirm = self.still_vacated
        if key[0] == "c" and confirm is not None:
            # stays pending (a return meanwhile still cancels it) until the cluster answers
            pending.handle = None
            pending.confirming = True
            task = asyncio.ensure_future(self._confirm(key, pending, confirm))
            self._confirming.add(task)
            task.add_done_callback(self._confirming.discard)
            return
        del self._pending[key]
        self._enqueue_event(pending.app, pending.event)

    async def _confirm(
        self, key: tuple[str, ...], pending: _Pending, confirm: Callable[[AppLike, str], Awaitable[bool]]
    ) -> None:
        try:
            vacated = await confirm(pending.app, pending.event["channel"])
        except Exception as exc:  # cannot ask: send it, as a single node would
            log.warning("webhooks: could not confirm channel_vacated of %s (%s); sending it",
                        pending.event["channel"], exc)
            vacated = True
        if self._pending.get(key) is pending:
            del self._pending[key]
            if vacated:
                self._enqueue_event(pending.app, pending.event)

    def _enqueue_event(self, app: AppLike, event: dict[str, Any]) -> None:
        if self._closed:
            return
        name = event["name"]
        channel = event["channel"]
        encoded: bytes | None = None
        for webhook in app.webhooks:
            if not matches(webhook, name, channel):
                continue
            if encoded is None:
                try:
                    encoded = orjson.dumps(event)
                except TypeError as exc:
                    # an event's data that is not JSON: lose this event, not the sender
                    self.failed += 1
                    log.error("webhooks: cannot encode a %s event of app %s: %s", name, app.id, exc)
                    return
            self._push(Item(app, webhook, encoded))
