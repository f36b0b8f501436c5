"""The Pusher HTTP REST API, served on the WebSocket port.

:class:`HttpApi` is the ``http_handler`` of the front door
(:mod:`soketi_impl.hosts.picows`): it routes a parsed
:class:`~soketi_impl.hosts.picows.HttpRequest`, checks the request
signature (auth_version 1.0), the app's limits and rates, and answers with
Pusher's status codes and a JSON body. Errors always carry ``{"error": "..."}``
saying what was wrong::

    api = HttpApi(pusher, config)
    response = api.handle(request)            # an HttpResponse ...
    if inspect.isawaitable(response):         # ... or, when the adapter suspended,
        response = await response             # an awaitable of one

With the local adapter every request is answered synchronously (no Task), so the
front door answers pipelined requests in the loop iteration that read them.

Endpoints (under ``config.path_prefix``):

=========================================================  ===========================
``POST /apps/{id}/events``                                 trigger one event
``POST /apps/{id}/batch_events``                           trigger up to N events
``GET  /apps/{id}/channels``                               occupied channels
``GET  /apps/{id}/channels/{channel}``                     one channel's state
``GET  /apps/{id}/channels/{channel}/users``               a presence channel's users
``POST /apps/{id}/users/{user_id}/terminate_connections``  close a user's connections
``GET  /``, ``/ready``, ``/accept-traffic``                health (no signature)
=========================================================  ===========================

Choices worth knowing (where Pusher and soketi differ we follow Pusher):

- ``data`` must be a string (Pusher); soketi also takes an object. Others get 400.
- An event's ``data`` over ``max_event_payload_in_kb`` is 413 (Pusher), other limits 400.
- ``max_backend_events_per_second`` counts one event per channel it is delivered
  to (soketi's rule), so a trigger on 3 channels costs 3 and a batch of 4 costs 4.
  A request that would go over the budget is refused whole with 429 and costs
  nothing; the window is the current wall-clock second.
- ``max_read_requests_per_second`` counts each signed ``GET``.
- The Python ``pusher`` SDK (3.3) sends ``terminate_user_connections`` to
  ``POST /users/{user_id}/terminate_connections``, without the ``/apps/{id}`` part;
  that path is accepted too and the app is the one whose key signed the request.
- ``info=cache`` on a channel answers ``"cache": {"event", "data", "ttl"}`` (ttl in
  seconds left) when an event is cached.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any
from urllib.parse import unquote

import orjson

from ..config import AppConfig, Config
from ..errors import SoketiError
from ..pusher.server import AppState, PusherServer
from ..twins._protocol import ENCRYPTED, PRESENCE, channel_kind, valid_channel_name
from .types import HttpRequest, HttpResponse

__all__ = [
    "ApiError",
    "EventRequest",
    "HmacSha256",
    "HttpApi",
    "check_signature",
    "parse_event",
    "parse_query",
]

_SOCKET_ID = re.compile(r"^\d+\.\d+$")
_MD5_EMPTY = hashlib.md5(b"").hexdigest()
_HEALTH = frozenset({"/", "/ready", "/accept-traffic"})
#: The largest piece of client input echoed back in an error message.
_ECHO = 64
_TRIGGER_INFO = frozenset({"subscription_count", "user_count"})
_CHANNEL_INFO = frozenset({"subscription_count", "user_count", "cache"})
_ALLOW_METHODS = "GET, POST, OPTIONS"
_ALLOW_HEADERS = "Content-Type, X-Pusher-Library, X-Requested-With, Authorization"


class ApiError(SoketiError):
    """A request the API refuses: ``status`` is the HTTP status, ``message`` goes in the body."""

    def __init__(
        self, status: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []


def _echo(value: str) -> str:
    return value if len(value) <= _ECHO else value[:_ECHO] + "..."


def parse_query(query: str) -> dict[str, str]:
    """The query string as a dict: keys lower-cased, keys and values percent-decoded.

    The SDKs send values unescaped (and sign them so); a client that escapes them
    signs the decoded value, which is what the signature check recomputes.
    """
    params: dict[str, str] = {}
    if not query:
        return params
    for part in query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        if "%" in key:
            key = unquote(key, errors="strict")
        if "%" in value:
            value = unquote(value, errors="strict")
        params[key.lower()] = value
    return params


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class HmacSha256:
    """HMAC-SHA256 under one key, with the key's two padded blocks hashed once (RFC 2104).

    ``HmacSha256(key).digest(msg) == hmac.digest(key, msg, "sha256")``; it saves the
    per-call key setup (about 1.5 us of a 10 us request), since every request of an
    app is signed with the same secret.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, msg: bytes) -> bytes:
        """The 32-byte HMAC of ``msg``."""
        inner = self._inner.copy()
        inner.update(msg)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def check_signature(
    method: str,
    paths: tuple[str, ...],
    params: dict[str, str],
    body: bytes,
    key: str,
    secret: str | HmacSha256,
    now: float,
    max_skew: float = 600.0,
) -> None:
    """Check an auth_version 1.0 request signature; raise :class:`ApiError` (401) if it is wrong.

    ``paths`` are the forms of the request path a client may have signed (raw, then
    percent-decoded); ``secret`` may be a prepared :class:`HmacSha256`. The signed
    string is ``METHOD\\nPATH\\nQUERY`` where QUERY is every parameter but
    ``auth_signature``, sorted by key, ``k=v`` joined by ``&``.
    ``body_md5`` must be the MD5 of the body when there is a body, and if sent for an
    empty body, the MD5 of the empty string.
    """
    if params.get("auth_key") != key:
        raise ApiError(401, "auth_key is missing or is not this app's key.")
    signature = params.get("auth_signature")
    if not signature:
        raise ApiError(401, "auth_signature is missing.")
    version = params.get("auth_version")
    if version is not None and version != "1.0":
        raise ApiError(401, f"Unsupported auth_version {_echo(version)!r} (expected 1.0).")
    stamp = params.get("auth_timestamp")
    if not stamp or not stamp.isdigit():
        raise ApiError(401, "auth_timestamp is missing or not an integer.")
    if abs(now - int(stamp)) > max_skew:
        raise ApiError(
            401, f"auth_timestamp is more than {int(max_skew)} s away from the server's clock."
        )
    md5 = params.get("body_md5")
    if body:
        if md5 is None:
            raise ApiError(401, "body_md5 is missing (the request has a body).")
        if not hmac.compare_digest(md5.encode(), hashlib.md5(body).hexdigest().encode()):
            raise ApiError(401, "body_md5 does not match the MD5 of the body.")
    elif md5 is not None and md5 != _MD5_EMPTY:
        raise ApiError(401, "body_md5 does not match the MD5 of the (empty) body.")
    query = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "auth_signature")
    try:
        given = bytes.fromhex(signature)
    except ValueError:
        raise ApiError(401, "auth_signature is not hex.") from None
    mac = secret if isinstance(secret, HmacSha256) else HmacSha256(secret.encode())
    for path in paths:
        expected = mac.digest(f"{method}\n{path}\n{query}".encode("utf-8", "surrogatepass"))
        if hmac.compare_digest(expected, given):
            return
    raise ApiError(401, "Invalid signature: auth_signature does not match the request.")


