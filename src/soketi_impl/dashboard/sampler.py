"""Chart samples: each app's counters and the webhook queue, read once a second.

The core keeps plain counters per app (``Stats``, the same the Prometheus
metrics read, see :mod:`soketi_impl.metrics`). :class:`Sampler` reads them every
``interval`` seconds into a sample, keeps the last ``keep`` samples (five minutes
at one a second) for a page that opens, and hands each new sample to the feed.
The page turns the counters into rates; a sample costs one ``snapshot()`` per app.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["COUNTERS", "Sampler"]

log = logging.getLogger("soketi_impl.dashboard")

#: The counters a sample carries for each app (``connected`` is a gauge, the rest grow).
COUNTERS = ("connected", "ws_messages_received", "ws_messages_sent", "deliveries", "http_calls")


def read_counters(stats: object) -> dict[str, int]:
    """The :data:`COUNTERS` of one app's ``Stats`` (either twin)."""
    snapshot = getattr(stats, "snapshot", None)
    values: Mapping[str, Any] = snapshot() if callable(snapshot) else {}
    return {name: int(values.get(name, getattr(stats, name, 0))) for name in COUNTERS}


class Sampler:
    """Samples ``apps()`` (app id -> ``Stats``) and ``webhook_depth()`` every ``interval`` s.

    ``on_sample`` receives each new sample: ``{"t": ms, "apps": {id: counters},
    "webhook_queue": depth or None}``. Example::

        sampler = Sampler(lambda: {a.config.id: a.stats for a in core.apps.values()},
                          lambda: None, feed.sample)
        sampler.start()
        ...
        await sampler.stop()
    """

    def __init__(
        self,
        apps: Callable[[], Mapping[str, object]],
        webhook_depth: Callable[[], int | None],
        on_sample: Callable[[dict[str, Any]], None],
        *,
        interval: float = 1.0,
        keep: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._apps = apps
        self._webhook_depth = webhook_depth
        self._on_sample = on_sample
        self.interval = interval
        self.history: deque[dict[str, Any]] = deque(maxlen=keep)
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def take(self) -> dict[str, Any]:
        """Read the counters now, keep the sample and hand it on; returns it."""
        sample = {
            "t": int(self._clock() * 1000),
            "apps": {app_id: read_counters(stats) for app_id, stats in self._apps().items()},
            "webhook_queue": self._webhook_depth(),
        }
        self.history.append(sample)
        self._on_sample(sample)
        return sample

    def start(self) -> None:
        """Start sampling in the running loop (once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop sampling."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                self.take()
            except Exception:  # a bad read must not end the charts for good
                log.exception("dashboard: reading the counters failed")
            await asyncio.sleep(self.interval)
