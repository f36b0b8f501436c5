"""Finding a connection's or request's app: :class:`AppLookup`, mixed into the core.

With the configured apps (the array driver) the core's own dicts answer. With a
dynamic app manager (apps in a database, :mod:`soketi_impl.apps`) the manager answers
from its cache or with an awaitable: a new connection then waits, its state an
:class:`Admitting` placeholder that keeps the first few messages it sends and notices
a close, and is admitted (or refused with 4001) when the answer comes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..config import AppConfig
from .state import AppState

if TYPE_CHECKING:
    from ..apps import AppManager
    from ..connection import Connection

__all__ = ["Admitting", "AppLookup"]

log = logging.getLogger("soketi_impl.pusher")

#: messages a connection may send while its app is looked up (kept, then handled)
HELD_MESSAGES = 16


class Admitting:
    """``Connection.state`` while the app of a new connection is being looked up."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held: list[bytes | str] = []

    def hold(self, message: bytes | str) -> None:
        """Keep ``message`` for after the admission (beyond :data:`HELD_MESSAGES`: dropped)."""
        if len(self.held) < HELD_MESSAGES:
            self.held.append(message)


class AppLookup:
    """Mixed into the core (see the module docstring)."""

    apps: dict[str, AppState]
    apps_by_key: dict[str, AppState]
    clock: Callable[[], float]
    #: the dynamic app manager, or None: the apps are ``config.apps``
    app_manager: AppManager | None
    #: called with each app's state when it is added (metrics)
    app_added: list[Callable[[AppState], None]]

    def _admit(self, conn: Connection, key: str | None, query: str, app: AppState | None) -> None:
        raise NotImplementedError  # the core's

    def on_message(self, conn: Connection, message: bytes | str) -> None:
        raise NotImplementedError  # the core's

    def add_app(self, app_config: AppConfig) -> AppState:
        """Serve one more app (the config's apps are added at construction)."""
        state = AppState(app_config, self.clock)
        self.apps[app_config.id] = state
        self.apps_by_key[app_config.key] = state
        for added in self.app_added:
            added(state)
        return state

    def app_state(self, app_config: AppConfig) -> AppState:
        """The state of the app an app manager found, added on first sight; a newer
        config (the cache refreshed it) replaces the one the state holds."""
        state = self.apps.get(app_config.id)
        if state is None:
            return self.add_app(app_config)
        if state.config is not app_config:
            old_key = state.config.key
            if old_key != app_config.key and self.apps_by_key.get(old_key) is state:
                del self.apps_by_key[old_key]
            state.config = app_config
            self.apps_by_key[app_config.key] = state
        return state

    def find_app(
        self, key: str | None = None, app_id: str | None = None
    ) -> AppState | None | Awaitable[AppState | None]:
        """The app with this key (or id): its state, None when unknown, or an awaitable of
        either while the app manager asks its database."""
        manager = self.app_manager
        if manager is None:
            if key is not None:
                return self.apps_by_key.get(key)
            return self.apps.get(app_id) if app_id is not None else None
        if key is not None:
            found = manager.by_key(key)
        elif app_id is not None:
            found = manager.by_id(app_id)
        else:
            return None
        if found is None:
            return None
        if isinstance(found, AppConfig):
            return self.app_state(found)
        return self._found_later(found)

    async def _found_later(self, found: Awaitable[AppConfig | None]) -> AppState | None:
        app_config = await found
        return None if app_config is None else self.app_state(app_config)

    def admit_later(
        self, conn: Connection, key: str, query: str, found: Awaitable[AppState | None]
    ) -> Awaitable[None]:
        """Mark ``conn`` as waiting for its app (now, before the router runs the
        returned awaitable), and admit it when ``found`` answers."""
        waiting = conn.state = Admitting()
        return self._admit_when_found(conn, key, query, found, waiting)

    async def _admit_when_found(
        self, conn: Connection, key: str, query: str, found: Awaitable[AppState | None],
        waiting: Admitting,
    ) -> None:
        try:
            app = await found
        except Exception:  # the manager answers None on trouble: this is a bug, not a refusal
            log.exception("looking up app key %r failed", key)
            app = None
        if conn.state is not waiting:
            return  # the client left while its app was looked up
        conn.state = None
        self._admit(conn, key, query, app)
        for message in waiting.held:
            self.on_message(conn, message)
