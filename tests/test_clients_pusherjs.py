"""The real pusher-js client (Node build, pinned 8.6.0) against every host and both builds.

The server runs on each :data:`conftest.HOST_MATRIX` entry: the picows front door
with the compiled and the pure-Python build, the ASGI app under uvicorn, the aiohttp
host.

Each test runs one scenario of ``tests/js/pjs_driver.js`` in Node and asserts on the
JSON lines it prints (what pusher-js saw). The driver signs channel and user
authorization in-process with the Node ``pusher`` SDK, so no auth endpoint is needed.
When a scenario needs the test to act (trigger over HTTP, restart the server) it
prints ``{"t":"ready"}`` and waits for a line on stdin.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    APP_ID,
    APP_KEY,
    APP_SECRET,
    HOST_MATRIX,
    JS_DIR,
    ServerProcess,
    clean_exit,
    serve_host,
)

pytestmark = [pytest.mark.clients, pytest.mark.timeout(90)]

DRIVER = JS_DIR / "pjs_driver.js"
MASTER_KEY = base64.b64encode(bytes(range(32))).decode()



@pytest.fixture(scope="module", params=HOST_MATRIX)
def server(request: pytest.FixtureRequest, node_modules: Path) -> Iterator[ServerProcess]:
    """One server per host and build for the whole module (client events on)."""
    with serve_host(request.param) as srv:
        yield srv


def run_scenario(
    name: str,
    port: int,
    on_ready: Callable[[str], None] | None = None,
    *,
    key: str = APP_KEY,
    timeout: float = 40,
    **params: Any,
) -> list[dict[str, Any]]:
    """Run one driver scenario; return its JSON lines. Fails the test if the scenario failed."""
    node = shutil.which("node")
    assert node is not None
    args = {"port": port, "key": key, "secret": APP_SECRET, "appId": APP_ID, **params}
    proc = subprocess.Popen(
        [node, str(DRIVER), name, json.dumps(args)],
        cwd=JS_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    records: list[dict[str, Any]] = []
    try:
        while True:
            line = lines.get(timeout=timeout)
            if line is None:
                break
            rec = json.loads(line)
            records.append(rec)
            if rec["t"] == "ready":
                assert on_ready is not None, f"scenario {name} waits for the test: {rec}"
                on_ready(rec["name"])
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
        proc.wait(10)
    except queue.Empty:
        pytest.fail(f"scenario {name}: no output for {timeout} s; so far: {records}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    err = proc.stderr.read()
    fails = [r for r in records if r["t"] == "fail"]
    assert not fails and records and records[-1]["t"] == "done", (
        f"scenario {name} failed: {fails}\nrecords: {records}\nstderr: {err}"
    )
    return records


def check(records: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The ``{"t":"check","name":name}`` record."""
    found = [r for r in records if r["t"] == "check" and r["name"] == name]
    assert len(found) == 1, f"check {name!r}: {found}"
    return found[0]


def msgs(records: list[dict[str, Any]], client: str, event: str, channel: str | None = None) -> list[dict[str, Any]]:
    """Messages ``client`` received with that event (and channel)."""
    return [
        r for r in records
        if r["t"] == "msg" and r["c"] == client and r["event"] == event and (channel is None or r.get("channel") == channel)
    ]


def trigger(server: ServerProcess, channel: str, event: str, data: Any, **kwargs: Any) -> None:
    """Trigger over the HTTP API with the Python ``pusher`` SDK."""
    import pusher

    client = pusher.Pusher(
        app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host=server.host, port=server.port, ssl=False,
        encryption_master_key_base64=MASTER_KEY, **kwargs,
    )
    client.trigger(channel, event, data)


# ---------------------------------------------------------------- tests


def test_connect_and_public_subscribe(server: ServerProcess) -> None:
    records = run_scenario("connect_public", server.port)
    sid = check(records, "socket_id")["socket_id"]
    assert isinstance(sid, str)
    left, dot, right = sid.partition(".")
    assert dot and left.isdigit() and right.isdigit() and left.isascii() and right.isascii()
    assert check(records, "subscribed")["subscribed"] is True
    ok = msgs(records, "a", "pusher_internal:subscription_succeeded", "news")
    assert len(ok) == 1


