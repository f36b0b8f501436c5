"""Calling the core's observers safely: an observer that raises never breaks delivery.

:class:`Observers` is the core's list of :class:`~soketi_impl.pusher.events.Observer`
objects; :meth:`Observers.tell` calls one event on each of them, catches anything
an observer raises and logs it (at most one line per observer and event every
few seconds, so a broken observer cannot flood the log).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .events import Observer

__all__ = ["Observers"]

log = logging.getLogger("soketi_impl.pusher")

_LOG_EVERY = 10.0  # seconds between two log lines about the same failing observer event


class Observers(list[Observer]):
    """A list of observers with a :meth:`tell` that never raises."""

    def __init__(self) -> None:
        super().__init__()
        self._last_log: dict[tuple[int, str], float] = {}
        self.errors = 0

    def tell(self, event: str, *args: Any) -> None:
        """Call ``observer.<event>(*args)`` on every observer that has that method."""
        for obs in self:
            method = getattr(obs, event, None)
            if method is None:
                continue
            try:
                method(*args)
            except Exception as exc:
                self._failed(obs, event, exc)

    def _failed(self, obs: object, event: str, exc: Exception) -> None:
        self.errors += 1
        key = (id(obs), event)
        now = time.monotonic()
        if now - self._last_log.get(key, -_LOG_EVERY) < _LOG_EVERY:
            return
        if len(self._last_log) > 1024:  # bounded: observers x events, normally a handful
            self._last_log.clear()
        self._last_log[key] = now
        log.error(
            "observer %s.%s raised %s: %s (delivery continues; further errors of this kind "
            "are counted, logged at most every %.0f s)",
            type(obs).__name__, event, type(exc).__name__, exc, _LOG_EVERY,
        )
