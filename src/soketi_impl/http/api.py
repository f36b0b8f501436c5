"""The Pusher HTTP REST API, served by every host on the WebSocket port.

:class:`HttpApi` routes a parsed :class:`~soketi_impl.http.types.HttpRequest`
through :data:`ROUTES`, checks the request signature (auth_version 1.0, see
:mod:`soketi_impl.signing`), the app's state and rates, runs the handler and
answers with Pusher's status codes and a JSON body. Errors always carry
``{"error": "..."}`` saying what was wrong::

    api = HttpApi(core, config)
    early = api.check_head(request)           # before the body is read: 404/401/405 or None
    response = api.handle(request)            # an HttpResponse ...
    if inspect.isawaitable(response):         # ... or, when the adapter suspended,
        response = await response             # an awaitable of one

With the local adapter every request is answered synchronously (no Task), so a
host answers pipelined requests in the loop iteration that read them.

The endpoints (under ``config.path_prefix``) are the rows of :data:`ROUTES`; the
health endpoints are :mod:`soketi_impl.http.health`. The handlers live by concern:
:mod:`.events`, :mod:`.channels`, :mod:`.users`; CORS in :mod:`.cors`, rate limits
in :mod:`.rates`. The Python ``pusher`` SDK (3.3) sends ``terminate_user_connections``
to ``POST /users/{user_id}/terminate_connections``, without ``/apps/{id}``; that
route serves the app whose key signed the request.
"""

from __future__ import annotations

import inspect
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson

from ..signing import HmacSha256, SignatureError, check_api_head, check_api_signature
from ..twins._trigger import TriggerPath
from . import channels, events, users
from .cors import Cors
from .errors import ApiError, echo, error_response
from .health import HEALTH_PATHS, health_response
from .query import parse_query, signed_query
from .rates import RateLimits
from .routes import Call, Handler, Route, RouteTable
from .types import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from ..config import Config
    from ..pusher.core import PusherServer
    from ..pusher.state import AppState

__all__ = ["ROUTES", "HttpApi"]

#: The REST API: one row per endpoint.
ROUTES = RouteTable(
    [
        Route("POST", "/apps/{app_id}/events", events.trigger),
        Route("POST", "/apps/{app_id}/batch_events", events.batch_events),
        Route("GET", "/apps/{app_id}/channels", channels.list_channels),
        Route("GET", "/apps/{app_id}/channels/{channel}", channels.channel),
        Route("GET", "/apps/{app_id}/channels/{channel}/users", channels.users),
        Route("POST", "/apps/{app_id}/users/{user_id}/terminate_connections", users.terminate),
        Route("POST", "/users/{user_id}/terminate_connections", users.terminate),
    ]
)


class _Head:
    """What the request head decided: the route's call (body not read yet) and the signed paths.

    ``checked``: :func:`~soketi_impl.signing.check_api_head` accepted it, for a head that
    announced a body (True) or not (False); None: not checked yet.
    """

    __slots__ = ("call", "checked", "handler", "paths")

    def __init__(self, call: Call, handler: Handler, paths: tuple[str, ...]) -> None:
        self.call = call
        self.handler = handler
        self.paths = paths
        self.checked: bool | None = None


class _Unresolved(Exception):
    """The app manager must ask its database for the request's app: ``pending`` answers."""

    def __init__(self, pending: Awaitable[AppState | None]) -> None:
        super().__init__("app lookup pending")
        self.pending = pending


#: Routing answers kept (:meth:`HttpApi._head`); all are forgotten when full.
_ROUTED_MAX = 1024

_ASK: Any = object()  # _head: look the app up (rather than take the one already found)


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], first: Any) -> Generator[Any, Any, Any]:
    """Continue ``coro``, which was stepped by hand and yielded ``first``, under a Task.

    What ``yield from`` does, but starting after the first step: every value the
    coroutine yields goes to the Task, every value or exception the Task sends back
    goes to the coroutine.
    """
    yielded = first
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:  # cancellation too: the coroutine decides
            try:
                yielded = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as done:
                return done.value


