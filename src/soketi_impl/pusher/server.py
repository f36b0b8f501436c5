"""The Pusher Channels protocol as a set of Router handlers, plus the in-process API.

A transport (picows, or any framework through the seed API) creates a
:class:`~soketi_impl.Connection` with the request ``path`` and feeds a
:class:`~soketi_impl.Router`; :class:`PusherServer` installs its handlers on that
router, so a user with their own WebSocket framework gets the whole protocol by
feeding a router::

    server = PusherServer(load_config())
    conn = Connection(socket_id, ws, path="/app/app-key?protocol=7")
    await server.router.handle_new_connection(conn)
    await server.router.handle_message(conn, text)
    await server.router.handle_connection_closed(conn, 1000, "")

Every outgoing message goes through the connection's :class:`Sink`, so the
order of direct replies and broadcasts is the order in which they were made, and
messages that reach one connection within one loop iteration leave in one write.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

import orjson

from ..adapters.base import Adapter, LocalAdapter
from ..config import AppConfig, Config
from ..connection import Connection
from ..errors import ClientEventError, ProtocolError, SoketiError
from ..router import Router
from ..signing import channel_auth_string, check_auth, user_auth_string
from ..twins._conntable import ConnectionTable
from ..twins._fanout import ChannelTable, Outbox, Sink, Stats
from ..twins._protocol import (
    ENCRYPTED,
    PRESENCE,
    PRIVATE,
    SERVER_TO_USER,
    channel_kind,
    encode_error,
    encode_event,
    is_cache_channel,
    parse_client_message,
    raw_data,
    valid_channel_name,
)

__all__ = ["AppState", "PusherServer", "Socket", "new_socket_id"]

log = logging.getLogger("soketi_impl.pusher")

_SOCKET_ID = re.compile(r"^\d+\.\d+$")
_counter = itertools.count(1)
_PROTOCOLS = {"5", "6", "7"}


def new_socket_id() -> str:
    """A Pusher socket id, ``digits.digits``, unique in this process."""
    return f"{random.randint(1, 999_999_999)}.{next(_counter)}"


class Socket:
    """The Pusher state of one connection (kept in ``Connection.state``)."""

    __slots__ = (
        "id", "conn", "app", "sink", "channels", "presence", "user_id", "watchlist",
        "last_seen", "pinged_at", "rl_second", "rl_count", "auth_timer", "closing",
    )

    def __init__(self, sid: str, conn: Connection, app: AppState | None, sink: Sink) -> None:
        self.id = sid
        self.conn = conn
        self.app = app
        self.sink = sink
        # A list, not a set: most connections have a channel or two, and an empty or
        # one-element list is 150 bytes smaller than a set.
        self.channels: list[str] = []
        #: presence channel -> the user id this connection joined it as
        self.presence: dict[str, str] | None = None
        self.user_id: str | None = None
        self.watchlist: list[str] | None = None
        self.last_seen = time.monotonic()
        self.pinged_at = 0.0
        self.rl_second = 0
        self.rl_count = 0
        self.auth_timer: asyncio.TimerHandle | None = None
        self.closing = False

    def send(self, payload: bytes) -> None:
        """Queue one server message to this connection."""
        self.sink.push(payload)

    def __repr__(self) -> str:
        return f"<Socket {self.id}>"


class AppState:
    """Everything one app has on this node: sockets, channels, presence, users, cache."""

    __slots__ = ("config", "stats", "table", "sockets", "presence", "users", "watchers", "cache")

    def __init__(self, config: AppConfig) -> None:
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
        #: cache channel -> (last event payload, monotonic expiry)
        self.cache: dict[str, tuple[bytes, float]] = {}


def _subscription_error(channel: str, kind: str, message: str, status: int) -> bytes:
    return orjson.dumps(
        {
            "event": "pusher:subscription_error",
            "channel": channel,
            "data": {"type": kind, "error": message, "status": status},
        }
    )


class PusherServer:
    """Pusher protocol handlers for a :class:`Router`, and the in-process API.

    ``webhooks`` is a :class:`~soketi_impl.webhooks.WebhookSender` or ``None``;
    ``adapter`` defaults to :class:`~soketi_impl.adapters.base.LocalAdapter` (one node).
    ``pong_timeout`` (default ``config.pong_timeout``) is how long a client may stay
    silent after the server's ping before it is closed with 4201.
    """

    def __init__(
        self,
        config: Config,
        router: Router | None = None,
        *,
        webhooks: Any = None,
        adapter: Adapter | None = None,
        pong_timeout: float | None = None,
    ) -> None:
        self.config = config
        self.adapter: Adapter = adapter if adapter is not None else LocalAdapter()
        self.adapter.attach(self)
        self.router = router if router is not None else Router()
        self.webhooks = webhooks
        self.pong_timeout = config.pong_timeout if pong_timeout is None else pong_timeout
        self.apps: dict[str, AppState] = {}
        self.apps_by_key: dict[str, AppState] = {}
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
        self._events = {
            "pusher:ping": self._on_ping,
            "pusher:pong": self._on_pong,
            "pusher:subscribe": self._on_subscribe,
            "pusher:unsubscribe": self._on_unsubscribe,
            "pusher:signin": self._on_signin,
        }

    def add_app(self, app_config: AppConfig) -> AppState:
        """Serve one more app (the config's apps are added at construction)."""
        state = AppState(app_config)
        self.apps[app_config.id] = state
        self.apps_by_key[app_config.key] = state
        return state

    @property
    def outbox(self) -> Outbox:
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
        return Sink(
            self.outbox, stats, send=conn.send_nowait, buffer_size=conn.write_buffer_size,
            on_overflow=overflow,
        )

    def on_new_connection(self, conn: Connection) -> None:
        """Router handler: greet with ``pusher:connection_established`` or refuse with a code."""
        path = conn.path or ""
        path, _, query = path.partition("?")
        prefix = self.config.path_prefix.rstrip("/")
        if prefix and path.startswith(prefix):
            path = path[len(prefix):]
        key = path[len("/app/"):] if path.startswith("/app/") else None
        app = self.apps_by_key.get(key) if key else None
        sid = conn.id if _SOCKET_ID.match(conn.id) else new_socket_id()
        sink = self._sink_for(conn, app.stats if app is not None else self._orphans)
        sock = Socket(sid, conn, app, sink)
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
        version = parse_qs(query).get("protocol", ["7"])[0]
        if version not in _PROTOCOLS:
            self.close_socket(sock, 4007, f"Unsupported protocol version {version}.")
            return
        if 0 <= cfg.max_connections <= len(app.sockets):
            self.close_socket(sock, 4004, "The app is over its connection quota.")
            return
        app.sockets.add(sid, sock)
        app.stats.new_connections += 1
        app.stats.connected += 1
        established = orjson.dumps({"socket_id": sid, "activity_timeout": self.config.activity_timeout})
        sock.send(encode_event("pusher:connection_established", None, established.decode()))
        if cfg.enable_user_authentication:
            loop = asyncio.get_running_loop()
            sock.auth_timer = loop.call_later(
                self.config.user_authentication_timeout_ms / 1000, self._auth_timeout, sock
            )
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())

    def on_connection_closed(self, conn: Connection, code: int | None = None, message: str | None = None) -> None:
        """Router handler: leave every channel, sign out, forget the socket."""
        sock = conn.state
        if not isinstance(sock, Socket):
            return
        sock.closing = True
        sock.sink.close()
        app = sock.app
        if app is None or app.sockets.get(sock.id) is not sock:
            return
        if sock.auth_timer is not None:
            sock.auth_timer.cancel()
            sock.auth_timer = None
        for channel in list(sock.channels):
            self._unsubscribe(sock, channel)
        if sock.user_id is not None:
            self._sign_out(sock)
        if sock.watchlist:
            self._unwatch(sock)
        app.sockets.remove(sock.id)
        app.stats.disconnections += 1
        app.stats.connected -= 1
        log.debug("socket %s closed (%s %s)", sock.id, code, message)

    def close_socket(self, sock: Socket, code: int, message: str) -> None:
        """Send ``pusher:error`` with ``code`` and close the connection with the same code.

        The close runs after the outbox flush, so the error is on the wire first.
        """
        if sock.closing:
            return
        sock.closing = True
        sock.send(encode_error(code, message))
        log.debug("closing socket %s: %d %s", sock.id, code, message)
        asyncio.get_running_loop().call_soon(self._close_now, sock, code, message)

    def _close_now(self, sock: Socket, code: int, message: str) -> None:
        sock.sink.close()
        self._spawn(sock.conn.close(code, message))

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

    def _auth_timeout(self, sock: Socket) -> None:
        sock.auth_timer = None
        if sock.user_id is None and not sock.closing:
            self.close_socket(sock, 4009, "Connection not authorized within the timeout.")

    async def _sweep(self) -> None:
        """Ping connections that went silent; close those that stay silent (4201)."""
        timeout = float(self.config.activity_timeout)
        interval = max(0.2, min(timeout, self.pong_timeout) / 3)
        ping = encode_event("pusher:ping", None, "{}")
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for app in self.apps.values():
                for sock in app.sockets.values():
                    if sock.closing:
                        continue
                    if sock.pinged_at:
                        if now - sock.pinged_at > self.pong_timeout:
                            self.close_socket(sock, 4201, "Pong reply not received in time.")
                    elif now - sock.last_seen > timeout:
                        sock.pinged_at = now
                        sock.send(ping)

    # ------------------------------------------------------------------ messages

    def on_message(self, conn: Connection, message: bytes | str) -> None:
        """Router handler: one client frame."""
        sock = conn.state
        if not isinstance(sock, Socket) or sock.closing or sock.app is None:
            return
        stats = sock.app.stats
        stats.ws_messages_received += 1
        stats.ws_bytes_received += len(message)
        sock.last_seen = time.monotonic()
        sock.pinged_at = 0.0
        try:
            event, channel, data = parse_client_message(message, self._max_frame)
        except ProtocolError as exc:
            log.debug("socket %s sent a bad frame: %s", sock.id, exc.message)
            sock.send(encode_error(exc.code, exc.message))
            return
        handler = self._events.get(event)
        try:
            if handler is not None:
                handler(sock, channel, data)
            elif event.startswith("client-"):
                self._client_event(sock, event, channel, data, message)
            else:
                sock.send(encode_error(None, f"Unknown event {event[:200]!r}."))
        except SoketiError as exc:
            log.debug("socket %s: %s", sock.id, exc.message)
            if exc.close and exc.code is not None:
                self.close_socket(sock, exc.code, exc.message)
            else:
                sock.send(encode_error(exc.code, exc.message))

    def _on_ping(self, sock: Socket, channel: str | None, data: Any) -> None:
        sock.send(_PONG)

    def _on_pong(self, sock: Socket, channel: str | None, data: Any) -> None:
        pass  # last_seen was refreshed already

    @staticmethod
    def _data_object(data: Any, event: str) -> dict[str, Any]:
        if isinstance(data, str):
            try:
                data = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise ProtocolError(f"{event}: data is not valid JSON.") from None
        if not isinstance(data, dict):
            raise ProtocolError(f"{event}: data must be an object.")
        return data

    def _on_subscribe(self, sock: Socket, _channel: str | None, data: Any) -> None:
        app = sock.app
        assert app is not None
        cfg = app.config
        data = self._data_object(data, "pusher:subscribe")
        channel = data.get("channel")
        if not isinstance(channel, str) or not channel:
            raise ProtocolError("pusher:subscribe: channel must be a non-empty string.")
        if not valid_channel_name(channel, cfg.max_channel_name_length):
            if len(channel) > 1024:  # do not echo a huge name back
                raise ProtocolError(f"Channel name too long ({len(channel)} characters).")
            sock.send(_subscription_error(
                channel, "InvalidChannel",
                f"Invalid channel name (allowed: A-Z a-z 0-9 _-=@,.; up to {cfg.max_channel_name_length}).",
                400,
            ))
            return
        kind = channel_kind(channel)
        member: tuple[str, Any] | None = None
        if kind == PRIVATE or kind == ENCRYPTED:
            if not check_auth(cfg.key, cfg.secret, channel_auth_string(sock.id, channel), data.get("auth")):
                sock.send(_subscription_error(channel, "AuthError", "Invalid signature.", 401))
                return
        elif kind == PRESENCE:
            member = self._check_presence(sock, channel, data)
            if member is None:
                return
        elif kind == SERVER_TO_USER:
            if sock.user_id is None or channel != "#server-to-user-" + sock.user_id:
                sock.send(_subscription_error(
                    channel, "AuthError", "Only the signed-in user may subscribe to its own channel.", 403,
                ))
                return
        if channel in sock.channels:
            # Subscribing twice is harmless: confirm again, change nothing.
            sock.send(self._succeeded(app, channel, kind))
            return
        if sock.channels:
            sock.channels.append(channel)
        else:
            sock.channels = [channel]  # exact size: append() would over-allocate
        if kind != SERVER_TO_USER:
            first = app.table.add(channel, sock.sink) and app.table.count(channel) == 1
        else:
            first = False  # the sink is already there since sign-in
        if sock.auth_timer is not None and kind in (PRIVATE, ENCRYPTED, PRESENCE):
            sock.auth_timer.cancel()
            sock.auth_timer = None
        wh = self.webhooks
        if first and wh is not None:
            wh.channel_occupied(cfg, channel)
        if member is not None:
            self._join_presence(sock, channel, member[0], member[1])
        else:
            sock.send(encode_event("pusher_internal:subscription_succeeded", channel, "{}"))
        if is_cache_channel(channel):
            self._send_cached(sock, channel)
        if wh is not None and wh.wants(cfg, "subscription_count"):
            wh.subscription_count(cfg, channel, app.table.count(channel))

    def _check_presence(self, sock: Socket, channel: str, data: dict[str, Any]) -> tuple[str, Any] | None:
        app = sock.app
        assert app is not None
        cfg = app.config
        channel_data = data.get("channel_data")
        if not isinstance(channel_data, str):
            sock.send(_subscription_error(channel, "AuthError", "Presence channels need channel_data.", 401))
            return None
        auth_string = channel_auth_string(sock.id, channel, channel_data)
        if not check_auth(cfg.key, cfg.secret, auth_string, data.get("auth")):
            sock.send(_subscription_error(channel, "AuthError", "Invalid signature.", 401))
            return None
        try:
            parsed = orjson.loads(channel_data)
        except orjson.JSONDecodeError:
            parsed = None
        uid = parsed.get("user_id") if isinstance(parsed, dict) else None
        if isinstance(uid, bool) or not isinstance(uid, (str, int)) or uid == "":
            sock.send(_subscription_error(
                channel, "AuthError", "channel_data must be an object with a user_id.", 400))
            return None
        uid = str(uid)
        if len(uid) > 128:
            sock.send(_subscription_error(channel, "LimitReached", "user_id longer than 128 characters.", 400))
            return None
        info = parsed.get("user_info")
        if len(channel_data.encode()) > cfg.max_presence_member_size_in_kb * 1024:
            sock.send(_subscription_error(
                channel, "LimitReached",
                f"Presence member data over {cfg.max_presence_member_size_in_kb} KB.", 400))
            return None
        members = app.presence.get(channel)
        if members is not None and uid not in members and len(members) >= cfg.max_presence_members_per_channel:
            sock.send(_subscription_error(
                channel, "LimitReached",
                f"The presence channel is full ({cfg.max_presence_members_per_channel} members).", 400))
            return None
        return uid, info

    def _join_presence(self, sock: Socket, channel: str, uid: str, info: Any) -> None:
        # Membership, subscription_succeeded and member_added may involve other nodes.
        self.adapter.presence_join(sock, channel, uid, info)

    def _succeeded(self, app: AppState, channel: str, kind: int) -> bytes:
        if kind != PRESENCE:
            return encode_event("pusher_internal:subscription_succeeded", channel, "{}")
        members = app.presence.get(channel, {})
        presence = {
            "ids": list(members),
            "hash": {uid: entry[1] for uid, entry in members.items()},
            "count": len(members),
        }
        return encode_event(
            "pusher_internal:subscription_succeeded", channel, orjson.dumps({"presence": presence}).decode()
        )

    def _send_cached(self, sock: Socket, channel: str) -> None:
        app = sock.app
        assert app is not None
        cached = app.cache.get(channel)
        if cached is not None and cached[1] > time.monotonic():
            sock.send(cached[0])
            return
        if cached is not None:
            del app.cache[channel]
        sock.send(orjson.dumps({"event": "pusher:cache_miss", "channel": channel}))
        if self.webhooks is not None:
            self.webhooks.cache_miss(app.config, channel)

    def _on_unsubscribe(self, sock: Socket, _channel: str | None, data: Any) -> None:
        data = self._data_object(data, "pusher:unsubscribe")
        channel = data.get("channel")
        if not isinstance(channel, str):
            raise ProtocolError("pusher:unsubscribe: channel must be a string.")
        self._unsubscribe(sock, channel)

    def _unsubscribe(self, sock: Socket, channel: str) -> None:
        app = sock.app
        assert app is not None
        if channel not in sock.channels:
            return
        sock.channels.remove(channel)
        if not channel.startswith("#server-to-user-"):
            app.table.remove(channel, sock.sink)
        wh = self.webhooks
        if sock.presence is not None:
            uid = sock.presence.pop(channel, None)
            if uid is not None:
                self.adapter.presence_leave(sock, channel, uid)
        if wh is not None:
            if channel not in app.table:
                wh.channel_vacated(app.config, channel)
            if wh.wants(app.config, "subscription_count"):
                wh.subscription_count(app.config, channel, app.table.count(channel))

    # ------------------------------------------------------------------ client events

    def _client_event(
        self, sock: Socket, event: str, channel: str | None, data: Any, raw: bytes | str
    ) -> None:
        app = sock.app
        assert app is not None
        cfg = app.config
        if not cfg.enable_client_messages:
            raise _client_error("Client events are not enabled for this app.")
        if channel is None or channel not in sock.channels:
            raise _client_error("Client events need a channel the connection is subscribed to.")
        kind = channel_kind(channel)
        if kind != PRIVATE and kind != PRESENCE:
            raise _client_error("Client events are only allowed on private and presence channels.")
        if len(event) > cfg.max_event_name_length:
            raise _client_error(f"Event name longer than {cfg.max_event_name_length} characters.")
        limit = cfg.max_client_events_per_second
        if limit >= 0:
            second = int(sock.last_seen)
            if second != sock.rl_second:
                sock.rl_second = second
                sock.rl_count = 0
            sock.rl_count += 1
            if sock.rl_count > limit:
                raise _client_error(f"Client event rate limit reached ({limit} per second).")
        user_id = sock.presence.get(channel) if (kind == PRESENCE and sock.presence) else None
        # Forward the client's own JSON text of data (Pusher relays it untouched): a
        # re-encoding would change integers beyond 64 bits and number spellings.
        forwarded = data if isinstance(data, str) else raw_data(raw)
        payload = encode_event(event, channel, data if forwarded is None else forwarded, user_id)
        if len(payload) > cfg.max_event_payload_in_kb * 1024:
            raise _client_error(f"Client event over {cfg.max_event_payload_in_kb} KB.")
        self.adapter.publish(app, channel, payload, sock.id)
        wh = self.webhooks
        if wh is not None and wh.wants(cfg, "client_event"):
            wh.client_event(cfg, channel, event, data, sock.id, user_id)

    # ------------------------------------------------------------------ users

    def _on_signin(self, sock: Socket, _channel: str | None, data: Any) -> None:
        app = sock.app
        assert app is not None
        cfg = app.config
        data = self._data_object(data, "pusher:signin")
        user_data = data.get("user_data")
        if not isinstance(user_data, str) or not check_auth(
            cfg.key, cfg.secret, user_auth_string(sock.id, user_data), data.get("auth")
        ):
            self.close_socket(sock, 4009, "Sign-in failed: invalid signature.")
            return
        try:
            user = orjson.loads(user_data)
        except orjson.JSONDecodeError:
            user = None
        uid = user.get("id") if isinstance(user, dict) else None
        if isinstance(uid, int) and not isinstance(uid, bool):
            uid = str(uid)
        if not isinstance(uid, str) or not uid:
            self.close_socket(sock, 4009, "Sign-in failed: user_data must be an object with an id.")
            return
        assert isinstance(user, dict)
        if sock.user_id is not None:
            self._sign_out(sock)
        if sock.watchlist:
            # a new sign-in brings its own watchlist (or none): stop watching the old one
            self._unwatch(sock)
        sock.user_id = uid
        if sock.auth_timer is not None:
            sock.auth_timer.cancel()
            sock.auth_timer = None
        conns = app.users.get(uid)
        first = conns is None
        if conns is None:
            conns = app.users[uid] = set()
        conns.add(sock)
        app.table.add("#server-to-user-" + uid, sock.sink)
        sock.send(encode_event("pusher:signin_success", None, orjson.dumps({"user_data": user_data}).decode()))
        watchlist = user.get("watchlist")
        if isinstance(watchlist, list):
            ids = [str(w) for w in watchlist if isinstance(w, (str, int)) and not isinstance(w, bool)]
            sock.watchlist = ids
            for w in ids:
                app.watchers.setdefault(w, set()).add(sock)
            online = [w for w in ids if w in app.users]
            offline = [w for w in ids if w not in app.users]
            events = []
            if online:
                events.append({"name": "online", "user_ids": online})
            if offline:
                events.append({"name": "offline", "user_ids": offline})
            sock.send(_watchlist_event(events))
        if first:
            self._notify_watchers(app, uid, "online")

    def _sign_out(self, sock: Socket) -> None:
        app = sock.app
        uid = sock.user_id
        assert app is not None and uid is not None
        sock.user_id = None
        app.table.remove("#server-to-user-" + uid, sock.sink)
        if "#server-to-user-" + uid in sock.channels:
            sock.channels.remove("#server-to-user-" + uid)
        conns = app.users.get(uid)
        if conns is not None:
            conns.discard(sock)
            if not conns:
                del app.users[uid]
                self._notify_watchers(app, uid, "offline")

    def _unwatch(self, sock: Socket) -> None:
        app = sock.app
        assert app is not None and sock.watchlist is not None
        for uid in sock.watchlist:
            watchers = app.watchers.get(uid)
            if watchers is not None:
                watchers.discard(sock)
                if not watchers:
                    del app.watchers[uid]
        sock.watchlist = None

    def _notify_watchers(self, app: AppState, uid: str, name: str) -> None:
        watchers = app.watchers.get(uid)
        if watchers:
            payload = _watchlist_event([{"name": name, "user_ids": [uid]}])
            for watcher in watchers:
                if not watcher.closing:
                    watcher.send(payload)

    # ------------------------------------------------------------------ in-process API

    def app(self, app_id: str) -> AppState:
        """The state of the app with this id; ``KeyError`` when there is none."""
        return self.apps[app_id]

    def publish(
        self, app: AppState, channel: str, event: str, data: Any, socket_id: str | None = None
    ) -> int:
        """Deliver one event to one channel (through the adapter); returns the local recipients.

        ``socket_id`` excludes that connection. On cache channels the event is kept
        for late subscribers (``channel_cache_ttl``).
        """
        payload = encode_event(event, channel, data)
        if is_cache_channel(channel):
            app.cache[channel] = (payload, time.monotonic() + self.config.channel_cache_ttl)
        return self.adapter.publish(app, channel, payload, socket_id)

    async def trigger(
        self, app_id: str, channels: Iterable[str], event: str, data: Any, socket_id: str | None = None
    ) -> int:
        """Trigger ``event`` on ``channels`` of the app (``socket_id`` excluded); returns local deliveries.

        ``#server-to-user-{id}`` channels reach every connection signed in as that user.
        ``data`` is sent as is when it is a string (the Pusher HTTP API's form), else JSON-encoded.
        """
        app = self.apps[app_id]
        return sum(self.publish(app, channel, event, data, socket_id) for channel in channels)

    async def channels(self, app_id: str, prefix: str | None = None) -> dict[str, dict[str, int]]:
        """Occupied channels (optionally by prefix) with ``subscription_count`` and, for presence, ``user_count``."""
        return await self.adapter.channels(self.apps[app_id], prefix)

    async def channel(self, app_id: str, channel: str) -> dict[str, Any]:
        """``occupied``, ``subscription_count``, ``user_count`` (presence) and ``cache`` of one channel."""
        return await self.adapter.channel(self.apps[app_id], channel)

    async def presence_users(self, app_id: str, channel: str) -> list[str]:
        """The user ids present in a presence channel."""
        return list(await self.adapter.presence_members(self.apps[app_id], channel))

    async def terminate_user_connections(self, app_id: str, user_id: str) -> int:
        """Close every connection signed in as ``user_id`` with 4009; returns how many (here)."""
        return await self.adapter.terminate_user(self.apps[app_id], user_id)

    def sockets(self) -> list[Socket]:
        """Every live socket of every app."""
        return [s for app in self.apps.values() for s in app.sockets.values()]

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


def _client_error(message: str) -> SoketiError:
    return ClientEventError(message)


def _watchlist_event(events: list[dict[str, Any]]) -> bytes:
    return encode_event("pusher_internal:watchlist_events", None, orjson.dumps({"events": events}).decode())


_PONG = b'{"event":"pusher:pong","data":"{}"}'
