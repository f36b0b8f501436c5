"""The core's state: :class:`Socket` (one connection) and :class:`AppState` (one app on this node).

Plain data with small helpers; the rules that change it live in the other modules
of this package. Also the socket-id pattern and :func:`new_socket_id`.
"""

from __future__ import annotations

import itertools
import random
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from ..config import AppConfig
from ..twins._conntable import ConnectionTable
from ..twins._fanout import ChannelTable, Sink, Stats

if TYPE_CHECKING:
    from ..connection import Connection

__all__ = ["AppState", "RateWindow", "Socket", "is_socket_id", "new_socket_id", "protocol_version"]

#: A Pusher socket id: ``digits.digits``.
SOCKET_ID = re.compile(r"\d+\.\d+")
_counter = itertools.count(1)
_getrandbits = random.getrandbits


def is_socket_id(text: object) -> bool:
    """Whether ``text`` is a string shaped like a Pusher socket id (``123.456``).

    The same test as ``SOCKET_ID.fullmatch``, without the regex (once per connection):
    ``str.isdecimal`` is true for exactly the characters ``\\d`` matches, and not for "".
    """
    if not isinstance(text, str):
        return False
    head, dot, tail = text.partition(".")
    return bool(dot) and head.isdecimal() and tail.isdecimal()


def protocol_version(query: str) -> str:
    """The ``protocol`` query parameter (first non-blank value; "7" when absent), as ``parse_qs`` reads it.

    A query without escapes (``%``, ``+``), what the client libraries send, is read
    with one split; any other goes through :func:`urllib.parse.parse_qs`.
    """
    if "%" in query or "+" in query:
        return parse_qs(query).get("protocol", ["7"])[0]
    for part in query.split("&"):
        key, eq, value = part.partition("=")
        if key == "protocol" and eq and value:
            return value
    return "7"


def new_socket_id() -> str:
    """A Pusher socket id, ``digits.digits``, unique in this process.

    The first part is uniform in 1..999,999,999 as ``random.randint`` would draw it,
    from ``getrandbits`` directly (one call instead of three Python frames).
    """
    n = _getrandbits(30)
    while n >= 999_999_999:
        n = _getrandbits(30)
    return f"{n + 1}.{next(_counter)}"


class RateWindow:
    """A per-second fixed window: ``take(n, limit, now)`` succeeds while the second's total stays <= limit."""

    __slots__ = ("second", "used")

    def __init__(self) -> None:
        self.second = 0
        self.used = 0

    def take(self, n: int, limit: int, now: float) -> bool:
        """Count ``n`` more in the second ``now`` falls in; False (nothing counted) past ``limit``."""
        second = int(now)
        if second != self.second:
            self.second = second
            self.used = 0
        if self.used + n > limit:
            return False
        self.used += n
        return True


class Socket:
    """The Pusher state of one connection (kept in ``Connection.state``).

    Channel membership is ``None`` (no channel), one ``str`` (one channel: most
    connections), or a dict used as an ordered set: O(1) per subscribe and
    unsubscribe, and no container at all for the common one-channel case.
    """

    __slots__ = (
        "id", "conn", "app", "sink", "_channels", "presence", "user_id", "watchlist",
        "last_seen", "pinged_at", "rate", "auth_deadline", "closing",
    )

    def __init__(self, sid: str, conn: Connection, app: AppState | None, sink: Sink, now: float) -> None:
        self.id = sid
        self.conn = conn
        self.app = app
        self.sink = sink
        self._channels: str | dict[str, None] | None = None
        #: presence channel -> the user id this connection joined it as
        self.presence: dict[str, str] | None = None
        self.user_id: str | None = None
        self.watchlist: list[str] | None = None
        self.last_seen = now
        self.pinged_at = 0.0
        #: the client-event rate window, made at the first client event
        self.rate: RateWindow | None = None
        #: clock time by which the connection must sign in (0: no deadline)
        self.auth_deadline = 0.0
        self.closing = False

    def send(self, payload: bytes) -> None:
        """Queue one server message to this connection."""
        self.sink.push(payload)

    def touch(self, now: float | None = None) -> None:
        """Record activity from the client (any frame, a WebSocket ping included).

        Hosts call ``conn.state.touch()`` for frames the core does not see.
        """
        if now is None:
            app = self.app
            now = app.clock() if app is not None else self.last_seen
        self.last_seen = now
        self.pinged_at = 0.0

    # -- channel membership --

    def in_channel(self, channel: str) -> bool:
        """Whether this connection is subscribed to ``channel``."""
        chans = self._channels
        if chans is None:
            return False
        if type(chans) is str:
            return chans == channel
        return channel in chans

    def add_channel(self, channel: str) -> bool:
        """Record a subscription; False when it was there already."""
        chans = self._channels
        if chans is None:
            self._channels = channel
            return True
        if type(chans) is str:
            if chans == channel:
                return False
            self._channels = {chans: None, channel: None}
            return True
        assert isinstance(chans, dict)
        if channel in chans:
            return False
        chans[channel] = None
        return True

    def discard_channel(self, channel: str) -> bool:
        """Forget a subscription; False when there was none."""
        chans = self._channels
        if chans is None:
            return False
        if type(chans) is str:
            if chans != channel:
                return False
            self._channels = None
            return True
        assert isinstance(chans, dict)
        if channel not in chans:
            return False
        del chans[channel]
        if not chans:
            self._channels = None
        return True

    def channel_count(self) -> int:
        """How many channels this connection is subscribed to."""
        chans = self._channels
        if chans is None:
            return 0
        return 1 if type(chans) is str else len(chans)

    def channels(self) -> list[str]:
        """The subscribed channels, in subscription order (a copy)."""
        chans = self._channels
        if chans is None:
            return []
        return [chans] if type(chans) is str else list(chans)

    def __repr__(self) -> str:
        return f"<Socket {self.id}>"


class AppState:
    """Everything one app has on this node: sockets, channels, presence, users, cache."""

    __slots__ = (
        "config", "stats", "table", "sockets", "presence", "users", "watchers", "cache", "clock", "elsewhere",
    )

    def __init__(self, config: AppConfig, clock: Callable[[], float] | None = None) -> None:
        self.config = config
        self.stats = Stats()
        self.table = ChannelTable(self.stats)
        self.sockets = ConnectionTable()
        #: presence channel -> user id -> [connections of that user in the channel, user_info]
        self.presence: dict[str, dict[str, list[Any]]] = {}
        #: signed-in user id -> its connections
        self.users: dict[str, set[Socket]] = {}
        #: user id -> the connections whose watchlist names it
        self.watchers: dict[str, set[Socket]] = {}
        #: cache channel -> (last event payload, clock time it expires)
        self.cache: dict[str, tuple[bytes, float]] = {}
        #: the core's clock (``time.monotonic`` unless a test injects one)
        self.clock: Callable[[], float] = clock if clock is not None else time.monotonic
        #: the app's connections on the other nodes (workers), as last heard: maxConnections
        #: is checked against ``len(sockets) + elsewhere`` (see :mod:`.counts`)
        self.elsewhere = 0
