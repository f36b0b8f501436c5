"""Where apps come from: soketi's app managers.

``SOKETI_APP_MANAGER_DRIVER`` picks one: ``array`` (the configured apps,
:class:`ArrayAppManager`), ``postgres`` or ``mysql`` (soketi's ``apps`` table,
:class:`ManagedAppManager` over :mod:`.sql`). :func:`app_manager_for` builds it from a
:class:`~soketi_impl.config.Config`; :class:`~soketi_impl.service.Pusher` does so.
"""

from __future__ import annotations

from ..config import Config
from .base import AppManager, ArrayAppManager, Found
from .managed import AppSource, ManagedAppManager

__all__ = ["AppManager", "AppSource", "ArrayAppManager", "Found", "ManagedAppManager", "app_manager_for"]


def app_manager_for(config: Config) -> AppManager:
    """The app manager ``config.app_manager_driver`` names."""
    if config.app_manager_driver == "postgres":
        from .sql import PostgresSource

        return ManagedAppManager(config, PostgresSource(config))
    if config.app_manager_driver == "mysql":
        from .sql import MysqlSource

        return ManagedAppManager(config, MysqlSource(config))
    return ArrayAppManager(config)
