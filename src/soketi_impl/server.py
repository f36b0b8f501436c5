"""The server: one port for WebSocket and HTTP (the picows host), around a :class:`Pusher`.

Embed it::

    server = Server(load_config())
    await server.start()
    await server.pusher.trigger("app-id", ["news"], "update", {"a": 1})
    await server.stop()

or run it from the command line: ``soketi-impl start`` (see :func:`run`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from .adapters.base import Adapter
from .config import Config
from .errors import SoketiError
from .hosts.picows import FrontDoor, FrontDoorOptions
from .pusher.server import new_socket_id
from .router import Router
from .service import Pusher

__all__ = ["Server", "run"]

log = logging.getLogger("soketi_impl.server")


class Server:
    """A listening Pusher server: :meth:`start`, :meth:`stop`, and ``pusher`` for the in-process API.

    Pass a :class:`~soketi_impl.config.Config` or a ready :class:`Pusher` (``pusher=``).
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        router: Router | None = None,
        adapter: Adapter | None = None,
        pusher: Pusher | None = None,
    ) -> None:
        self.service = pusher if pusher is not None else Pusher(config, router=router, adapter=adapter)
        self.config = self.service.config
        self.pusher = self.service.core
        self.webhooks = self.service.webhooks
        self.router = self.service.router
        self.options = FrontDoorOptions(
            max_body=int(self.config.http_max_request_size_kb * 1024),
            max_frame_size=int(self.config.max_message_size_kb * 1024) + 1024,
        )
        self._server: asyncio.base_events.Server | None = None
        self.stopped = asyncio.Event()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Start the :class:`Pusher` (adapter, webhooks, metrics), then the listening socket.

        Raises :class:`~soketi_impl.errors.SoketiError` when the adapter cannot connect.
        """
        loop = asyncio.get_running_loop()
        await self.service.start()
        router, handle_http, options = self.router, self.service.handle_http, self.options
        self._server = await loop.create_server(
            lambda: FrontDoor(router, handle_http, options, new_socket_id),
            self.config.host, self.config.port, reuse_address=True, backlog=4096,
        )

    async def stop(self, grace_ms: int | None = None) -> None:
        """Stop accepting, close every connection with 4200 over the grace period, flush webhooks."""
        if self._server is not None:
            self._server.close()
        await self.service.stop(grace_ms)
        self.stopped.set()


async def _serve(config: Config) -> int:
    server = Server(config)
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.host, config.port, exc)
        await server.service.stop(0)
        return 1
    except SoketiError as exc:  # e.g. Redis unreachable
        log.error("%s", exc.message)
        return 1
    apps = ", ".join(f"{a.id} (key {a.key})" for a in config.apps) or "none"
    log.info(
        "soketi-impl listening on ws://%s:%d/app/{key} and http://%s:%d (apps: %s)",
        config.host, server.port, config.host, server.port, apps,
    )
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("shutting down: closing connections over %d ms", config.shutdown_grace_period_ms)
    await server.stop()
    log.info("stopped")
    return 0


def run(config: Config) -> int:
    """Serve until SIGTERM or SIGINT, on uvloop; returns the exit code (0 after a clean stop)."""
    if not config.debug:
        # picows logs every accepted connection at INFO, and every client's protocol
        # error at ERROR: a misbehaving client could flood the log. Our own debug lines
        # say what happened to a connection.
        logging.getLogger("soketi_impl.picows").setLevel(logging.CRITICAL)
    if sys.platform != "win32":
        import uvloop

        return uvloop.run(_serve(config))
    return asyncio.run(_serve(config))
