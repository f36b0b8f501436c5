"""The trigger twins (``twins/_trigger``).

- the compiled twin answers as the pure one: :func:`sdk_query`, :func:`parse_event`
  (same events, same refusals);
- the fast path (:class:`TriggerPath`, either twin) answers every request exactly as
  the general path of the HTTP API does, and delivers the same frames: good triggers,
  bad signatures, bad ``body_md5``, bad JSON, oversize data, missing fields, non-ASCII,
  escaped or unsorted queries, unknown apps.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import importlib
import json
from collections import deque
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soketi_impl.config import load_config
from soketi_impl.http.api import HttpApi
from soketi_impl.http.errors import ApiError
from soketi_impl.http.types import HttpRequest, HttpResponse
from soketi_impl.pusher.server import PusherServer
from soketi_impl.signing import sign_api_request
from soketi_impl.twins import _query_py, _trigger_py
from soketi_impl.twins._fanout import Sink

try:
    _trigger_c: ModuleType | None = importlib.import_module("soketi_impl.twins._trigger_c")
except ImportError:  # the pure build; tests/test_speedups.py says whether that is expected
    _trigger_c = None

needs_c = pytest.mark.skipif(_trigger_c is None, reason="the compiled twin is not built")

APP_ID, KEY, SECRET = "1", "app-key", "app-secret"
NOW = 1_800_000_000
EVENTS = f"/apps/{APP_ID}/events"


# ---------------------------------------------------------------- sdk_query

_piece = st.sampled_from(
    ["a", "z", "A", "=", "&", "%", "%41", "_", "1", "é", "auth_key=k", "auth_signature=", "auth_signature",
     "&auth_signature=ab", "auth_timestamp=1", "&auth_version=1.0", "&body_md5=x", "&zz=1"]
)
_query = st.one_of(st.text(max_size=40), st.lists(_piece, max_size=12).map("".join))


@settings(max_examples=3000, deadline=None)
@given(_query)
def test_sdk_query_reads_what_parse_query_and_signed_query_read(query: str) -> None:
    found = _trigger_py.sdk_query(query)
    assert (found is None) == (_query_py.signed_query(query) is None)
    if found is not None:
        assert found[0] == _query_py.signed_query(query)


@needs_c
@settings(max_examples=3000, deadline=None)
@given(_query)
def test_sdk_query_compiled_answers_as_the_pure_one(query: str) -> None:
    assert _trigger_c is not None
    assert _trigger_c.sdk_query(query) == _trigger_py.sdk_query(query)


# ---------------------------------------------------------------- the hashes

_has_shani = _trigger_c is not None and _trigger_c.sha256_impl() == "sha-ni"
# the SHA-256 block function: the portable C one, and the SHA extensions' where the CPU has them
_sha256_impls = [
    "portable",
    pytest.param(
        "sha-ni", marks=pytest.mark.skipif(not _has_shani, reason="this CPU (or valgrind) has no SHA extensions")
    ),
]


@pytest.fixture
def sha256_impl(request: pytest.FixtureRequest) -> Iterator[str]:
    """The compiled twin with the block function ``request.param``, the best one again after."""
    assert _trigger_c is not None
    _trigger_c._use_portable_sha256(request.param == "portable")
    assert _trigger_c.sha256_impl() == request.param
    try:
        yield request.param
    finally:
        _trigger_c._use_portable_sha256(False)


@needs_c
@pytest.mark.parametrize("sha256_impl", _sha256_impls, indirect=True)
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.one_of(st.binary(max_size=8), st.binary(min_size=60, max_size=140)))
def test_hashes_compiled_answer_as_hashlib(sha256_impl: str, data: bytes, key: bytes) -> None:
    # sizes around the block (64) and padding (56) boundaries come up often in 0..300
    assert _trigger_c is not None
    assert _trigger_c.md5_hex(data) == _trigger_py.md5_hex(data) == hashlib.md5(data).hexdigest()
    assert _trigger_c.hmac_sha256(key, data) == _trigger_py.hmac_sha256(key, data)
    assert _trigger_c.hmac_sha256(key, data) == hmac.digest(key, data, "sha256")


@needs_c
@pytest.mark.parametrize("sha256_impl", _sha256_impls, indirect=True)
def test_hmac_every_length_to_300(sha256_impl: str) -> None:
    # 0..300 bytes: one to six blocks, the length in the last block or in one of its own
    assert _trigger_c is not None
    data = bytes(range(256)) + bytes(range(255, -1, -1))
    for n in range(301):
        msg = data[n % 7 : n % 7 + n]
        for key in (b"", b"secret", b"k" * 64, b"k" * 65):
            assert _trigger_c.hmac_sha256(key, msg) == hmac.digest(key, msg, "sha256"), (n, key)


@needs_c
@pytest.mark.parametrize("sha256_impl", _sha256_impls, indirect=True)
@pytest.mark.parametrize("n", [0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 1000])
def test_hashes_at_the_block_boundaries(sha256_impl: str, n: int) -> None:
    assert _trigger_c is not None
    data = bytes(range(256)) * 4
    data = data[:n]
    assert _trigger_c.md5_hex(data) == hashlib.md5(data).hexdigest()
    for key in (b"", b"k" * 64, b"k" * 65):
        assert _trigger_c.hmac_sha256(key, data) == _trigger_py.hmac_sha256(key, data)


@needs_c
def test_sha256_impl_is_chosen_once_at_import() -> None:
    assert _trigger_c is not None
    best = _trigger_c.sha256_impl()
    assert best in ("sha-ni", "portable")
    _trigger_c._use_portable_sha256(True)
    assert _trigger_c.sha256_impl() == "portable"
    _trigger_c._use_portable_sha256(False)
    assert _trigger_c.sha256_impl() == best


# ---------------------------------------------------------------- parse_event

_text = st.one_of(
    st.sampled_from(["c1", "c2", "private-encrypted-x", "presence-p", "#server-to-user-u", "", "é", "a" * 300]),
    st.text(max_size=8),
)
_value = st.one_of(
    st.none(), st.integers(), st.booleans(), _text, st.lists(_text, max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_item = st.one_of(
    _value,
    st.fixed_dictionaries(
        {},
        optional={
            "name": _value, "data": st.one_of(_value, st.text(max_size=30), st.just("x" * 3000)),
            "channel": _value, "channels": _value, "socket_id": st.one_of(_value, st.just("1.2")),
            "info": st.one_of(_value, st.sampled_from(["subscription_count", "user_count,nope", ""])),
        },
    ),
)


def _outcome(parse: Any, item: Any, cfg: Any, batch_index: int | None) -> Any:
    try:
        ev = parse(item, cfg, batch_index=batch_index)
    except ApiError as exc:
        return ("error", exc.status, exc.message, exc.headers)
    return ("event", ev.channels, ev.name, ev.data, ev.socket_id, ev.info, repr(ev))


@needs_c
@settings(max_examples=2000, deadline=None)
@given(_item, st.sampled_from([None, 0, 3]))
def test_parse_event_compiled_answers_as_the_pure_one(item: Any, batch_index: int | None) -> None:
    assert _trigger_c is not None
    cfg = load_config(None, environ={"SOKETI_DEFAULT_APP_ID": APP_ID}).apps[0]
    cfg.max_event_payload_in_kb = 2
    assert _outcome(_trigger_c.parse_event, item, cfg, batch_index) == _outcome(
        _trigger_py.parse_event, item, cfg, batch_index
    )


# ---------------------------------------------------------------- the fast path against the general one


class _General:
    """A TriggerPath that takes nothing: the API's general path answers every request."""

    def handle(self, request: HttpRequest) -> None:
        return None

    def head(self, request: HttpRequest) -> bool:
        return False


