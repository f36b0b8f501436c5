"""What every host must do at the edges of a socket's life, seen from outside.

On each host (picows front door, ASGI under uvicorn, aiohttp; compiled build):
a client that drops without a close frame leaves no ghost behind (its channels and
presence membership are gone, seen through the HTTP API); shutdown closes clients
with 4200; webhooks are delivered and signed. On the ASGI host, a client that stops
reading is closed with 4100 and the server stays well (the aiohttp host too; the
picows host aborts such a socket, tested with it).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pusher
import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Opcode
from websockets.http11 import Response
from websockets.sync.client import ClientConnection, connect
from websockets.uri import parse_uri

from conftest import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    HOST_MATRIX_C,
    ServerProcess,
    clean_exit,
    serve_host,
    signed_query,
    wait_until,
)

pytestmark = [pytest.mark.clients, pytest.mark.timeout(90)]

TIMEOUT = 5.0


class Receiver:
    """A webhook endpoint in a thread: records (headers, body, events), waitable."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.events: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.cond:
                    receiver.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    receiver.events.extend(json.loads(body)["events"])
                    receiver.cond.notify_all()
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_event(self, pred: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        with self.cond:
            found = self.cond.wait_for(lambda: next((e for e in self.events if pred(e)), None), 10)
        assert found, f"no webhook {what}; got {self.events}"
        return found

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


@pytest.fixture(scope="module", params=HOST_MATRIX_C)
def server(request: pytest.FixtureRequest, receiver: Receiver) -> Iterator[ServerProcess]:
    """One server per host, sending every webhook kind to ``receiver``; 0.1 MB HTTP bodies."""
    hooks = [{"url": receiver.url, "event_types": [
        "channel_occupied", "channel_vacated", "member_added", "member_removed", "client_event",
    ]}]
    env = {"SOKETI_DEFAULT_APP_WEBHOOKS": json.dumps(hooks), "SOKETI_HTTP_MAX_REQUEST_SIZE": "0.1"}
    with serve_host(request.param, env) as srv:
        yield srv


def sdk(server: ServerProcess) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host=server.host, port=server.port,
        ssl=False, timeout=TIMEOUT,
    )


class Sub:
    """A raw Pusher WebSocket client (websockets, sync)."""

    def __init__(self, server: ServerProcess, **options: Any) -> None:
        self.ws: ClientConnection = connect(
            server.ws_url, open_timeout=TIMEOUT, close_timeout=1, **options
        ).__enter__()
        established = self.recv()
        assert established["event"] == "pusher:connection_established", established
        self.socket_id: str = json.loads(established["data"])["socket_id"]

    def recv(self) -> dict[str, Any]:
        msg: dict[str, Any] = json.loads(self.ws.recv(timeout=TIMEOUT))
        return msg

    def send(self, event: str, data: Any, channel: str | None = None) -> None:
        self.ws.send(json.dumps({"event": event, "data": data, **({"channel": channel} if channel else {})}))

    def subscribe(self, channel: str, auth: dict[str, Any] | None = None) -> dict[str, Any]:
        self.send("pusher:subscribe", {"channel": channel, **(auth or {})})
        got = self.recv()
        assert got["event"] == "pusher_internal:subscription_succeeded", got
        return got

    def drop(self) -> None:
        """Vanish without a close frame: shut the TCP socket down under the client."""
        self.ws.socket.shutdown(socket.SHUT_RDWR)
        self.ws.socket.close()

    def close(self) -> None:
        self.ws.close()


