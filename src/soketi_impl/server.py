"""The server: one port for WebSocket and HTTP (the native host), around a :class:`Pusher`.

Embed it::

    server = Server(load_config())
    await server.start()
    await server.pusher.trigger("app-id", ["news"], "update", {"a": 1})
    await server.stop()

or run it from the command line: ``soketi-impl start`` (see :func:`run`).

With ``SOKETI_SSL_CERT`` and ``SOKETI_SSL_KEY`` the port speaks TLS: ``wss://`` for
the WebSocket and ``https://`` for the HTTP API (:mod:`soketi_impl.config.tls`).
The front door reads the request head over uvloop's TLS transport and hands an
upgrade to its WebSocket layer (``twins/_ws``) with ``transport.set_protocol``, which
that transport supports; the layer only reads and writes through the transport.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
import sys
from typing import TYPE_CHECKING

from .adapters.base import Adapter
from .adapters.local_ipc.wire import control
from .config import Config, server_ssl_context
from .errors import SoketiError
from .hosts.picows import FrontDoor, FrontDoorOptions
from .pusher.server import new_socket_id
from .router import Router
from .service import Pusher

if TYPE_CHECKING:
    from .adapters.local_ipc import HubLink
    from .workers import WorkerRole

__all__ = ["Server", "run"]

log = logging.getLogger("soketi_impl.server")

#: what :func:`_until_signal` returns when a worker's hub connection ended (no signal)
HUB_LOST = "hub lost"


class Server:
    """A listening Pusher server: :meth:`start`, :meth:`stop`, and ``pusher`` for the in-process API.

    Pass a :class:`~soketi_impl.config.Config` or a ready :class:`Pusher` (``pusher=``).
    TLS comes from the config's ``ssl_*`` settings, or from ``ssl_context``; a bad
    certificate or key raises :class:`~soketi_impl.errors.ConfigError` here.
    ``reuse_port`` binds with ``SO_REUSEPORT``, so that several processes share the
    port (the workers of ``soketi-impl start --workers N``, :mod:`soketi_impl.workers`).
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        router: Router | None = None,
        adapter: Adapter | None = None,
        pusher: Pusher | None = None,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
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
        self.ssl_context = ssl_context if ssl_context is not None else server_ssl_context(self.config)
        self._server: asyncio.base_events.Server | None = None
        #: listeners beyond the configured port (:meth:`listen_also`)
        self._others: list[asyncio.base_events.Server] = []
        #: bind with ``SO_REUSEPORT``: several processes share the port (``--workers``)
        self.reuse_port = reuse_port
        self.stopped = asyncio.Event()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def scheme(self) -> str:
        """``wss`` with TLS, else ``ws`` (the HTTP API is then ``https`` or ``http``)."""
        return "wss" if self.ssl_context is not None else "ws"

    async def start(self) -> None:
        """Start the :class:`Pusher` (adapter, webhooks, metrics), then the listening socket.

        Raises :class:`~soketi_impl.errors.SoketiError` when the adapter cannot connect.
        """
        await self.service.start()
        self._server = await self._listen(self.config.port, self.reuse_port)

    async def _listen(self, port: int, reuse_port: bool) -> asyncio.base_events.Server:
        router, options = self.router, self.options
        handle_http, check_head = self.service.http_entry_points()
        options.express = self.service.http_express()
        return await asyncio.get_running_loop().create_server(
            lambda: FrontDoor(router, handle_http, options, new_socket_id, check_head),
            self.config.host, port, reuse_address=True, reuse_port=reuse_port or None, backlog=4096,
            ssl=self.ssl_context,
            # a client that never finishes the TLS handshake gets no longer than one
            # that never sends its request head
            ssl_handshake_timeout=self.options.head_timeout if self.ssl_context else None,
        )

    async def listen_also(self, port: int) -> None:
        """Serve on ``port`` too (after :meth:`start`): the ``--workers`` tests give each
        worker a port of its own besides the shared one (see :mod:`soketi_impl.workers`)."""
        self._others.append(await self._listen(port, False))

    async def stop(self, grace_ms: int | None = None) -> None:
        """Stop accepting, close every connection with 4200 over the grace period, flush webhooks."""
        for other in self._others:
            other.close()
        if self._server is not None:
            self._server.close()
        await self.service.stop(grace_ms)
        self.stopped.set()


