"""``Throttle``: at most one log line per interval, for warnings that repeat during an outage."""

from __future__ import annotations

import time

__all__ = ["WARN_EVERY", "Throttle"]

WARN_EVERY = 10.0  # seconds between two lines of the same warning


class Throttle:
    """Allows one log line per ``every`` seconds; counts what it suppressed."""

    __slots__ = ("every", "last", "suppressed")

    def __init__(self, every: float = WARN_EVERY) -> None:
        self.every = every
        self.last = -every
        self.suppressed = 0

    def ready(self) -> bool:
        """True when a line may be logged now (and it counts as logged)."""
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            return True
        self.suppressed += 1
        return False

    def reset(self) -> None:
        """The next line may be logged at once."""
        self.last = -self.every
