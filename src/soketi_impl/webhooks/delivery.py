"""The webhook queue and its delivery: bounded in events and bytes, retried, flushed at close.

:class:`Delivery` is the half of :class:`~soketi_impl.webhooks.WebhookSender` that
moves bytes: events arrive already JSON-encoded (:meth:`Delivery._push`), a
dispatcher task turns them into POST requests (one per event, or one per app and
URL with batching), and each request is retried with exponential backoff until
it is accepted or ``retry_for_s`` has passed.

Bounds: every undelivered event (queued, in flight, waiting for a retry) counts
against ``max_queue`` events and its encoded size against ``max_queue_bytes``. On
overflow the oldest work is dropped and counted in ``dropped``, with at most one
log line every 10 seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..signing import webhook_signature
from .model import AppLike, WebhookLike

__all__ = ["IDEMPOTENCY_HEADER", "Delivery"]

log = logging.getLogger("soketi_impl.webhooks")

#: Each request's unique id, the same on its retries (and on redeliveries from the Redis
#: queue): receivers de-duplicate with it (at-least-once delivery).
IDEMPOTENCY_HEADER = "X-Pusher-Idempotency-Key"

# Bounds one request body: a batch of client events can carry 100 KB each.
_MAX_BATCH_EVENTS = 100
_LOG_EVERY_S = 10.0


async def post_once(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: Any, timeout_s: float
) -> str | None:
    """One POST of a webhook request (the session bounds its time): None on a 2xx answer,
    else what went wrong, in a few words for the log."""
    try:
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
            if 200 <= response.status < 300:
                return None
            return f"HTTP {response.status}"
    except asyncio.TimeoutError:
        return f"no answer within {timeout_s} s"
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


class Throttled:
    """One log line per interval at most, telling how many were folded into it.

    A dead receiver or a flood of events would otherwise write one line per event.
    """

    def __init__(self, interval_s: float = _LOG_EVERY_S) -> None:
        self._interval = interval_s
        self._last = -interval_s
        self._suppressed = 0

    def warning(self, msg: str, *args: object) -> None:
        """Log ``msg`` unless a line went out less than the interval ago."""
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


@dataclass(eq=False, slots=True)
class Item:
    """One encoded event for one webhook, waiting in the queue."""

    app: AppLike
    webhook: WebhookLike
    event: bytes


@dataclass(eq=False)
class Request:
    """One POST (one or more events) and its retry state."""

    url: str
    body: bytes
    headers: dict[str, str]
    n_events: int
    app_id: str
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Delivery:
    """The queue, the dispatcher and the HTTP client of the webhook sender.

    Counters, all ints: ``sent`` (events delivered), ``failed`` (events given up
    after ``retry_for_s``, or not encodable), ``retries`` (repeated attempts),
    ``dropped`` (events dropped on overflow or left at close).
    """

    def __init__(
        self,
        *,
        batching: bool,
        batching_ms: int,
        max_queue: int,
        max_queue_bytes: int,
        retry_for_s: float,
        first_retry_s: float,
        max_backoff_s: float,
        timeout_s: float,
        concurrency: int,
        clock: Callable[[], float],
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if max_queue_bytes < 1:
            raise ValueError("max_queue_bytes must be at least 1")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.batching = batching
        self.batching_s = max(0.0, batching_ms / 1000.0)
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
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
        #: ``listener(outcome, app_id, url, n_events, error)`` is told each request that
        #: was ``"sent"``, ``"failed"`` (given up) or ``"retried"`` (the dashboard's feed);
        #: it must be quick and must not raise
        self.listener: Callable[[str, str, str, int, str | None], None] | None = None

        self._queue: deque[Item] = deque()
        self._queued_bytes = 0
        # insertion order = age, so the first key is the oldest request
        self._live: dict[Request, None] = {}
        self._live_events = 0
        self._live_bytes = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        # set when close begins: requests waiting for a retry try again at once
        self._hurry = asyncio.Event()
        self._slots: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._closed = False
        self._overflow_log = Throttled()
        self._failure_log = Throttled()

    # -- counters -------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Events not delivered yet: queued, in flight or waiting for a retry."""
        return len(self._queue) + self._live_events

    @property
    def queue_bytes(self) -> int:
        """Encoded bytes of the events not delivered yet."""
        return self._queued_bytes + self._live_bytes

    async def wait_idle(self) -> None:
        """Wait until every queued event is delivered, given up or dropped.

        Debounced events still in their window are not queued yet and are not
        waited for. Only returns once the sender started (or at close).
        """
        await self._idle.wait()

    # -- the queue --------------------------------------------------------------

    def _push(self, item: Item) -> None:
        size = len(item.event)
        while self.queue_depth and (
            self.queue_depth >= self.max_queue or self.queue_bytes + size > self.max_queue_bytes
        ):
            self._drop_oldest()
        if size > self.max_queue_bytes:
            self.dropped += 1
            self._overflow_log.warning(
                "webhooks: one event of %d bytes is over the queue's %d bytes, dropped; "
                "%d dropped so far", size, self.max_queue_bytes, self.dropped,
            )
            return
        self._queue.append(item)
        self._queued_bytes += size
        self._idle.clear()
        self._wake.set()

    def _drop_oldest(self) -> None:
        if self._queue:
            item = self._queue.popleft()
            self._queued_bytes -= len(item.event)
            n = 1
        else:
            request = next(iter(self._live))
            self._forget(request)
            n = request.n_events
            if request.task is not None:
                request.task.cancel()
        self.dropped += n
        self._overflow_log.warning(
            "webhooks: queue full (%d events, %d bytes at most), dropped the oldest; "
            "%d dropped so far", self.max_queue, self.max_queue_bytes, self.dropped,
        )

    # -- lifecycle ----------------------------------------------------------------

    async def _open(self) -> None:
        self._slots = asyncio.Semaphore(self.concurrency)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            connector=aiohttp.TCPConnector(limit=self.concurrency),
        )
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch_loop())
        if self._queue:
            self._wake.set()

    async def _flush(self, grace_s: float) -> None:
        """Give pending work ``grace_s`` seconds, then drop what is left (one log line)."""
        self._hurry.set()
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
        self._live_events = self._live_bytes = 0
        self._queue.clear()
        self._queued_bytes = 0
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

    # -- dispatch -------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            if self.batching and not self._hurry.is_set() and self.batching_s > 0:
                # let the window fill; events keep arriving meanwhile
                await asyncio.sleep(self.batching_s)
            self._drain()

    def _drain(self) -> None:
        items = list(self._queue)
        self._queue.clear()
        self._queued_bytes = 0
        if not self.batching:
            for item in items:
                self._start_request(item.app, item.webhook, [item.event])
            self._check_idle()
            return
        groups: dict[tuple[object, ...], list[Item]] = {}
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

    def _request_for(self, app: AppLike, webhook: WebhookLike, events: list[bytes]) -> Request:
        """The signed POST for ``events``, with its idempotency key (the same on every retry)."""
        # The events are encoded once, when queued: the body is their concatenation.
        body = b'{"time_ms":%d,"events":[%b]}' % (int(self._clock() * 1000), b",".join(events))
        headers = dict(webhook.headers)
        # ours last, so a configured header cannot break the signature
        headers["Content-Type"] = "application/json"
        headers["X-Pusher-Key"] = app.key
        headers["X-Pusher-Signature"] = webhook_signature(app.secret, body)
        headers[IDEMPOTENCY_HEADER] = uuid.uuid4().hex
        return Request(webhook.url, body, headers, len(events), app.id)

    def _start_request(self, app: AppLike, webhook: WebhookLike, events: list[bytes]) -> None:
        request = self._request_for(app, webhook, events)
        self._live[request] = None
        self._live_events += request.n_events
        self._live_bytes += len(request.body)
        request.task = asyncio.get_running_loop().create_task(self._deliver(request))

    async def _deliver(self, request: Request) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        delay = self.first_retry_s
        try:
            while True:
                error = await self._post(request)
                if error is None:
                    if self._finish(request):
                        self.sent += request.n_events
                        self._tell("sent", request, None)
                    return
                elapsed = loop.time() - started
                # the last attempt falls on retry_for_s: an outage shorter than it loses nothing
                if elapsed >= self.retry_for_s and not self._hurry.is_set():
                    if self._finish(request):
                        self.failed += request.n_events
                        self._tell("failed", request, error)
                        self._failure_log.warning(
                            "webhooks: giving up on %s (app %s, %d event(s)) after %.0f s: %s",
                            request.url, request.app_id, request.n_events, elapsed, error,
                        )
                    return
                await self._backoff(min(delay, max(0.0, self.retry_for_s - elapsed)))
                self.retries += 1
                self._tell("retried", request, error)
                delay = min(delay * 2, self.max_backoff_s)
        finally:
            # cancelled by overflow or close: those did the accounting already
            self._finish(request)

    async def _backoff(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or until close begins (then retry within the grace)."""
        if self._hurry.is_set():
            await asyncio.sleep(min(delay, 0.05))  # do not spin on a receiver that refuses
            return
        try:
            await asyncio.wait_for(self._hurry.wait(), delay)
        except asyncio.TimeoutError:
            pass

    def _tell(self, outcome: str, request: Request, error: str | None) -> None:
        if self.listener is not None:
            self.listener(outcome, request.app_id, request.url, request.n_events, error)

    def _forget(self, request: Request) -> None:
        del self._live[request]
        self._live_events -= request.n_events
        self._live_bytes -= len(request.body)

    def _finish(self, request: Request) -> bool:
        """Take ``request`` out of the live set; False when someone else already did."""
        if request not in self._live:
            return False
        self._forget(request)
        self._check_idle()
        return True

    async def _post(self, request: Request) -> str | None:
        """One attempt; None on a 2xx answer, else what went wrong."""
        assert self._session is not None and self._slots is not None
        async with self._slots:
            return await post_once(self._session, request.url, request.body, request.headers, self.timeout_s)

    def _stats(self) -> dict[str, Any]:
        return {
            "queue_depth": self.queue_depth,
            "queue_bytes": self.queue_bytes,
            "sent": self.sent,
            "failed": self.failed,
            "retries": self.retries,
            "dropped": self.dropped,
        }