def test_private_subscribe_and_client_event_not_echoed(server: ServerProcess) -> None:
    records = run_scenario("private_client_event", server.port)
    assert check(records, "triggered")["ok"] is True
    got = msgs(records, "b", "client-hello", "private-room")
    assert [r["data"] for r in got] == [{"text": "hi b"}]
    assert "user_id" not in got[0]  # private channel: no user_id
    assert msgs(records, "a", "client-hello") == []
    assert check(records, "echo")["a_got_hello"] == 0
    assert msgs(records, "b", "client-back") == []


def test_refused_signature_reaches_the_channel_binding(server: ServerProcess) -> None:
    got = check(run_scenario("bad_auth", server.port), "refused")
    assert got["subscribed"] is False and got["state"] == "connected"
    assert len(got["errors"]) == 1
    assert got["errors"][0]["type"] == "AuthError" and got["errors"][0]["status"] == 401


def test_client_event_on_public_channel_is_4301_without_close(server: ServerProcess) -> None:
    records = run_scenario("public_client_event", server.port)
    assert check(records, "error")["data"]["code"] == 4301
    assert check(records, "state")["state"] == "connected"
    states = [r["cur"] for r in records if r["t"] == "state"]
    assert states == ["connected", "disconnected"]  # the last one is the scenario's own disconnect


def test_presence_members_across_tabs(server: ServerProcess) -> None:
    records = run_scenario("presence_tabs", server.port)
    ch = "presence-room"
    b_first = check(records, "b_first")
    assert b_first["count"] == 1 and b_first["me"] == {"id": "u2", "info": {"name": "Bea"}}
    a1 = check(records, "a1")
    assert a1["count"] == 2 and a1["me"]["id"] == "u1" and a1["ids"] == ["u1", "u2"]
    a2 = check(records, "a2")
    assert a2["count"] == 2 and a2["me"] == {"id": "u1", "info": {"name": "Al"}}
    # the second tab of u1 adds nobody
    assert check(records, "after_second_tab") == {"t": "check", "name": "after_second_tab", "added": 1, "count": 2}
    added = msgs(records, "b", "pusher_internal:member_added", ch)
    assert [r["data"] for r in added] == [{"user_id": "u1", "user_info": {"name": "Al"}}]
    # the joiner is not told about itself
    assert msgs(records, "a1", "pusher_internal:member_added") == []
    assert msgs(records, "a2", "pusher_internal:member_added") == []
    # first tab leaves: u1 is still there
    after_first = check(records, "after_first_left")
    assert after_first["removed"] == 0 and after_first["count"] == 2
    # last tab leaves: exactly one member_removed
    last = check(records, "after_last_left")
    assert last["removed"] == 1 and last["count"] == 1 and last["ids"] == ["u2"]
    removed = msgs(records, "b", "pusher_internal:member_removed", ch)
    assert [r["data"] for r in removed] == [{"user_id": "u1"}]
    # presence client events carry the sender's user_id and are not echoed
    marks = msgs(records, "b", "client-mark", ch)
    assert [(r["data"]["n"], r["user_id"]) for r in marks] == [(1, "u1"), (2, "u1")]
    assert msgs(records, "a2", "client-mark") == []


def test_signin_and_watchlist(server: ServerProcess) -> None:
    records = run_scenario("signin_watchlist", server.port)
    signed = check(records, "signed_in")
    assert signed["user_data"] == {"id": "watcher", "watchlist": ["u1", "u9"]}
    assert signed["online"] == [] and signed["offline"] == [["u1", "u9"]]
    events = check(records, "events")
    assert events["online"] == [["u1"]]
    assert events["offline"] == [["u1", "u9"], ["u1"]]
    # pusher-js subscribed to the user's own channel after sign-in
    assert msgs(records, "w", "pusher_internal:subscription_succeeded", "#server-to-user-watcher")
    assert msgs(records, "w", "pusher:subscription_error") == []


def test_cache_miss_then_cached_event(server: ServerProcess) -> None:
    records = run_scenario(
        "cache_channel", server.port, lambda _: trigger(server, "cache-prices", "price", {"usd": 42})
    )
    assert check(records, "miss")["bound"] == 1
    late = check(records, "late")
    assert late["data"] == {"usd": 42} and late["misses"] == 0
    # the cached event comes right after subscription_succeeded
    b = [r["event"] for r in records if r["t"] == "msg" and r["c"] == "b"]
    assert b == ["pusher_internal:subscription_succeeded", "price"]


