"""Micro benchmarks of the HTTP API's per-request path, in process (no sockets).

Run: ``PYTHONPATH=src pytest bench/test_bench_http.py -n 0 --benchmark-enable``

- ``signature``: :func:`~soketi_impl.signing.check_api_request` of a signed trigger
  (query parse + HMAC + MD5), with the app's prepared :class:`HmacSha256`;
- ``signature_plain``: the same with the secret as a str (the key set up per call);
- ``hmac_sha256[portable|sha-ni]``: the compiled twin's ``hmac_sha256(key, 140-byte message)``
  with each SHA-256 block function of csrc/soketi_digest.h (sha-ni where the CPU has it);
- ``parse``: JSON body -> validated :class:`EventRequest`;
- ``check_head``: :meth:`HttpApi.check_head` of that request (route, app, auth parameters);
- ``check_head_then_handle``: both, as a host that answers from the head calls them;
- ``handle``: the whole :meth:`HttpApi.handle` of a trigger to an empty channel
  (routing, signature, parse, the in-process trigger, the JSON answer, stats);
- ``handle_100``: the same to a channel with 100 in-memory subscribers, flush included.

Without ``--benchmark-enable`` each case runs once, as a test.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import importlib
import json
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httptools
import pytest

from soketi_impl.config import load_config
from soketi_impl.http.api import HttpApi
from soketi_impl.http.events import parse_event
from soketi_impl.http.query import parse_query
from soketi_impl.http.types import HttpRequest
from soketi_impl.pusher.server import PusherServer
from soketi_impl.signing import HmacSha256, check_api_request
from soketi_impl.twins._fanout import Sink

try:
    _trigger_c: ModuleType | None = importlib.import_module("soketi_impl.twins._trigger_c")
except ImportError:  # the pure build
    _trigger_c = None

APP_ID, APP_KEY, APP_SECRET = "1234", "app-key", "app-secret"


def signed(channel: str) -> HttpRequest:
    body = json.dumps({"name": "bench-event", "channel": channel, "data": "x" * 64}).encode()
    path = f"/apps/{APP_ID}/events"
    params = {
        "auth_key": APP_KEY,
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
        "body_md5": hashlib.md5(body).hexdigest(),
    }
    query = "&".join(f"{k}={params[k]}" for k in sorted(params))
    sig = hmac.new(
        APP_SECRET.encode(), f"POST\n{path}\n{query}".encode(), hashlib.sha256
    ).hexdigest()
    url = httptools.parse_url(f"{path}?{query}&auth_signature={sig}".encode())
    return HttpRequest(
        "POST", url.path.decode(), url.query.decode(), {"content-type": "application/json"}, body
    )


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    asyncio.set_event_loop(lp)
    yield lp
    asyncio.set_event_loop(None)
    lp.close()


@pytest.fixture
def api(loop: asyncio.AbstractEventLoop) -> HttpApi:
    cfg = load_config(None, environ={"SOKETI_DEFAULT_APP_ID": APP_ID})
    return HttpApi(PusherServer(cfg), cfg)


def test_signature(benchmark: Any) -> None:
    req = signed("bench")
    now = time.time()
    mac = HmacSha256(APP_SECRET.encode())  # prepared once per app, as HttpApi does

    def run() -> None:
        check_api_request("POST", (req.path,), parse_query(req.query), req.body, APP_KEY, mac, now)

    benchmark(run)


def test_signature_plain(benchmark: Any) -> None:
    req = signed("bench")
    now = time.time()

    def run() -> None:
        check_api_request(
            "POST", (req.path,), parse_query(req.query), req.body, APP_KEY, APP_SECRET, now
        )

    benchmark(run)


@pytest.mark.skipif(_trigger_c is None, reason="the compiled twin is not built")
@pytest.mark.parametrize(
    "impl",
    [
        "portable",
        pytest.param(
            "sha-ni",
            marks=pytest.mark.skipif(
                _trigger_c is None or _trigger_c.sha256_impl() != "sha-ni",
                reason="this CPU has no SHA extensions",
            ),
        ),
    ],
)
def test_hmac_sha256(benchmark: Any, impl: str) -> None:
    assert _trigger_c is not None
    key, msg = APP_SECRET.encode(), b"m" * 140  # a signed trigger's text; 6 blocks: 2 key, 3 inner, 1 outer
    _trigger_c._use_portable_sha256(impl == "portable")
    try:
        assert _trigger_c.sha256_impl() == impl
        assert benchmark(_trigger_c.hmac_sha256, key, msg) == hmac.digest(key, msg, "sha256")
    finally:
        _trigger_c._use_portable_sha256(False)


def test_check_head(benchmark: Any, api: HttpApi) -> None:
    req = signed("bench")
    req.headers["content-length"] = str(len(req.body))
    assert benchmark(api.check_head, req) is None


def test_check_head_then_handle(benchmark: Any, api: HttpApi) -> None:
    """What a host that answers from the head first pays per request (the head is parsed once)."""
    req = signed("bench")
    req.headers["content-length"] = str(len(req.body))

    def run() -> Any:
        assert api.check_head(req) is None
        return api.handle(req)

    resp = benchmark(run)
    assert resp.status == 200


def test_parse(benchmark: Any, api: HttpApi) -> None:
    import orjson

    req = signed("bench")
    cfg = api.pusher.app(APP_ID).config
    ev = benchmark(lambda: parse_event(orjson.loads(req.body), cfg))
    assert ev.channels == ["bench"]


def test_handle(benchmark: Any, api: HttpApi) -> None:
    req = signed("bench")
    resp = benchmark(api.handle, req)
    assert resp.status == 200 and resp.body == b"{}"


def test_handle_100_subscribers(
    benchmark: Any, api: HttpApi, loop: asyncio.AbstractEventLoop
) -> None:
    app = api.pusher.app(APP_ID)

    async def setup() -> Any:
        ob = api.pusher.outbox
        for _ in range(100):
            app.table.add("bench", Sink(ob, app.stats, write=collections.deque(maxlen=1).append))
        return ob

    ob = loop.run_until_complete(setup())
    req = signed("bench")

    def run() -> Any:
        resp = api.handle(req)
        ob.flush()
        return resp

    resp = benchmark(run)
    assert resp.status == 200
    assert app.stats.deliveries >= 100
