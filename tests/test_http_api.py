"""The HTTP REST API with raw HTTP: status codes, JSON errors, signing, limits, CORS, rates.

Most cases run against one server subprocess (compiled build) over keep-alive
``http.client`` connections; a few need the in-process :class:`Server` (stats,
the head timeout, a small body limit) or their own configuration (rates, a
disabled app, CORS origins). The signing here is written from the Pusher spec,
not taken from the implementation, so it is an independent oracle.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from conftest import APP_ID, APP_KEY, APP_SECRET, ServerProcess, base_env, run_server

TIMEOUT = 5.0


def sign_query(
    method: str,
    path: str,
    params: dict[str, str] | None = None,
    body: bytes = b"",
    *,
    key: str = APP_KEY,
    secret: str = APP_SECRET,
    timestamp: int | None = None,
    md5: str | None = "auto",
) -> str:
    """The signed query string of a request (auth_version 1.0), values unescaped as the SDKs send them."""
    q = dict(params or {})
    q.update(
        auth_key=key,
        auth_timestamp=str(int(time.time()) if timestamp is None else timestamp),
        auth_version="1.0",
    )
    if md5 == "auto":
        if body:
            q["body_md5"] = hashlib.md5(body).hexdigest()
    elif md5 is not None:
        q["body_md5"] = md5
    query = "&".join(f"{k}={q[k]}" for k in sorted(q))
    sig = hmac.new(
        secret.encode(), f"{method}\n{path}\n{query}".encode(), hashlib.sha256
    ).hexdigest()
    return f"{query}&auth_signature={sig}"


class Client:
    """A keep-alive HTTP client for one server."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)

    def raw(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        self.conn.request(method, url, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        **sign: Any,
    ) -> tuple[int, Any]:
        raw = (
            body
            if isinstance(body, bytes)
            else (b"" if body is None else json.dumps(body).encode())
        )
        status, _, data = self.raw(
            method, f"{path}?{sign_query(method, path, params, raw, **sign)}", raw or None
        )
        return status, json.loads(data)

    def close(self) -> None:
        self.conn.close()


EVENTS = f"/apps/{APP_ID}/events"
BATCH = f"/apps/{APP_ID}/batch_events"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with run_server("c") as srv:
        yield srv


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    c = Client(server.port)
    yield c
    c.close()


def ws_subscribe(server: ServerProcess, channel: str) -> tuple[ClientConnection, str]:
    ws = connect(server.ws_url, open_timeout=TIMEOUT, close_timeout=1).__enter__()
    sid = json.loads(json.loads(ws.recv(timeout=TIMEOUT))["data"])["socket_id"]
    ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
    assert json.loads(ws.recv(timeout=TIMEOUT))["event"] == "pusher_internal:subscription_succeeded"
    return ws, sid


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "ev", "data": "{}", "channels": ["c1"]}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


# ---------------------------------------------------------------- happy paths


def test_trigger_reaches_subscriber_and_excludes_socket_id(
    server: ServerProcess, client: Client
) -> None:
    ws1, sid1 = ws_subscribe(server, "room")
    ws2, _ = ws_subscribe(server, "room")
    try:
        status, body = client.call(
            "POST", EVENTS, {"name": "msg", "data": '{"x":1}', "channel": "room", "socket_id": sid1}
        )
        assert (status, body) == (200, {})
        got = json.loads(ws2.recv(timeout=TIMEOUT))
        assert got == {"event": "msg", "channel": "room", "data": '{"x":1}'}
        # ws1 was excluded: the next thing it sees is the second trigger.
        client.call("POST", EVENTS, {"name": "second", "data": "2", "channel": "room"})
        assert json.loads(ws1.recv(timeout=TIMEOUT))["event"] == "second"
    finally:
        ws1.close()
        ws2.close()


