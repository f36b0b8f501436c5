"""The Pusher protocol fed through a Router by a framework-neutral transport (the seed way).

No sockets: each connection is a :class:`Connection` over a list. The outbox is
flushed explicitly, so every assertion sees exactly what one loop iteration sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import orjson
import pytest

from soketi_impl import Connection, Router
from soketi_impl.config import load_config
from soketi_impl.pusher import PusherServer

KEY, SECRET, APP = "k", "s", "1"


def sign(text: str) -> str:
    return f"{KEY}:" + hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()


class Client:
    """One fake framework connection: records what the server sent and how it closed."""

    def __init__(self, server: PusherServer, path: str = f"/app/{KEY}?protocol=7", buffered: int = 0) -> None:
        self.server = server
        self.got: list[dict[str, Any]] = []
        self.closed_with: int | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.conn = Connection(
            "x", send=self._send, close=self._close, path=path, write_buffer_size=lambda: buffered,
        )

    def _send(self, message: Any) -> None:
        msg = orjson.loads(message)
        if isinstance(msg.get("data"), str) and msg["data"][:1] in "{[":
            msg["data"] = orjson.loads(msg["data"])
        self.got.append(msg)

    def _close(self, code: int | None = None, reason: str | None = None) -> None:
        self.closed_with = code
        if not self.closed.done():
            self.closed.set_result(code)
        self.server.router.feed("closed", self.conn, code, reason)

    async def open(self) -> Client:
        await self.server.router.handle_new_connection(self.conn)
        self.server.outbox.flush()
        return self

    @property
    def socket_id(self) -> str:
        return str(self.got[0]["data"]["socket_id"])

    def send(self, event: str, data: Any = None, channel: str | None = None) -> list[dict[str, Any]]:
        """Send one frame; returns what this client received because of it."""
        before = len(self.got)
        frame: dict[str, Any] = {"event": event, "data": data}
        if channel is not None:
            frame["channel"] = channel
        self.server.router.feed("message", self.conn, orjson.dumps(frame))
        self.server.outbox.flush()
        return self.got[before:]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.got if m["event"] == name]


def make_server(**env: str) -> PusherServer:
    base = {
        "SOKETI_DEFAULT_APP_ID": APP, "SOKETI_DEFAULT_APP_KEY": KEY, "SOKETI_DEFAULT_APP_SECRET": SECRET,
        "SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES": "true",
    }
    base.update(env)
    return PusherServer(load_config(None, environ=base), Router())


async def test_connection_established() -> None:
    c = await Client(make_server()).open()
    assert c.got[0]["event"] == "pusher:connection_established"
    data = c.got[0]["data"]
    assert data["activity_timeout"] == 30
    assert data["socket_id"].count(".") == 1 and data["socket_id"].replace(".", "").isdigit()
    assert c.send("pusher:ping", "")[0]["event"] == "pusher:pong"


@pytest.mark.parametrize(
    "path, code",
    [("/app/nope", 4001), (f"/app/{KEY}?protocol=3", 4007), ("/other", 4001)],
)
async def test_refused(path: str, code: int) -> None:
    c = await Client(make_server(), path=path).open()
    assert await asyncio.wait_for(c.closed, 5) == code
    assert c.got[-1]["event"] == "pusher:error" and c.got[-1]["data"]["code"] == code


async def test_disabled_app_and_quota() -> None:
    c = await Client(make_server(SOKETI_DEFAULT_APP_ENABLED="false")).open()
    assert await asyncio.wait_for(c.closed, 5) == 4003
    server = make_server(SOKETI_DEFAULT_APP_MAX_CONNS="1")
    first = await Client(server).open()
    second = await Client(server).open()
    assert await asyncio.wait_for(second.closed, 5) == 4004
    assert first.closed_with is None


async def test_public_private_and_trigger_with_exclusion() -> None:
    server = make_server()
    a, b = await Client(server).open(), await Client(server).open()
    assert a.send("pusher:subscribe", {"channel": "news"})[0]["event"] == "pusher_internal:subscription_succeeded"
    bad = b.send("pusher:subscribe", {"channel": "private-x", "auth": "k:deadbeef"})[0]
    assert bad["event"] == "pusher:subscription_error" and bad["data"]["status"] == 401
    ok = b.send("pusher:subscribe", {"channel": "private-x", "auth": sign(f"{b.socket_id}:private-x")})
    assert ok[0]["event"] == "pusher_internal:subscription_succeeded"
    b.send("pusher:subscribe", {"channel": "news"})
    n = await server.trigger(APP, ["news"], "update", '{"v":1}', socket_id=a.socket_id)
    server.outbox.flush()
    assert n == 1
    assert a.events("update") == [] and b.events("update")[0]["data"] == {"v": 1}
    assert (await server.channels(APP)) == {"news": {"subscription_count": 2}, "private-x": {"subscription_count": 1}}


async def test_presence_one_member_per_user() -> None:
    server = make_server()
    watcher = await Client(server).open()
    tab1, tab2 = await Client(server).open(), await Client(server).open()
    ch = "presence-room"

    def join(c: Client, uid: Any) -> list[dict[str, Any]]:
        cd = orjson.dumps({"user_id": uid, "user_info": {"name": str(uid)}}).decode()
        return c.send("pusher:subscribe", {"channel": ch, "auth": sign(f"{c.socket_id}:{ch}:{cd}"), "channel_data": cd})

    join(watcher, "w")
    first = join(tab1, 42)  # a number is normalised to "42"
    assert first[0]["data"]["presence"]["count"] == 2
    assert watcher.events("pusher_internal:member_added")[-1]["data"] == {"user_id": "42", "user_info": {"name": "42"}}
    join(tab2, 42)
    assert len(watcher.events("pusher_internal:member_added")) == 1  # second tab: no event
    assert tab1.events("pusher_internal:member_added") == []  # the joiner never hears itself
    assert await server.presence_users(APP, ch) == ["w", "42"]
    tab1.send("pusher:unsubscribe", {"channel": ch})
    assert watcher.events("pusher_internal:member_removed") == []
    tab2.conn.state and server.router.feed("closed", tab2.conn, 1000, "")
    server.outbox.flush()
    assert watcher.events("pusher_internal:member_removed")[-1]["data"] == {"user_id": "42"}
    assert (await server.channel(APP, ch)) == {"occupied": True, "subscription_count": 1, "user_count": 1}


async def test_client_events_rules() -> None:
    server = make_server(SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC="2")
    a, b = await Client(server).open(), await Client(server).open()
    for c in (a, b):
        c.send("pusher:subscribe", {"channel": "private-c", "auth": sign(f"{c.socket_id}:private-c")})
        c.send("pusher:subscribe", {"channel": "public"})
    assert a.send("client-x", {"m": 1}, "private-c") == []  # never echoed
    server.outbox.flush()
    assert b.events("client-x")[0]["data"] == {"m": 1}
    err = a.send("client-x", {}, "public")[0]
    assert err["event"] == "pusher:error" and err["data"]["code"] == 4301
    assert a.send("client-x", {}, "private-other")[0]["data"]["code"] == 4301  # not subscribed
    a.send("client-y", {}, "private-c")
    limited = a.send("client-y", {}, "private-c")  # third in the same second
    assert limited and limited[0]["data"]["code"] == 4301
    # A close would run a loop iteration after the error (call_soon, then a task):
    # let those run before checking that 4301 never closes.
    for _ in range(5):
        server.outbox.flush()
        await asyncio.sleep(0)
    assert a.closed_with is None and not a.conn.closed
    assert a.send("pusher:ping", "")[0]["event"] == "pusher:pong"


async def test_client_events_disabled() -> None:
    server = make_server(SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES="false")
    a = await Client(server).open()
    a.send("pusher:subscribe", {"channel": "private-c", "auth": sign(f"{a.socket_id}:private-c")})
    assert a.send("client-x", {}, "private-c")[0]["data"]["code"] == 4301


async def test_signin_server_to_user_watchlist_and_terminate() -> None:
    server = make_server()
    alice, bob = await Client(server).open(), await Client(server).open()

    def signin(c: Client, user: dict[str, Any]) -> list[dict[str, Any]]:
        ud = orjson.dumps(user).decode()
        return c.send("pusher:signin", {"auth": sign(f"{c.socket_id}::user::{ud}"), "user_data": ud})

    got = signin(alice, {"id": "alice", "watchlist": ["bob"]})
    assert got[0]["event"] == "pusher:signin_success"
    assert got[1]["event"] == "pusher_internal:watchlist_events"
    assert got[1]["data"] == {"events": [{"name": "offline", "user_ids": ["bob"]}]}
    signin(bob, {"id": "bob"})
    assert alice.events("pusher_internal:watchlist_events")[-1]["data"]["events"] == [
        {"name": "online", "user_ids": ["bob"]}
    ]
    sub = bob.send("pusher:subscribe", {"channel": "#server-to-user-alice"})[0]
    assert sub["event"] == "pusher:subscription_error"
    await server.trigger(APP, ["#server-to-user-bob"], "hello", "{}")
    server.outbox.flush()
    assert bob.events("hello") and not alice.events("hello")
    assert await server.terminate_user_connections(APP, "bob") == 1
    assert await asyncio.wait_for(bob.closed, 5) == 4009
    server.outbox.flush()
    assert alice.events("pusher_internal:watchlist_events")[-1]["data"]["events"] == [
        {"name": "offline", "user_ids": ["bob"]}
    ]


async def test_a_watcher_that_leaves_is_forgotten() -> None:
    """The server's accounting: a closed connection leaves no watcher entry behind, and
    the watched user's comings and goings are no longer sent anywhere for it."""
    server = make_server()
    alice, carol = await Client(server).open(), await Client(server).open()
    for c, uid in ((alice, "alice"), (carol, "carol")):
        ud = orjson.dumps({"id": uid, "watchlist": ["bob"]}).decode()
        c.send("pusher:signin", {"auth": sign(f"{c.socket_id}::user::{ud}"), "user_data": ud})
    app = server.apps[APP]
    assert set(app.watchers) == {"bob"} and len(app.watchers["bob"]) == 2
    await alice.conn.close(1000, "bye")  # the framework tells the router "closed"
    assert len(app.watchers["bob"]) == 1
    await carol.conn.close(1000, "bye")
    assert app.watchers == {}


