"""The metrics port: ``/metrics`` (Prometheus), and soketi's ``/``, ``/ready`` and ``/usage``.

soketi always listens on its metrics port (``SOKETI_METRICS_SERVER_PORT``, 9601) and
answers ``/``, ``/ready`` and ``/usage`` there, whether or not metrics are enabled, so
orchestrators probe it; ``/metrics`` is served only with ``SOKETI_METRICS_ENABLED``.
``/ready`` answers 503 once shutdown began (the same answers as the main port's health
endpoints, :mod:`soketi_impl.http.health`).

It uses ``aiohttp.web``: aiohttp is already a dependency for the webhook client, it
gets keep-alive, HEAD and malformed requests right, and a probe or scrape every few
seconds is far from needing the hand-rolled httptools path of the main port.
"""

from __future__ import annotations

import os
import resource
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from .http.health import health_response

if TYPE_CHECKING:
    from .metrics import MetricsRegistry

__all__ = ["MetricsServer", "memory_usage"]

# Only these of the health paths: soketi's metrics server has no /accept-traffic.
_HEALTH = frozenset({"/", "/ready"})


def _proc_kib(path: str, keys: tuple[str, ...]) -> dict[str, int]:
    """Fields of a ``/proc`` ``Key:   123 kB`` file, in bytes."""
    out: dict[str, int] = {}
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in keys:
                    out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def memory_usage() -> dict[str, dict[str, float]]:
    """The body of ``GET /usage``.

    soketi answers ``{"memory": {"free", "used", "total", "percent"}}`` (process
    usage against the memory available); Node's ``process.memoryUsage()`` names
    are given too, mapped onto what Linux tells of this process: ``rss`` VmRSS,
    ``heapTotal`` VmData (the data segment, where Python's heap lives),
    ``heapUsed`` RssAnon (anonymous memory actually resident), ``external``
    RssFile + RssShmem, and ``percentage`` = rss / total * 100. ``total`` is
    MemTotal. Without ``/proc`` the figures fall back to ``getrusage``.
    """
    status = _proc_kib("/proc/self/status", ("VmRSS", "VmData", "RssAnon", "RssFile", "RssShmem"))
    meminfo = _proc_kib("/proc/meminfo", ("MemTotal",))
    rss = status.get("VmRSS")
    if rss is None:
        # ru_maxrss is the peak, in KiB on Linux and bytes on macOS: the best there is
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss = peak if os.uname().sysname == "Darwin" else peak * 1024
    total = meminfo.get("MemTotal")
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            total = 0
    percent = rss * 100.0 / total if total else 0.0
    return {
        "memory": {
            "free": max(0, total - rss),
            "used": rss,
            "total": total,
            "percent": percent,
            "rss": rss,
            "heapTotal": status.get("VmData", rss),
            "heapUsed": status.get("RssAnon", rss),
            "external": status.get("RssFile", 0) + status.get("RssShmem", 0),
            "percentage": percent,
        }
    }


class MetricsServer:
    """The metrics port: ``GET /``, ``/ready``, ``/usage`` (JSON, like soketi's) and,
    given a registry, ``/metrics`` (Prometheus text); anything else is a 404.

    ``ready`` tells whether the server still accepts connections: ``/ready`` answers
    503 once it returns False (during shutdown). Example::

        server = MetricsServer(metrics, ready=lambda: pusher.accepting)
        await server.start(cfg.metrics_host, cfg.metrics_port)   # 0 picks a free port
        print(server.port)
        ...
        await server.close()
    """

    def __init__(
        self,
        registry: MetricsRegistry | None,
        *,
        ready: Callable[[], bool] | None = None,
        extend: Callable[[web.Application], None] | None = None,
    ) -> None:
        self.registry = registry
        self._ready = ready
        #: called with the application at each start, to add routes of its own
        #: (the dashboard, :mod:`soketi_impl.dashboard`); they take precedence over
        #: the catch-all 404
        self._extend = extend
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port actually bound (useful after ``start(host, 0)``)."""
        if self._port is None:
            raise RuntimeError("MetricsServer is not started")
        return self._port

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port``; raises ``OSError`` if the port cannot be bound."""
        if self._runner is not None:
            raise RuntimeError("MetricsServer is already started")
        app = web.Application()
        if self._extend is not None:
            self._extend(app)
        # one handler for every method and path, so that the answer to anything
        # else is a plain 404 (not aiohttp's 405)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Our own listening socket: its bound port is known without reaching into the
        # site, and a port that cannot be bound fails here, before aiohttp is set up.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=128)
        sock.setblocking(False)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        try:
            await runner.setup()
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        self._runner = runner
        self._port = int(sock.getsockname()[1])

    async def close(self) -> None:
        """Stop listening and close open connections."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method in ("GET", "HEAD"):
            path = request.path
            if path == "/metrics" and self.registry is not None:
                return web.Response(
                    body=await self.registry.render_all(),
                    headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4},
                )
            if path == "/usage":
                return web.Response(
                    body=orjson.dumps(memory_usage()),
                    headers={"Content-Type": "application/json"},
                )
            if path in _HEALTH:
                ready = self._ready() if self._ready is not None else True
                answer = health_response(path, ready)
                if answer is not None:
                    return web.Response(
                        status=answer.status,
                        body=answer.body,
                        headers={"Content-Type": answer.content_type},
                    )
        return web.Response(status=404, text="Not Found")
