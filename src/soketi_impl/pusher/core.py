"""``PusherServer``: the Pusher Channels protocol as Router handlers, with no transport.

A host (the native front door, ASGI, aiohttp, or any framework through the seed API) creates a
:class:`~soketi_impl.Connection` with the request ``path`` and feeds a
:class:`~soketi_impl.Router`; :class:`PusherServer` installs its handlers on that
router::

    server = PusherServer(load_config())
    conn = Connection(socket_id, ws, path="/app/app-key?protocol=7")
    await server.router.handle_new_connection(conn)
    await server.router.handle_message(conn, text)
    await server.router.handle_connection_closed(conn, 1000, "")

This module holds admission (connection codes 4001/4003/4004/4007/4200), message
dispatch, closing, the ping sweep (4201, the user-authentication deadline 4009,
expired cache entries) and shutdown; the rest is in the sibling modules. Time comes
from ``clock`` (``time.monotonic`` unless a test injects one), so protocol tests
run with no sockets and no sleeping.

Every outgoing message goes through the connection's :class:`Sink`, so the order
of direct replies and broadcasts is the order in which they were made, and
messages that reach one connection within one loop iteration leave in one write.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..adapters.base import Adapter, LocalAdapter
from ..config import Config
from ..connection import Connection
from ..errors import ProtocolError, SoketiError
from ..router import Router
from ..twins._fanout import Outbox, Sink, Stats
from ..twins._protocol import parse_client_message
from . import cache, messages
from .api import InProcessApi
from .client_events import client_event
from .counts import DEFAULT_WINDOW_S, Counts
from .events import Observer
from .lookup import Admitting, AppLookup
from .observing import Observers
from .presence import Presence
from .state import AppState, Socket, is_socket_id, new_socket_id, protocol_version
from .subscriptions import Subscriptions
from .users import Users

if TYPE_CHECKING:
    from ..apps import AppManager

__all__ = ["PusherServer"]

log = logging.getLogger("soketi_impl.pusher")

_PROTOCOLS = frozenset({"5", "6", "7"})
_O = TypeVar("_O", bound=Observer)


class PusherServer(AppLookup, InProcessApi):
    """Pusher protocol handlers for a :class:`Router`, and the in-process API.

    ``adapter`` defaults to :class:`~soketi_impl.adapters.base.LocalAdapter` (one
    node). ``pong_timeout`` (default ``config.pong_timeout``) is how long a client
    may stay silent after the server's ping before it is closed with 4201.
    ``clock`` (seconds, monotonic) drives activity, rate windows, cache expiry and
    the sweep's decisions. ``webhooks``, when given, is registered as an observer.
    ``app_manager``, when dynamic (apps in a database, see :mod:`soketi_impl.apps`),
    is asked for each connection's and request's app instead of ``config.apps``.
    """

    def __init__(
        self,
        config: Config,
        router: Router | None = None,
        *,
        webhooks: Any = None,
        adapter: Adapter | None = None,
        pong_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        app_manager: AppManager | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.observers = Observers()
        self.webhooks = webhooks
        if webhooks is not None:
            self.add_observer(webhooks)
        self.adapter: Adapter = adapter if adapter is not None else LocalAdapter()
        self.router = router if router is not None else Router()
        self.pong_timeout = config.pong_timeout if pong_timeout is None else pong_timeout
        self.apps: dict[str, AppState] = {}
        self.apps_by_key: dict[str, AppState] = {}
        self.subscriptions = Subscriptions(self)
        self.presence = Presence(self)
        self.users = Users(self)
        self.counts = Counts(self, getattr(webhooks, "debounce_s", DEFAULT_WINDOW_S))
        if hasattr(webhooks, "still_vacated"):
            webhooks.still_vacated = self.counts.still_vacated
        #: called with each app's state when it is added (metrics)
        self.app_added: list[Callable[[AppState], None]] = []
        #: the dynamic app manager, or None: the apps are ``config.apps``
        self.app_manager = app_manager if app_manager is not None and app_manager.dynamic else None
        if self.app_manager is None:
            for app_config in config.apps:
                self.add_app(app_config)
        self._outbox: Outbox | None = None
        self._orphans = Stats()  # sockets refused before an app was known
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self.accepting = True
        self._max_frame = int(config.max_message_size_kb * 1024)
        self._overflow_cb = self._on_overflow
        self.router.on_new_connection(self.on_new_connection)
        self.router.on_message(self.on_message)
        self.router.on_connection_closed(self.on_connection_closed)
        self._events: dict[str, Callable[[Socket, str | None, Any], None]] = {
            "pusher:ping": self._on_ping,
            "pusher:pong": self._on_pong,
            "pusher:subscribe": self.subscriptions.on_subscribe,
            "pusher:unsubscribe": self.subscriptions.on_unsubscribe,
            "pusher:signin": self.users.on_signin,
        }
        self.adapter.attach(self)

    def add_observer(self, observer: _O) -> _O:
        """Register an :class:`~soketi_impl.pusher.events.Observer`; returns it (usable as a decorator)."""
        self.observers.append(observer)
        return observer

    @property
    def outbox(self) -> Outbox:
        """The outbox that flushes every sink once per loop iteration."""
        if self._outbox is None:
            self._outbox = Outbox(asyncio.get_running_loop())
        return self._outbox

    # ------------------------------------------------------------------ connections

    def _sink_for(self, conn: Connection, stats: Stats) -> Sink:
        # One bound method shared by every sink, not a new one per connection.
        overflow = self._overflow_cb
        if conn.raw_write is not None:
            return Sink(
                self.outbox, stats, write=conn.raw_write, buffer_size=conn.write_buffer_size,
                on_overflow=overflow,
            )
        # Text frames on every framework: bytes handed to e.g. `websockets` go out binary.
        send = getattr(conn, "send_text_nowait", conn.send_nowait)
        return Sink(
            self.outbox, stats, send=send, buffer_size=conn.write_buffer_size, on_overflow=overflow,
        )

    def on_new_connection(self, conn: Connection) -> Awaitable[None] | None:
        """Router handler: greet with ``pusher:connection_established`` or refuse with a code.

        With a dynamic app manager that must ask its database, this returns an awaitable
        that admits the connection once the app is known.
        """
        path, _, query = (conn.path or "").partition("?")
        prefix = self.config.path_prefix.rstrip("/")
        if prefix and path.startswith(prefix):
            path = path[len(prefix):]
        key = path[len("/app/"):] if path.startswith("/app/") else None
        if self.app_manager is not None and key:
            found = self.find_app(key)
            if inspect.isawaitable(found):
                return self.admit_later(conn, key, query, found)
            self._admit(conn, key, query, found)
            return None
        self._admit(conn, key, query, self.apps_by_key.get(key) if key else None)
        return None

    def _admit(self, conn: Connection, key: str | None, query: str, app: AppState | None) -> None:
        """Greet or refuse ``conn`` now that its app (or its absence) is known."""
        sid = conn.id if is_socket_id(conn.id) else new_socket_id()
        sink = self._sink_for(conn, app.stats if app is not None else self._orphans)
        now = self.clock()
        sock = Socket(sid, conn, app, sink, now)
        sink.owner = sock
        conn.state = sock
        if app is None:
            self.close_socket(sock, 4001, f"App key {key} does not exist.")
            return
        if not self.accepting:
            self.close_socket(sock, 4200, "Server is shutting down, reconnect.")
            return
        cfg = app.config
        if not cfg.enabled:
            self.close_socket(sock, 4003, "The app is disabled.")
            return
        version = protocol_version(query)
        if version not in _PROTOCOLS:
            self.close_socket(sock, 4007, f"Unsupported protocol version {version[:20]}.")
            return
        if cfg.max_connections >= 0:
            # this node's connections and the other nodes' as last heard (slack: .counts)
            if not self.counts.room(app):
                self.close_socket(sock, 4004, "The app is over its connection quota.")
                return
            self.counts.sockets_changed(app)
        app.sockets.add(sid, sock)
        app.stats.new_connections += 1
        app.stats.connected += 1
        sock.send(messages.connection_established(sid, self.config.activity_timeout))
        if cfg.enable_user_authentication:
            sock.auth_deadline = now + self.config.user_authentication_timeout_ms / 1000
        if self.observers:
            self.observers.tell("connection_opened", cfg, sid)
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())

    def on_connection_closed(self, conn: Connection, code: int | None = None, message: str | None = None) -> None:
        """Router handler: leave every channel, sign out, forget the socket (linear in its channels)."""
        sock = conn.state
        if not isinstance(sock, Socket):
            if isinstance(sock, Admitting):
                conn.state = None  # tells the admission not to go on
            return
        sock.closing = True
        sock.sink.close()
        app = sock.app
        if app is None or app.sockets.get(sock.id) is not sock:
            return
        sock.auth_deadline = 0.0
        for channel in sock.channels():
            self.subscriptions.unsubscribe(sock, channel)
        if sock.user_id is not None:
            self.users.sign_out(sock)
        if sock.watchlist:
            self.users.unwatch(sock)
        app.sockets.remove(sock.id)
        app.stats.disconnections += 1
        app.stats.connected -= 1
        self.counts.sockets_changed(app)
        if self.observers:
            self.observers.tell("connection_closed", app.config, sock.id, code, message)
        log.debug("socket %s closed (%s %s)", sock.id, code, message)

    def close_socket(self, sock: Socket, code: int, message: str) -> None:
        """Send ``pusher:error`` with ``code`` and close the connection with the same code.

        The close runs after the outbox flush, so the error is on the wire first.
        """
        if sock.closing:
            return
        sock.closing = True
        sock.send(messages.error(code, message))
        log.debug("closing socket %s: %d %s", sock.id, code, message)
        asyncio.get_running_loop().call_soon(self._close_now, sock, code, message)

    def _close_now(self, sock: Socket, code: int, message: str) -> None:
        sock.sink.close()
        self._spawn(sock.conn.close(code, message))

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background; shutdown waits for it within the grace period."""
        self._spawn(coro)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_overflow(self, sink: Sink) -> None:
        sock = sink.owner
        if isinstance(sock, Socket) and not sock.closing:
            log.info("socket %s cannot keep up (write buffer over the limit): closing with 4100", sock.id)
            sock.closing = True
            self._spawn(sock.conn.close(4100, "Over capacity: the client is not reading fast enough."))

    # ------------------------------------------------------------------ the sweep

    def sweep_interval(self) -> float:
        """Seconds between two sweeps: a third of the shortest timeout, at least 0.2 s."""
        shortest = min(float(self.config.activity_timeout), self.pong_timeout)
        if any(app.config.enable_user_authentication for app in self.apps.values()):
            shortest = min(shortest, self.config.user_authentication_timeout_ms / 1000)
        return max(0.2, shortest / 3)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval())
            try:
                self.sweep_once()
            except Exception:  # never let the sweep die: it is what closes silent sockets
                log.exception("the ping sweep failed; it goes on")

    def sweep_once(self) -> None:
        """Ping connections that went silent, close those that stay silent (4201) or did not
        sign in in time (4009), and free expired cache entries."""
        timeout = float(self.config.activity_timeout)
        ping = messages.PING
        now = self.clock()
        for app in self.apps.values():
            for sock in app.sockets.values():
                if sock.closing:
                    continue
                if sock.auth_deadline and now >= sock.auth_deadline and sock.user_id is None:
                    self.close_socket(sock, 4009, "Connection not authorized within the timeout.")
                elif sock.pinged_at:
                    if now - sock.pinged_at > self.pong_timeout:
                        self.close_socket(sock, 4201, "Pong reply not received in time.")
                elif now - sock.last_seen > timeout:
                    sock.pinged_at = now
                    sock.send(ping)
            if app.cache:
                cache.sweep(app)

    # ------------------------------------------------------------------ messages

    def on_message(self, conn: Connection, message: bytes | str) -> None:
        """Router handler: one client frame."""
        sock = conn.state
        if not isinstance(sock, Socket) or sock.closing or sock.app is None:
            if isinstance(sock, Admitting):
                sock.hold(message)
            return
        stats = sock.app.stats
        stats.ws_messages_received += 1
        stats.ws_bytes_received += len(message)
        sock.last_seen = self.clock()
        sock.pinged_at = 0.0
        try:
            event, channel, data = parse_client_message(message, self._max_frame)
        except ProtocolError as exc:
            log.debug("socket %s sent a bad frame: %s", sock.id, exc.message)
            self._send_error(sock, exc.code, exc.message)
            return
        handler = self._events.get(event)
        try:
            if handler is not None:
                handler(sock, channel, data)
            elif event.startswith("client-"):
                client_event(self, sock, event, channel, data, message)
            else:
                self._send_error(sock, None, f"Unknown event {event[:200]!r}.")
        except SoketiError as exc:
            log.debug("socket %s: %s", sock.id, exc.message)
            if exc.close and exc.code is not None:
                self.close_socket(sock, exc.code, exc.message)
            else:
                self._send_error(sock, exc.code, exc.message)

    def _send_error(self, sock: Socket, code: int | None, message: str) -> None:
        """``pusher:error`` to a connection that stays open; observers hear of it."""
        sock.send(messages.error(code, message))
        if self.observers and sock.app is not None:
            self.observers.tell("error_sent", sock.app.config, sock.id, code, message, None)

    def _on_ping(self, sock: Socket, channel: str | None, data: Any) -> None:
        sock.send(messages.PONG)

    def _on_pong(self, sock: Socket, channel: str | None, data: Any) -> None:
        pass  # last_seen was refreshed already

    # ------------------------------------------------------------------ shutdown

    async def shutdown(self, grace_ms: int | None = None) -> None:
        """Close every connection with 4200, in waves spread over the grace period.

        pusher-js reconnects at once and without jitter on 4200; spreading the closes
        keeps a restart from becoming a thundering herd on the next node.
        """
        self.accepting = False
        grace = (self.config.shutdown_grace_period_ms if grace_ms is None else grace_ms) / 1000
        socks = [s for s in self.sockets() if not s.closing]
        waves = max(1, min(10, len(socks)))
        for i in range(waves):
            for sock in socks[i::waves]:
                self.close_socket(sock, 4200, "Server is restarting, reconnect.")
            if i < waves - 1:
                await asyncio.sleep(grace / waves)
        await asyncio.sleep(0)
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=max(0.1, grace / waves))