async def test_subscribing_twice_confirms_again_and_changes_nothing() -> None:
    server = make_server()
    a = await Client(server).open()
    for _ in range(2):
        (ok,) = a.send("pusher:subscribe", {"channel": "public-twice"})
        # a public channel's confirmation carries no presence payload
        assert ok["event"] == "pusher_internal:subscription_succeeded" and ok["data"] in ({}, "{}"), ok
    assert server.apps[APP].table.count("public-twice") == 1
    data = orjson.dumps({"user_id": "u1"}).decode()
    auth = sign(f"{a.socket_id}:presence-twice:{data}")
    for _ in range(2):
        got = a.send("pusher:subscribe", {"channel": "presence-twice", "auth": auth, "channel_data": data})
        ok = [m for m in got if m["event"] == "pusher_internal:subscription_succeeded"][-1]
        assert ok["data"]["presence"]["ids"] == ["u1"], ok


async def test_bad_signin_closes_4009() -> None:
    c = await Client(make_server()).open()
    c.send("pusher:signin", {"auth": "k:00", "user_data": '{"id":"1"}'})
    assert await asyncio.wait_for(c.closed, 5) == 4009


async def test_user_authentication_timeout() -> None:
    server = make_server(SOKETI_DEFAULT_APP_USER_AUTHENTICATION="true", SOKETI_USER_AUTHENTICATION_TIMEOUT="50")
    c = await Client(server).open()
    assert await asyncio.wait_for(c.closed, 5) == 4009