def test_cache_miss_on_empty_cache_channel(server: ServerProcess) -> None:
    records = run_scenario("cache_miss", server.port)
    assert check(records, "miss")["bound"] == 1
    a = [(r["event"], r.get("channel")) for r in records if r["t"] == "msg"]
    assert a == [
        ("pusher_internal:subscription_succeeded", "cache-empty"),
        ("pusher:cache_miss", "cache-empty"),
        ("pusher_internal:subscription_succeeded", "private-cache-empty"),
        ("pusher:cache_miss", "private-cache-empty"),
    ]


def test_server_event_reaches_pusher_js(server: ServerProcess) -> None:

    def go(_: str) -> None:
        trigger(server, "news", "update", {"n": 1})
        trigger(server, "private-news", "update", {"n": 2})
        trigger(server, "#server-to-user-u5", "greet", {"hello": "u5"})

    got = check(run_scenario("server_event", server.port, go), "got")
    assert got["pub"] == {"n": 1} and got["priv"] == {"n": 2}
    assert got["user"] == [{"hello": "u5"}]


def test_terminate_user_connections_4009_gives_up(server: ServerProcess) -> None:
    import pusher

    def go(_: str) -> None:
        client = pusher.Pusher(
            app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host=server.host, port=server.port, ssl=False
        )
        client.terminate_user_connections("u6")

    got = check(run_scenario("terminate", server.port, go), "terminated")
    assert got["data"]["code"] == 4009
    assert got["states"] == ["connected", "disconnected"]


def test_encrypted_channel_decrypted_by_pusher_js(server: ServerProcess) -> None:
    records = run_scenario(
        "encrypted", server.port,
        lambda _: trigger(server, "private-encrypted-secret", "secret-event", {"pin": "1234"}),
        masterKey=MASTER_KEY,
    )
    got = check(records, "decrypted")
    assert got["data"] == {"pin": "1234"} and got["errors"] == []
    assert set(got["raw"]) == {"nonce", "ciphertext"}  # the server relayed ciphertext only


def test_unknown_app_key_gives_up(server: ServerProcess) -> None:
    records = run_scenario("unknown_key", server.port, key="no-such-key")
    refused = check(records, "refused")
    assert refused["data"]["code"] == 4001 and refused["state"] == "disconnected"
    assert check(records, "states")["states"] == ["disconnected"]


class SwitchProxy:
    """A TCP proxy on a fixed port whose backend can be switched: a stand-in for a load balancer.

    pusher-js under Node does not notice a refused TCP connect (it waits for its 15 s
    timeout), so a restart test that leaves the port closed for a moment would
    measure that timeout. With the proxy the new server is up before the old one
    closes its connections with 4200, as in a rolling restart behind a balancer.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.started.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self.started.set()
        self.loop.run_forever()
        server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.mark.parametrize("param", HOST_MATRIX)
def test_restart_4200_reconnects_at_once(param: tuple[str, str], node_modules: Path) -> None:
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(serve_host(param))
        proxy = SwitchProxy(first.port)
        stack.callback(proxy.close)
        servers: list[ServerProcess] = [first]

        def restart(_: str) -> None:
            servers.append(stack.enter_context(serve_host(param)))
            proxy.target = servers[-1].port
            first.proc.send_signal(signal.SIGTERM)
            assert clean_exit(first)

        records = run_scenario("restart", proxy.port, restart)
    closed = check(records, "closed")
    assert closed["data"]["code"] == 4200
    # 4200 means "reconnect now": straight to connecting, never disconnected or failed
    assert closed["state"] == "connecting"
    rec = check(records, "reconnected")
    assert rec["first"] != rec["second"]
    assert rec["states"] == ["connected", "connecting", "connected"]
    assert len(servers) == 2
    # signed in, and on the user's own channel, on both servers
    assert len(msgs(records, "a", "pusher:signin_success")) == 2
    assert len(msgs(records, "a", "pusher_internal:subscription_succeeded", "#server-to-user-u7")) == 2
    assert msgs(records, "a", "pusher:subscription_error") == []