def _metrics_line(server: Server) -> str:
    cfg = server.config
    metrics = server.service.metrics_server
    if metrics is None:
        return "metrics port: not served (see the warning above)"
    paths = "/, /ready, /usage" + (", /metrics" if cfg.metrics_enabled else "")
    if server.service.dashboard is not None:
        paths += ", /dashboard"
    note = "" if cfg.metrics_enabled else " (/metrics off: SOKETI_METRICS_ENABLED=false)"
    return f"metrics server on http://{cfg.metrics_host}:{metrics.port} ({paths}){note}"


async def _until_signal(stopping: asyncio.Event | None = None) -> str:
    """Wait for SIGINT, SIGTERM or SIGHUP (soketi stops gracefully on SIGHUP too: a
    closed terminal, some supervisors), or for ``stopping``; returns the signal's name
    (:data:`HUB_LOST` when ``stopping`` was set without a signal)."""
    loop = asyncio.get_running_loop()
    if stopping is None:
        stopping = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal, sig)
    await stopping.wait()
    return received[0] if received else HUB_LOST


async def _serve_worker(config: Config) -> int:
    """``SOKETI_MODE=worker``: only the webhook queue, and the metrics port (no listener)."""
    from .metrics_server import MetricsServer
    from .webhooks.worker import QueueWorker

    if config.queue_driver != "redis":  # the command line refuses this before (cli.check_mode)
        log.error("SOKETI_MODE=worker needs SOKETI_QUEUE_DRIVER=redis: there is no queue to process")
        return 2
    worker = QueueWorker(config)
    registry = None
    if config.metrics_enabled:
        from .metrics import MetricsRegistry

        registry = MetricsRegistry(config.metrics_prefix, str(config.metrics_port))
        registry.set_webhook_source(worker)
    stopping = False
    metrics = MetricsServer(registry, ready=lambda: not stopping)
    try:
        await worker.start()
    except SoketiError as exc:
        log.error("%s", exc.message)
        return 1
    where = f"http://{config.metrics_host}:{config.metrics_port} (/, /ready, /usage"
    try:
        await metrics.start(config.metrics_host, config.metrics_port)
        where = f"http://{config.metrics_host}:{metrics.port} (/, /ready, /usage" + (
            ", /metrics)" if registry is not None else ")"
        )
    except OSError as exc:
        if registry is not None:
            log.error("cannot listen on the metrics port %s:%s: %s",
                      config.metrics_host, config.metrics_port, exc)
            await worker.close(0)
            return 1
        log.warning("cannot listen on the metrics port %s:%s: %s; /ready and /usage are not "
                    "served there", config.metrics_host, config.metrics_port, exc)
        where = "none"
    log.info(
        "soketi-impl worker %s: processing the webhook queue in Redis at %s (concurrency %d); "
        "metrics server: %s", worker.worker_id, worker.address, worker.concurrency, where,
    )
    name = await _until_signal()
    log.info("%s: stopping the worker (its jobs in flight go back to the queue)", name)
    stopping = True
    await worker.close(config.shutdown_grace_period_ms / 1000)
    await metrics.close()
    log.info("stopped")
    return 0


def _tune_gc() -> None:
    """Fewer, cheaper garbage collections for a long-running server: what was loaded at
    start is frozen out of every later collection, and the youngest generation is
    collected after 10,000 allocations instead of 700. A fan-out allocates little but
    often, so Python's defaults put a collection inside many broadcasts (the p99 of
    one publish to 1000 subscribers at 20/s: bench/README.md). Only for the
    ``soketi-impl`` process: an application that embeds the library keeps its own."""
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(10_000, second, third)


