"""``ManagedAppManager``: apps read from a database, behind a bounded cache.

It asks an :class:`AppSource` (PostgreSQL, MySQL: :mod:`soketi_impl.apps.sql`) for
one row by ``key`` or ``id`` and turns it into an :class:`~soketi_impl.config.AppConfig`
with soketi's column names (:func:`~soketi_impl.config.app_from_row`). Around that:

- a found app is fresh for ``SOKETI_APP_MANAGER_CACHE_TTL`` seconds when
  ``SOKETI_APP_MANAGER_CACHE_ENABLED`` (a TTL <= 0: until the process ends), and
  asked again at every lookup without the cache, as soketi does;
- a miss is remembered for :data:`MISS_TTL` at most (never longer than the TTL), so an
  app inserted while the server runs is found soon, and a client trying keys does
  not turn every attempt into a query;
- concurrent lookups of one key share one query; a query has a timeout; the pending
  queries and both caches are bounded in entries;
- when the database fails, the app it gave last is served (an app already known keeps
  working), an unknown key is refused, and the log says why, one line per
  :data:`LOG_EVERY` seconds at most.

The server never awaits a lookup the cache can answer: :meth:`by_key` returns the
:class:`AppConfig` (or None) itself then, and an awaitable only when it must ask.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from ..config import AppConfig, Config, app_from_row
from ..errors import ConfigError, SoketiError
from .base import AppManager

__all__ = ["LOOKUP_TIMEOUT", "AppSource", "ManagedAppManager"]

log = logging.getLogger("soketi_impl.apps")

#: seconds one query may take before the lookup gives up (and the app is refused,
#: or served from what the database gave before)
LOOKUP_TIMEOUT = 5.0
#: seconds a key or id the database does not have is remembered (capped by the TTL)
MISS_TTL = 1.0
#: seconds an app served from the cache because its query failed is served before
#: the database is asked again
RETRY_AFTER_FAILURE = 2.0
#: entries in each cache (found apps, misses): the oldest goes first
MAX_ENTRIES = 10_000
#: distinct keys and ids being looked up at once; beyond it a lookup is refused
MAX_PENDING = 1_024
#: longest key or id asked for (soketi's columns are varchar(255))
MAX_LENGTH = 255
#: seconds between two log lines about the same trouble
LOG_EVERY = 10.0

_Lookup = tuple[str, str]  # ("key" or "id", value)


class AppSource(Protocol):
    """A database table of apps, one row per app."""

    #: where the apps come from, for the log: "PostgreSQL 127.0.0.1:5432, database main, table apps"
    where: str

    async def open(self) -> None:
        """Connect and check that the table can be read; raise when not."""

    async def fetch(self, column: str, value: str) -> Mapping[str, Any] | None:
        """The row whose ``column`` (``id`` or ``key``) is ``value``, or None."""

    async def close(self) -> None:
        """Close every connection."""


class _Throttled:
    """Log lines about one trouble, at most one per ``every`` seconds, counting the rest."""

    __slots__ = ("every", "last", "skipped", "clock")

    def __init__(self, every: float, clock: Callable[[], float]) -> None:
        self.every = every
        self.clock = clock
        self.last = -math.inf
        self.skipped = 0

    def warn(self, message: str) -> None:
        now = self.clock()
        if now - self.last < self.every:
            self.skipped += 1
            return
        more = f" ({self.skipped} more since the last line)" if self.skipped else ""
        log.warning("%s%s", message, more)
        self.last = now
        self.skipped = 0


class ManagedAppManager(AppManager):
    """Apps from ``source``, cached as ``config`` says (see the module docstring)."""

    dynamic = True

    def __init__(
        self,
        config: Config,
        source: AppSource,
        *,
        timeout: float = LOOKUP_TIMEOUT,
        max_entries: int = MAX_ENTRIES,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.source = source
        self.timeout = timeout
        self.max_entries = max_entries
        self.max_pending = max_pending
        self.clock = clock
        ttl = float(config.app_manager_cache_ttl)
        #: seconds a found app is served without asking (0: ask every time)
        self.ttl = 0.0 if not config.app_manager_cache_enabled else math.inf if ttl <= 0 else ttl
        self.miss_ttl = min(MISS_TTL, self.ttl) if self.ttl > 0 else MISS_TTL
        # (column, value) -> (app, clock time until which it is served without asking).
        # Kept after it goes stale: it is what is served while the database is down.
        self._found: OrderedDict[_Lookup, tuple[AppConfig, float]] = OrderedDict()
        self._missing: OrderedDict[_Lookup, float] = OrderedDict()
        self._pending: dict[_Lookup, asyncio.Future[AppConfig | None]] = {}
        self._trouble = _Throttled(LOG_EVERY, clock)
        self._bad_rows = _Throttled(LOG_EVERY, clock)
        self._down = False

    # ------------------------------------------------------------------ lookups

    def by_key(self, key: str) -> AppConfig | None | Awaitable[AppConfig | None]:
        return self._get(("key", key))

    def by_id(self, app_id: str) -> AppConfig | None | Awaitable[AppConfig | None]:
        return self._get(("id", app_id))

    def _get(self, what: _Lookup) -> AppConfig | None | Awaitable[AppConfig | None]:
        if not what[1] or len(what[1]) > MAX_LENGTH:
            return None
        now = self.clock()
        hit = self._found.get(what)
        if hit is not None and hit[1] > now:
            return hit[0]
        until = self._missing.get(what)
        if until is not None:
            if until > now:
                return None
            del self._missing[what]
        pending = self._pending.get(what)
        if pending is None:
            if len(self._pending) >= self.max_pending:
                self._trouble.warn(
                    f"{len(self._pending)} app lookups already wait for {self.source.where}: "
                    "refusing the apps it has not given yet until some finish"
                )
                return hit[0] if hit is not None else None
            pending = asyncio.ensure_future(self._fetch(what))
            self._pending[what] = pending
            pending.add_done_callback(functools.partial(self._settled, what))
        # Shielded: a waiter that goes away (a client that hung up) must not cancel
        # the query the others wait for.
        return asyncio.shield(pending)

    def _settled(self, what: _Lookup, future: asyncio.Future[AppConfig | None]) -> None:
        if self._pending.get(what) is future:
            del self._pending[what]

    async def _fetch(self, what: _Lookup) -> AppConfig | None:
        column, value = what
        try:
            row = await asyncio.wait_for(self.source.fetch(column, value), self.timeout)
        except Exception as exc:  # the database is down, slow, or refused the query
            return self._failed(what, exc)
        if self._down:
            self._down = False
            log.info("app lookups work again: %s answers", self.source.where)
        now = self.clock()
        app: AppConfig | None = None
        if row is not None:
            try:
                app = app_from_row(row, self.config, f"apps row {column}={value}")
            except ConfigError as exc:
                self._bad_rows.warn(f"app refused, its row in {self.source.where} is not usable: {exc}")
        if app is None or getattr(app, column) != value:
            # (a case-insensitive collation finds "ABC" for "abc": keys are case-sensitive)
            self._found.pop(what, None)
            _put(self._missing, what, now + self.miss_ttl, self.max_entries)
            return None
        until = now + self.ttl
        for found in (("id", app.id), ("key", app.key)):
            _put(self._found, found, (app, until), self.max_entries)
            self._missing.pop(found, None)
        return app

    def _failed(self, what: _Lookup, exc: BaseException) -> AppConfig | None:
        self._down = True
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, asyncio.TimeoutError):
            reason = f"no answer within {self.timeout:g} s"
        self._trouble.warn(
            f"app lookups fail, {self.source.where} is unreachable ({reason}): apps already "
            "known are served as last read, unknown keys and ids are refused"
        )
        now = self.clock()
        stale = self._found.get(what)
        if stale is not None:
            self._found[what] = (stale[0], now + RETRY_AFTER_FAILURE)
            return stale[0]
        _put(self._missing, what, now + self.miss_ttl, self.max_entries)
        return None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect and read the table once; :class:`SoketiError` saying why when it cannot."""
        try:
            await asyncio.wait_for(self.source.open(), self.timeout)
        except asyncio.TimeoutError:
            await self.source.close()
            raise SoketiError(
                f"cannot read apps from {self.source.where}: no answer within {self.timeout:g} s"
            ) from None
        except SoketiError:
            await self.source.close()
            raise
        except Exception as exc:
            await self.source.close()
            raise SoketiError(
                f"cannot read apps from {self.source.where}: {type(exc).__name__}: {exc}"
            ) from exc

    async def close(self) -> None:
        """Close the connections; lookups under way then fail (their clients are refused)
        and are given a moment to say so before what is left is cancelled."""
        await self.source.close()
        pending = list(self._pending.values())
        if pending:
            _, left = await asyncio.wait(pending, timeout=1.0)
            for future in left:
                future.cancel()

    def describe(self) -> str:
        if self.ttl == 0:
            cache = "no cache"
        elif math.isinf(self.ttl):
            cache = "cached until restart"
        else:
            cache = f"cached for {self.ttl:g} s"
        return f"from {self.source.where}, {cache}"


def _put(cache: OrderedDict[_Lookup, Any], what: _Lookup, value: Any, limit: int) -> None:
    cache[what] = value
    cache.move_to_end(what)
    while len(cache) > limit:
        cache.popitem(last=False)
