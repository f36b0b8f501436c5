"""Outgoing webhooks: Pusher's HTTP callbacks, configured the soketi way.

For each webhook of an app whose ``event_types`` include an event and whose
``filter`` matches the channel, the sender ``POST``\\ s::

    {"time_ms": 1700000000000, "events": [{"name": "channel_occupied", "channel": "ch"}]}

with ``Content-Type: application/json``, ``X-Pusher-Key: {app.key}``,
``X-Pusher-Signature: hex(HMAC-SHA256(app.secret, raw body))`` and the webhook's
own headers. The official SDKs check it with ``validate_webhook``.

How it behaves (PROTOCOL.md section 9):

- The entry points (:meth:`WebhookSender.channel_occupied` ...) are plain sync
  calls that only enqueue; an aiohttp client in background tasks does the I/O,
  so the event loop serving WebSockets never waits on a webhook receiver.
- A non-2xx answer, a timeout or a network error is retried with exponential
  backoff (``first_retry_s``, doubling, capped at ``max_backoff_s``) until
  ``retry_for_s`` has passed since the first attempt; then the request is given
  up (``failed``) with a log line.
- ``channel_vacated`` and ``member_removed`` wait ``debounce_s``. If the channel
  is occupied again (the same member added again) meanwhile, both the pending
  event and the new ``channel_occupied`` (``member_added``) are dropped: a page
  reload sends nothing.
- With batching on, events for the same (app, url) that arrive within
  ``batching_ms`` go out in one request (at most 100 events per request).
- Every undelivered event (queued, in flight or waiting for a retry) counts
  against ``max_queue``. On overflow the oldest work is dropped (``dropped``),
  with at most one log line every 10 seconds.
- :meth:`WebhookSender.close` gives pending work ``grace_s`` seconds. Debounced
  events still waiting are released at once when close starts (the server is
  going away, so those channels and members are not coming back on it) and are
  sent like the rest if the grace allows. What is left at the deadline is
  dropped (``dropped``) with one log line.

Example::

    sender = WebhookSender(batching=cfg.webhooks_batching,
                           batching_ms=cfg.webhooks_batching_duration_ms)
    await sender.start()
    if sender.wants(app, "client_event"):
        sender.client_event(app, "private-chat", "client-typing", "{}", socket_id)
    ...
    await sender.close(cfg.shutdown_grace_period_ms / 1000)
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson

from .config import WEBHOOK_EVENT_TYPES

__all__ = ["EVENT_TYPES", "AppLike", "WebhookLike", "WebhookSender", "sign"]

log = logging.getLogger("soketi_impl.webhooks")

#: The event types a webhook may subscribe to (defined once, with the config).
EVENT_TYPES: frozenset[str] = WEBHOOK_EVENT_TYPES

# Bounds one request body: a batch of client events can carry 100 KB each.
_MAX_BATCH_EVENTS = 100
_LOG_EVERY_S = 10.0


class WebhookLike(Protocol):
    """What the sender reads from one webhook of an app (``config.WebhookConfig``)."""

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
    """What the sender reads from an app (``config.AppConfig``)."""

    @property
    def id(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def secret(self) -> str: ...
    @property
    def webhooks(self) -> Sequence[WebhookLike]: ...


def _matches(webhook: WebhookLike, event_type: str, channel: str) -> bool:
    if event_type not in webhook.event_types:
        return False
    starts = webhook.filter_starts_with
    if starts and not channel.startswith(starts):
        return False
    ends = webhook.filter_ends_with
    return not ends or channel.endswith(ends)


def sign(secret: str, body: bytes) -> str:
    """``X-Pusher-Signature`` of a webhook body: hex HMAC-SHA256 keyed with the app secret."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _Throttled:
    """One log line per interval at most, telling how many were folded into it.

    A dead receiver or a flood of events would otherwise write one line per event.
    """

    def __init__(self, interval_s: float = _LOG_EVERY_S) -> None:
        self._interval = interval_s
        self._last = -interval_s
        self._suppressed = 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self._interval:
            self._suppressed += 1
            return
        if self._suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, self._suppressed)
        self._last = now
        self._suppressed = 0
        log.warning(msg, *args)