async def _serve(config: Config, role: WorkerRole | None = None) -> int:
    if config.mode == "worker":
        return await _serve_worker(config)
    from . import memdebug

    memdebug.install(asyncio.get_running_loop())  # SOKETI_IMPL_MEMDEBUG only
    _tune_gc()
    hub_lost = asyncio.Event()
    link: HubLink | None = None
    adapter: Adapter | None = None
    if role is not None:
        from .adapters.local_ipc import HubAdapter, HubLink

        def lost() -> None:
            log.error("worker %d: the connection to the supervisor's hub was lost: stopping", role.index)
            hub_lost.set()

        if config.adapter_driver == "local":
            adapter = HubAdapter(role.hub_path, role.index, on_lost=lost)
            link = adapter.link
        else:  # a node of Redis or NATS: the hub only watches over this worker
            link = HubLink(role.hub_path, role.index, on_lost=lost)
    server = Server(config, adapter=adapter, reuse_port=role is not None)
    # soketi always listens on its metrics port: probes expect /ready there. With
    # workers only worker 0 does; its /metrics asks the others for their counters.
    server.service.serve_metrics_port = role is None or role.index == 0
    metrics = server.service.metrics
    if link is not None and metrics is not None:
        link.stats_source = metrics.values
        if role is not None and role.index == 0:
            metrics.others = link.gather_stats
    try:
        if link is not None:
            await link.connect()
        await server.start()
        if role is not None and role.own_port is not None:
            await server.listen_also(role.own_port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.host, config.port, exc)
        await server.service.stop(0)
        return 1
    except SoketiError as exc:  # e.g. Redis unreachable, metrics port taken
        log.error("%s", exc.message)
        await server.service.stop(0)
        return 1
    from ._version import __version__
    from .twins import _speedups

    if _speedups.using_extensions():
        twins = "compiled twins"
    elif _speedups.NO_EXTENSIONS:
        twins = "pure-Python twins (SOKETI_IMPL_NO_EXTENSIONS is set)"
    else:
        twins = "pure-Python twins"
        # An install from the sdist on a machine without a C compiler lands here.
        log.warning(
            "the compiled extensions are missing (%s): running on the pure-Python twins "
            "(slower); install a wheel, or reinstall where a C compiler is found",
            "; ".join(f"{area}: {why}" for area, why in sorted(_speedups.FAILED.items())),
        )
    who = "soketi-impl" if role is None else f"soketi-impl worker {role.index}"
    if role is None or role.index == 0:
        log.info("soketi-impl %s, %s; %s", __version__, twins, _metrics_line(server))
    apps = server.service.app_manager.describe()
    http = "https" if server.ssl_context is not None else "http"
    log.info(
        "%s listening on %s://%s:%d/app/{key} and %s://%s:%d (apps: %s)",
        who, server.scheme, config.host, server.port, http, config.host, server.port, apps,
    )
    if link is not None:
        link.send(control({"t": "ready"}))
    name = await _until_signal(hub_lost)
    log.info(
        "%s: shutting down, closing connections over %d ms", name, config.shutdown_grace_period_ms
    )
    await server.stop()
    if link is not None and adapter is None:
        await link.close()
    log.info("stopped")
    return 1 if name == HUB_LOST else 0


def run(config: Config, role: WorkerRole | None = None) -> int:
    """Serve until SIGTERM, SIGINT or SIGHUP, on uvloop; returns the exit code (0 after a
    clean stop, 1 when a port cannot be bound or the adapter cannot connect).

    ``role``: this process is a worker of ``soketi-impl start --workers N``
    (:mod:`soketi_impl.workers`): it shares the port, uses the supervisor's hub and
    stops (exit 1) if the hub connection is lost."""
    if role is not None:
        from .workers import die_with_parent

        die_with_parent(role.supervisor_pid)
    if sys.platform != "win32":
        import uvloop

        return uvloop.run(_serve(config, role))
    return asyncio.run(_serve(config, role))
