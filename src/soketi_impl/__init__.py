"""soketi-impl: a Pusher Channels compatible server and library.

The seed API works with any WebSocket framework::

    from soketi_impl import Connection, Connections, Router

    conns = Connections()

    @Router.on_new_connection
    async def hello(conn):
        await conns.new_connection(conn)
        await conn.send("Hello!")
"""

from __future__ import annotations

from .connection import Connection
from .connections import Connections
from .errors import (
    AuthError,
    ClientEventError,
    ConfigError,
    ConnectionRefused,
    DuplicateConnection,
    ProtocolError,
    SoketiError,
    UnknownProtocol,
)
from .router import HandlerProtocol, Router, default_router
from .twins._speedups import using_extensions

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "ClientEventError",
    "ConfigError",
    "Connection",
    "ConnectionRefused",
    "Connections",
    "DuplicateConnection",
    "HandlerProtocol",
    "ProtocolError",
    "Router",
    "SoketiError",
    "UnknownProtocol",
    "__version__",
    "default_router",
    "using_extensions",
]