def test_trigger_info_and_batch_info(server: ServerProcess, client: Client) -> None:
    ws, _ = ws_subscribe(server, "counted")
    try:
        status, body = client.call(
            "POST",
            EVENTS,
            {
                "name": "e",
                "data": "d",
                "channels": ["counted", "empty"],
                "info": "subscription_count,user_count",
            },
        )
        assert status == 200
        # user_count is a presence attribute: not given for public channels.
        assert body == {
            "channels": {"counted": {"subscription_count": 1}, "empty": {"subscription_count": 0}}
        }
        status, body = client.call(
            "POST",
            BATCH,
            {
                "batch": [
                    {"channel": "counted", "name": "a", "data": "1", "info": "subscription_count"},
                    {"channel": "empty", "name": "b", "data": "2"},
                ]
            },
        )
        assert (status, body) == (200, {"batch": [{"subscription_count": 1}, {}]})
    finally:
        ws.close()


def test_channel_queries(server: ServerProcess, client: Client) -> None:
    ws, _ = ws_subscribe(server, "cache-q")
    try:
        status, body = client.call(
            "GET",
            f"/apps/{APP_ID}/channels",
            params={"filter_by_prefix": "cache-", "info": "subscription_count"},
        )
        assert (status, body) == (200, {"channels": {"cache-q": {"subscription_count": 1}}})
        assert (
            client.call("POST", EVENTS, {"name": "c", "data": "cached", "channel": "cache-q"})[0]
            == 200
        )
        status, body = client.call(
            "GET", f"/apps/{APP_ID}/channels/cache-q", params={"info": "subscription_count,cache"}
        )
        assert status == 200
        assert body["occupied"] is True and body["subscription_count"] == 1
        assert (
            body["cache"]["event"] == "c"
            and body["cache"]["data"] == "cached"
            and body["cache"]["ttl"] > 0
        )
        status, body = client.call("GET", f"/apps/{APP_ID}/channels/nobody-here")
        assert (status, body) == (200, {"occupied": False})
    finally:
        ws.close()


def test_health_endpoints(client: Client) -> None:
    for path in ("/", "/ready", "/accept-traffic"):
        status, _, body = client.raw("GET", path)
        assert status == 200 and body == b"OK"


# ---------------------------------------------------------------- bad input: 400 / 413


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"name":"\xff\xfe","data":"x","channel":"c"}', 400, "UTF-8"),
        (b"[1,2]", 400, "JSON object"),
        (event(name=5), 400, "name"),
        (event(name=None), 400, "name"),
        (event(data={"a": 1}), 400, "data must be a string"),
        (event(data=None), 400, "data"),
        (event(channels=None), 400, "channels"),
        (event(channels="c1"), 400, "channels must be a list"),
        (event(channels=[]), 400, "empty"),
        (event(channels=[1]), 400, "strings"),
        (event(channels=[f"c{i}" for i in range(101)]), 400, "more than 100 channels"),
        (event(channels=["bad name!"]), 400, "invalid channel name"),
        (event(channels=["x" * 201]), 400, "invalid channel name"),
        (event(name="n" * 201), 400, "longer than 200"),
        (event(data="x" * (100 * 1024 + 1)), 413, "100 KB"),
        (event(channels=["a", "private-encrypted-b"]), 400, "encrypted"),
        (event(socket_id="abc"), 400, "socket_id"),
        (event(info="bogus"), 400, "bogus"),
    ],
    ids=[
        "bad-json",
        "bad-utf8",
        "not-object",
        "name-int",
        "name-missing",
        "data-object",
        "data-missing",
        "channels-missing",
        "channels-str",
        "channels-empty",
        "channel-int",
        "too-many-channels",
        "bad-channel-name",
        "channel-too-long",
        "name-too-long",
        "data-too-big",
        "encrypted-multi",
        "bad-socket-id",
        "bad-info",
    ],
)
def test_trigger_bad_input(client: Client, body: Any, status: int, words: str) -> None:
    got, answer = client.call("POST", EVENTS, body)
    assert got == status
    assert words.lower() in answer["error"].lower()


