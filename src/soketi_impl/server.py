"""The server: one port for WebSocket and HTTP, the Pusher protocol, webhooks, metrics.

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
from typing import Any

from .config import Config
from .errors import SoketiError
from .pusher.adapter import Adapter, LocalAdapter
from .pusher.server import PusherServer, new_socket_id
from .router import Router
from .transports.frontdoor import (
    FrontDoor,
    FrontDoorOptions,
    HttpRequest,
    HttpResponse,
    health_handler,
)

__all__ = ["Server", "run"]

log = logging.getLogger("soketi_impl.server")


def _http_api_factory(pusher: PusherServer, config: Config) -> Any:
    """The REST API handler, when the module that provides it is there; else health only."""
    try:
        from .pusher.http_api import HttpApi
    except ImportError:
        return health_handler
    return HttpApi(pusher, config).handle


def _adapter_for(config: Config) -> Adapter:
    """The adapter ``config.adapter_driver`` names: one node (local) or several through Redis."""
    if config.adapter_driver == "redis":
        from .pusher.redis_adapter import RedisAdapter

        return RedisAdapter(config)
    return LocalAdapter()


class Server:
    """A listening Pusher server: :meth:`start`, :meth:`stop`, and ``pusher`` for the in-process API."""

    def __init__(self, config: Config, *, router: Router | None = None, adapter: Adapter | None = None) -> None:
        self.config = config
        self.webhooks: Any = None
        if any(app.webhooks for app in config.apps):
            from .webhooks import WebhookSender

            self.webhooks = WebhookSender(
                batching=config.webhooks_batching, batching_ms=config.webhooks_batching_duration_ms
            )
        self.pusher = PusherServer(
            config, router, webhooks=self.webhooks,
            adapter=adapter if adapter is not None else _adapter_for(config),
        )
        self.router = self.pusher.router
        self.http_handler = _http_api_factory(self.pusher, config)
        self.options = FrontDoorOptions(
            max_body=int(config.http_max_request_size_kb * 1024),
            max_frame_size=int(config.max_message_size_kb * 1024) + 1024,
        )
        self._server: asyncio.base_events.Server | None = None
        self._metrics: Any = None
        self.stopped = asyncio.Event()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Connect the adapter (Redis), start webhooks, metrics and the listening socket.

        Raises :class:`~soketi_impl.errors.SoketiError` when the adapter cannot connect.
        """
        loop = asyncio.get_running_loop()
        await self.pusher.adapter.start()
        if self.webhooks is not None:
            await self.webhooks.start()
        if self.config.metrics_enabled:
            from .metrics import MetricsRegistry, MetricsServer

            registry = MetricsRegistry(self.config.metrics_prefix, str(self.config.port))
            for app in self.pusher.apps.values():
                registry.add_app(app.config.id, app.stats)
            if self.webhooks is not None:
                registry.set_webhook_source(self.webhooks)
            self._metrics = MetricsServer(registry)
            await self._metrics.start(self.config.metrics_host, self.config.metrics_port)
        handle_http = self._handle_http  # one bound method for every connection
        self._server = await loop.create_server(
            lambda: FrontDoor(self.router, handle_http, self.options, new_socket_id),
            self.config.host, self.config.port, reuse_address=True, backlog=4096,
        )

    def _handle_http(self, request: HttpRequest) -> Any:
        if not self.pusher.accepting and request.path in ("/ready", "/accept-traffic"):
            return HttpResponse(503, b"Shutting down", "text/plain")
        return self.http_handler(request)

    async def stop(self, grace_ms: int | None = None) -> None:
        """Stop accepting, close every connection with 4200 over the grace period, flush webhooks."""
        grace = self.config.shutdown_grace_period_ms if grace_ms is None else grace_ms
        if self._server is not None:
            self._server.close()
        await self.pusher.shutdown(grace)
        await self.pusher.adapter.close()
        if self.webhooks is not None:
            await self.webhooks.close(max(0.1, grace / 1000))
        if self._metrics is not None:
            await self._metrics.close()
        self.stopped.set()


async def _serve(config: Config) -> int:
    server = Server(config)
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.host, config.port, exc)
        await server.pusher.adapter.close()
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