class _Side:
    """One API (core, one subscriber on c1, a fixed clock) driven as the front door drives it."""

    def __init__(self, fast: str | None, express: bool = False) -> None:
        cfg = load_config(
            None,
            environ={"SOKETI_DEFAULT_APP_ID": APP_ID, "SOKETI_DEFAULT_APP_KEY": KEY,
                     "SOKETI_DEFAULT_APP_SECRET": SECRET, "SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC": "5"},
        )
        cfg.apps[0].max_event_payload_in_kb = 1  # (the 2,000-byte data is over it: 413)
        self.core = PusherServer(cfg)
        self.api = HttpApi(self.core, cfg, clock=lambda: float(NOW))
        if fast is None:
            self.api.fast = _General()  # type: ignore[assignment]
            self.handle, self.check = self.api.handle, self.api.check_head
        else:
            module = _trigger_py if fast == "py" else _trigger_c
            assert module is not None
            path = module.TriggerPath(self.api)
            self.api.fast = path
            self.handle, self.check = path.handle_http, path.check_http_head
        # as the front door offers a whole plain request (FrontDoorOptions.express)
        self.express = self.api.fast.express if express else None  # type: ignore[union-attr]
        app = self.core.app(APP_ID)
        self.frames: deque[bytes] = deque(maxlen=8)
        self.outbox = self.core.outbox
        app.table.add("c1", Sink(self.outbox, app.stats, write=self.frames.append))
        self.stats = app.stats

    def send(self, path: str, query: str, body: bytes) -> Any:
        if self.express is not None and self.express(path, query, body):
            # what the front door then writes (twins/_frontdoor: EXPRESS_ANSWER)
            answer = HttpResponse(200, b"{}", headers=[("Access-Control-Allow-Origin", "*")])
        else:
            answer = self._send(path, query, body)
        self.outbox.flush()
        return (
            answer.status, answer.body, answer.content_type, answer.headers, list(self.frames),
            self.stats.http_calls, self.stats.http_bytes_received, self.stats.http_bytes_sent,
        )

    def _send(self, path: str, query: str, body: bytes) -> Any:
        request = HttpRequest("POST", path, query, {"content-length": str(len(body))}, b"")
        answer = self.check(request) if body else None
        if answer is None:
            request.body = body
            answer = self.handle(request)
        return answer


