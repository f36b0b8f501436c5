"""Users: ``pusher:signin``, the ``#server-to-user-{id}`` channel, watchlists.

A signed-in connection's sink is in the broadcast table under
``#server-to-user-{user id}`` from sign-in to sign-out, so the in-process and HTTP
APIs reach every connection of a user with one broadcast. A watchlist names users
whose online/offline changes the connection hears (``watchlist_events``): a user
is online while it has a signed-in connection on any node (:mod:`.counts`).
Sign-in failures close the connection with 4009, as Pusher does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import orjson

from ..adapters.base import USER
from ..signing import check_auth, user_auth_string
from . import messages
from .channels import MAX_USER_ID_LENGTH, SERVER_TO_USER_PREFIX
from .state import AppState, Socket
from .subscriptions import data_object

if TYPE_CHECKING:
    from .core import PusherServer

__all__ = ["MAX_WATCHLIST", "Users"]

#: The most user ids a watchlist may name (Pusher's limit).
MAX_WATCHLIST: Final = 100


class Users:
    """The core's sign-in and watchlist handling (one per core)."""

    def __init__(self, core: PusherServer) -> None:
        self.core = core
        #: sockets whose watchlist waits for the cluster totals -> users whose change they
        #: were told meanwhile (the correction must not undo it)
        self._told: dict[Socket, set[str]] = {}

    def on_signin(self, sock: Socket, _channel: str | None, data: Any) -> None:
        """``pusher:signin``: check the signature and the user data, then sign in."""
        app = sock.app
        assert app is not None
        cfg = app.config
        data = data_object(data, "pusher:signin")
        user_data = data.get("user_data")
        if not isinstance(user_data, str) or not check_auth(
            cfg.key, cfg.secret, user_auth_string(sock.id, user_data), data.get("auth")
        ):
            self.core.close_socket(sock, 4009, "Sign-in failed: invalid signature.")
            return
        try:
            user = orjson.loads(user_data)
        except orjson.JSONDecodeError:
            user = None
        uid = user.get("id") if isinstance(user, dict) else None
        if isinstance(uid, int) and not isinstance(uid, bool):
            uid = str(uid)
        if not isinstance(uid, str) or not uid:
            self.core.close_socket(sock, 4009, "Sign-in failed: user_data must be an object with an id.")
            return
        if len(uid) > MAX_USER_ID_LENGTH:
            self.core.close_socket(
                sock, 4009, f"Sign-in failed: the user id is longer than {MAX_USER_ID_LENGTH} characters."
            )
            return
        assert isinstance(user, dict)
        watchlist = user.get("watchlist")
        ids: list[str] | None = None
        if isinstance(watchlist, list):
            if len(watchlist) > MAX_WATCHLIST:
                self.core.close_socket(
                    sock, 4009, f"Sign-in failed: a watchlist may name at most {MAX_WATCHLIST} users."
                )
                return
            ids = [str(w) for w in watchlist if isinstance(w, (str, int)) and not isinstance(w, bool)]
        self.sign_in(sock, app, uid, user_data, ids)

    def sign_in(self, sock: Socket, app: AppState, uid: str, user_data: str, watchlist: list[str] | None) -> None:
        """Sign ``sock`` in as ``uid`` (signing out a previous user), with its watchlist."""
        if sock.user_id is not None:
            self.sign_out(sock)
        if sock.watchlist:
            # a new sign-in brings its own watchlist (or none): stop watching the old one
            self.unwatch(sock)
        sock.user_id = uid
        sock.auth_deadline = 0.0
        conns = app.users.get(uid)
        if conns is None:
            conns = app.users[uid] = set()
        conns.add(sock)
        app.table.add(SERVER_TO_USER_PREFIX + uid, sock.sink)
        sock.send(messages.signin_success(user_data))
        if watchlist is not None:
            sock.watchlist = watchlist
            for w in watchlist:
                app.watchers.setdefault(w, set()).add(sock)
            offline = [w for w in watchlist if w not in app.users]
            sock.send(messages.watchlist_events(
                online=[w for w in watchlist if w in app.users], offline=offline,
            ))
            if offline:
                # online on other nodes only: the cluster totals tell, a moment later. What
                # the watchers hear from now on is noted at once (not when the task starts),
                # so a change reported before the totals arrive is not told twice.
                self._told[sock] = set()
                self.core.spawn(self._online_elsewhere(sock, watchlist, offline))
        # online / offline for the watchers: decided on the cluster total (see .counts)
        self.core.counts.user_changed(app, uid)
        if self.core.observers:
            self.core.observers.tell("signed_in", app.config, sock.id, uid)

    def sign_out(self, sock: Socket) -> None:
        """Forget the user of ``sock`` (close or a new sign-in)."""
        app = sock.app
        uid = sock.user_id
        assert app is not None and uid is not None
        sock.user_id = None
        channel = SERVER_TO_USER_PREFIX + uid
        app.table.remove(channel, sock.sink)
        sock.discard_channel(channel)
        conns = app.users.get(uid)
        if conns is not None:
            conns.discard(sock)
            if not conns:
                del app.users[uid]
            self.core.counts.user_changed(app, uid)

    def unwatch(self, sock: Socket) -> None:
        """Stop watching the users of ``sock``'s watchlist."""
        app = sock.app
        assert app is not None and sock.watchlist is not None
        for uid in sock.watchlist:
            watchers = app.watchers.get(uid)
            if watchers is not None:
                watchers.discard(sock)
                if not watchers:
                    del app.watchers[uid]
        sock.watchlist = None

    async def _online_elsewhere(self, sock: Socket, watchlist: list[str], offline: list[str]) -> None:
        """Correct a new watchlist's state with the users signed in on other nodes only."""
        app = sock.app
        assert app is not None
        told = self._told.setdefault(sock, set())
        try:
            totals = await self.core.adapter.count_totals(app.config.id, USER, offline)
        finally:
            if self._told.get(sock) is told:
                del self._told[sock]
        if sock.closing or sock.watchlist is not watchlist:
            return
        online = [w for w, n in zip(offline, totals) if n > 0 and w not in app.users and w not in told]
        if online:
            sock.send(messages.watchlist_events(online=online))

    def notify_watchers(self, app: AppState, uid: str, *, online: bool) -> None:
        """Tell this node's watchers of ``uid`` that it came online or went offline (cluster-wide)."""
        watchers = app.watchers.get(uid)
        if watchers:
            payload = messages.watchlist_events(online=[uid]) if online else messages.watchlist_events(offline=[uid])
            told = self._told
            for watcher in watchers:
                if not watcher.closing:
                    watcher.send(payload)
                    if told and watcher in told:
                        told[watcher].add(uid)