async def test_cache_channel() -> None:
    server = make_server()
    a = await Client(server).open()
    got = a.send("pusher:subscribe", {"channel": "cache-x"})
    assert [m["event"] for m in got] == ["pusher_internal:subscription_succeeded", "pusher:cache_miss"]
    await server.trigger(APP, ["cache-x"], "e", '{"n":1}')
    b = await Client(server).open()
    got = b.send("pusher:subscribe", {"channel": "cache-x"})
    assert [m["event"] for m in got] == ["pusher_internal:subscription_succeeded", "e"]
    assert (await server.channel(APP, "cache-x"))["cache"]["event"] == "e"


async def test_bad_frames_get_errors_and_the_connection_lives() -> None:
    c = await Client(make_server()).open()
    for raw in [b"not json", b"[1]", b'{"event": 5}', b'{"event":"pusher:subscribe","data":7}',
                b'{"event":"pusher:subscribe","data":{"channel":"bad name!"}}', b"\xff\xfe",
                b'{"event":"pusher:nope"}']:
        before = len(c.got)
        c.server.router.feed("message", c.conn, raw)
        c.server.outbox.flush()
        assert c.got[before]["event"] in ("pusher:error", "pusher:subscription_error"), raw
    assert c.closed_with is None
    assert c.send("pusher:ping", "")[0]["event"] == "pusher:pong"


async def test_backpressure_closes_with_4100() -> None:
    server = make_server()
    slow = await Client(server, buffered=10 * 1024 * 1024).open()
    assert await asyncio.wait_for(slow.closed, 5) == 4100


async def test_silent_client_pinged_then_closed_4201() -> None:
    config = load_config(None, environ={
        "SOKETI_DEFAULT_APP_KEY": KEY, "SOKETI_DEFAULT_APP_SECRET": SECRET, "SOKETI_ACTIVITY_TIMEOUT": "1",
    })
    server = PusherServer(config, Router(), pong_timeout=0.3)
    c = await Client(server).open()
    assert await asyncio.wait_for(c.closed, 10) == 4201
    assert c.events("pusher:ping")


async def test_shutdown_closes_with_4200() -> None:
    server = make_server()
    clients = [await Client(server).open() for _ in range(5)]
    await server.shutdown(50)
    assert [await asyncio.wait_for(c.closed, 5) for c in clients] == [4200] * 5
    late = await Client(server).open()
    assert await asyncio.wait_for(late.closed, 5) == 4200