_event = st.fixed_dictionaries(
    {"name": st.sampled_from(["ev", "", "é", "n" * 250]), "data": st.sampled_from(["{}", "x", "é", "x" * 2000])},
    optional={
        "channels": st.lists(st.sampled_from(["c1", "c2", "private-encrypted-e", "bad name", "é"]), max_size=3),
        "channel": st.sampled_from(["c1", "c2", 5]),
        "socket_id": st.sampled_from(["1.2", "x", None]),
        "info": st.sampled_from([None, "subscription_count", "", "nope"]),
    },
)
_mutation = st.sampled_from(
    ["none", "none", "node_order", "shuffled", "bad_signature", "short_signature", "bad_md5", "no_md5",
     "wrong_key", "stale", "version2", "escaped", "upper", "non_ascii", "bad_json", "non_utf8", "empty_body",
     "unknown_app", "no_signature", "twice", "other_secret", "upper_signature", "spaced_signature", "long_query"]
)


def _request(event: dict[str, Any], mutation: str) -> tuple[str, str, bytes]:
    body = json.dumps(event).encode()
    if mutation == "bad_json":
        body = body[:-1]
    elif mutation == "non_utf8":
        body = b'{"name": "\xff"}'
    elif mutation == "empty_body":
        body = b""
    path = EVENTS if mutation != "unknown_app" else "/apps/9/events"
    secret = SECRET if mutation != "other_secret" else "not-the-secret"
    params = sign_api_request(KEY, secret, "POST", path, body=body, timestamp=NOW - (700 if mutation == "stale" else 0))
    if mutation == "bad_signature":
        params["auth_signature"] = "0" * 64
    elif mutation == "short_signature":
        params["auth_signature"] = "abc"
    elif mutation == "upper_signature":
        params["auth_signature"] = params["auth_signature"].upper()
    elif mutation == "spaced_signature":  # bytes.fromhex takes it
        params["auth_signature"] = params["auth_signature"][:2] + " " + params["auth_signature"][2:]
    elif mutation == "bad_md5":
        params["body_md5"] = hashlib.md5(body + b"x").hexdigest()
    elif mutation == "no_md5":
        params.pop("body_md5", None)
    elif mutation == "wrong_key":
        params["auth_key"] = "other"
    elif mutation == "version2":
        params["auth_version"] = "2.0"
    elif mutation == "no_signature":
        params.pop("auth_signature")
    elif mutation == "long_query":  # (a signed text over the compiled twin's 2,048-byte buffer)
        params = sign_api_request(KEY, secret, "POST", path, params={"zz": "z" * 2100}, body=body, timestamp=NOW)
    keys = sorted(params)
    if mutation == "node_order":
        keys = [k for k in keys if k != "auth_signature"] + ["auth_signature"]
    elif mutation == "shuffled":
        keys = list(reversed(keys))
    query = "&".join(f"{k}={params[k]}" for k in keys)
    if mutation == "escaped":
        query = query.replace("auth_key=", "auth_%6Bey=")
    elif mutation == "upper":
        query = query.replace("auth_key=", "AUTH_KEY=")
    elif mutation == "non_ascii":
        query += "&z=é"
    elif mutation == "twice":
        query += f"&auth_signature={params.get('auth_signature', '')}"
    return path, query, body


@pytest.mark.parametrize("kind", ["py", pytest.param("c", marks=needs_c)])
@pytest.mark.parametrize("express", [False, True])
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(st.tuples(_event, _mutation), min_size=1, max_size=4))
def test_fast_path_answers_as_the_general_path(
    loop: asyncio.AbstractEventLoop, kind: str, express: bool, events: list[tuple[dict[str, Any], str]]
) -> None:
    """The fast path (and its express entry, where the front door offers it the whole
    request first) answers and delivers as the general path does."""

    async def run() -> None:
        fast, general = _Side(kind, express), _Side(None)
        for event, mutation in events:
            path, query, body = _request(event, mutation)
            assert fast.send(path, query, body) == general.send(path, query, body), (event, mutation)

    loop.run_until_complete(run())