@dataclass(eq=False)
class _Item:
    """One event for one webhook, waiting in the queue."""

    app: AppLike
    webhook: WebhookLike
    event: dict[str, Any]


@dataclass(eq=False)
class _Request:
    """One POST (one or more events) and its retry state."""

    url: str
    body: bytes
    headers: dict[str, str]
    n_events: int
    app_id: str
    task: asyncio.Task[None] | None = field(default=None, repr=False)


@dataclass(eq=False)
class _Pending:
    """A debounced ``channel_vacated`` / ``member_removed`` waiting for its window."""

    app: AppLike
    event: dict[str, Any]
    handle: asyncio.TimerHandle | None


class WebhookSender:
    """Queues webhook events and delivers them in the background.

    Counters, all ints: ``sent`` (events delivered), ``failed`` (events given up
    after ``retry_for_s``), ``retries`` (repeated attempts), ``dropped`` (events
    dropped on overflow or left at close); :attr:`queue_depth` is the number of
    undelivered events. :attr:`stats` gives them all as a dict.
    """

    def __init__(
        self,
        *,
        batching: bool = False,
        batching_ms: int = 50,
        max_queue: int = 10000,
        debounce_s: float = 3.0,
        retry_for_s: float = 300.0,
        first_retry_s: float = 1.0,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        max_backoff_s: float = 60.0,
        concurrency: int = 16,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.batching = batching
        self.batching_s = max(0.0, batching_ms / 1000.0)
        self.max_queue = max_queue
        self.debounce_s = debounce_s
        self.retry_for_s = retry_for_s
        self.first_retry_s = first_retry_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self._clock = clock

        self.sent = 0
        self.failed = 0
        self.retries = 0
        self.dropped = 0

        self._queue: deque[_Item] = deque()
        # insertion order = age, so the first key is the oldest request
        self._live: dict[_Request, None] = {}
        self._live_events = 0
        self._pending: dict[tuple[str, ...], _Pending] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._slots: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._closed_event = asyncio.Event()
        self._overflow_log = _Throttled()
        self._failure_log = _Throttled()

    # -- counters -------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Events not delivered yet: queued, in flight or waiting for a retry."""
        return len(self._queue) + self._live_events

    @property
    def stats(self) -> dict[str, int]:
        """``{"queue_depth", "sent", "failed", "retries", "dropped"}``."""
        return {
            "queue_depth": self.queue_depth,
            "sent": self.sent,
            "failed": self.failed,
            "retries": self.retries,
            "dropped": self.dropped,
        }

    @property
    def debouncing(self) -> int:
        """``channel_vacated`` / ``member_removed`` events waiting for their window."""
        return len(self._pending)

    # -- lifecycle ------------------------------------------------------------

    async def wait_idle(self) -> None:
        """Wait until every queued event is delivered, given up or dropped.

        Debounced events still in their window are not queued yet and are not
        waited for. Only returns once :meth:`start` has been called (or at close).
        """
        await self._idle.wait()

    async def start(self) -> None:
        """Open the HTTP client and start delivering (events queued before are kept)."""
        if self._session is not None:
            return
        if self._closed:
            raise RuntimeError("WebhookSender is closed")
        self._slots = asyncio.Semaphore(self.concurrency)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            connector=aiohttp.TCPConnector(limit=self.concurrency),
        )
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch_loop())
        if self._queue:
            self._wake.set()

    async def close(self, grace_s: float) -> None:
        """Deliver what can be delivered within ``grace_s`` seconds, then stop.

        Debounced events are released at once and sent with the rest. Whatever
        is still undelivered at the deadline is dropped and counted in
        ``dropped``. Returns within about ``grace_s`` plus one second.
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
        if self._dispatcher is not None and self.queue_depth:
            self._wake.set()
            try:
                await asyncio.wait_for(self._idle.wait(), max(0.0, grace_s))
            except asyncio.TimeoutError:
                pass
        self._closed = True

        left = self.queue_depth
        tasks: list[asyncio.Task[None]] = [r.task for r in self._live if r.task is not None]
        self._live.clear()
        self._live_events = 0
        self._queue.clear()
        if self._dispatcher is not None:
            tasks.append(self._dispatcher)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        if left:
            self.dropped += left
            log.warning("webhooks: %d undelivered event(s) dropped at shutdown", left)
        if self._session is not None:
            await self._session.close()
        self._idle.set()
        self._closed_event.set()

    # -- event entry points -----------------------------------------------------

    def wants(self, app: AppLike, event_type: str) -> bool:
        """True when at least one of the app's webhooks takes ``event_type``.

        Lets the server skip building an event no one wants.
        """
        for webhook in app.webhooks:
            if event_type in webhook.event_types:
                return True
        return False

    def channel_occupied(self, app: AppLike, channel: str) -> None:
        """The first connection subscribed to ``channel``."""
        if self._resume(("c", app.id, channel)):
            return
        self._enqueue_event(app, {"name": "channel_occupied", "channel": channel})

    def channel_vacated(self, app: AppLike, channel: str) -> None:
        """The last connection left ``channel``; sent after ``debounce_s``."""
        if not (self.wants(app, "channel_vacated") or self.wants(app, "channel_occupied")):
            return
        self._debounce(("c", app.id, channel), app, {"name": "channel_vacated", "channel": channel})

    def member_added(self, app: AppLike, channel: str, user_id: str) -> None:
        """A user's first connection joined presence ``channel``."""
        if self._resume(("m", app.id, channel, user_id)):
            return
        self._enqueue_event(app, {"name": "member_added", "channel": channel, "user_id": user_id})

    def member_removed(self, app: AppLike, channel: str, user_id: str) -> None:
        """A user's last connection left presence ``channel``; sent after ``debounce_s``."""
        if not (self.wants(app, "member_removed") or self.wants(app, "member_added")):
            return
        self._debounce(
            ("m", app.id, channel, user_id),
            app,
            {"name": "member_removed", "channel": channel, "user_id": user_id},
        )

    def client_event(
        self,
        app: AppLike,
        channel: str,
        event: str,
        data: object,
        socket_id: str,
        user_id: str | None = None,
    ) -> None:
        """A client event was sent on ``channel``; ``user_id`` on presence channels."""
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

    def cache_miss(self, app: AppLike, channel: str) -> None:
        """A cache channel was subscribed to while it had no cached event."""
        self._enqueue_event(app, {"name": "cache_miss", "channel": channel})

    def subscription_count(self, app: AppLike, channel: str, count: int) -> None:
        """The number of subscriptions of ``channel`` changed."""
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
        pending.handle = asyncio.get_running_loop().call_later(
            self.debounce_s, self._debounce_fire, key, pending
        )
        self._pending[key] = pending

    def _debounce_fire(self, key: tuple[str, ...], pending: _Pending) -> None:
        if self._pending.get(key) is pending:
            del self._pending[key]
            self._enqueue_event(pending.app, pending.event)

    def _enqueue_event(self, app: AppLike, event: dict[str, Any]) -> None:
        if self._closed:
            return
        name = event["name"]
        channel = event["channel"]
        for webhook in app.webhooks:
            if _matches(webhook, name, channel):
                self._push(_Item(app, webhook, event))

    def _push(self, item: _Item) -> None:
        while self.queue_depth >= self.max_queue:
            self._drop_oldest()
        self._queue.append(item)
        self._idle.clear()
        self._wake.set()

    def _drop_oldest(self) -> None:
        if self._queue:
            self._queue.popleft()
            n = 1
        else:
            request = next(iter(self._live))
            del self._live[request]
            n = request.n_events
            self._live_events -= n
            if request.task is not None:
                request.task.cancel()
        self.dropped += n
        self._overflow_log.warning(
            "webhooks: queue full (%d events), dropped the oldest; %d dropped so far",
            self.max_queue,
            self.dropped,
        )

    async def _dispatch_loop(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            if self.batching and not self._closing and self.batching_s > 0:
                # let the window fill; events keep arriving meanwhile
                await asyncio.sleep(self.batching_s)
            self._drain()

    def _drain(self) -> None:
        items = list(self._queue)
        self._queue.clear()
        if not self.batching:
            for item in items:
                self._start_request(item.app, item.webhook, [item.event])
            self._check_idle()
            return
        groups: dict[tuple[object, ...], list[_Item]] = {}
        for item in items:
            webhook = item.webhook
            key = (
                item.app.id,
                item.app.key,
                item.app.secret,
                webhook.url,
                tuple(sorted(webhook.headers.items())),
            )
            groups.setdefault(key, []).append(item)
        for group in groups.values():
            first = group[0]
            for i in range(0, len(group), _MAX_BATCH_EVENTS):
                chunk = group[i : i + _MAX_BATCH_EVENTS]
                self._start_request(first.app, first.webhook, [it.event for it in chunk])
        self._check_idle()

    def _check_idle(self) -> None:
        if not self._queue and not self._live:
            self._idle.set()

    def _start_request(
        self, app: AppLike, webhook: WebhookLike, events: list[dict[str, Any]]
    ) -> None:
        try:
            body = orjson.dumps({"time_ms": int(self._clock() * 1000), "events": events})
        except TypeError as exc:
            # an event's data that is not JSON: lose these events, not the dispatcher
            self.failed += len(events)
            log.error("webhooks: cannot encode event(s) for %s: %s", webhook.url, exc)
            return
        headers = dict(webhook.headers)
        # ours last, so a configured header cannot break the signature
        headers["Content-Type"] = "application/json"
        headers["X-Pusher-Key"] = app.key
        headers["X-Pusher-Signature"] = sign(app.secret, body)
        request = _Request(webhook.url, body, headers, len(events), app.id)
        self._live[request] = None
        self._live_events += request.n_events
        request.task = asyncio.get_running_loop().create_task(self._deliver(request))

    async def _deliver(self, request: _Request) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        delay = self.first_retry_s
        try:
            while True:
                error = await self._post(request)
                if error is None:
                    if self._finish(request):
                        self.sent += request.n_events
                    return
                elapsed = loop.time() - started
                if elapsed + delay > self.retry_for_s:
                    if self._finish(request):
                        self.failed += request.n_events
                        self._failure_log.warning(
                            "webhooks: giving up on %s (app %s, %d event(s)) after %.0f s: %s",
                            request.url,
                            request.app_id,
                            request.n_events,
                            elapsed,
                            error,
                        )
                    return
                await asyncio.sleep(delay)
                self.retries += 1
                delay = min(delay * 2, self.max_backoff_s)
        finally:
            # cancelled by overflow or close: those did the accounting already
            self._finish(request)

    def _finish(self, request: _Request) -> bool:
        """Take ``request`` out of the live set; False when someone else already did."""
        if request not in self._live:
            return False
        del self._live[request]
        self._live_events -= request.n_events
        self._check_idle()
        return True

    async def _post(self, request: _Request) -> str | None:
        """One attempt; None on a 2xx answer, else what went wrong."""
        assert self._session is not None and self._slots is not None
        async with self._slots:
            try:
                async with self._session.post(
                    request.url,
                    data=request.body,
                    headers=request.headers,
                    allow_redirects=False,
                ) as response:
                    if 200 <= response.status < 300:
                        return None
                    return f"HTTP {response.status}"
            except asyncio.TimeoutError:
                return f"no answer within {self.timeout_s} s"
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                return f"{type(exc).__name__}: {exc}"
