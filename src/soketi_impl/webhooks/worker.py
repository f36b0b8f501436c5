"""The worker's half of the durable queue: :class:`QueueWorker` sends the jobs in Redis.

``SOKETI_MODE=full`` runs one next to the server, ``worker`` runs only this
(:func:`soketi_impl.server.run`), ``server`` none. Each of the
``SOKETI_QUEUE_REDIS_CONCURRENCY`` consumers takes the oldest job into this
worker's ``processing#`` list (``BLMOVE``), POSTs it once and then:

- 2xx: acknowledges it (``sent``);
- otherwise: parks it in ``delayed`` for the next attempt, with exponential backoff
  from 1 s to ``SOKETI_WEBHOOKS_MAX_BACKOFF`` (``retries``), the last attempt
  ``SOKETI_WEBHOOKS_RETRY_FOR`` (5 minutes) after its first failure; if that one
  fails too it is given up (``failed``, one log line at most every 10 s).

A heartbeat every ``lease / 3`` renews this worker's lease, moves due retries back
to ``pending`` (also every 0.5 s) and gives the jobs of workers whose lease expired
back to ``pending``. A clean stop gives its own back at once; a SIGKILLed worker's
jobs come back after the lease (15 s). See :mod:`.queue` for the keys.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from ..config import Config
from .delivery import Throttled, post_once
from .queue import Job, QueueUnavailable, RedisQueue

__all__ = ["QueueWorker"]

log = logging.getLogger("soketi_impl.webhooks")

_PROMOTE_EVERY_S = 0.5
_TAKE_TIMEOUT_S = 1.0
_FIRST_RETRY_S = 1.0


class QueueWorker:
    """Sends the Redis queue's jobs (see the module).

    Counters: ``sent``, ``failed``, ``retries`` (events; requests for ``retries``)
    are kept on ``counters`` when given (the server's sender, so its metrics count
    both halves), else on the worker; ``queue_depth`` is the events in flight here
    and ``queue_jobs`` / ``queue_bytes`` what the whole queue held at the last
    heartbeat. ``listener`` as :class:`~soketi_impl.webhooks.delivery.Delivery`'s.
    """

    def __init__(self, config: Config, *, counters: Any = None, timeout_s: float = 10.0) -> None:
        self.config = config
        self.worker_id = RedisQueue.new_worker_id()
        self.concurrency = config.queue_redis_concurrency
        self.lease_ms = config.queue_redis_lease_ms
        self.retry_for_s = config.webhooks_retry_for_ms / 1000
        self.max_backoff_s = config.webhooks_max_backoff_ms / 1000
        self.timeout_s = timeout_s
        self.sent = self.failed = self.retries = self.dropped = 0
        self.queue_depth = 0
        self.queue_jobs = self.queue_bytes = 0
        self.listener: Callable[[str, str, str, int, str | None], None] | None = None
        self._counters: Any = counters if counters is not None else self
        self.redis: RedisQueue | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._redis_log = Throttled()
        self._failure_log = Throttled()

    @property
    def address(self) -> str:
        return f"{self.config.redis_host}:{self.config.redis_port}"

    async def start(self) -> None:
        """Connect, take back the jobs of dead workers, start the consumers.

        Raises :class:`~soketi_impl.webhooks.queue.QueueUnavailable` when Redis cannot be reached.
        """
        cfg = self.config
        client = RedisQueue.client_for(cfg, socket_timeout=_TAKE_TIMEOUT_S + 10)
        self.redis = RedisQueue(
            client, RedisQueue.base_for(cfg),
            max_jobs=cfg.queue_redis_max_jobs, max_bytes=cfg.webhooks_max_queue_bytes,
        )
        try:
            await asyncio.wait_for(self._beat(), 5.0)
        except Exception as exc:  # redis errors, OSError, timeout
            await client.aclose()
            self.redis = None
            raise QueueUnavailable(
                f"cannot connect to Redis at {self.address} for the webhook queue "
                f"(SOKETI_QUEUE_DRIVER=redis): {exc or type(exc).__name__}"
            ) from None
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            connector=aiohttp.TCPConnector(limit=self.concurrency),
        )
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._heartbeat_loop())]
        self._tasks += [loop.create_task(self._consume()) for _ in range(self.concurrency)]

    async def close(self, grace_s: float) -> None:
        """Take no new job; attempts under way get ``grace_s``; this worker's jobs go back to ``pending``."""
        self._stopping.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=max(0.1, grace_s))
            for task in late:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        if self.redis is not None:
            try:
                moved = await self.redis.reap(leaving=self.worker_id)
                if moved:
                    log.info("webhooks: %d job(s) in flight given back to the Redis queue", moved)
            except Exception as exc:
                log.warning(
                    "webhooks: could not give this worker's jobs back to Redis (%s); another "
                    "worker takes them after the lease", exc or type(exc).__name__,
                )
            await self.redis.client.aclose()
            self.redis = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the loops ---------------------------------------------------------------------

    async def _beat(self) -> None:
        assert self.redis is not None
        await self.redis.beat(self.worker_id, self.lease_ms)
        moved = await self.redis.reap()
        if moved:
            log.warning("webhooks: %d job(s) of a stopped worker back in the queue", moved)
        await self.redis.promote()
        self.queue_jobs, self.queue_bytes = await self.redis.totals()

    async def _heartbeat_loop(self) -> None:
        assert self.redis is not None
        loop = asyncio.get_running_loop()
        every = self.lease_ms / 3000
        next_beat = loop.time() + every
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), _PROMOTE_EVERY_S)
                return
            except asyncio.TimeoutError:
                pass
            try:
                if loop.time() >= next_beat:
                    next_beat = loop.time() + every
                    await self._beat()
                else:
                    await self.redis.promote()
            except Exception as exc:
                self._redis_log.warning(
                    "webhooks: the Redis queue at %s is unreachable (%s); retrying",
                    self.address, exc or type(exc).__name__,
                )

    async def _consume(self) -> None:
        assert self.redis is not None
        while not self._stopping.is_set():
            try:
                raw = await self.redis.take(self.worker_id, _TAKE_TIMEOUT_S)
            except Exception as exc:
                self._redis_log.warning(
                    "webhooks: cannot take jobs from Redis at %s (%s); retrying",
                    self.address, exc or type(exc).__name__,
                )
                await self._pause(1.0)
                continue
            if raw is not None:
                await self._handle(raw)

    async def _pause(self, delay_s: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), delay_s)
        except asyncio.TimeoutError:
            pass

    # -- one job -------------------------------------------------------------------------

    async def _handle(self, raw: bytes) -> None:
        assert self.redis is not None
        try:
            job = Job.decode(raw)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("webhooks: a malformed job in the Redis queue, dropped: %s", exc)
            await self._settle(lambda: self._ack(raw))
            return
        self.queue_depth += job.n_events
        try:
            error = await self._post(job)
            counters = self._counters
            if error is None:
                if await self._settle(lambda: self._ack(raw)):
                    counters.sent += job.n_events
                    self._tell("sent", job, None)
                return
            now = time.time()
            if not job.first_failed_ms:
                job.first_failed_ms = int(now * 1000)
                job.delay_s = min(_FIRST_RETRY_S, self.max_backoff_s)
            else:
                job.delay_s = min(job.delay_s * 2, self.max_backoff_s)
            elapsed = now - job.first_failed_ms / 1000
            if elapsed >= self.retry_for_s:
                if await self._settle(lambda: self._ack(raw)):
                    counters.failed += job.n_events
                    self._tell("failed", job, error)
                    self._failure_log.warning(
                        "webhooks: giving up on %s (app %s, %d event(s)) after %.0f s: %s",
                        job.url, job.app_id, job.n_events, elapsed, error,
                    )
                return
            # the last attempt falls on retry_for itself: an outage shorter than that loses nothing
            due = now + min(job.delay_s, self.retry_for_s - elapsed)
            if await self._settle(lambda: self._retry(raw, job, due)):
                counters.retries += 1
                self._tell("retried", job, error)
        finally:
            self.queue_depth -= job.n_events

    async def _ack(self, raw: bytes) -> bool:
        assert self.redis is not None
        return await self.redis.ack(self.worker_id, raw)

    async def _retry(self, raw: bytes, job: Job, due_s: float) -> bool:
        assert self.redis is not None
        return await self.redis.retry(self.worker_id, raw, job, due_s)

    async def _settle(self, step: Callable[[], Any]) -> bool:
        """Run one Redis step until it went through (or the worker stops: then the
        job stays in this worker's list and goes back to ``pending`` at close)."""
        while True:
            try:
                return bool(await step())
            except Exception as exc:
                self._redis_log.warning(
                    "webhooks: cannot record a job's outcome in Redis at %s (%s); retrying",
                    self.address, exc or type(exc).__name__,
                )
            if self._stopping.is_set():
                return False
            await self._pause(1.0)

    async def _post(self, job: Job) -> str | None:
        """One attempt; None on a 2xx answer, else what went wrong."""
        assert self._session is not None
        return await post_once(self._session, job.url, job.body, job.headers, self.timeout_s)

    def _tell(self, outcome: str, job: Job, error: str | None) -> None:
        listener = getattr(self._counters, "listener", None)
        if listener is not None:
            listener(outcome, job.app_id, job.url, job.n_events, error)
