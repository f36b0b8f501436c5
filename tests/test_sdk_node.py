"""The official Node ``pusher`` SDK (tests/js/node_modules, pinned) against the server.

``tests/js/sdk_http.js`` runs a list of SDK calls and prints their results as JSON;
the subscribers are raw ``websockets`` clients in this process.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from conftest import APP_ID, APP_KEY, APP_SECRET, HOST_MATRIX_C, JS_DIR, ServerProcess, serve_host

TIMEOUT = 5.0


def node_sdk(server: ServerProcess, ops: list[dict[str, Any]]) -> list[Any]:
    """Run ``ops`` through the Node SDK; returns one result per op."""
    cfg = {
        "host": server.host,
        "port": server.port,
        "appId": APP_ID,
        "key": APP_KEY,
        "secret": APP_SECRET,
        "ops": ops,
    }
    proc = subprocess.run(
        ["node", str(JS_DIR / "sdk_http.js"), json.dumps(cfg)],
        check=False,
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    results: list[Any] = json.loads(proc.stdout)
    return results


class Sub:
    """A raw Pusher WebSocket client."""

    def __init__(self, server: ServerProcess) -> None:
        self.ws: ClientConnection = connect(
            server.ws_url, open_timeout=TIMEOUT, close_timeout=1
        ).__enter__()
        self.socket_id: str = json.loads(self.recv()["data"])["socket_id"]

    def recv(self) -> dict[str, Any]:
        msg: dict[str, Any] = json.loads(self.ws.recv(timeout=TIMEOUT))
        return msg

    def send(self, event: str, data: Any) -> None:
        self.ws.send(json.dumps({"event": event, "data": data}))

    def subscribe(self, channel: str) -> None:
        self.send("pusher:subscribe", {"channel": channel})
        assert self.recv()["event"] == "pusher_internal:subscription_succeeded"


@pytest.fixture(scope="module", params=HOST_MATRIX_C)
def server(request: pytest.FixtureRequest, node_modules: Path) -> Iterator[ServerProcess]:
    """One server per host (the compiled build; both builds run on ``pusher_server``)."""
    with serve_host(request.param) as srv:
        yield srv


@pytest.fixture
def subs(server: ServerProcess) -> Iterator[list[Sub]]:
    made: list[Sub] = []
    yield made
    for s in made:
        s.ws.close()


def new_sub(server: ServerProcess, subs: list[Sub]) -> Sub:
    s = Sub(server)
    subs.append(s)
    return s


def test_trigger_with_info(node_modules: Path, pusher_server: ServerProcess) -> None:
    """Both builds (c and py): trigger with info returns the subscription count; events arrive."""
    a, b = Sub(pusher_server), Sub(pusher_server)
    try:
        a.subscribe("node-news")
        b.subscribe("node-news")
        [res] = node_sdk(
            pusher_server,
            [
                {
                    "op": "trigger",
                    "channels": ["node-news", "node-empty"],
                    "event": "posted",
                    "data": {"n": 1},
                    "params": {"info": "subscription_count"},
                }
            ],
        )
        assert res["status"] == 200
        assert res["body"] == {
            "channels": {
                "node-news": {"subscription_count": 2},
                "node-empty": {"subscription_count": 0},
            }
        }
        for s in (a, b):
            got = s.recv()
            assert (got["event"], got["channel"], json.loads(got["data"])) == (
                "posted",
                "node-news",
                {"n": 1},
            )
    finally:
        a.ws.close()
        b.ws.close()


def test_trigger_batch_and_get(server: ServerProcess, subs: list[Sub]) -> None:
    s = new_sub(server, subs)
    s.subscribe("node-batch")
    batch, channels, channel, bad = node_sdk(
        server,
        [
            {
                "op": "triggerBatch",
                "batch": [
                    {"channel": "node-batch", "name": "first", "data": {"i": 1}},
                    {
                        "channel": "node-batch",
                        "name": "second",
                        "data": "two",
                        "info": "subscription_count",
                    },
                ],
            },
            {
                "op": "get",
                "path": "/channels",
                "params": {"filter_by_prefix": "node-", "info": "subscription_count"},
            },
            {"op": "get", "path": "/channels/node-batch", "params": {"info": "subscription_count"}},
            {"op": "get", "path": "/channels", "params": {"info": "user_count"}},
        ],
    )
    assert batch == {"status": 200, "body": {"batch": [{}, {"subscription_count": 1}]}}
    assert [(m["event"], m["data"]) for m in (s.recv(), s.recv())] == [
        ("first", '{"i":1}'),
        ("second", "two"),
    ]
    assert channels["body"]["channels"]["node-batch"] == {"subscription_count": 1}
    assert channel == {"status": 200, "body": {"occupied": True, "subscription_count": 1}}
    assert bad["status"] == 400 and "presence" in json.loads(bad["body"])["error"]


def test_send_to_user_and_terminate(server: ServerProcess, subs: list[Sub]) -> None:
    target, bystander = new_sub(server, subs), new_sub(server, subs)
    auths = node_sdk(
        server,
        [
            {"op": "authenticateUser", "socketId": target.socket_id, "userData": {"id": "n-1"}},
            {"op": "authenticateUser", "socketId": bystander.socket_id, "userData": {"id": "n-2"}},
        ],
    )
    for sock, auth in zip((target, bystander), auths):
        sock.send("pusher:signin", auth["value"])
        assert sock.recv()["event"] == "pusher:signin_success"
    sent, terminated = node_sdk(
        server,
        [
            {"op": "sendToUser", "userId": "n-1", "event": "direct", "data": {"hi": True}},
            {"op": "terminateUserConnections", "userId": "n-1"},
        ],
    )
    assert sent["status"] == 200 and terminated == {"status": 200, "body": {}}
    got = target.recv()
    assert (got["event"], json.loads(got["data"])) == ("direct", {"hi": True})
    err = target.recv()
    assert err["event"] == "pusher:error" and err["data"]["code"] == 4009
    with pytest.raises(ConnectionClosed) as closed:
        target.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4009
    bystander.send("pusher:ping", {})
    assert bystander.recv()["event"] == "pusher:pong"
