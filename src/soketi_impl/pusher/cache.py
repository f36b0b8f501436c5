"""Cache channels: the last event of each ``cache-*`` channel, kept for late subscribers.

An entry lives ``channel_cache_ttl`` seconds of the core's clock. A lookup drops an
expired entry; :func:`sweep` (run with the ping sweep) frees every expired one, so
memory held by channels nobody reads again is given back.
"""

from __future__ import annotations

from .state import AppState

__all__ = ["lookup", "store", "sweep"]


def store(app: AppState, channel: str, payload: bytes, ttl: float) -> None:
    """Keep ``payload`` as the channel's cached event for ``ttl`` seconds."""
    app.cache[channel] = (payload, app.clock() + ttl)


def lookup(app: AppState, channel: str) -> bytes | None:
    """The channel's cached event, or None (an expired entry is dropped)."""
    cached = app.cache.get(channel)
    if cached is None:
        return None
    if cached[1] > app.clock():
        return cached[0]
    del app.cache[channel]
    return None


def sweep(app: AppState) -> int:
    """Free every expired entry; returns how many."""
    now = app.clock()
    expired = [name for name, (_, until) in app.cache.items() if until <= now]
    for name in expired:
        del app.cache[name]
    return len(expired)