class EventRequest:
    """One validated event: where it goes, what it is, who is excluded, what to answer."""

    __slots__ = ("channels", "data", "info", "name", "socket_id")

    def __init__(
        self, channels: list[str], name: str, data: str, socket_id: str | None, info: frozenset[str]
    ) -> None:
        self.channels = channels
        self.name = name
        self.data = data
        self.socket_id = socket_id
        self.info = info

    def __repr__(self) -> str:
        return f"<EventRequest {self.name!r} on {self.channels!r}>"


def _load_json(body: bytes) -> Any:
    if not body:
        raise ApiError(400, "The request body is empty: expected a JSON object.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "The request body is not valid UTF-8.") from None
        raise ApiError(400, "The request body is not valid JSON.") from None


def _parse_info(value: Any, allowed: frozenset[str], where: str) -> frozenset[str]:
    if value is None or value == "":
        return frozenset()
    if not isinstance(value, str):
        raise ApiError(400, f"{where}info must be a comma-separated string.")
    attrs = frozenset(a.strip() for a in value.split(",") if a.strip())
    unknown = attrs - allowed
    if unknown:
        raise ApiError(
            400,
            f"{where}info: unknown attribute {_echo(min(unknown))!r} "
            f"(allowed: {', '.join(sorted(allowed))}).",
        )
    return attrs


def parse_event(item: Any, cfg: AppConfig, *, batch_index: int | None = None) -> EventRequest:
    """Validate one event (the body of ``/events`` or one item of a batch) against the app's limits.

    Raises :class:`ApiError`: 400 for a missing or mistyped field, a bad channel name,
    too many channels, a too-long name, a multi-channel trigger with an encrypted
    channel; 413 for ``data`` over the payload limit.
    """
    where = "" if batch_index is None else f"batch[{batch_index}]: "
    if not isinstance(item, dict):
        raise ApiError(400, f"{where}expected a JSON object.")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ApiError(400, f"{where}name must be a non-empty string.")
    if len(name) > cfg.max_event_name_length:
        raise ApiError(
            400, f"{where}event name longer than {cfg.max_event_name_length} characters."
        )
    data = item.get("data")
    if not isinstance(data, str):
        raise ApiError(400, f"{where}data must be a string (JSON-encode objects).")
    limit = int(cfg.max_event_payload_in_kb * 1024)
    # A str holds at most 4 bytes per character: measure only when it could be over.
    if len(data) * 4 > limit and len(data.encode("utf-8", "surrogatepass")) > limit:
        raise ApiError(413, f"{where}data is over the {cfg.max_event_payload_in_kb:g} KB limit.")
    if batch_index is None:
        channels = item.get("channels")
        channel = item.get("channel")
        if channels is None:
            if channel is None:
                raise ApiError(400, "channels (a list) or channel (a string) is required.")
            channels = [channel]
        elif not isinstance(channels, list):
            raise ApiError(400, "channels must be a list of channel names.")
    else:
        channel = item.get("channel")
        if channel is None:
            raise ApiError(400, f"{where}channel is required.")
        channels = [channel]
    if not channels:
        raise ApiError(400, f"{where}channels must not be empty.")
    if len(channels) > cfg.max_event_channels_at_once:
        raise ApiError(400, f"{where}more than {cfg.max_event_channels_at_once} channels at once.")
    max_len = cfg.max_channel_name_length
    for ch in channels:
        if not isinstance(ch, str):
            raise ApiError(400, f"{where}channel names must be strings.")
        if not valid_channel_name(ch, max_len):
            raise ApiError(
                400,
                f"{where}invalid channel name {_echo(ch)!r} "
                f"(allowed: A-Z a-z 0-9 _-=@,.; up to {max_len} characters).",
            )
    if len(channels) > 1:
        # Pusher's rule: the SDKs encrypt per channel, so one payload cannot go to two.
        if any(channel_kind(ch) == ENCRYPTED for ch in channels):
            raise ApiError(
                400, f"{where}an encrypted channel cannot be triggered with other channels."
            )
        if len(set(channels)) != len(channels):
            channels = list(dict.fromkeys(channels))
    socket_id = item.get("socket_id")
    if socket_id is not None and (
        not isinstance(socket_id, str) or not _SOCKET_ID.match(socket_id)
    ):
        raise ApiError(400, f"{where}socket_id must be a string like '123.456'.")
    info = _parse_info(item.get("info"), _TRIGGER_INFO, where)
    return EventRequest(channels, name, data, socket_id, info)


class _Rate:
    """A per-second fixed window: ``take(n)`` succeeds while the second's total stays <= limit."""

    __slots__ = ("second", "used")

    def __init__(self) -> None:
        self.second = 0
        self.used = 0

    def take(self, n: int, limit: int, now: float) -> bool:
        second = int(now)
        if second != self.second:
            self.second = second
            self.used = 0
        if self.used + n > limit:
            return False
        self.used += n
        return True


_Handler = Callable[[AppState, HttpRequest, dict[str, str], list[str]], Coroutine[Any, Any, Any]]


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
    """The REST API on top of a :class:`PusherServer`'s in-process API.

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
        origins = list(config.cors_origins)
        self._any_origin = not origins or "*" in origins
        self._origins = frozenset(origins)
        self._event_rates: dict[str, _Rate] = {}
        self._read_rates: dict[str, _Rate] = {}
        self._macs: dict[str, HmacSha256] = {}

    # ------------------------------------------------------------------ entry point

    def handle(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        """Answer one request: an :class:`HttpResponse`, or an awaitable of one for API calls."""
        path = request.path
        if path in _HEALTH or (
            self.prefix and path.startswith(self.prefix) and path[len(self.prefix) :] in _HEALTH
        ):
            return self._health(request)
        if request.method == "OPTIONS":
            return self._preflight(request)
        app: AppState | None = None
        try:
            handler, args, params, app_id, paths = self._match(request)
            app = self._app(app_id, params)
            cfg = app.config
            mac = self._macs.get(cfg.secret)
            if mac is None:
                mac = self._macs[cfg.secret] = HmacSha256(cfg.secret.encode())
            check_signature(request.method, paths, params, request.body, cfg.key, mac, self.clock())
            if not cfg.enabled:
                raise ApiError(403, "The app is disabled.")
            if cfg.max_read_requests_per_second >= 0 and request.method == "GET":
                self._limit(
                    self._read_rates, app, 1, cfg.max_read_requests_per_second, "read requests"
                )
            work = handler(app, request, params, args)
        except ApiError as exc:
            return self._finish(request, app, self._error(exc))
        # The in-process API is async so that an adapter may suspend (Redis), but the
        # local one never does: step the coroutine once by hand, and only when it
        # really suspends hand the rest to a Task. No Task per request, and pipelined
        # requests are answered in the same loop iteration, in one burst of writes.
        try:
            first = work.send(None)
        except StopIteration as done:
            return self._finish(request, app, HttpResponse(200, orjson.dumps(done.value)))
        except ApiError as exc:
            return self._finish(request, app, self._error(exc))
        return self._run(app, request, _resume(work, first))

    async def _run(self, app: AppState, request: HttpRequest, work: Awaitable[Any]) -> HttpResponse:
        try:
            result = await work
        except ApiError as exc:
            return self._finish(request, app, self._error(exc))
        return self._finish(request, app, HttpResponse(200, orjson.dumps(result)))

    def _finish(
        self, request: HttpRequest, app: AppState | None, response: HttpResponse
    ) -> HttpResponse:
        if app is not None:
            stats = app.stats
            stats.http_calls += 1
            stats.http_bytes_received += len(request.body)
            stats.http_bytes_sent += len(response.body)
        origin = self._allow_origin(request)
        if origin is not None:
            response.headers.append(("Access-Control-Allow-Origin", origin))
            if origin != "*":
                response.headers.append(("Vary", "Origin"))
        return response

    @staticmethod
    def _error(exc: ApiError) -> HttpResponse:
        return HttpResponse(
            exc.status, orjson.dumps({"error": exc.message}), headers=list(exc.headers)
        )

    def _health(self, request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return self._finish(
                request,
                None,
                self._error(
                    ApiError(
                        405, f"{request.method} is not allowed here (GET).", [("Allow", "GET")]
                    )
                ),
            )
        body = b"" if request.method == "HEAD" else b"OK"
        return self._finish(request, None, HttpResponse(200, body, "text/plain"))

    # ------------------------------------------------------------------ CORS

    def _allow_origin(self, request: HttpRequest) -> str | None:
        if self._any_origin:
            return "*"
        origin = request.headers.get("origin")
        return origin if origin is not None and origin in self._origins else None

    def _preflight(self, request: HttpRequest) -> HttpResponse:
        headers = [
            ("Access-Control-Allow-Methods", _ALLOW_METHODS),
            (
                "Access-Control-Allow-Headers",
                request.headers.get("access-control-request-headers") or _ALLOW_HEADERS,
            ),
            ("Access-Control-Max-Age", "86400"),
        ]
        return self._finish(request, None, HttpResponse(204, b"", "text/plain", headers))

    # ------------------------------------------------------------------ routing and checks

    def _match(
        self, request: HttpRequest
    ) -> tuple[_Handler, list[str], dict[str, str], str | None, tuple[str, ...]]:
        """Handler, path arguments, query, app id (None: by key), the paths a client may sign."""
        path = request.path
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                raise ApiError(404, "Not found.")
            path = path[len(self.prefix) :]
        try:
            parts = (
                [unquote(p, errors="strict") for p in path.split("/")]
                if "%" in path
                else path.split("/")
            )
        except UnicodeDecodeError:
            raise ApiError(400, "The request path is not valid UTF-8.") from None
        n = len(parts)
        method = request.method
        app_id: str | None = None
        if n >= 4 and parts[0] == "" and parts[1] == "apps":
            app_id = parts[2]
            rest = parts[3:]
        elif (
            n == 4
            and parts[0] == ""
            and parts[1] == "users"
            and parts[3] == "terminate_connections"
        ):
            rest = parts[1:]  # the Python SDK's form: the app is the one whose key signed
        else:
            raise ApiError(404, "Not found.")
        handler: _Handler
        args: list[str] = []
        want = "GET"
        r = len(rest)
        if r == 1 and rest[0] == "events":
            handler, want = self._events, "POST"
        elif r == 1 and rest[0] == "batch_events":
            handler, want = self._batch_events, "POST"
        elif r == 1 and rest[0] == "channels":
            handler = self._channels
        elif r == 2 and rest[0] == "channels" and rest[1]:
            handler, args = self._channel, [rest[1]]
        elif r == 3 and rest[0] == "channels" and rest[1] and rest[2] == "users":
            handler, args = self._users, [rest[1]]
        elif r == 3 and rest[0] == "users" and rest[1] and rest[2] == "terminate_connections":
            handler, args, want = self._terminate, [rest[1]], "POST"
        else:
            raise ApiError(404, "Not found.")
        if method != want:
            raise ApiError(
                405, f"{method} is not allowed here ({want}).", [("Allow", f"{want}, OPTIONS")]
            )
        try:
            params = parse_query(request.query)
        except UnicodeDecodeError:
            raise ApiError(400, "The query string is not valid UTF-8.") from None
        decoded = "/".join(parts)
        paths = (request.path,) if decoded == path else (request.path, self.prefix + decoded)
        return handler, args, params, app_id, paths

    def _app(self, app_id: str | None, params: dict[str, str]) -> AppState:
        if app_id is not None:
            app = self.pusher.apps.get(app_id)
            if app is None:
                raise ApiError(404, f"Unknown app id {_echo(app_id)!r}.")
            return app
        app = self.pusher.apps_by_key.get(params.get("auth_key", ""))
        if app is None:
            raise ApiError(404, "Unknown app: no app has this auth_key.")
        return app

    def _limit(self, table: dict[str, _Rate], app: AppState, n: int, limit: int, what: str) -> None:
        rate = table.get(app.config.id)
        if rate is None:
            rate = table[app.config.id] = _Rate()
        if not rate.take(n, limit, self.clock()):
            raise ApiError(
                429,
                f"Rate limit reached: at most {limit} {what} per second for this app.",
                [("Retry-After", "1")],
            )

    def _take_events(self, app: AppState, n: int) -> None:
        limit = app.config.max_backend_events_per_second
        if limit >= 0:
            self._limit(self._event_rates, app, n, limit, "events (one per channel)")

    # ------------------------------------------------------------------ endpoints

    async def _events(
        self, app: AppState, request: HttpRequest, params: dict[str, str], args: list[str]
    ) -> Any:
        event = parse_event(_load_json(request.body), app.config)
        self._take_events(app, len(event.channels))
        await self.pusher.trigger(
            app.config.id, event.channels, event.name, event.data, event.socket_id
        )
        if not event.info:
            return {}
        return {
            "channels": {ch: await self._event_info(app, ch, event.info) for ch in event.channels}
        }

    async def _batch_events(
        self, app: AppState, request: HttpRequest, params: dict[str, str], args: list[str]
    ) -> Any:
        body = _load_json(request.body)
        if not isinstance(body, dict):
            raise ApiError(400, 'Expected a JSON object {"batch": [...]}.')
        batch = body.get("batch")
        if not isinstance(batch, list):
            raise ApiError(400, "batch must be a list of events.")
        cfg = app.config
        if len(batch) > cfg.max_event_batch_size:
            raise ApiError(400, f"batch has more than {cfg.max_event_batch_size} events.")
        # Validate all before delivering any: a refused batch delivers nothing.
        events = [parse_event(item, cfg, batch_index=i) for i, item in enumerate(batch)]
        self._take_events(app, len(events))
        for event in events:
            await self.pusher.trigger(
                cfg.id, event.channels, event.name, event.data, event.socket_id
            )
        return {"batch": [await self._event_info(app, ev.channels[0], ev.info) for ev in events]}

    async def _event_info(
        self, app: AppState, channel: str, info: frozenset[str]
    ) -> dict[str, int]:
        if not info:
            return {}
        state = await self.pusher.channel(app.config.id, channel)
        result: dict[str, int] = {}
        if "subscription_count" in info:
            result["subscription_count"] = state.get("subscription_count", 0)
        if "user_count" in info and channel_kind(channel) == PRESENCE:
            result["user_count"] = state.get("user_count", 0)
        return result

    async def _channels(
        self, app: AppState, request: HttpRequest, params: dict[str, str], args: list[str]
    ) -> Any:
        prefix = params.get("filter_by_prefix") or None
        info = _parse_info(params.get("info"), _TRIGGER_INFO, "")
        if "user_count" in info and (prefix is None or channel_kind(prefix) != PRESENCE):
            raise ApiError(
                400, "info=user_count needs filter_by_prefix=presence- (presence channels only)."
            )
        channels = await self.pusher.channels(app.config.id, prefix)
        result: dict[str, dict[str, int]] = {}
        for name, state in channels.items():
            entry: dict[str, int] = {}
            if "subscription_count" in info:
                entry["subscription_count"] = state.get("subscription_count", 0)
            if "user_count" in info:
                entry["user_count"] = state.get("user_count", 0)
            result[name] = entry
        return {"channels": result}

    def _channel_arg(self, app: AppState, name: str) -> str:
        if not valid_channel_name(name, app.config.max_channel_name_length):
            raise ApiError(400, f"Invalid channel name {_echo(name)!r}.")
        return name

    async def _channel(
        self, app: AppState, request: HttpRequest, params: dict[str, str], args: list[str]
    ) -> Any:
        channel = self._channel_arg(app, args[0])
        info = _parse_info(params.get("info"), _CHANNEL_INFO, "")
        presence = channel_kind(channel) == PRESENCE
        if "user_count" in info and not presence:
            raise ApiError(400, "info=user_count is only available for presence channels.")
        state = await self.pusher.channel(app.config.id, channel)
        count = int(state.get("subscription_count", 0))
        result: dict[str, Any] = {"occupied": bool(state.get("occupied", count > 0))}
        if "subscription_count" in info:
            result["subscription_count"] = count
        if "user_count" in info:
            result["user_count"] = state.get("user_count", 0)
        if "cache" in info:
            cached = app.cache.get(channel)
            left = cached[1] - time.monotonic() if cached is not None else 0.0
            if cached is not None and left > 0:
                event = orjson.loads(cached[0])
                result["cache"] = {
                    "event": event.get("event"),
                    "data": event.get("data"),
                    "ttl": int(left),
                }
        return result

    async def _users(
        self, app: AppState, request: HttpRequest, params: dict[str, str], args: list[str]
    ) -> Any:
        channel = self._channel_arg(app, args[0])
        if channel_kind(channel) != PRESENCE:
            raise ApiError(400, "Users can only be listed for presence channels.")
        users = await self.pusher.presence_users(app.config.id, channel)
        return {"users": [{"id": uid} for uid in users]}

    async def _terminate(
        self, app: AppState, request: HttpRequest, params: dict[str, str], args: list[str]
    ) -> Any:
        user_id = args[0]
        if len(user_id) > 128:
            raise ApiError(400, "user_id longer than 128 characters.")
        await self.pusher.terminate_user_connections(app.config.id, user_id)
        return {}
