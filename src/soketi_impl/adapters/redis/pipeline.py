"""The Redis command pipeline: one ordered queue, sent pipelined on one connection.

Every command of a node goes through :class:`CommandPipeline`, so a node's events
reach the other nodes in the order it sent them, and a presence script runs after
every command queued before it. When Redis is away, queued commands fail (their
futures get the error), new ones fail at once for a second, and one warning line
at most every 10 s says cross-node delivery is failing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from ..throttle import Throttle

__all__ = ["CommandPipeline", "Throttle", "quietly"]

log = logging.getLogger("soketi_impl.redis")

MAX_QUEUE = 100_000  # commands waiting for Redis; beyond, new ones fail at once
BATCH = 1024  # commands per pipeline round trip

_Item = tuple[tuple[Any, ...], "asyncio.Future[Any] | None"]


class CommandPipeline:
    """An ordered, bounded queue of Redis commands and the task that sends them."""

    def __init__(self, address: str, on_failure: Callable[[], None]) -> None:
        self.address = address
        self.client: Any = None  # a redis.asyncio.Redis, set by the adapter's start()
        self._on_failure = on_failure
        self._queue: collections.deque[_Item] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._retry_at = 0.0  # while monotonic() < this, commands fail at once
        self.down = False
        self._warn = Throttle()

    def open(self, client: Any) -> None:
        """Use ``client`` from now on (called once the event loop runs)."""
        self.client = client
        self._wake = asyncio.Event()

    async def command_now(self, *args: Any) -> Any:
        """One command straight on the client (before the ordered queue runs)."""
        return await self.client.execute_command(*args)

    def command(self, *args: Any) -> asyncio.Future[Any]:
        """Queue one Redis command behind every earlier one; the future gets its reply."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self.enqueue(args, fut):
            fut.set_exception(ConnectionError(f"Redis at {self.address} is unreachable"))
        return fut

    def enqueue(self, args: tuple[Any, ...], fut: asyncio.Future[Any] | None) -> bool:
        """Queue a command whose reply nobody waits for (``fut`` None); False when refused."""
        if self._wake is None:
            return False
        if len(self._queue) >= MAX_QUEUE or (self._retry_at and time.monotonic() < self._retry_at):
            return False
        self._queue.append((args, fut))
        self._wake.set()
        return True

    async def run(self) -> None:
        """Send queued commands in order, pipelined; fail them (and pause 1 s) when Redis is away."""
        assert self._wake is not None and self.client is not None
        queue = self._queue
        while True:
            await self._wake.wait()
            self._wake.clear()
            while queue:
                batch = [queue.popleft() for _ in range(min(BATCH, len(queue)))]
                pipe = self.client.pipeline(transaction=False)
                for args, _ in batch:
                    pipe.execute_command(*args)
                try:
                    results = await pipe.execute(raise_on_error=False)
                except asyncio.CancelledError:
                    _fail(batch, ConnectionError("the adapter is closing"))
                    raise
                except (RedisError, OSError) as exc:
                    self.failing(exc)
                    _fail(batch, exc)
                    _fail([queue.popleft() for _ in range(len(queue))], exc)
                    self._retry_at = time.monotonic() + 1.0
                    continue
                self._retry_at = 0.0
                self.recovered()
                for (_, fut), result in zip(batch, results):
                    if fut is not None and not fut.done():
                        if isinstance(result, Exception):
                            fut.set_exception(result)
                        else:
                            fut.set_result(result)

    def failing(self, exc: BaseException) -> None:
        """Something failed talking to Redis: note it, warn (rate-limited)."""
        self.down = True
        self._on_failure()
        if self._warn.ready():
            log.warning(
                "cross-node delivery is failing: Redis at %s: %s (events reach this node only; retrying)",
                self.address, exc,
            )

    def recovered(self) -> None:
        """A round trip worked: say so once after a failure."""
        if self.down:
            self.down = False
            self._warn.reset()
            log.warning("Redis at %s is reachable again: cross-node delivery restored", self.address)


def _fail(batch: list[_Item], exc: BaseException) -> None:
    for _, fut in batch:
        if fut is not None and not fut.done():
            fut.set_exception(exc)


async def quietly(aw: Any) -> None:
    """Await a close of a connection that may be broken already; its failure changes nothing."""
    with contextlib.suppress(RedisError, OSError, RuntimeError):
        await aw
