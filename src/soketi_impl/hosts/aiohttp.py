"""The aiohttp host: the Pusher routes and lifecycle added to an ``aiohttp.web.Application``.

Routes (under ``config.path_prefix``): ``GET /app/{key}`` (WebSocket),
``/apps/...`` and ``/users/{id}/terminate_connections`` (the HTTP API, any method,
so CORS preflights are answered too), ``/ready`` and ``/accept-traffic``. The root
``/`` stays the application's. Signals: ``on_startup`` starts the Pusher,
``on_shutdown`` closes every Pusher connection with 4200 (aiohttp runs it before it
cancels open handlers), ``on_cleanup`` makes sure the Pusher is stopped.
"""

from __future__ import annotations

import inspect
import logging

import orjson
from aiohttp import WSMsgType, web

from ..http.types import HttpRequest, HttpResponse
from ..service import Pusher
from .link import Link, wait_closed

__all__ = ["PUSHER_KEY", "AiohttpHost"]

log = logging.getLogger("soketi_impl.aiohttp")

#: ``app[PUSHER_KEY]`` is the Pusher that :func:`soketi_impl.aiohttp.setup` added.
PUSHER_KEY: web.AppKey[Pusher] = web.AppKey("soketi_impl.pusher", Pusher)

_READ_CHUNK = 64 * 1024


def _error(status: int, message: str) -> HttpResponse:
    return HttpResponse(status, orjson.dumps({"error": message}))


class AiohttpHost:
    """The handlers and signal hooks that serve one :class:`Pusher` in an aiohttp app."""

    def __init__(self, pusher: Pusher) -> None:
        self.pusher = pusher
        self.router = pusher.router
        config = pusher.config
        self.prefix = config.path_prefix.rstrip("/")
        self.max_body = int(config.http_max_request_size_kb * 1024)
        # the same frame allowance as the picows host
        self.max_message = int(config.max_message_size_kb * 1024) + 1024
        self.links: set[Link] = set()
        self._stopped = False

    def add_to(self, app: web.Application) -> None:
        """Add the routes and the startup, shutdown and cleanup hooks to ``app``."""
        p = self.prefix
        app.router.add_get(p + "/app/{key}", self.websocket)
        app.router.add_route("*", p + "/apps/{tail:.*}", self.http)
        app.router.add_route("*", p + "/users/{user}/terminate_connections", self.http)
        for health in ("/ready", "/accept-traffic"):
            app.router.add_route("*", p + health, self.http)
        if p:
            app.router.add_route("*", p + "/", self.http)
        app.on_startup.append(self.on_startup)
        app.on_shutdown.append(self.on_shutdown)
        app.on_cleanup.append(self.on_cleanup)
        app[PUSHER_KEY] = self.pusher

    # ------------------------------------------------------------------ lifecycle

    async def on_startup(self, app: web.Application) -> None:
        """Start the Pusher (adapter, webhooks, metrics)."""
        self._stopped = False
        await self.pusher.start()

    async def on_shutdown(self, app: web.Application) -> None:
        """Close every connection with 4200 over the grace period, flush webhooks."""
        if self._stopped:
            return
        self._stopped = True
        await self.pusher.stop()
        await wait_closed(self.links, 2.0)

    async def on_cleanup(self, app: web.Application) -> None:
        """Stop the Pusher if ``on_shutdown`` did not run."""
        await self.on_shutdown(app)

    # ------------------------------------------------------------------ HTTP

    async def http(self, request: web.Request) -> web.StreamResponse:
        """One HTTP API or health request."""
        req = HttpRequest(
            method=request.method,
            # the whole path: the API strips config.path_prefix itself
            path=request.raw_path.partition("?")[0],
            query=request.query_string,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=b"",
            keep_alive=request.keep_alive,
        )
        response = self.pusher.check_http_head(req)
        if response is None:
            length = request.content_length
            if length is not None and length > self.max_body:
                response = _error(413, f"Request body over {self.max_body} bytes.")
            else:
                body = await self._read_body(request)
                if body is None:
                    response = _error(413, f"Request body over {self.max_body} bytes.")
                else:
                    req.body = body
                    response = await self._answer(req)
        headers = {k: v for k, v in response.headers}
        if response.status != 204:
            headers["Content-Type"] = response.content_type
        resp = web.Response(status=response.status, body=response.body or None, headers=headers)
        if response.status == 413:
            resp.force_close()  # the rest of the body was not read
        return resp

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The body, or None past the limit (not read further)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await request.content.read(_READ_CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)

    async def _answer(self, request: HttpRequest) -> HttpResponse:
        try:
            result = self.pusher.handle_http(request)
            if inspect.isawaitable(result):
                result = await result
        except Exception:
            log.exception("HTTP handler failed on %s %s", request.method, request.path)
            return _error(500, "Internal server error")
        assert isinstance(result, HttpResponse)
        return result

    # ------------------------------------------------------------------ WebSocket

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """One Pusher connection, from the upgrade to the end of the socket."""
        # compress=False: as on the picows host, no per-message deflate (its CPU cost per
        # message and per connection buys little for small JSON events).
        ws = web.WebSocketResponse(max_msg_size=self.max_message, autoping=True, compress=False)
        await ws.prepare(request)
        transport = request.transport

        async def send_close(code: int, reason: str) -> None:
            await ws.close(code=code, message=reason.encode())

        def abort() -> None:
            if transport is not None:
                transport.abort()

        link = Link(self.router, request.path_qs, ws.send_str, send_close, abort)
        self.links.add(link)
        try:
            link.open()
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    link.receive(message.data)
                elif message.type == WSMsgType.BINARY:
                    link.receive_binary(message.data)
                elif message.type == WSMsgType.ERROR:
                    log.debug("socket %s: %r", link.conn.id, ws.exception())
                    break
        finally:
            self.links.discard(link)
            code = ws.close_code
            link.finish(code if code is not None else 1006, None)
        return ws
