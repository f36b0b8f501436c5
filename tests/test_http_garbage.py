"""Hostile HTTP API input (issue 9): garbage auth parameters are a 4xx with a JSON error, never a 5xx.

- Against a running server (both builds): a Unicode-digit ``auth_timestamp``
  (``%C2%B2``), 5,000 digits, and other non-ASCII garbage answer 401 (or 400 for a
  percent-escape that is not UTF-8), with ``{"error": ...}``, and the server logs
  no traceback.
- In process, hypothesis properties: random methods, paths, query strings, headers
  and bodies never make :meth:`HttpApi.handle` or :meth:`HttpApi.check_head` raise
  or answer 5xx; every refusal is JSON with an ``error``.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import APP_ID, APP_KEY, APP_SECRET, ServerProcess, run_server
from soketi_impl.config import load_config
from soketi_impl.http.api import HttpApi
from soketi_impl.http.types import HttpRequest, HttpResponse
from soketi_impl.pusher.core import PusherServer
from soketi_impl.signing import sign_api_request

TIMEOUT = 5.0
EVENTS = f"/apps/{APP_ID}/events"
BODY = b'{"name":"e","channel":"c","data":"d"}'


def _signed_query(**override: str) -> str:
    params = sign_api_request(APP_KEY, APP_SECRET, "POST", EVENTS, None, BODY)
    params.update(override)
    return "&".join(f"{k}={v}" for k, v in params.items())


GARBAGE = [
    ("auth_timestamp", "%C2%B2", 401),  # a Unicode digit: str.isdigit() is true, int() is not
    ("auth_timestamp", "9" * 5000, 401),
    ("auth_timestamp", "%EF%BC%91%EF%BC%92", 401),  # fullwidth digits
    ("auth_timestamp", "%F0%9F%92%A9", 401),
    ("auth_timestamp", "-1", 401),
    ("auth_signature", "%E2%80%8F" * 30, 401),
    ("auth_signature", "Z" * 5000, 401),
    ("auth_key", "%00%01", 401),
    ("auth_version", "%C3%A9", 401),
    ("body_md5", "%D9%A3" * 16, 401),
    ("body_md5", "%ff", 400),  # a percent-escape that is not UTF-8
]


@pytest.fixture(scope="module", params=["c", "py"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    from soketi_impl.twins import _speedups

    if request.param == "c" and _speedups.NO_EXTENSIONS:
        pytest.skip("SOKETI_IMPL_NO_EXTENSIONS is set")
    with run_server(str(request.param)) as srv:
        yield srv


def test_garbage_auth_parameters_are_4xx_json_without_traceback(server: ServerProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        for key, value, status in GARBAGE:
            conn.request("POST", f"{EVENTS}?{_signed_query(**{key: value})}", body=BODY)
            resp = conn.getresponse()
            data = resp.read()
            assert resp.status == status, (key, value[:20], data[:200])
            assert resp.getheader("Content-Type", "").startswith("application/json")
            assert json.loads(data)["error"]
        # the same connection still serves a good request
        conn.request("POST", f"{EVENTS}?{_signed_query()}", body=BODY)
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"{}")
    finally:
        conn.close()
    assert not [line for line in server.log if "Traceback" in line or "ERROR" in line]


def test_far_future_timestamp_is_401(server: ServerProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        params = sign_api_request(APP_KEY, APP_SECRET, "POST", EVENTS, None, BODY, timestamp=int(time.time()) + 700)
        conn.request("POST", EVENTS + "?" + "&".join(f"{k}={v}" for k, v in params.items()), body=BODY)
        resp = conn.getresponse()
        assert resp.status == 401 and "600 s" in json.loads(resp.read())["error"]
    finally:
        conn.close()


# ---------------------------------------------------------------- properties, in process

_loop = asyncio.new_event_loop()  # the core may look for a loop; one for the module's examples


def _api() -> HttpApi:
    cfg = load_config(
        None,
        environ={
            "SOKETI_DEFAULT_APP_ID": APP_ID, "SOKETI_DEFAULT_APP_KEY": APP_KEY,
            "SOKETI_DEFAULT_APP_SECRET": APP_SECRET,
        },
    )
    return HttpApi(PusherServer(cfg), cfg)


API = _api()

_segment = st.one_of(
    st.sampled_from(["apps", APP_ID, "events", "batch_events", "channels", "users", "terminate_connections",
                     "presence-x", "%23server-to-user-1", "%ff", "%", "..", ""]),
    st.text(max_size=12),
)
_path = st.one_of(
    st.lists(_segment, min_size=1, max_size=6).map(lambda parts: "/" + "/".join(parts)),
    st.sampled_from(["/", "/ready", EVENTS, f"/apps/{APP_ID}/channels", "/users/u/terminate_connections"]),
)
_value = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["%C2%B2", "9" * 5000, "%ff", "%", "%%", "1.0", APP_KEY, str(int(time.time()))]),
)
_key = st.one_of(
    st.sampled_from(["auth_key", "auth_timestamp", "auth_version", "auth_signature", "body_md5", "info",
                     "filter_by_prefix", "AUTH_KEY"]),
    st.text(max_size=10),
)
_query = st.one_of(
    st.text(max_size=80),
    st.lists(st.tuples(_key, _value), max_size=8).map(lambda kv: "&".join(f"{k}={v}" for k, v in kv)),
)
_body = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([BODY, b'{"batch":[{}]}', b'{"name":1}', b"[]", b"null", b'{"channels":[null]}']),
    st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(st.sampled_from(["name", "data", "channel", "channels", "socket_id", "info", "batch"]),
                                                        st.one_of(st.none(), st.integers(), st.text(max_size=10), st.lists(st.text(max_size=5), max_size=3)), max_size=6)),
)
_method = st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH", "get"])
_headers = st.dictionaries(st.sampled_from(["content-length", "transfer-encoding", "origin", "x"]), st.text(max_size=10), max_size=3)


def _check(response: Any) -> HttpResponse:
    if not isinstance(response, HttpResponse):
        response = _loop.run_until_complete(response)
    assert isinstance(response, HttpResponse)
    assert response.status < 500, response.body
    if response.status >= 400 and response.content_type == "application/json":
        assert orjson.loads(response.body)["error"]
    return response


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=_method, path=_path, query=_query, headers=_headers, body=_body)
def test_no_request_is_a_5xx(method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> None:
    head = HttpRequest(method, path, query, headers, b"")
    early = API.check_head(head)
    if early is not None:
        _check(early)
    _check(API.handle(HttpRequest(method, path, query, headers, body)))


_channel = st.one_of(st.text(max_size=20), st.sampled_from(["presence-x", "cache-x", "private-encrypted-x", "%23server-to-user-1"]))
_signed_route = st.one_of(
    st.tuples(st.just("POST"), st.sampled_from([EVENTS, f"/apps/{APP_ID}/batch_events"])),
    st.tuples(st.just("GET"), st.just(f"/apps/{APP_ID}/channels")),
    st.tuples(st.just("GET"), _channel.map(lambda c: f"/apps/{APP_ID}/channels/{c}")),
    st.tuples(st.just("GET"), _channel.map(lambda c: f"/apps/{APP_ID}/channels/{c}/users")),
    st.tuples(st.just("POST"), st.text(max_size=200).map(lambda u: f"/apps/{APP_ID}/users/{u}/terminate_connections")),
)
_extra_key = st.one_of(st.sampled_from(["info", "filter_by_prefix"]), st.text(st.characters(blacklist_characters="&=%"), min_size=1, max_size=10))


@settings(max_examples=800, deadline=None)
@given(route=_signed_route, extra=st.dictionaries(_extra_key, _value, max_size=4), body=_body)
def test_signed_requests_with_random_input_are_never_a_5xx(
    route: tuple[str, str], extra: dict[str, str], body: bytes
) -> None:
    """Correctly signed requests carrying random parameters and bodies get past the signature."""
    method, path = route
    if method == "GET":
        body = b""
    params = sign_api_request(APP_KEY, APP_SECRET, method, path, extra, body)
    query = "&".join(f"{k}={v}" for k, v in params.items())
    _check(API.handle(HttpRequest(method, path, query, {}, body)))
