"""The dashboard's live feed: an :class:`~soketi_impl.pusher.events.Observer` that only appends.

The core tells :class:`Feed` what happens, synchronously, on the delivery path. The
feed turns each event into a small dict (an *entry*), appends it to a ring buffer of
the most recent entries (what a page that opens now shows first) and to the queue of
every open page (:class:`Subscriber`), and returns. It never awaits and never
writes to a socket: each page has its own writer task that drains its queue.

Bounds, so that a slow, stalled or closed page never slows delivery to clients and
never grows memory:

- the ring buffer keeps ``history`` entries (default 300);
- each page's queue keeps ``queue_size`` items (default 2,000): when it is full the
  OLDEST item is dropped and counted in that page's ``dropped``, which the page
  shows (a page that cannot keep up sees the newest traffic, with a count of what
  it missed);
- at most ``max_pages`` pages are open at once (:meth:`Feed.subscribe` raises
  :class:`TooManyPages` past it);
- payloads (client event data, presence ``user_info``, test events) are cut to
  ``MAX_PAYLOAD`` characters when the entry is made, so an entry is small whatever
  the client sent.

The feed shows *this node's* traffic: with the Redis adapter each node has its own
feed (the channel lists of the dashboard are cluster-wide; see :mod:`.web`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from ..pusher.events import Observer

if TYPE_CHECKING:
    from ..config import AppConfig

__all__ = ["MAX_PAYLOAD", "Entry", "Feed", "Subscriber", "TooManyPages", "preview"]

#: Characters of a payload kept in an entry; the rest is cut and its length noted.
MAX_PAYLOAD = 2048

#: One feed entry: JSON-able, with ``id``, ``ts`` (ms since the epoch), ``app``, ``kind``.
Entry = dict[str, Any]


class TooManyPages(Exception):
    """:meth:`Feed.subscribe` was called with ``max_pages`` pages already open."""


def preview(data: Any, limit: int = MAX_PAYLOAD) -> tuple[str, int]:
    """``data`` as text for the page (a string as is, anything else as JSON), cut to ``limit``.

    Returns the text and the full length (equal to ``len(text)`` when nothing was cut).

    >>> preview({"a": 1})
    ('{"a":1}', 7)
    >>> preview("x" * 10, limit=4)
    ('xxxx', 10)
    """
    if isinstance(data, str):
        text = data
    else:
        try:
            text = orjson.dumps(data, default=repr).decode()
        except (TypeError, orjson.JSONEncodeError):
            text = repr(data)
    return text[:limit], len(text)


class Subscriber:
    """One open page: a bounded queue of ``(kind, item)`` pairs and a wake-up event.

    ``kind`` is ``"log"`` (a feed entry) or ``"sample"`` (a chart sample).
    """

    __slots__ = ("_queue", "_wake", "closed", "dropped")

    def __init__(self, maxlen: int) -> None:
        self._queue: deque[tuple[str, Any]] = deque(maxlen=maxlen)
        self._wake = asyncio.Event()
        #: items dropped because the page did not keep up (oldest first)
        self.dropped = 0
        self.closed = False

    def push(self, kind: str, item: Any) -> None:
        """Queue one item; drops the oldest when full. Never blocks."""
        queue = self._queue
        if len(queue) == queue.maxlen:
            self.dropped += 1  # the deque drops the oldest itself
        queue.append((kind, item))
        self._wake.set()

    def close(self) -> None:
        """Stop: the page's writer returns at its next wake-up."""
        self.closed = True
        self._wake.set()

    async def take(self, timeout: float) -> list[tuple[str, Any]]:
        """Everything queued, waiting up to ``timeout`` seconds for something (``[]`` then)."""
        if not self._queue and not self.closed:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                return []
        items = list(self._queue)
        self._queue.clear()
        return items