def test_batch_bad_input_delivers_nothing(server: ServerProcess, client: Client) -> None:
    ws, _ = ws_subscribe(server, "batched")
    try:
        ok = {"channel": "batched", "name": "first", "data": "1"}
        assert client.call("POST", BATCH, {"batch": [ok] * 11})[0] == 400
        status, body = client.call(
            "POST", BATCH, {"batch": [ok, {"channel": "batched", "name": "x", "data": {}}]}
        )
        assert status == 400 and "batch[1]" in body["error"]
        assert client.call("POST", BATCH, {"batch": "nope"})[0] == 400
        assert client.call("POST", BATCH, [1])[0] == 400
        # Nothing from the refused batches arrived: the first message is this one.
        assert (
            client.call(
                "POST", BATCH, {"batch": [{"channel": "batched", "name": "marker", "data": "m"}]}
            )[0]
            == 200
        )
        assert json.loads(ws.recv(timeout=TIMEOUT))["event"] == "marker"
    finally:
        ws.close()


def test_query_rules(client: Client) -> None:
    status, body = client.call("GET", f"/apps/{APP_ID}/channels", params={"info": "user_count"})
    assert status == 400 and "presence" in body["error"]
    status, body = client.call(
        "GET",
        f"/apps/{APP_ID}/channels",
        params={"info": "user_count", "filter_by_prefix": "presence-"},
    )
    assert (status, body) == (200, {"channels": {}})
    status, body = client.call(
        "GET", f"/apps/{APP_ID}/channels/public-one", params={"info": "user_count"}
    )
    assert status == 400 and "presence" in body["error"]
    status, body = client.call("GET", f"/apps/{APP_ID}/channels/public-one/users")
    assert status == 400 and "presence" in body["error"]
    status, body = client.call("GET", f"/apps/{APP_ID}/channels/presence-empty/users")
    assert (status, body) == (200, {"users": []})
    status, body = client.call("GET", f"/apps/{APP_ID}/channels/bad!name")
    assert status == 400 and "channel name" in body["error"]


# ---------------------------------------------------------------- 401 / 404 / 405


def test_signature_failures(client: Client) -> None:
    raw = json.dumps(event()).encode()
    cases: list[tuple[str, str]] = [
        (sign_query("POST", EVENTS, None, raw, secret="wrong"), "signature"),
        (sign_query("POST", EVENTS, None, raw, key="other-key"), "auth_key"),
        (sign_query("POST", EVENTS, None, raw, timestamp=int(time.time()) - 601), "auth_timestamp"),
        # The window is 600 s on both sides: a far-future stamp is a replayable one.
        (sign_query("POST", EVENTS, None, raw, timestamp=int(time.time()) + 601), "auth_timestamp"),
        (sign_query("POST", EVENTS, None, raw, timestamp=int(time.time()) + 10**9), "auth_timestamp"),
        (sign_query("POST", EVENTS, None, raw, md5=hashlib.md5(b"other").hexdigest()), "body_md5"),
        (sign_query("POST", EVENTS, None, raw, md5=None), "body_md5"),
        (sign_query("POST", EVENTS, None, raw).rsplit("&auth_signature=", 1)[0], "auth_signature"),
        (sign_query("POST", EVENTS, None, raw) + "&extra=1", "signature"),
    ]
    for query, words in cases:
        status, _, data = client.raw("POST", f"{EVENTS}?{query}", raw)
        assert status == 401, query
        assert words in json.loads(data)["error"]
    # A GET with a body_md5 that is not the MD5 of the empty body.
    path = f"/apps/{APP_ID}/channels"
    status, _, data = client.raw("GET", f"{path}?{sign_query('GET', path, md5='0' * 32)}")
    assert status == 401 and "body_md5" in json.loads(data)["error"]
    # The Python SDK's form (body_md5 of the empty body on a GET) and the Node SDK's (none) both pass.
    assert (
        client.raw("GET", f"{path}?{sign_query('GET', path, md5=hashlib.md5(b'').hexdigest())}")[0]
        == 200
    )
    assert client.raw("GET", f"{path}?{sign_query('GET', path, md5=None)}")[0] == 200


def test_bad_query_escapes(client: Client) -> None:
    """A percent-escape that decodes to invalid UTF-8 is a 400, not a crash."""
    path = f"/apps/{APP_ID}/channels"
    status, _, data = client.raw("GET", f"{path}?filter_by_prefix=%ff&{sign_query('GET', path)}")
    assert status == 400 and "UTF-8" in json.loads(data)["error"]
    status, _, data = client.raw("GET", f"/apps/{APP_ID}/channels/%ff?{sign_query('GET', path)}")
    assert status == 400 and "UTF-8" in json.loads(data)["error"]


