"""soketi-impl: a Pusher Channels compatible server and library.

Everything an application needs is importable from here. The other documented
modules are :mod:`soketi_impl.asgi` (an ASGI app), :mod:`soketi_impl.aiohttp` (routes
for an aiohttp application), :mod:`soketi_impl.hooks`, :mod:`soketi_impl.encryption`
and :mod:`soketi_impl.config`. Modules and names with a leading underscore, and the
packages ``twins``, ``pusher``, ``adapters``, ``hosts`` and ``http``, are internals.

A whole server, with a hook and an in-process trigger::

    from soketi_impl import HookEvent, Pusher, Server, load_config

    pusher = Pusher(load_config())          # soketi's variables and config file

    @pusher.on_subscribed
    async def joined(ev: HookEvent) -> None:
        print(ev.socket_id, "joined", ev.channel)

    server = Server(pusher=pusher)          # the native host
    await server.start()
    await pusher.trigger("app-id", "news", "update", {"a": 1})

An app's auth endpoint answers pusher-js with :func:`authorize_channel` (private,
presence and encrypted channels) and :func:`authenticate_user` (sign-in).

The seed API works with any WebSocket framework::

    from soketi_impl import Connection, Connections, Router

    conns = Connections()

    @Router.on_new_connection
    async def hello(conn):
        await conns.new_connection(conn)
        await conn.send("Hello!")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .config import AppConfig, Config, load_config
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
from .hooks import HookEvent, Hooks
from .pusher.events import Observer
from .router import HandlerProtocol, Router, default_router
from .service import Pusher
from .signing import authenticate_user, authorize_channel
from .twins._speedups import using_extensions

if TYPE_CHECKING:
    from .server import Server


__all__ = [
    "AppConfig",
    "AuthError",
    "ClientEventError",
    "Config",
    "ConfigError",
    "Connection",
    "ConnectionRefused",
    "Connections",
    "DuplicateConnection",
    "HandlerProtocol",
    "HookEvent",
    "Hooks",
    "Observer",
    "ProtocolError",
    "Pusher",
    "Router",
    "Server",
    "SoketiError",
    "UnknownProtocol",
    "__version__",
    "authenticate_user",
    "authorize_channel",
    "default_router",
    "load_config",
    "using_extensions",
]


def __getattr__(name: str) -> Any:
    # Server brings in the front door and its WebSocket layer; an app served by ASGI or
    # aiohttp never needs to load them.
    if name == "Server":
        from .server import Server

        globals()["Server"] = Server
        return Server
    raise AttributeError(f"module 'soketi_impl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"Server"})