def test_binary_json_is_text_and_bad_utf8_is_1007(server: ServerProcess) -> None:
    """Every host reads a binary frame as text, as soketi does; bytes that are not UTF-8: 1007."""
    sub = Sub(server)
    try:
        sub.ws.send(b'{"event":"pusher:ping","data":{}}')  # bytes: a binary frame
        assert sub.recv()["event"] == "pusher:pong"
        sub.ws.send(b"\xff\xfe")
        with pytest.raises(ConnectionClosed) as closed:
            sub.ws.recv(timeout=TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    finally:
        sub.close()


def test_dropped_client_leaves_no_ghost(server: ServerProcess) -> None:
    client = sdk(server)
    ghost, stays = Sub(server), Sub(server)
    try:
        stays.subscribe("presence-ghost", client.authenticate("presence-ghost", stays.socket_id, {"user_id": "s1"}))
        ghost.subscribe("ghost-news")
        ghost.subscribe("presence-ghost", client.authenticate("presence-ghost", ghost.socket_id, {"user_id": "g1"}))
        assert stays.recv()["event"] == "pusher_internal:member_added"
        info = client.channel_info("ghost-news", ["subscription_count"])
        assert info == {"occupied": True, "subscription_count": 1}
        ghost.drop()
        wait_until(
            lambda: client.channel_info("ghost-news", ["subscription_count"])["subscription_count"] == 0,
            10, "ghost-news to be vacated",
        )
        got = stays.recv()  # the presence member left with the socket
        assert (got["event"], got["data"]) == ("pusher_internal:member_removed", '{"user_id":"g1"}')
        assert client.channel_info("presence-ghost", ["user_count"])["user_count"] == 1
    finally:
        stays.close()


def test_webhooks_are_signed_and_delivered(server: ServerProcess, receiver: Receiver) -> None:
    channel = f"presence-hook-{server.kind}"
    client = sdk(server)
    a, b = Sub(server), Sub(server)
    a.subscribe(channel, client.authenticate(channel, a.socket_id, {"user_id": "h1"}))
    b.subscribe(channel, client.authenticate(channel, b.socket_id, {"user_id": "h2"}))
    a.send("client-ping", {"n": 1}, channel)
    got = b.recv()
    assert (got["event"], json.loads(got["data"])) == ("client-ping", {"n": 1})
    occupied = receiver.wait_event(lambda e: e == {"name": "channel_occupied", "channel": channel},
                                   "channel_occupied")
    assert occupied
    receiver.wait_event(lambda e: e["name"] == "member_added" and e["channel"] == channel
                        and e["user_id"] == "h2", "member_added")
    sent = receiver.wait_event(lambda e: e["name"] == "client_event" and e["channel"] == channel,
                               "client_event")
    assert sent["event"] == "client-ping" and sent["data"] == {"n": 1}
    assert sent["socket_id"] == a.socket_id and sent["user_id"] == "h1"
    # (channel_vacated comes after soketi's delay for presence leaves: not waited for here)
    a.close()
    b.close()
    # every delivery is signed with the app secret over the exact body
    with receiver.cond:
        calls = list(receiver.calls)
    for headers, body in calls:
        assert headers["x-pusher-key"] == APP_KEY
        expected = hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-pusher-signature"] == expected


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_http_body_over_the_limit_is_413(server: ServerProcess, chunked: bool) -> None:
    path = f"/apps/{APP_ID}/events"
    data = json.dumps({"name": "big", "channel": "news", "data": "x" * 200_000}).encode()
    conn = http.client.HTTPConnection(server.host, server.port, timeout=TIMEOUT)
    try:
        url = f"{path}?{signed_query('POST', path, data)}"
        headers = {"content-type": "application/json"}
        if chunked:
            conn.request("POST", url, body=iter([data[:50_000], data[50_000:]]), headers=headers,
                         encode_chunked=True)
        else:
            conn.request("POST", url, body=data, headers=headers)
        response = conn.getresponse()
        assert response.status == 413
        assert "error" in json.loads(response.read())
    finally:
        conn.close()
    # the server is fine and still answers
    assert sdk(server).channels_info()["channels"] is not None


@pytest.mark.parametrize("param", HOST_MATRIX_C)
def test_shutdown_closes_clients_with_4200(param: tuple[str, str]) -> None:
    with serve_host(param) as srv:
        a = Sub(srv)
        a.subscribe("news")
        srv.proc.terminate()
        err = a.recv()
        assert err["event"] == "pusher:error" and err["data"]["code"] == 4200
        with pytest.raises(ConnectionClosed) as closed:
            a.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4200
        assert clean_exit(srv), srv.log[-10:]


class StalledClient:
    """A WebSocket client over a plain socket that reads only when told to (websockets sans-I/O).

    The sync ``websockets`` client keeps reading in its own thread; this one leaves
    the bytes in the kernel, as a browser tab that froze would.
    """

    def __init__(self, server: ServerProcess) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect((server.host, server.port))
        self.proto = ClientProtocol(parse_uri(server.ws_url), max_size=None)
        self.proto.send_request(self.proto.connect())
        self._flush()
        self.pending: list[Any] = []
        assert isinstance(self.next(), Response)
        assert b"connection_established" in self.next().data

    def _flush(self) -> None:
        self.sock.sendall(b"".join(self.proto.data_to_send()))

    def next(self) -> Any:
        """The next handshake response or frame (reading the socket as needed)."""
        while not self.pending:
            data = self.sock.recv(256 * 1024)
            if data:
                self.proto.receive_data(data)
            else:
                self.proto.receive_eof()
            self.pending.extend(self.proto.events_received())
            if not data and not self.pending:
                raise EOFError("the server closed the TCP connection without a close frame")
        return self.pending.pop(0)

    def send_json(self, obj: Any) -> None:
        self.proto.send_text(json.dumps(obj).encode())
        self._flush()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("param", [p for p in HOST_MATRIX_C if p.id in ("asgi", "aiohttp")])
def test_slow_reader_is_closed_with_4100(param: tuple[str, str]) -> None:
    with serve_host(param) as srv:
        client = sdk(srv)
        slow = StalledClient(srv)
        slow.send_json({"event": "pusher:subscribe", "data": {"channel": "flood"}})
        assert b"subscription_succeeded" in slow.next().data
        batch = [{"channel": "flood", "name": "big", "data": "x" * 10_000} for _ in range(9)]
        sent = 0

        def dropped() -> bool:
            nonlocal sent
            for _ in range(10):
                client.trigger_batch(batch)
            sent += 10 * 9 * 10_000
            assert sent < 100_000_000, "100 MB sent and the slow client is still subscribed"
            return client.channel_info("flood", ["subscription_count"])["subscription_count"] == 0

        # Once 4 MiB wait for the socket, the server gives it up: it leaves the channel at once.
        wait_until(dropped, 60, "the slow reader to be dropped", interval=0)
        # Reading again, the client gets what was already in flight, then the 4100 close.
        while True:
            frame = slow.next()
            if frame.opcode == Opcode.CLOSE:
                break
            assert frame.opcode == Opcode.TEXT
        assert Close.parse(frame.data).code == 4100
        slow.close()
        # the server is well: a new client subscribes and gets events
        fresh = Sub(srv)
        fresh.subscribe("flood")
        client.trigger("flood", "small", {"ok": 1})
        got = fresh.recv()
        assert (got["event"], json.loads(got["data"])) == ("small", {"ok": 1})
        fresh.close()
