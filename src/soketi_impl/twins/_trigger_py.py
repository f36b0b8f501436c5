"""The signed trigger's path through the HTTP API, pure-Python twin of ``_trigger_c``.

- :func:`parse_event` (with :class:`EventRequest` and :func:`parse_info`): one event of
  ``/events`` or ``/batch_events`` validated against the app's limits (every path uses
  it: :mod:`soketi_impl.http.events` re-exports it);
- :class:`TriggerPath`, the fast path:
:class:`TriggerPath` answers ``POST /apps/{id}/events`` in one synchronous call when
everything about it is the common case: the route is the trigger's, the app is in
memory and enabled, the auth parameters, ``body_md5`` and the signature are right,
the body is a JSON object without ``info``, and the core's ``trigger`` is its own.
It does what the general path of :class:`soketi_impl.http.api.HttpApi` does for such
a request (the same checks, the same :func:`~soketi_impl.http.events.parse_event`,
rates, ``publish`` per channel, stats, CORS), without its per-request objects
(``Call``, ``_Head``, the handler's coroutine). For anything else it does nothing
and answers None, and the general path runs and gives its answer, errors included:
a refusal from before the body is parsed is always the general path's own.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any, Literal

import orjson

from ..http.errors import ApiError, echo, error_response
from ..http.types import HttpRequest, HttpResponse
from ..pusher.state import is_socket_id
from ..signing import API_MAX_SKEW_S, HmacSha256
from ._protocol import ENCRYPTED, channel_kind, encode_event, is_cache_channel, valid_channel_name
from ._query import sdk_query

if TYPE_CHECKING:
    from ..config import AppConfig
    from ..http.api import HttpApi

__all__ = [
    "TRIGGER_INFO", "EventRequest", "TriggerPath", "hmac_sha256", "md5_hex", "parse_event", "parse_info",
    "sdk_query",
]

_MAX_STAMP_DIGITS = 12  # as signing.check_api_head
_EVENTS_WHAT = "events (one per channel)"  # as events._take_events
_compare = hmac.compare_digest
_md5 = hashlib.md5
_ANY_ORIGIN = ("Access-Control-Allow-Origin", "*")  # as http.cors

TRIGGER_INFO = frozenset({"subscription_count", "user_count"})
_NO_INFO: frozenset[str] = frozenset()


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


def parse_info(value: Any, allowed: frozenset[str], where: str = "") -> frozenset[str]:
    """An ``info`` attribute list (``"a,b"``); 400 for an attribute not in ``allowed``."""
    if value is None or value == "":
        return frozenset()
    if not isinstance(value, str):
        raise ApiError(400, f"{where}info must be a comma-separated string.")
    attrs = frozenset(a.strip() for a in value.split(",") if a.strip())
    unknown = attrs - allowed
    if unknown:
        raise ApiError(
            400,
            f"{where}info: unknown attribute {echo(min(unknown))!r} "
            f"(allowed: {', '.join(sorted(allowed))}).",
        )
    return attrs


def _channels(item: dict[str, Any], where: str, batch: bool) -> list[Any]:
    if batch:
        channel = item.get("channel")
        if channel is None:
            raise ApiError(400, f"{where}channel is required.")
        return [channel]
    channels = item.get("channels")
    if channels is None:
        channel = item.get("channel")
        if channel is None:
            raise ApiError(400, "channels (a list) or channel (a string) is required.")
        return [channel]
    if not isinstance(channels, list):
        raise ApiError(400, "channels must be a list of channel names.")
    return channels


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
        raise ApiError(400, f"{where}event name longer than {cfg.max_event_name_length} characters.")
    data = item.get("data")
    if not isinstance(data, str):
        raise ApiError(400, f"{where}data must be a string (JSON-encode objects).")
    limit = int(cfg.max_event_payload_in_kb * 1024)
    # A str holds at most 4 bytes per character: measure only when it could be over.
    if len(data) * 4 > limit and len(data.encode("utf-8", "surrogatepass")) > limit:
        raise ApiError(413, f"{where}data is over the {cfg.max_event_payload_in_kb:g} KB limit.")
    channels = _channels(item, where, batch_index is not None)
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
                f"{where}invalid channel name {echo(ch)!r} "
                f"(allowed: A-Z a-z 0-9 _-=@,.; up to {max_len} characters).",
            )
    if len(channels) > 1:
        # Pusher's rule: the SDKs encrypt per channel, so one payload cannot go to two.
        if any(channel_kind(ch) == ENCRYPTED for ch in channels):
            raise ApiError(400, f"{where}an encrypted channel cannot be triggered with other channels.")
        if len(set(channels)) != len(channels):
            channels = list(dict.fromkeys(channels))
    socket_id = item.get("socket_id")
    if socket_id is not None and not is_socket_id(socket_id):
        raise ApiError(400, f"{where}socket_id must be a string like '123.456'.")
    info = item.get("info")
    info = _NO_INFO if info is None else parse_info(info, TRIGGER_INFO, where)
    return EventRequest(channels, name, data, socket_id, info)


def md5_hex(data: bytes) -> str:
    """The MD5 of ``data`` as lower-case hex (the compiled twin computes it itself)."""
    return hashlib.md5(data).hexdigest()


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    """``hmac.digest(key, msg, "sha256")`` (the compiled twin computes it itself)."""
    return hmac.digest(key, msg, "sha256")


class TriggerPath:
    """The fast path of one :class:`~soketi_impl.http.api.HttpApi` (see the module docstring)."""

    __slots__ = (
        "_app_of", "_declined", "_params_of", "_request_of", "api", "apps", "general_check",
        "general_handle", "handler", "inline", "local", "pusher", "trigger",
    )

    def __init__(self, api: HttpApi) -> None:
        from ..adapters.base import LocalAdapter
        from ..http.events import trigger  # (that module imports this one)
        from ..pusher.api import InProcessApi
        from ..pusher.host import AdapterCallbacks

        self.api = api
        self.pusher = api.pusher
        self.apps = api.pusher.apps
        self.handler = trigger
        # The core's own trigger (a test or an embedding app may replace it on the object).
        self.trigger = InProcessApi.trigger
        # The core's publish, deliver_and_publish and _deliver are its classes' own: a
        # publish to a channel without cache is done here (see _publish).
        core = type(api.pusher)
        self.inline = (
            core.publish is InProcessApi.publish
            and core.deliver_and_publish is AdapterCallbacks.deliver_and_publish
            and core._deliver is AdapterCallbacks._deliver
        )
        self.local = LocalAdapter
        # The last head :meth:`head` accepted, so :meth:`handle` does not parse it again
        # (one entry: a host checks a head, reads its body, then calls handle).
        self._request_of: HttpRequest | None = None
        self._app_of: Any = None
        self._params_of: tuple[str, str, str] | None = None
        # handle_http's request that handle declined: the general path it goes to
        # through the API's own handle is not tried again.
        self._declined: HttpRequest | None = None
        #: What :meth:`handle_http` and :meth:`check_http_head` fall back to (the
        #: service sets its own, see :meth:`soketi_impl.service.Pusher.http_entry_points`).
        self.general_handle: Any = api.handle
        self.general_check: Any = api.check_head

    def _publish(self, app: Any, channel: str, name: str, data: str, socket_id: str | None) -> None:
        """``pusher.publish(app, channel, name, data, socket_id)``, inlined when it is the core's own
        (InProcessApi.publish, AdapterCallbacks.deliver_and_publish and _deliver) and the
        channel keeps no cache."""
        pusher = self.pusher
        if not self.inline or is_cache_channel(channel) or "publish" in pusher.__dict__:
            pusher.publish(app, channel, name, data, socket_id)
            return
        payload = encode_event(name, channel, data)
        exclude = None
        if socket_id:
            sock = app.sockets.get(socket_id)
            if sock is not None:
                exclude = sock.sink
        app.table.broadcast(channel, payload, exclude)
        adapter = pusher.adapter
        if type(adapter) is not self.local:  # (the local adapter has nothing to carry)
            adapter.publish(app.config.id, channel, payload, socket_id, False)
        if pusher.observers:
            pusher.observers.tell("published", app.config, channel, name, len(payload))

    def handle_http(self, request: HttpRequest) -> Any:
        """A host's HTTP handler: :meth:`handle`, else ``general_handle``."""
        answer = self.handle(request)
        if answer is not None:
            return answer
        self._declined = request
        return self.general_handle(request)

    def check_http_head(self, request: HttpRequest) -> HttpResponse | None:
        """A host's head check: None for a trigger :meth:`head` accepts, else ``general_check``."""
        if self.head(request):
            return None
        answer: HttpResponse | None = self.general_check(request)
        return answer

    def _app(self, request: HttpRequest) -> Any:
        """The request's app, when it is a trigger to an app in memory; else None."""
        if request.method != "POST":
            return None
        return self._app_for_route(self._route(request.path))

    def _route(self, path: str) -> tuple[Any, ...] | None:
        """``api._routed[("POST", path)]`` while the route table is the one it was made for."""
        api = self.api
        if api._routed_by is not api.routes:
            return None
        routed: tuple[Any, ...] | None = api._routed.get(("POST", path))
        return routed

    def _app_for_route(self, routed: tuple[Any, ...] | None) -> Any:
        """The app of a ``POST`` routed to ``routed``, when it is a trigger to an app in memory; else None."""
        if routed is None or routed[0] is not self.handler:
            return None
        if self.pusher.app_manager is not None:
            return None
        return self.apps.get(routed[1].get("app_id", ""))

    def _params(self, query: str, cfg: AppConfig) -> tuple[str, str, str] | None:
        """``(signed query, auth_signature, body_md5)`` when the query is in the SDKs' form
        (:func:`sdk_query`) and :func:`~soketi_impl.signing.check_api_head` accepts it for
        a request with a body; else None."""
        found = sdk_query(query)
        if found is None:
            return None
        signed, key, signature, stamp, version, md5 = found
        if key != cfg.key or not signature:
            return None
        if version is not None and version != "1.0":
            return None
        if not stamp or len(stamp) > _MAX_STAMP_DIGITS or not stamp.isascii() or not stamp.isdigit():
            return None
        if abs(self.api.clock() - int(stamp)) > API_MAX_SKEW_S:
            return None
        if md5 is None:
            return None
        return signed, signature, md5

    def head(self, request: HttpRequest) -> bool:
        """True when ``request`` is a trigger whose head the general ``check_head`` accepts.

        (Then ``check_head`` has no early answer; False means: ask it.)
        """
        app = self._app(request)
        if app is None:
            return False
        params = self._params(request.query, app.config)
        if params is None:
            return False
        self._request_of = request
        self._app_of = app
        self._params_of = params
        return True

    def handle(self, request: HttpRequest) -> HttpResponse | None:
        """The answer to ``request`` when it is a trigger of the common case; None: nothing was done."""
        if self._declined is request:
            self._declined = None
            return None
        checked = self._request_of is request
        app, params = self._app_of, self._params_of
        self._request_of = self._app_of = self._params_of = None
        body = request.body
        if not body:
            return None
        if not checked:
            app = self._app(request)
            if app is None:
                return None
        cfg = app.config
        if not cfg.enabled:
            return None
        if not checked:
            params = self._params(request.query, cfg)
        if params is None:
            return None
        routed = self._route(request.path)
        if routed is None:
            return None
        done = self._trigger(app, params, routed, bytes(body))
        if done is None:
            return None
        api = self.api
        if done is not True:
            answer: HttpResponse = api._finish(request, app, error_response(done))
            return answer
        response = HttpResponse(200, b"{}")
        cors = api.cors
        if cors._any:
            response.headers.append(_ANY_ORIGIN)
            return response
        decorated: HttpResponse = cors.decorate(request, response)
        return decorated

    def express(self, path: str, query: str, body: bytes) -> bool:
        """A whole request ``POST path?query`` with ``body``, from a host that has not made
        an :class:`HttpRequest` of it: True when it was a trigger of the common case, done
        and to be answered ``200 {}`` with ``Access-Control-Allow-Origin: *`` (the answer
        :meth:`handle` gives it); False: nothing was done, take the general way."""
        if not body or not self.api.cors._any:
            return False
        routed = self._route(path)
        app = self._app_for_route(routed)
        if app is None or routed is None:  # (no app without a route)
            return False
        cfg = app.config
        if not cfg.enabled:
            return False
        params = self._params(query, cfg)
        if params is None:
            return False
        return self._trigger(app, params, routed, body) is True

    def _trigger(
        self, app: Any, params: tuple[str, str, str], routed: tuple[Any, ...], body: bytes
    ) -> Literal[True] | ApiError | None:
        """The signature checks and the trigger (``routed``: the route of the request's
        path): True when it was done; an ApiError when the general path refuses it
        (nothing done); None: not the common case."""
        cfg = app.config
        query, signature, md5 = params
        # body_md5, then the signature (signing.check_api_signature)
        if not _compare(md5, _md5(body).hexdigest()):  # (both ASCII: sdk_query read them)
            return None
        try:
            given = bytes.fromhex(signature)
        except ValueError:
            return None
        api = self.api
        mac = api._macs.get(cfg.secret)
        if mac is None:
            mac = api._macs[cfg.secret] = HmacSha256(cfg.secret.encode())
        for signed_path in routed[2]:
            if _compare(mac.digest(f"POST\n{signed_path}\n{query}".encode("utf-8", "surrogatepass")), given):
                break
        else:
            return None
        pusher = self.pusher
        if "trigger" in pusher.__dict__ or type(pusher).trigger is not self.trigger:
            return None
        try:
            item = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if type(item) is not dict or item.get("info") is not None:
            return None
        api._checked = None  # (a head check_head kept is not this request's)
        # From here on, what the general path's handler does, refusals included.
        try:
            event = parse_event(item, cfg)
            limit = cfg.max_backend_events_per_second
            if limit >= 0:
                api.rates.take(cfg.id, _EVENTS_WHAT, len(event.channels), limit)
        except ApiError as exc:
            return exc  # (a refused trigger costs nothing: see http/rates.py)
        name, data, socket_id = event.name, event.data, event.socket_id
        for channel in event.channels:
            self._publish(app, channel, name, data, socket_id)
        # api._finish, for the 200 "{}"
        stats = app.stats
        stats.http_calls += 1
        stats.http_bytes_received += len(body)
        stats.http_bytes_sent += 2
        return True
