"""The official Python ``pusher`` SDK against the server, with raw WebSocket subscribers.

The SDK is synchronous (requests), so these tests are plain functions against a
server subprocess, with the ``websockets`` sync client as the subscriber.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import nacl.secret
import pusher
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from conftest import APP_ID, APP_KEY, APP_SECRET, HOST_MATRIX_C, ServerProcess, serve_host

TIMEOUT = 5.0
MASTER_KEY = bytes(range(32))


class Sub:
    """A raw Pusher WebSocket client."""

    def __init__(self, server: ServerProcess) -> None:
        self.ws: ClientConnection = connect(
            server.ws_url, open_timeout=TIMEOUT, close_timeout=1
        ).__enter__()
        established = self.recv()
        assert established["event"] == "pusher:connection_established"
        self.socket_id: str = json.loads(established["data"])["socket_id"]

    def recv(self) -> dict[str, Any]:
        msg: dict[str, Any] = json.loads(self.ws.recv(timeout=TIMEOUT))
        return msg

    def send(self, event: str, data: Any) -> None:
        self.ws.send(json.dumps({"event": event, "data": data}))

    def subscribe(self, channel: str, auth: dict[str, Any] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"channel": channel}
        if auth:
            data["auth"] = auth["auth"]
            if "channel_data" in auth:
                data["channel_data"] = auth["channel_data"]
        self.send("pusher:subscribe", data)
        return self.recv()

    def close(self) -> None:
        self.ws.close()


def sdk(server: ServerProcess, **extra: Any) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=APP_ID,
        key=APP_KEY,
        secret=APP_SECRET,
        host="127.0.0.1",
        port=server.port,
        ssl=False,
        timeout=TIMEOUT,
        **extra,
    )


@pytest.fixture(scope="module", params=HOST_MATRIX_C)
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """One server per host (the compiled build; both builds run on ``pusher_server``)."""
    with serve_host(request.param) as srv:
        yield srv


@pytest.fixture
def subs(server: ServerProcess) -> Iterator[list[Sub]]:
    made: list[Sub] = []
    yield made
    for s in made:
        s.close()


def new_sub(server: ServerProcess, subs: list[Sub]) -> Sub:
    s = Sub(server)
    subs.append(s)
    return s


def test_trigger_and_socket_id_exclusion(pusher_server: ServerProcess) -> None:
    """Both builds (c and py): delivery to subscribers, and the excluded socket gets nothing."""
    client = sdk(pusher_server)
    a, b = Sub(pusher_server), Sub(pusher_server)
    try:
        assert a.subscribe("orders")["event"] == "pusher_internal:subscription_succeeded"
        assert b.subscribe("orders")["event"] == "pusher_internal:subscription_succeeded"
        assert client.trigger("orders", "created", {"id": 7}) == {}
        for s in (a, b):
            got = s.recv()
            assert got["event"] == "created" and got["channel"] == "orders"
            assert json.loads(got["data"]) == {"id": 7}
        client.trigger(["orders"], "excluded", "x", socket_id=a.socket_id)
        assert b.recv()["event"] == "excluded"
        client.trigger(["orders"], "after", "y")
        assert a.recv()["event"] == "after"  # 'excluded' never reached a
    finally:
        a.close()
        b.close()


def test_trigger_batch(server: ServerProcess, subs: list[Sub]) -> None:
    s = new_sub(server, subs)
    s.subscribe("batch-a")
    s.subscribe("batch-b")
    result = sdk(server).trigger_batch(
        [
            {"channel": "batch-a", "name": "one", "data": {"n": 1}},
            {"channel": "batch-b", "name": "two", "data": "plain"},
        ]
    )
    assert isinstance(result, dict)
    got = [s.recv(), s.recv()]
    assert [(m["channel"], m["event"], m["data"]) for m in got] == [
        ("batch-a", "one", '{"n": 1}'),
        ("batch-b", "two", "plain"),
    ]


def test_authenticate_private_presence_and_queries(server: ServerProcess, subs: list[Sub]) -> None:
    client = sdk(server, encryption_master_key_base64=base64.b64encode(MASTER_KEY).decode())
    s1, s2 = new_sub(server, subs), new_sub(server, subs)
    # Private and encrypted channels: the SDK's auth lets the socket in.
    assert s1.subscribe("private-p", client.authenticate("private-p", s1.socket_id))["event"] == (
        "pusher_internal:subscription_succeeded"
    )
    enc = client.authenticate("private-encrypted-e", s1.socket_id)
    assert "shared_secret" in enc
    assert (
        s1.subscribe("private-encrypted-e", enc)["event"]
        == "pusher_internal:subscription_succeeded"
    )
    # Someone else's auth (another socket id) is refused.
    refused = s2.subscribe("private-p", client.authenticate("private-p", s1.socket_id))
    assert refused["event"] == "pusher:subscription_error" and refused["data"]["status"] == 401
    # Presence: two connections of user 1 and one of user 2.
    p1 = client.authenticate(
        "presence-room", s1.socket_id, {"user_id": "1", "user_info": {"name": "ann"}}
    )
    ok = s1.subscribe("presence-room", p1)
    assert ok["event"] == "pusher_internal:subscription_succeeded"
    assert json.loads(ok["data"])["presence"]["hash"] == {"1": {"name": "ann"}}
    p2 = client.authenticate("presence-room", s2.socket_id, {"user_id": 2})
    assert s2.subscribe("presence-room", p2)["event"] == "pusher_internal:subscription_succeeded"
    s3 = new_sub(server, subs)
    p3 = client.authenticate("presence-room", s3.socket_id, {"user_id": "1"})
    assert s3.subscribe("presence-room", p3)["event"] == "pusher_internal:subscription_succeeded"

    assert client.channels_info("presence-", ["user_count"]) == {
        "channels": {"presence-room": {"user_count": 2}}
    }
    listed = client.channels_info("private-")["channels"]
    assert set(listed) == {"private-p", "private-encrypted-e"}
    info = client.channel_info("presence-room", ["user_count", "subscription_count"])
    assert info == {"occupied": True, "user_count": 2, "subscription_count": 3}
    assert client.channel_info("private-nothing") == {"occupied": False}
    users = client.users_info("presence-room")["users"]
    assert sorted(u["id"] for u in users) == ["1", "2"]
    with pytest.raises(pusher.errors.PusherBadRequest):
        client.users_info("private-p")
    with pytest.raises(pusher.errors.PusherBadRequest):
        client.channels_info("private-", ["user_count"])


def test_encrypted_trigger_arrives_as_ciphertext(server: ServerProcess, subs: list[Sub]) -> None:
    client = sdk(server, encryption_master_key_base64=base64.b64encode(MASTER_KEY).decode())
    channel = "private-encrypted-vault"
    s = new_sub(server, subs)
    assert s.subscribe(channel, client.authenticate(channel, s.socket_id))["event"] == (
        "pusher_internal:subscription_succeeded"
    )
    client.trigger(channel, "secret", {"pin": 1234})
    got = s.recv()
    assert got["event"] == "secret"
    payload = json.loads(got["data"])
    assert set(payload) == {"nonce", "ciphertext"}
    key = hashlib.sha256(channel.encode() + MASTER_KEY).digest()
    plain = nacl.secret.SecretBox(key).decrypt(
        base64.b64decode(payload["ciphertext"]), base64.b64decode(payload["nonce"])
    )
    assert json.loads(plain) == {"pin": 1234}
    # The SDK refuses several channels with an encrypted one; the server does too (raw test).
    with pytest.raises(ValueError):
        client.trigger([channel, "other"], "x", "y")


def test_send_to_user_and_terminate_connections(server: ServerProcess, subs: list[Sub]) -> None:
    client = sdk(server)
    s, other = new_sub(server, subs), new_sub(server, subs)
    for sock, uid in ((s, "u-42"), (other, "u-7")):
        auth = client.authenticate_user(sock.socket_id, {"id": uid})
        sock.send("pusher:signin", {"auth": auth["auth"], "user_data": auth["user_data"]})
        assert sock.recv()["event"] == "pusher:signin_success"
    client.send_to_user("u-42", "hello", {"to": "you"})
    got = s.recv()
    assert (got["event"], json.loads(got["data"])) == ("hello", {"to": "you"})
    # The SDK posts to /users/{id}/terminate_connections (no /apps/{id}): accepted by key.
    assert client.terminate_user_connections("u-42") == {}
    err = s.recv()
    assert err["event"] == "pusher:error" and err["data"]["code"] == 4009
    with pytest.raises(ConnectionClosed) as closed:
        s.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4009
    # The other user is still connected.
    other.send("pusher:ping", {})
    assert other.recv()["event"] == "pusher:pong"
