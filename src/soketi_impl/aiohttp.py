"""Pusher inside an aiohttp application: ``setup(app)``.

::

    from aiohttp import web
    import soketi_impl.aiohttp

    app = web.Application()
    pusher = soketi_impl.aiohttp.setup(app)   # soketi's variables, as `soketi-impl start`
    web.run_app(app, port=6001)

:func:`setup` adds ``GET {path_prefix}/app/{key}`` (the WebSocket endpoint), the
HTTP API (``/apps/...``, ``/users/{id}/terminate_connections``), ``/ready`` and
``/accept-traffic``, and hooks the Pusher's lifecycle to the app's: started on
startup, every connection closed with 4200 on shutdown. The rest of the app's
routes are yours (``/`` included). Trigger from a handler with the returned Pusher,
or ``request.app[PUSHER_KEY]``: ``await pusher.trigger(app_id, "news", "update", data)``.
"""

from __future__ import annotations

from aiohttp import web

from .config import Config
from .hosts.aiohttp import PUSHER_KEY, AiohttpHost
from .service import Pusher

__all__ = ["PUSHER_KEY", "setup"]


def setup(
    app: web.Application, pusher: Pusher | None = None, *, config: Config | None = None
) -> Pusher:
    """Serve a Pusher from ``app``: its routes and lifecycle hooks; returns the Pusher.

    With neither ``pusher`` nor ``config``, soketi's environment variables and config
    file are read exactly as ``soketi-impl start`` reads them.
    """
    if pusher is None:
        pusher = Pusher(config)
    elif config is not None:
        raise TypeError("pass config= or pusher=, not both")
    AiohttpHost(pusher).add_to(app)
    return pusher
