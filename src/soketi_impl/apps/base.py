"""``AppManager``: where the server finds an app by its key or id.

Two kinds. :class:`ArrayAppManager` serves the configured apps (soketi's ``array``
driver, ``appManager.array.apps``): every answer is known at once, so the core keeps
looking them up in its own dicts, synchronously, with no manager in the path at all.
A dynamic manager (:class:`~soketi_impl.apps.managed.ManagedAppManager`, the
``postgres`` and ``mysql`` drivers) answers from its cache when it can and otherwise
with an awaitable, which the core awaits before it greets a connection or checks a
request's signature::

    found = manager.by_key("app-key")
    if inspect.isawaitable(found):
        found = await found
    # found: an AppConfig, or None for an unknown (or unreachable) app
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, ClassVar, TypeAlias

if TYPE_CHECKING:
    from ..config import AppConfig, Config

__all__ = ["AppManager", "ArrayAppManager", "Found"]

#: What a lookup gives: the app, None (no such app), or an awaitable of either.
Found: TypeAlias = "AppConfig | None | Awaitable[AppConfig | None]"


class AppManager:
    """Finds apps. ``dynamic`` is False when every app is known at start (the core then
    serves ``config.apps`` itself and never calls the manager on a connection)."""

    dynamic: ClassVar[bool] = False

    def by_key(self, key: str) -> Found:
        """The app whose key is ``key`` (the one in ``/app/{key}``, or ``auth_key``)."""
        raise NotImplementedError

    def by_id(self, app_id: str) -> Found:
        """The app whose id is ``app_id`` (the one in ``/apps/{id}/...``)."""
        raise NotImplementedError

    async def start(self) -> None:
        """Connect; raises :class:`~soketi_impl.errors.SoketiError` when the source is unreachable."""

    async def close(self) -> None:
        """Let go of connections."""

    def describe(self) -> str:
        """One line for the start log: which apps, or where they come from."""
        raise NotImplementedError


class ArrayAppManager(AppManager):
    """soketi's ``array`` driver: the apps of the configuration, fixed at start."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def by_key(self, key: str) -> AppConfig | None:
        return self.config.app_by_key(key)

    def by_id(self, app_id: str) -> AppConfig | None:
        return self.config.app_by_id(app_id)

    def describe(self) -> str:
        return ", ".join(f"{a.id} (key {a.key})" for a in self.config.apps) or "none"
