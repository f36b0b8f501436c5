"""The framework examples run as written: ASGI under uvicorn, mounted in Starlette, aiohttp.

Each example is started as its own process with the test app's variables; a client
connects where the example says, gets an event the app triggers, and is closed with
4200 when the process is told to stop. The Starlette case also runs pusher-js
through the mount (``wsPath``) and checks the parent app keeps its own paths.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pusher
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from conftest import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    ServerProcess,
    clean_exit,
    free_port,
    run_process,
)
from test_clients_pusherjs import check, run_scenario

pytestmark = [pytest.mark.clients, pytest.mark.timeout(90)]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 5.0


def start(example: str, kind: str) -> Any:
    port = free_port()
    argv = [sys.executable, str(EXAMPLES / example)]
    return run_process(argv, "running on", port, kind=kind)


def ws_connect(server: ServerProcess, prefix: str = "") -> ClientConnection:
    url = f"ws://{server.host}:{server.port}{prefix}/app/{APP_KEY}?protocol=7"
    ws: ClientConnection = connect(url, open_timeout=TIMEOUT, close_timeout=1).__enter__()
    return ws


def recv(ws: ClientConnection) -> dict[str, Any]:
    msg: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT))
    return msg


def subscribe(ws: ClientConnection, channel: str) -> None:
    assert recv(ws)["event"] == "pusher:connection_established"
    ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
    assert recv(ws)["event"] == "pusher_internal:subscription_succeeded"


def http(server: ServerProcess, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        server.http_url + path, data=data, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def stop_and_expect_4200(server: ServerProcess, ws: ClientConnection) -> None:
    server.proc.terminate()
    err = recv(ws)
    assert err["event"] == "pusher:error" and err["data"]["code"] == 4200
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=TIMEOUT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4200
    assert clean_exit(server), server.log[-10:]


@pytest.mark.parametrize("name", ["asgi_uvicorn.py", "starlette_mount.py", "aiohttp_app.py"])
def test_examples_are_short_and_public(name: str) -> None:
    """Under 30 lines, and only public names of this library."""
    text = (EXAMPLES / name).read_text()
    assert len(text.splitlines()) < 30
    imports = [line for line in text.splitlines() if "soketi_impl" in line and "import" in line]
    assert imports and all(
        line in ("from soketi_impl.asgi import create_app", "import soketi_impl.aiohttp") for line in imports
    ), imports


def test_asgi_under_uvicorn() -> None:
    with start("asgi_uvicorn.py", "asgi") as server:
        ws = ws_connect(server)
        subscribe(ws, "orders")
        sdk = pusher.Pusher(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host=server.host,
                            port=server.port, ssl=False, timeout=TIMEOUT)
        sdk.trigger("orders", "created", {"id": 1})
        got = recv(ws)
        assert (got["event"], got["channel"], json.loads(got["data"])) == ("created", "orders", {"id": 1})
        assert sdk.channel_info("orders", ["subscription_count"])["subscription_count"] == 1
        stop_and_expect_4200(server, ws)


def test_aiohttp_app() -> None:
    with start("aiohttp_app.py", "aiohttp") as server:
        ws = ws_connect(server)
        subscribe(ws, "orders")
        assert http(server, "POST", "/orders", {"id": 2}) == (200, b'{"ok": true}')
        got = recv(ws)
        assert (got["event"], json.loads(got["data"])) == ("created", {"id": 2})
        assert http(server, "GET", "/ready") == (200, b"OK")
        stop_and_expect_4200(server, ws)


def test_starlette_mount(node_modules: Path) -> None:
    with start("starlette_mount.py", "asgi") as server:
        ws = ws_connect(server, "/pusher")
        subscribe(ws, "orders")
        status, _ = http(server, "POST", "/orders", {"id": 3})
        assert status == 200
        got = recv(ws)
        assert (got["event"], json.loads(got["data"])) == ("created", {"id": 3})
        # the Pusher answers under its mount, the parent app everywhere else
        assert http(server, "GET", "/pusher/ready") == (200, b"OK")
        assert http(server, "GET", "/ready")[0] == 404
        status, body = http(server, "GET", f"/pusher/apps/{APP_ID}/channels")
        assert status == 401 and "error" in json.loads(body)  # the API, asking for a signature
        # stock pusher-js through the mount
        records = run_scenario("connect_public", server.port, wsPath="/pusher")
        assert check(records, "subscribed")["subscribed"] is True
        # the parent's lifespan stops the Pusher: 4200, not uvicorn's 1012
        stop_and_expect_4200(server, ws)
