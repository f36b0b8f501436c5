"""The outbox: this node's core-NATS publishes, in order, through one bounded queue.

:meth:`~soketi_impl.adapters.base.Adapter.publish` is synchronous and nats-py's
``publish`` is a coroutine, so every publish of a node (events, requests, replies,
heartbeats) goes through :class:`Outbox`: a queue of at most ``MAX_QUEUE`` messages
(and ``MAX_QUEUE_BYTES``) and one writer task, which keeps a node's messages in the
order it sent them.
Beyond the bound, and when nats-py's own reconnect buffer (``pending_size``) is
full, a message is dropped and one warning line at most every 10 s says so.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING

from nats.errors import Error as NatsError

from ..throttle import Throttle

if TYPE_CHECKING:
    from .adapter import NatsAdapter

__all__ = ["MAX_QUEUE", "Outbox"]

log = logging.getLogger("soketi_impl.nats")

MAX_QUEUE = 100_000  # messages waiting for the writer; beyond, new ones are dropped
MAX_QUEUE_BYTES = 64 * 1024 * 1024  # and their bytes


class Outbox:
    """An ordered, bounded queue of publishes and the task that sends them."""

    def __init__(self, adapter: NatsAdapter) -> None:
        self.adapter = adapter
        self._queue: collections.deque[tuple[str, bytes, str]] = collections.deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._bytes = 0
        self._warn = Throttle()
        #: messages dropped so far (queue full, or NATS unreachable)
        self.dropped = 0

    def put(self, subject: str, payload: bytes, reply: str = "") -> None:
        """Queue one message (dropped, with a rate-limited warning, when the queue is full)."""
        if len(self._queue) >= MAX_QUEUE or self._bytes + len(payload) > MAX_QUEUE_BYTES:
            self._drop(f"{len(self._queue)} messages ({self._bytes} bytes) already wait for NATS")
            return
        self._bytes += len(payload)
        self._queue.append((subject, payload, reply))
        self._idle.clear()
        self._wake.set()

    def _drop(self, why: str) -> None:
        self.dropped += 1
        if self._warn.ready():
            log.warning(
                "cross-node delivery is failing (%s); messages are delivered on this node only "
                "(%d dropped so far; logged at most every %.0f s)", why, self.dropped, self._warn.every,
            )

    async def run(self) -> None:
        """Send what is queued, in order, until cancelled."""
        queue = self._queue
        while True:
            await self._wake.wait()
            self._wake.clear()
            nc = self.adapter.nc
            while queue:
                subject, payload, reply = queue.popleft()
                self._bytes -= len(payload)
                if nc is None:
                    continue
                try:
                    await nc.publish(subject, payload, reply=reply)
                except asyncio.CancelledError:
                    raise
                except (NatsError, OSError) as exc:
                    self._drop(f"{type(exc).__name__}: {exc}".rstrip(": "))
            self._idle.set()

    async def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until the queue is empty and NATS has what was sent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await asyncio.wait_for(self._idle.wait(), timeout)
        nc = self.adapter.nc
        if nc is not None and nc.is_connected:
            await nc.flush(timeout=max(1, round(deadline - loop.time())))
