"""The ASGI host: an ASGI 3 application around a :class:`~soketi_impl.service.Pusher`.

- ``websocket`` scopes are Pusher connections: each becomes a
  :class:`~soketi_impl.hosts.link.Link`, fed until the client or the server ends it;
  the core decides the app key from the path (``{path_prefix}/app/{key}``), exactly
  as on the picows host.
- ``http`` scopes go to ``pusher.handle_http``: the REST API and the health
  endpoints. ``pusher.check_http_head`` answers first when it can, so a refused
  request is never read; a body over ``http_max_request_size_kb`` is answered 413.
- ``lifespan``: startup starts the Pusher, shutdown stops it (every connection is
  closed with 4200). Mounted inside another app, use :meth:`PusherASGI.lifespan`
  in the parent's lifespan.

Paths are taken relative to the mount point (``root_path``), so the same app works
at the top level and mounted under a prefix. HTTP API signatures are checked over
that relative path (``/apps/{id}/events``), as a client of an unmounted server signs.

Under uvicorn, SIGTERM and SIGINT make uvicorn close every WebSocket with 1012
before the lifespan shutdown runs. So, when the Pusher starts in a process whose
signal handlers are Python functions (uvicorn's are), the app wraps them: the first
signal closes every Pusher connection with 4200 over the grace period and then
hands the signal on. ``handle_signals=False`` turns this off.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from types import FrameType
from typing import Any

import orjson

from ..http.types import HttpRequest, HttpResponse
from ..service import Pusher
from .link import Link, wait_closed

__all__ = ["PusherASGI"]

log = logging.getLogger("soketi_impl.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: what :meth:`PusherASGI._read_body` returns for a body over the limit (not read further)
_TOO_BIG = b"<too big>"


def route_path(scope: Scope) -> str:
    """The request path below the mount point, not percent-decoded when the server says how."""
    root = scope.get("root_path", "") or ""
    raw = scope.get("raw_path")
    path: str = raw.decode("utf-8", "replace") if raw else scope.get("path", "/")
    if root and not _under(path, root):
        # raw_path is percent-encoded and root_path is not: use the decoded path
        path = scope.get("path", "/")
    if root and _under(path, root):
        path = path[len(root):]
    return path or "/"


def _under(path: str, root: str) -> bool:
    return path.startswith(root) and path[len(root):len(root) + 1] in ("", "/")


def _error(status: int, message: str) -> HttpResponse:
    return HttpResponse(status, orjson.dumps({"error": message}))


class PusherASGI:
    """An ASGI 3 application serving one :class:`Pusher`: WebSockets, HTTP API, lifespan.

    ``app.pusher`` is the Pusher (its in-process API: ``await app.pusher.trigger(...)``).
    """

    def __init__(self, pusher: Pusher, *, handle_signals: bool = True) -> None:
        self.pusher = pusher
        self.router = pusher.router
        config = pusher.config
        self.max_body = int(config.http_max_request_size_kb * 1024)
        # the same frame allowance as the picows host
        self.max_message = int(config.max_message_size_kb * 1024) + 1024
        self.handle_signals = handle_signals
        self.links: set[Link] = set()
        self._start_lock: asyncio.Lock | None = None
        self._running = False
        self._stopped = False
        self._saved_signals: dict[int, Any] = {}
        self._closing: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the Pusher (adapter, webhooks, metrics) once; later calls return at once."""
        if self._running:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._running:
                return
            await self.pusher.start()
            self._running = True
            self._stopped = False
            self._closing = None
            if self.handle_signals:
                self._wrap_signals()

    async def stop(self) -> None:
        """Close every connection with 4200 over the grace period, then stop the Pusher."""
        self._restore_signals()
        if self._stopped:
            return
        self._stopped = True
        await self.pusher.stop()
        await wait_closed(self.links, 2.0)
        self._running = False

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """Start and stop the Pusher around a parent app's life.

        Takes the parent app as Starlette and FastAPI pass it, so it can be given as
        is: ``Starlette(routes=[Mount("/pusher", app)], lifespan=app.lifespan)``.
        Within your own lifespan: ``async with pusher_app.lifespan(): yield``.
        """
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    def _wrap_signals(self) -> None:
        """Close with 4200 before the server's own shutdown (see the module docstring)."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            previous = signal.getsignal(sig)
            if (
                not callable(previous)
                or previous is signal.default_int_handler  # no server: Ctrl-C stays Ctrl-C
                or getattr(previous, "_soketi_wrapper", False)
            ):
                continue

            def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
                if self._closing is None and not self._stopped:
                    loop.call_soon_threadsafe(self._close_then, previous, signum, frame)
                else:
                    previous(signum, frame)

            handler._soketi_wrapper = True  # type: ignore[attr-defined]
            signal.signal(sig, handler)
            self._saved_signals[sig] = previous

    def _restore_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, previous in self._saved_signals.items():
            if getattr(signal.getsignal(sig), "_soketi_wrapper", False):
                signal.signal(sig, previous)
        self._saved_signals.clear()

    def _close_then(self, previous: Any, signum: int, frame: FrameType | None) -> None:
        if self._closing is not None:
            previous(signum, frame)
            return

        async def close_then_signal() -> None:
            try:
                await self.stop()
            except Exception:
                log.exception("closing the Pusher connections failed")
            finally:
                previous(signum, frame)

        self._closing = asyncio.ensure_future(close_then_signal())

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise ValueError(f"unsupported ASGI scope type {kind!r}")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    log.error("Pusher did not start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.stop()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    async def _ensure_started(self) -> None:
        if not self._running and not self._stopped:
            log.warning("the Pusher was not started by a lifespan: starting it now "
                        "(mounted apps: use app.lifespan in the parent app's lifespan)")
            await self.start()

    # -- HTTP --

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._ensure_started()
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())
        }
        request = HttpRequest(
            method=scope.get("method", "GET"),
            path=route_path(scope),
            query=(scope.get("query_string") or b"").decode("utf-8", "replace"),
            headers=headers,
            body=b"",
        )
        response = self.pusher.check_http_head(request)
        if response is None:
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                response = _error(413, f"Request body over {self.max_body} bytes.")
            else:
                body = await self._read_body(receive)
                if body is None:
                    return  # the client left
                if body is _TOO_BIG:
                    response = _error(413, f"Request body over {self.max_body} bytes.")
                else:
                    request.body = body
                    response = await self._answer(request)
        await self._respond(send, response)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The request body, :data:`_TOO_BIG` past the limit, or None if the client left."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return _TOO_BIG
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

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

    @staticmethod
    async def _respond(send: Send, response: HttpResponse) -> None:
        headers: list[tuple[bytes, bytes]] = []
        if response.status != 204:
            headers.append((b"content-type", response.content_type.encode("latin-1")))
            headers.append((b"content-length", str(len(response.body)).encode()))
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    # -- WebSocket --

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await self._ensure_started()
        await send({"type": "websocket.accept"})
        query = (scope.get("query_string") or b"").decode("utf-8", "replace")
        path = route_path(scope) + ("?" + query if query else "")
        task = asyncio.current_task()

        async def send_text(text: str) -> None:
            await send({"type": "websocket.send", "text": text})

        async def send_close(code: int, reason: str) -> None:
            await send({"type": "websocket.close", "code": code, "reason": reason})

        def abort() -> None:
            # ASGI has no abort: end the app, so the server drops the connection.
            if task is not None:
                task.cancel()

        link = Link(self.router, path, send_text, send_close, abort)
        self.links.add(link)
        code: int | None = 1006
        reason: str | None = None
        try:
            link.open()
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    text = message.get("text")
                    data = message.get("bytes") if text is None else None
                    if len(text if text is not None else data or b"") > self.max_message:
                        link.close(1009, "Message too big.")
                    elif text is not None:
                        link.receive(text)
                    else:
                        link.receive_binary(data or b"")
                elif kind == "websocket.disconnect":
                    code = message.get("code", 1005)
                    reason = message.get("reason") or None
                    break
        except asyncio.CancelledError:
            if not link.gave_up:
                raise
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+
            if uncancel is not None:
                uncancel()
        finally:
            self.links.discard(link)
            link.finish(code, reason)