class Feed(Observer):
    """Turns what the core tells into entries for the ring buffer and the open pages.

    ``clock`` gives seconds since the epoch (the page shows wall-clock times).
    ``socket_info(app_id, socket_id)`` may return a short description of a new
    connection (the client library and version from its URL); the dashboard passes
    one that reads the core's socket table.
    """

    def __init__(
        self,
        *,
        history: int = 300,
        queue_size: int = 2000,
        max_pages: int = 16,
        clock: Callable[[], float] = time.time,
        socket_info: Callable[[str, str], str | None] | None = None,
    ) -> None:
        self.recent: deque[Entry] = deque(maxlen=history)
        self.queue_size = queue_size
        self.max_pages = max_pages
        self.pages: set[Subscriber] = set()
        self._clock = clock
        self._socket_info = socket_info
        self._seq = 0
        #: entries made since start (all kinds)
        self.total = 0

    # -- pages ------------------------------------------------------------------

    def subscribe(self) -> Subscriber:
        """A new page's queue; raises :class:`TooManyPages` when ``max_pages`` are open."""
        if len(self.pages) >= self.max_pages:
            raise TooManyPages(f"{self.max_pages} dashboard pages are open already")
        sub = Subscriber(self.queue_size)
        self.pages.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a page (its writer ended)."""
        sub.close()
        self.pages.discard(sub)

    def close(self) -> None:
        """Close every page (the server is stopping)."""
        for sub in list(self.pages):
            self.unsubscribe(sub)

    def sample(self, sample: dict[str, Any]) -> None:
        """Hand one chart sample to every open page."""
        for sub in self.pages:
            sub.push("sample", sample)

    @property
    def dropped(self) -> int:
        """Items dropped by the pages open now, together."""
        return sum(sub.dropped for sub in self.pages)

    # -- entries ------------------------------------------------------------------

    def add(self, app_id: str, kind: str, **fields: Any) -> Entry:
        """Make one entry, keep it in the ring buffer and queue it to every page."""
        self._seq += 1
        self.total += 1
        entry: Entry = {"id": self._seq, "ts": int(self._clock() * 1000), "app": app_id, "kind": kind}
        entry.update(fields)
        self.recent.append(entry)
        for sub in self.pages:
            sub.push("log", entry)
        return entry

    def add_payload(self, app_id: str, kind: str, data: Any, **fields: Any) -> Entry:
        """:meth:`add` with ``data`` shown as a payload (cut to :data:`MAX_PAYLOAD`)."""
        text, size = preview(data)
        if size > len(text):
            fields["truncated"] = size
        return self.add(app_id, kind, data=text, size=size, **fields)

    # -- what the core tells ------------------------------------------------------

    def connection_opened(self, app: AppConfig, socket_id: str) -> None:
        """A connection was admitted."""
        info = self._socket_info(app.id, socket_id) if self._socket_info is not None else None
        self.add(app.id, "connection", socket_id=socket_id, client=info)

    def connection_closed(self, app: AppConfig, socket_id: str, code: int | None, reason: str | None) -> None:
        """A connection is gone; ``code`` and ``reason`` as the close had them."""
        self.add(app.id, "disconnection", socket_id=socket_id, code=code, reason=reason or None)

    def subscribed(self, app: AppConfig, socket_id: str, channel: str) -> None:
        """A connection joined a channel."""
        self.add(app.id, "subscribed", socket_id=socket_id, channel=channel)

    def unsubscribed(self, app: AppConfig, socket_id: str, channel: str) -> None:
        """A connection left a channel."""
        self.add(app.id, "unsubscribed", socket_id=socket_id, channel=channel)

    def channel_occupied(self, app: AppConfig, channel: str) -> None:
        """A channel got its first subscriber."""
        self.add(app.id, "occupied", channel=channel)

    def channel_vacated(self, app: AppConfig, channel: str) -> None:
        """A channel lost its last subscriber."""
        self.add(app.id, "vacated", channel=channel)

    def member_added(self, app: AppConfig, channel: str, user_id: str, user_info: Any) -> None:
        """A user joined a presence channel (``user_info`` is the payload)."""
        self.add_payload(app.id, "member_added", user_info, channel=channel, user_id=user_id)

    def member_removed(self, app: AppConfig, channel: str, user_id: str) -> None:
        """A user left a presence channel."""
        self.add(app.id, "member_removed", channel=channel, user_id=user_id)

    def client_event(
        self, app: AppConfig, channel: str, event: str, data: Any, socket_id: str, user_id: str | None
    ) -> None:
        """A client event was forwarded (its data is the payload)."""
        self.add_payload(
            app.id, "client_event", data, channel=channel, event=event, socket_id=socket_id,
            user_id=user_id,
        )

    def cache_miss(self, app: AppConfig, channel: str) -> None:
        """A subscriber joined an empty cache channel."""
        self.add(app.id, "cache_miss", channel=channel)

    def signed_in(self, app: AppConfig, socket_id: str, user_id: str) -> None:
        """A connection signed in."""
        self.add(app.id, "signed_in", socket_id=socket_id, user_id=user_id)

    def published(self, app: AppConfig, channel: str, event: str, size: int) -> None:
        """An API message (HTTP API or in-process trigger); the core tells its size only."""
        self.add(app.id, "api_message", channel=channel, event=event, size=size)

    def error_sent(
        self, app: AppConfig, socket_id: str, code: int | None, message: str, channel: str | None
    ) -> None:
        """A ``pusher:error`` or ``pusher:subscription_error`` went to a connection that stays."""
        self.add(app.id, "error", socket_id=socket_id, code=code, message=message[:500], channel=channel)

    # -- what the webhook sender tells ----------------------------------------------

    def webhook(self, outcome: str, app_id: str, url: str, events: int, error: str | None) -> None:
        """A webhook request was ``sent``, ``failed`` (given up) or ``retried``."""
        self.add(app_id, f"webhook_{outcome}", url=url, events=events, error=error)


def client_of(path: str | None) -> str | None:
    """``"js 8.6.0"`` from a connection path's ``client`` and ``version`` (pusher-js sends both)."""
    if not path:
        return None
    query = parse_qs(path.partition("?")[2])
    client = query.get("client", [""])[0][:40]
    version = query.get("version", [""])[0][:40]
    text = f"{client} {version}".strip()
    return text or None
