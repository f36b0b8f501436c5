"""Pusher as an ASGI application: ``create_app()``.

Serve it with any ASGI server; with soketi's variables (``SOKETI_DEFAULT_APP_KEY``,
``SOKETI_WEBHOOKS`` ...) read as ``soketi-impl start`` reads them::

    uvicorn --factory soketi_impl.asgi:create_app --host 0.0.0.0 --port 6001

It serves ``{path_prefix}/app/{key}`` WebSockets and the whole HTTP API (events,
channels, users, health), and handles the lifespan: startup starts the webhook
sender and the adapter, shutdown closes every connection with 4200.

Mounted inside Starlette or FastAPI, paths are relative to the mount and the parent
app owns the lifespan, so give it the Pusher's::

    pusher_app = create_app()
    app = Starlette(routes=[Mount("/pusher", pusher_app)], lifespan=pusher_app.lifespan)

Clients then connect to ``ws://host/pusher/app/KEY`` (pusher-js: ``wsPath: "/pusher"``).
The app's in-process API is ``pusher_app.pusher`` (``await pusher_app.pusher.trigger(...)``).
uvicorn and Starlette are not dependencies of this library. uvicorn negotiates
per-message deflate when a client offers it; ``--ws-per-message-deflate false`` keeps
frames uncompressed, as the picows server sends them.
"""

from __future__ import annotations

from .config import Config
from .hosts.asgi import PusherASGI
from .service import Pusher

__all__ = ["PusherASGI", "create_app"]


def create_app(
    config: Config | None = None, *, pusher: Pusher | None = None, handle_signals: bool = True
) -> PusherASGI:
    """An ASGI 3 application serving one Pusher; ``app.pusher`` is that Pusher.

    ``config=None`` reads soketi's environment variables and config file exactly as
    ``soketi-impl start`` does; pass ``pusher=`` to serve a Pusher you built.
    ``handle_signals``: see :mod:`soketi_impl.hosts.asgi` (close with 4200 on SIGTERM
    before uvicorn closes WebSockets with 1012).
    """
    if pusher is None:
        pusher = Pusher(config)
    elif config is not None:
        raise TypeError("pass config= or pusher=, not both")
    return PusherASGI(pusher, handle_signals=handle_signals)