def test_not_found_and_wrong_method(client: Client) -> None:
    status, body = client.call("POST", "/apps/999/events", event())
    assert status == 404 and "Unknown app" in body["error"]
    status, _, data = client.raw("GET", "/nope")
    assert status == 404 and "error" in json.loads(data)
    status, body = client.call("GET", f"/apps/{APP_ID}/nowhere")
    assert status == 404
    status, headers, data = client.raw("GET", EVENTS)
    assert status == 405 and "POST" in headers["allow"] and "POST" in json.loads(data)["error"]
    status, _, data = client.raw("POST", f"/apps/{APP_ID}/channels", b"{}")
    assert status == 405 and "GET" in json.loads(data)["error"]


def test_cors_and_preflight(client: Client) -> None:
    status, headers, body = client.raw(
        "OPTIONS",
        EVENTS,
        headers={
            "Origin": "https://example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-pusher-library",
        },
    )
    assert status == 204 and body == b""
    assert headers["access-control-allow-origin"] == "*"
    assert "POST" in headers["access-control-allow-methods"]
    assert headers["access-control-allow-headers"] == "content-type, x-pusher-library"
    assert int(headers["access-control-max-age"]) > 0
    status, headers, _ = client.raw("GET", "/apps/999/channels")
    assert status == 404 and headers["access-control-allow-origin"] == "*"


