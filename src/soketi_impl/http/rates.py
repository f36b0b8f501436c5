"""The HTTP API's per-app rate limits: backend events and read requests per second.

- ``max_backend_events_per_second`` counts one event per channel it is delivered
  to (soketi's rule), so a trigger on 3 channels costs 3 and a batch of 4 costs 4.
  A request that would go over the budget is refused whole with 429 and costs nothing.
- ``max_read_requests_per_second`` counts each signed ``GET``.

The window is the current second of the API's clock. A negative limit is no limit.
"""

from __future__ import annotations

from collections.abc import Callable

from ..pusher.state import RateWindow as _Window  # the one per-second window (client events too)
from .errors import ApiError

__all__ = ["RateLimits"]


class RateLimits:
    """One window per app and kind; :meth:`take` raises a 429 :class:`ApiError` over the limit.

    Bounded by the number of configured apps (callers pass known app ids only).
    """

    __slots__ = ("_clock", "_windows")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}

    def take(self, app_id: str, what: str, n: int, limit: int) -> None:
        """Spend ``n`` of app ``app_id``'s ``what`` budget (``limit`` per second)."""
        if limit < 0:
            return
        window = self._windows.get((app_id, what))
        if window is None:
            window = self._windows[(app_id, what)] = _Window()
        if not window.take(n, limit, self._clock()):
            raise ApiError(
                429,
                f"Rate limit reached: at most {limit} {what} per second for this app.",
                [("Retry-After", "1")],
            )
