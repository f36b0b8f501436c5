"""The server's half of the durable queue: :class:`DurableSender` puts webhooks into Redis.

It is a :class:`~soketi_impl.webhooks.WebhookSender` (the same observer, debounce
and batching) whose requests, once formed, become jobs of the Redis queue
(:mod:`.queue`) instead of being sent from memory. Jobs wait in a bounded local
outbox until Redis took them (one pipelined round trip per batch); while Redis is
unreachable the outbox keeps up to ``max_outbox`` jobs and ``max_queue_bytes``
bytes, then drops its oldest (counted in ``dropped``, logged). What is in the
outbox, or still in a debounce or batching window, is lost to a SIGKILL; what
Redis took is not. The workers (:mod:`.worker`) send the jobs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from ..config import Config
from .delivery import IDEMPOTENCY_HEADER, Throttled
from .model import AppLike, WebhookLike
from .queue import Job, QueueUnavailable, RedisQueue
from .sender import WebhookSender

__all__ = ["DurableSender"]

log = logging.getLogger("soketi_impl.webhooks")

_PUSH_BATCH = 100


class DurableSender(WebhookSender):
    """A :class:`WebhookSender` that hands its requests to the Redis queue.

    ``DurableSender(config, **sender_options)``: the Redis connection comes from
    ``config`` (``SOKETI_DB_REDIS_*``), the bound from ``queue_redis_max_jobs`` and
    ``webhooks_max_queue_bytes``. :meth:`start` raises :class:`QueueUnavailable`
    when Redis cannot be reached.
    """

    def __init__(self, config: Config, *, max_outbox: int = 10_000, **options: Any) -> None:
        options.setdefault("max_queue_bytes", config.webhooks_max_queue_bytes)
        super().__init__(**options)
        self.config = config
        self.redis: RedisQueue | None = None
        self.max_outbox = max_outbox
        self._outbox: deque[Job] = deque()
        self._outbox_bytes = 0
        self._outbox_wake = asyncio.Event()
        self._outbox_empty = asyncio.Event()
        self._outbox_empty.set()
        self._writer: asyncio.Task[None] | None = None
        self._pushing: list[Job] = []  # taken from the outbox, not confirmed by Redis yet
        self._redis_log = Throttled()
        self._full_log = Throttled()

    @property
    def outbox_depth(self) -> int:
        """Jobs formed but not taken by Redis yet."""
        return len(self._outbox) + len(self._pushing)

    async def start(self) -> None:
        """Connect to Redis (:class:`QueueUnavailable` if it cannot), then start as the sender does."""
        if self.redis is None:
            cfg = self.config
            client = RedisQueue.client_for(cfg)
            try:
                await asyncio.wait_for(client.ping(), 5.0)
            except Exception as exc:  # redis errors, OSError, timeout
                await client.aclose()
                raise QueueUnavailable(
                    f"cannot connect to Redis at {cfg.redis_host}:{cfg.redis_port} for the "
                    f"webhook queue (SOKETI_QUEUE_DRIVER=redis): {exc or type(exc).__name__}"
                ) from None
            self.redis = RedisQueue(
                client, RedisQueue.base_for(cfg),
                max_jobs=cfg.queue_redis_max_jobs, max_bytes=cfg.webhooks_max_queue_bytes,
            )
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        await super().start()

    async def close(self, grace_s: float) -> None:
        """Release debounced events, hand everything to Redis within ``grace_s``, disconnect."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, grace_s)
        await super().close(grace_s)
        if self._writer is not None:
            self._outbox_wake.set()
            try:
                await asyncio.wait_for(self._outbox_empty.wait(), max(0.1, deadline - loop.time()))
            except asyncio.TimeoutError:
                pass
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        left = sum(job.n_events for job in (*self._pushing, *self._outbox))
        if left:
            self.dropped += left
            log.warning("webhooks: %d event(s) not handed to Redis dropped at shutdown", left)
            self._outbox.clear()
            self._pushing = []
        if self.redis is not None:
            await self.redis.client.aclose()

    # -- the requests become jobs ------------------------------------------------------

    def _start_request(self, app: AppLike, webhook: WebhookLike, events: list[bytes]) -> None:
        request = self._request_for(app, webhook, events)
        job = Job(
            request.headers[IDEMPOTENCY_HEADER], request.url, request.headers, request.body,
            request.n_events, request.app_id,
        )
        size = len(request.body)
        while self._outbox and (
            len(self._outbox) >= self.max_outbox or self._outbox_bytes + size > self.max_queue_bytes
        ):
            old = self._outbox.popleft()
            self._outbox_bytes -= len(old.body)
            self.dropped += old.n_events
            self._full_log.warning(
                "webhooks: the outbox to Redis is full (%d jobs, %d bytes at most), dropped "
                "the oldest; %d dropped so far", self.max_outbox, self.max_queue_bytes, self.dropped,
            )
        self._outbox.append(job)
        self._outbox_bytes += size
        self._outbox_empty.clear()
        self._outbox_wake.set()

    async def _write_loop(self) -> None:
        assert self.redis is not None
        while True:
            while not self._outbox:
                self._outbox_empty.set()
                self._outbox_wake.clear()
                await self._outbox_wake.wait()
            # taken out while Redis has them: an overflow meanwhile drops only waiting jobs
            jobs = [self._outbox.popleft() for _ in range(min(_PUSH_BATCH, len(self._outbox)))]
            self._outbox_bytes -= sum(len(job.body) for job in jobs)
            self._pushing = jobs
            try:
                results = await self.redis.push([job.encode() for job in jobs])
            except Exception as exc:  # Redis away: keep the jobs (first in line), try again
                self._pushing = []
                self._outbox.extendleft(reversed(jobs))
                self._outbox_bytes += sum(len(job.body) for job in jobs)
                self._redis_log.warning(
                    "webhooks: cannot queue in Redis (%s); %d job(s) wait in memory",
                    exc or type(exc).__name__, len(self._outbox),
                )
                await asyncio.sleep(1.0)
                continue
            self._pushing = []
            for job, (status, older) in zip(jobs, results):
                dropped = older + (job.n_events if status < 0 else 0)
                if dropped:
                    self.dropped += dropped
                    self._full_log.warning(
                        "webhooks: the Redis queue is full (%d jobs, %d bytes at most), "
                        "dropped %d event(s) (%s); %d dropped so far",
                        self.redis.max_jobs, self.redis.max_bytes, dropped,
                        "the new job is larger than the bound" if status == -1
                        else "only jobs in flight were left" if status == -2
                        else "the oldest waiting", self.dropped,
                    )