def test_server_survives_garbage(server: ServerProcess, client: Client) -> None:
    """Malformed HTTP gets a 400 and a closed socket; the server keeps serving others."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as s:
        s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        data = s.recv(4096)
        assert data.startswith(b"HTTP/1.1 400")
    status, body = client.call("POST", EVENTS, event())
    assert (status, body) == (200, {})


def test_pipelined_requests_answered_in_order(server: ServerProcess) -> None:
    import socket

    reqs = b""
    names = ["p1", "p2", "p3"]
    for name in names:
        raw = json.dumps(event(name=name, channels=["pipe"])).encode()
        reqs += (
            f"POST {EVENTS}?{sign_query('POST', EVENTS, None, raw)} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
        ).encode() + raw
    reqs += b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as s:
        s.sendall(reqs)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d+)", data)
    assert statuses == [b"200", b"200", b"200", b"404"]


# ---------------------------------------------------------------- configured servers


def test_rate_limits() -> None:
    env = {
        "SOKETI_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SEC": "3",
        "SOKETI_DEFAULT_APP_MAX_READ_REQ_PER_SEC": "2",
    }
    with run_server("c", env=env) as srv:
        c = Client(srv.port)
        try:
            # Events: one per channel. Retry once if the wall-clock second turned mid-way.
            for _ in range(3):
                start = int(time.time())
                first = c.call("POST", EVENTS, event(channels=["a", "b"]))[0]
                second = c.call("POST", EVENTS, event(channels=["a", "b"]))
                if int(time.time()) == start:
                    break
            assert first == 200
            assert second[0] == 429 and "rate limit" in second[1]["error"].lower()
            for _ in range(3):
                start = int(time.time())
                got = [c.call("GET", f"/apps/{APP_ID}/channels")[0] for _ in range(3)]
                if int(time.time()) == start:
                    break
            assert got == [200, 200, 429]
        finally:
            c.close()


def test_disabled_app_is_403() -> None:
    with run_server("c", env={"SOKETI_DEFAULT_APP_ENABLED": "false"}) as srv:
        c = Client(srv.port)
        try:
            status, body = c.call("POST", EVENTS, event())
            assert status == 403 and "disabled" in body["error"]
        finally:
            c.close()


def test_cors_origin_list() -> None:
    with run_server("c", env={"SOKETI_CORS_ORIGIN": '["https://good.example"]'}) as srv:
        c = Client(srv.port)
        try:
            _, headers, _ = c.raw("OPTIONS", EVENTS, headers={"Origin": "https://good.example"})
            assert headers["access-control-allow-origin"] == "https://good.example"
            _, headers, _ = c.raw("OPTIONS", EVENTS, headers={"Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in headers
        finally:
            c.close()


# ---------------------------------------------------------------- in-process: stats, limits of the front door


async def _request(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        return await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()


def _post(path: str, body: bytes) -> bytes:
    return (
        f"POST {path}?{sign_query('POST', path, None, body)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _inproc(**options: Any) -> Any:
    from soketi_impl.config import load_config
    from soketi_impl.server import Server

    srv = Server(load_config(None, environ=base_env(0)))
    for k, v in options.items():
        setattr(srv.options, k, v)
    await srv.start()
    return srv


async def test_stats_counted() -> None:
    srv = await _inproc()
    try:
        body = json.dumps(event()).encode()
        answer = await _request(srv.port, _post(EVENTS, body))
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\n{}")
        answer = await _request(srv.port, _post(EVENTS, b"{bad"))
        assert answer.startswith(b"HTTP/1.1 400")
        err = answer.split(b"\r\n\r\n", 1)[1]
        stats = srv.pusher.app(APP_ID).stats
        assert stats.http_calls == 2
        assert stats.http_bytes_received == len(body) + 4
        assert stats.http_bytes_sent == 2 + len(err)
    finally:
        await srv.stop(0)


async def test_head_timeout_and_body_limit() -> None:
    srv = await _inproc(head_timeout=0.3, max_body=1000)
    try:
        # A head that never ends: the server closes the socket (read returns EOF).
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\n")
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        writer.close()
        # A body over the limit: 413 with a JSON error.
        answer = await _request(srv.port, _post(EVENTS, b"x" * 2000))
        assert answer.startswith(b"HTTP/1.1 413")
        assert "error" in json.loads(answer.split(b"\r\n\r\n", 1)[1])
        # Still serving.
        answer = await _request(srv.port, _post(EVENTS, json.dumps(event()).encode()))
        assert answer.startswith(b"HTTP/1.1 200")
    finally:
        await srv.stop(0)


async def test_adapter_that_suspends() -> None:
    """An in-process API that really awaits (a remote adapter) is answered through a Task, same result."""
    srv = await _inproc()
    original = srv.pusher.trigger
    calls: list[str] = []

    async def slow_trigger(*args: Any, **kwargs: Any) -> int:
        await asyncio.sleep(0.01)
        calls.append(args[2])
        return await original(*args, **kwargs)

    srv.pusher.trigger = slow_trigger  # type: ignore[method-assign]
    try:
        answer = await _request(
            srv.port,
            _post(EVENTS, json.dumps(event(name="slow", info="subscription_count")).encode()),
        )
        assert answer.startswith(b"HTTP/1.1 200")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {
            "channels": {"c1": {"subscription_count": 0}}
        }
        assert calls == ["slow"]
        assert srv.pusher.app(APP_ID).stats.http_calls == 1
    finally:
        await srv.stop(0)


async def test_path_prefix_and_escaped_channel() -> None:
    from soketi_impl.config import load_config
    from soketi_impl.server import Server

    srv = Server(load_config(None, environ=base_env(0, SOKETI_PATH_PREFIX="/pfx")))
    await srv.start()
    try:
        path = f"/pfx/apps/{APP_ID}/events"
        assert (await _request(srv.port, _post(path, json.dumps(event()).encode()))).startswith(
            b"HTTP/1.1 200"
        )
        # Without the prefix: not an API route.
        assert (await _request(srv.port, _post(EVENTS, json.dumps(event()).encode()))).startswith(
            b"HTTP/1.1 404"
        )
        # A #server-to-user channel must be escaped in a path; signing the escaped path works.
        path = f"/pfx/apps/{APP_ID}/channels/%23server-to-user-u1"
        raw = f"GET {path}?{sign_query('GET', path)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        answer = await _request(srv.port, raw)
        assert answer.startswith(b"HTTP/1.1 200")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"occupied": False}
        # Health answers with and without the prefix.
        for p in ("/ready", "/pfx/ready"):
            answer = await _request(
                srv.port, f"GET {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            assert answer.startswith(b"HTTP/1.1 200")
    finally:
        await srv.stop(0)