class HttpApi:
    """The REST API on top of a Pusher core's in-process API.

    ``clock`` (seconds since the epoch) is used for ``auth_timestamp`` and the rate
    windows; tests may replace it.
    """

    def __init__(
        self, pusher: PusherServer, config: Config, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.pusher = pusher
        self.config = config
        self.clock = clock
        self.prefix = config.path_prefix.rstrip("/")
        self.cors = Cors(config.cors_origins)
        self.rates = RateLimits(clock)
        self.routes = ROUTES
        # Routing answers by (method, raw path): a publisher sends the same few paths.
        self._routed: dict[tuple[str, str], tuple[Handler, dict[str, str], tuple[str, ...]]] = {}
        self._routed_by = self.routes
        # One prepared HMAC per secret: bounded by the configured apps.
        self._macs: dict[str, HmacSha256] = {}
        # The last head check_head accepted, so handle does not route and parse it again
        # (one entry: a host checks a head, reads its body, then calls handle).
        self._checked: tuple[str, str, str, _Head] | None = None
        #: Signed triggers of the common case, answered in one call (twins/_trigger).
        self.fast = TriggerPath(self)

    # ------------------------------------------------------------------ entry points

    def handle(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        """Answer one request: an :class:`HttpResponse`, or an awaitable of one for API calls."""
        fast = self.fast.handle(request)
        if fast is not None:
            return fast
        if request.path in HEALTH_PATHS or self.prefix:
            health = self._health(request)
            if health is not None:
                return health
        if request.method == "OPTIONS":
            return self._finish(request, None, self.cors.preflight(request))
        try:
            head = self._checked_head(request) or self._head(request)
        except _Unresolved as wait:
            return self._handle_later(request, wait.pending)
        except ApiError as exc:
            return self._finish(request, None, error_response(exc))
        return self._serve(request, head)

    async def _handle_later(
        self, request: HttpRequest, pending: Awaitable[AppState | None]
    ) -> HttpResponse:
        """:meth:`handle` once the app manager found the app (or did not: 404)."""
        found = await pending
        try:
            head = self._head(request, found)
        except ApiError as exc:
            return self._finish(request, None, error_response(exc))
        response = self._serve(request, head)
        if inspect.isawaitable(response):
            response = await response
        return response

    def _serve(self, request: HttpRequest, head: _Head) -> HttpResponse | Awaitable[HttpResponse]:
        """Signature, app switch and rates, then the handler (``head`` found the app)."""
        app: AppState | None = None
        try:
            call = head.call
            app = call.app
            cfg = app.config
            mac = self._macs.get(cfg.secret)
            if mac is None:
                mac = self._macs[cfg.secret] = HmacSha256(cfg.secret.encode())
            body = request.body
            checked = head.checked
            # A head check_head accepted is not checked twice (key, version, timestamp),
            # unless a body came that its head did not announce.
            if checked is None or (body and not checked):
                check_api_head(call.params, cfg.key, self.clock(), has_body=bool(body))
            check_api_signature(
                request.method, head.paths, call.params, body, mac, signed_query(request.query)
            )
            if not cfg.enabled or request.method == "GET":
                self._admit(call)
            work = head.handler(call)
        except SignatureError as exc:
            return self._finish(request, app, error_response(ApiError(401, exc.message)))
        except ApiError as exc:
            return self._finish(request, app, error_response(exc))
        # The in-process API is async so that an adapter may suspend (Redis), but the
        # local one never does: step the coroutine once by hand, and only when it
        # really suspends hand the rest to a Task. No Task per request, and pipelined
        # requests are answered in the same loop iteration, in one burst of writes.
        try:
            first = work.send(None)
        except StopIteration as done:
            return self._finish(request, app, HttpResponse(200, orjson.dumps(done.value)))
        except ApiError as exc:
            return self._finish(request, app, error_response(exc))
        return self._run(app, request, _resume(work, first))

    def check_head(self, request: HttpRequest) -> HttpResponse | None:
        """An answer decided from method, path, query and headers alone, or None.

        Hosts call it before reading a body, so a body to a request that will be
        refused anyway is never buffered: an unknown route (404) or method (405), an
        unknown app (404), missing or stale auth parameters, a wrong key, a body
        announced without ``body_md5`` (401). None means: read the body, then
        :meth:`handle`. Health and ``OPTIONS`` requests are left to :meth:`handle`, and
        so is a request whose app the app manager must first ask its database for.
        """
        if self.fast.head(request):
            return None  # a trigger whose head passes every check below
        if request.method == "OPTIONS" or (
            request.path in HEALTH_PATHS or (self.prefix and self._health_path(request.path) is not None)
        ):
            return None
        app: AppState | None = None
        try:
            try:
                head = self._head(request)
            except _Unresolved as wait:
                # The shared lookup goes on; handle() joins it once the body is in.
                close = getattr(wait.pending, "close", None)
                if close is not None:
                    close()  # this request's coroutine around it is not needed
                return None
            app = head.call.app
            has_body = _announces_body(request.headers)
            check_api_head(head.call.params, app.config.key, self.clock(), has_body=has_body)
            head.checked = has_body
            self._checked = (request.method, request.path, request.query, head)
        except SignatureError as exc:
            return self._finish(request, app, error_response(ApiError(401, exc.message)))
        except ApiError as exc:
            return self._finish(request, app, error_response(exc))
        return None

    # ------------------------------------------------------------------ steps

    def _health_path(self, path: str) -> str | None:
        if path in HEALTH_PATHS:
            return path
        prefix = self.prefix
        if prefix and path.startswith(prefix) and path[len(prefix) :] in HEALTH_PATHS:
            return path[len(prefix) :]
        return None

    def _health(self, request: HttpRequest) -> HttpResponse | None:
        path = self._health_path(request.path)
        if path is None:
            return None
        if request.method not in ("GET", "HEAD"):
            refusal = ApiError(405, f"{request.method} is not allowed here (GET).", [("Allow", "GET")])
            return self._finish(request, None, error_response(refusal))
        response = health_response(path, bool(getattr(self.pusher, "accepting", True)))
        assert response is not None  # a health path
        if request.method == "HEAD":
            response.body = b""
        return self._finish(request, None, response)

    def _checked_head(self, request: HttpRequest) -> _Head | None:
        checked = self._checked
        if checked is None:
            return None
        self._checked = None
        method, path, query, head = checked
        if method != request.method or path != request.path or query != request.query:
            return None
        call = head.call
        if call.request is not request:
            # the host may hand a new request object, with the body, to handle
            head.call = Call(self, call.app, request, call.params, call.args)
        return head

    def _head(self, request: HttpRequest, found: AppState | None = _ASK) -> _Head:
        """Route, app and query of ``request``; raises :class:`ApiError` (400/404/405).

        ``found``: the app already looked up. Else it is looked up, and when that means
        asking a database, :class:`_Unresolved` is raised with the pending lookup.
        """
        raw = request.path
        key = (request.method, raw)
        if self._routed_by is not self.routes:  # the table was replaced: forget its answers
            self._routed.clear()
            self._routed_by = self.routes
        routed = self._routed.get(key)
        if routed is not None:
            handler, args, paths = routed
        else:
            handler, args, paths = routed = self._route(request.method, raw)
            if len(self._routed) >= _ROUTED_MAX:
                self._routed.clear()
            self._routed[key] = routed
        try:
            params = parse_query(request.query)
        except UnicodeDecodeError:
            raise ApiError(400, "The query string is not valid UTF-8.") from None
        app = self._app(args.get("app_id"), params, found)
        return _Head(Call(self, app, request, params, args), handler, paths)

    def _route(self, method: str, raw: str) -> tuple[Handler, dict[str, str], tuple[str, ...]]:
        """The handler, path arguments and signed path forms of ``method raw`` (404/405/400)."""
        path = raw
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                raise ApiError(404, "Not found.")
            path = path[len(self.prefix) :]
        try:
            parts = [unquote(p, errors="strict") for p in path.split("/")] if "%" in path else path.split("/")
        except UnicodeDecodeError:
            raise ApiError(400, "The request path is not valid UTF-8.") from None
        match = self.routes.match(method, parts)
        decoded = "/".join(parts)
        paths = (raw,) if decoded == path else (raw, self.prefix + decoded)
        return match.route.handler, match.args, paths

    def _app(self, app_id: str | None, params: dict[str, str], found: Any = _ASK) -> AppState:
        app: Any = found
        if app is _ASK:
            pusher = self.pusher
            key = None if app_id is not None else params.get("auth_key", "")
            if pusher.app_manager is None:  # the configured apps: two dicts
                app = pusher.apps_by_key.get(key) if key is not None else pusher.apps.get(app_id or "")
            else:
                app = pusher.find_app(key, app_id)
                if app is not None and inspect.isawaitable(app):
                    raise _Unresolved(app)
        if app_id is not None:
            if app is None:
                raise ApiError(404, f"Unknown app id {echo(app_id)!r}.")
            return app  # type: ignore[no-any-return]
        if app is None:
            raise ApiError(404, "Unknown app: no app has this auth_key.")
        return app  # type: ignore[no-any-return]

    def _admit(self, call: Call) -> None:
        """After the signature: the app's switch and its read-request rate."""
        cfg = call.app.config
        if not cfg.enabled:
            raise ApiError(403, "The app is disabled.")
        if call.request.method == "GET":
            self.rates.take(cfg.id, "read requests", 1, cfg.max_read_requests_per_second)

    async def _run(self, app: AppState, request: HttpRequest, work: Awaitable[Any]) -> HttpResponse:
        try:
            result = await work
        except ApiError as exc:
            return self._finish(request, app, error_response(exc))
        return self._finish(request, app, HttpResponse(200, orjson.dumps(result)))

    def _finish(self, request: HttpRequest, app: AppState | None, response: HttpResponse) -> HttpResponse:
        if app is not None:
            stats = app.stats
            stats.http_calls += 1
            stats.http_bytes_received += len(request.body)
            stats.http_bytes_sent += len(response.body)
        return self.cors.decorate(request, response)


def _announces_body(headers: dict[str, str]) -> bool:
    length = headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in headers