@pytest.mark.parametrize("kind", ["py", pytest.param("c", marks=needs_c)])
def test_fast_path_takes_the_sdk_requests(loop: asyncio.AbstractEventLoop, kind: str) -> None:
    """The SDKs' requests (signature sorted in, or last) are answered by the fast path itself."""

    async def run() -> None:
        side = _Side(kind)
        calls: list[HttpRequest] = []
        general = side.api.fast.general_handle  # type: ignore[union-attr]
        side.api.fast.general_handle = lambda r: calls.append(r) or general(r)  # type: ignore[union-attr]
        for mutation in ("none", "node_order"):
            status, body, *_ = side.send(*_request({"name": "ev", "channel": "c1", "data": "{}"}, mutation))
            assert (status, body) == (200, b"{}")
        assert calls == []
        assert len(side.frames) == 2

    loop.run_until_complete(run())


@pytest.mark.parametrize("kind", ["py", pytest.param("c", marks=needs_c)])
def test_fast_path_follows_a_replaced_route_table(loop: asyncio.AbstractEventLoop, kind: str) -> None:
    """A route table replaced after a trigger is obeyed at once (the last route is not reused)."""
    from soketi_impl.http.api import ROUTES
    from soketi_impl.http.routes import RouteTable

    async def run() -> None:
        side = _Side(kind)
        request = _request({"name": "ev", "channel": "c1", "data": "{}"}, "none")
        assert side.send(*request)[0] == 200
        side.api.routes = RouteTable([r for r in ROUTES if not r.pattern.endswith("/events")])
        assert side.send(*request)[:2] == (404, b'{"error":"Not found."}')
        assert len(side.frames) == 1

    loop.run_until_complete(run())


@pytest.mark.parametrize("kind", ["py", pytest.param("c", marks=needs_c)])
def test_express_takes_the_sdk_requests_and_nothing_else(loop: asyncio.AbstractEventLoop, kind: str) -> None:
    """express does a good trigger itself; anything it declines was left untouched
    (no delivery, no counter), for the general path to answer."""

    async def run() -> None:
        side = _Side(kind, express=True)
        good = _request({"name": "ev", "channel": "c1", "data": "{}"}, "none")
        assert side.send(*good)[0] == 200  # (the general path routes a path the first time)
        assert side.api.fast.express(*good) is True  # type: ignore[union-attr]
        side.outbox.flush()
        assert len(side.frames) == 2 and side.stats.http_calls == 2
        for event, mutation in [({"name": "ev", "channel": "c1", "data": "{}"}, "bad_signature"),
                                ({"name": "", "channel": "c1", "data": "{}"}, "none"),  # refused: 400
                                ({"name": "ev", "channel": "c1", "data": "{}", "info": "user_count"}, "none"),
                                ({"name": "ev", "channel": "c1", "data": "{}"}, "unknown_app")]:
            assert side.api.fast.express(*_request(event, mutation)) is False  # type: ignore[union-attr]
        side.outbox.flush()
        assert len(side.frames) == 2 and side.stats.http_calls == 2
        side.api.cors._any = False  # an origin list: the answer depends on the request's Origin
        assert side.api.fast.express(*good) is False  # type: ignore[union-attr]

    loop.run_until_complete(run())


def _frontdoor(kind: str) -> Any:
    return importlib.import_module(f"soketi_impl.twins._frontdoor_{kind}")


class _Transport:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass


def _wire(side: _Side, kind: str, express: bool) -> tuple[Any, _Transport]:
    from soketi_impl.hosts.picows import FrontDoorOptions
    from soketi_impl.router import Router

    options = FrontDoorOptions(max_pipeline=8)
    options.express = side.express if express else None
    door = _frontdoor(kind).FrontDoorBase(Router(), side.handle, options, lambda: "1.1", side.check)
    transport = _Transport()
    door.connection_made(transport)
    return door, transport


def _wire_request(path: str, query: str, body: bytes) -> bytes:
    return (f"POST {path}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.mark.parametrize("kind", ["py", pytest.param("c", marks=needs_c)])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(st.tuples(_event, _mutation), min_size=1, max_size=4),
       cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=4))
def test_a_front_door_with_express_answers_as_one_without(
    loop: asyncio.AbstractEventLoop, kind: str, events: list[tuple[dict[str, Any], str]], cuts: list[int]
) -> None:
    """The same pipelined triggers, cut into reads anywhere, through a front door that
    offers whole requests to express and through one that does not: the same bytes
    answered, the same frames delivered, the same counters."""
    stream = b"".join(_wire_request(*_request(event, mutation)) for event, mutation in events)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)]) if b > a]

    async def run(express: bool) -> Any:
        side = _Side(kind, express=True)
        door, transport = _wire(side, kind, express)
        door.simple = True
        for chunk in chunks:
            door.data_received(chunk)
            side.outbox.flush()
        return (b"".join(transport.out), list(side.frames), side.stats.http_calls,
                side.stats.http_bytes_received, side.stats.http_bytes_sent)

    assert loop.run_until_complete(run(True)) == loop.run_until_complete(run(False))
