"""The Pusher core driven through its Router with fake native sockets and a fake clock.

No network: each connection is a :class:`Connection` whose ``send`` and ``close``
record what the core did. Time comes from :class:`FakeClock`, and the sweep runs
when a test calls ``core.sweep_once()``, so timeouts are tested without sleeping.
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
TIMEOUT = 5.0


def sign(text: str) -> str:
    return f"{KEY}:" + hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()


class FakeClock:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_core(clock: FakeClock | None = None, /, **env: str) -> PusherServer:
    base = {
        "SOKETI_DEFAULT_APP_ID": APP, "SOKETI_DEFAULT_APP_KEY": KEY, "SOKETI_DEFAULT_APP_SECRET": SECRET,
        "SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES": "true",
    }
    base.update(env)
    config = load_config(None, environ=base)
    return PusherServer(config, Router(), clock=clock if clock is not None else FakeClock())


class Peer:
    """A fake native socket: the frames the core sent, and how it closed the connection."""

    def __init__(self, core: PusherServer, path: str = f"/app/{KEY}?protocol=7") -> None:
        self.core = core
        self.frames: list[Any] = []
        self.closed_with: int | None = None
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.conn = Connection("peer", send=self._send, close=self._close, path=path)

    def _send(self, message: Any) -> None:
        self.frames.append(message)

    def _close(self, code: int | None = None, reason: str | None = None) -> None:
        self.closed_with = code
        if not self.closed.done():
            self.closed.set_result(code)
        self.core.router.feed("closed", self.conn, code, reason)

    def open(self) -> Peer:
        self.core.router.feed("new", self.conn)
        self.core.outbox.flush()
        return self

    @property
    def got(self) -> list[dict[str, Any]]:
        out = []
        for frame in self.frames:
            msg = orjson.loads(frame)
            if isinstance(msg.get("data"), str) and msg["data"][:1] in "{[":
                msg["data"] = orjson.loads(msg["data"])
            out.append(msg)
        return out

    @property
    def socket_id(self) -> str:
        return str(self.got[0]["data"]["socket_id"])

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.got if m["event"] == name]

    def send(self, event: str, data: Any = None, channel: str | None = None) -> list[dict[str, Any]]:
        """Feed one frame; returns what this peer received because of it."""
        before = len(self.frames)
        frame: dict[str, Any] = {"event": event, "data": data}
        if channel is not None:
            frame["channel"] = channel
        self.core.router.feed("message", self.conn, orjson.dumps(frame).decode())
        self.core.outbox.flush()
        return self.got[before:]

    def subscribe(self, channel: str, channel_data: Any = None, auth: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"channel": channel}
        if channel_data is not None:
            text = channel_data if isinstance(channel_data, str) else orjson.dumps(channel_data).decode()
            data["channel_data"] = text
            data["auth"] = auth or sign(f"{self.socket_id}:{channel}:{text}")
        elif channel.startswith("private-"):
            data["auth"] = auth or sign(f"{self.socket_id}:{channel}")
        elif auth is not None:
            data["auth"] = auth
        return self.send("pusher:subscribe", data)[0]

    def signin(self, user: dict[str, Any]) -> list[dict[str, Any]]:
        ud = orjson.dumps(user).decode()
        return self.send("pusher:signin", {"auth": sign(f"{self.socket_id}::user::{ud}"), "user_data": ud})

    async def settle(self) -> None:
        """Run every callback the core scheduled (a close runs a loop iteration after its error)."""
        for _ in range(5):
            self.core.outbox.flush()
            await asyncio.sleep(0)


async def closed_with(peer: Peer) -> int | None:
    return await asyncio.wait_for(peer.closed, TIMEOUT)


# ---------------------------------------------------------------- admission


async def test_established_goes_out_as_text() -> None:
    peer = Peer(make_core()).open()
    assert len(peer.frames) == 1 and isinstance(peer.frames[0], str)  # a str: a TEXT frame
    msg = peer.got[0]
    assert msg["event"] == "pusher:connection_established"
    assert msg["data"]["activity_timeout"] == 30
    assert peer.send("pusher:ping", {})[0]["event"] == "pusher:pong"


@pytest.mark.parametrize(
    "env, path, code",
    [
        ({}, "/app/nope?protocol=7", 4001),
        ({}, "/elsewhere", 4001),
        ({"SOKETI_DEFAULT_APP_ENABLED": "false"}, f"/app/{KEY}?protocol=7", 4003),
        ({}, f"/app/{KEY}?protocol=4", 4007),
    ],
)
async def test_refused_with_a_code(env: dict[str, str], path: str, code: int) -> None:
    peer = Peer(make_core(**env), path=path).open()
    assert peer.got[-1]["event"] == "pusher:error" and peer.got[-1]["data"]["code"] == code
    assert await closed_with(peer) == code


async def test_connection_quota_4004() -> None:
    core = make_core(SOKETI_DEFAULT_APP_MAX_CONNS="1")
    first = Peer(core).open()
    second = Peer(core).open()
    assert await closed_with(second) == 4004
    await first.settle()
    assert first.closed_with is None
    first._close(1000, "")  # the first leaves: room for another
    third = Peer(core).open()
    await third.settle()
    assert third.closed_with is None and third.got[0]["event"] == "pusher:connection_established"


# ---------------------------------------------------------------- subscriptions per kind


async def test_public_private_encrypted_with_good_and_bad_auth() -> None:
    peer = Peer(make_core()).open()
    assert peer.subscribe("news")["event"] == "pusher_internal:subscription_succeeded"
    for channel in ("private-a", "private-encrypted-a", "private-cache-a"):
        bad = peer.subscribe(channel, auth=f"{KEY}:{'0' * 64}")
        assert (bad["event"], bad["data"]["type"], bad["data"]["status"]) == (
            "pusher:subscription_error", "AuthError", 401,
        ), channel
        assert peer.subscribe(channel)["event"] == "pusher_internal:subscription_succeeded", channel
    # a signature for another socket id does not open the channel
    other = sign("1.1:private-b")
    assert peer.subscribe("private-b", auth=other)["event"] == "pusher:subscription_error"
    bad_name = peer.subscribe("bad name!")
    assert bad_name["data"]["type"] == "InvalidChannel"


async def test_presence_auth_and_channel_data_rules() -> None:
    peer = Peer(make_core()).open()
    ok = peer.subscribe("presence-r", {"user_id": 7, "user_info": {"n": 1}})
    assert ok["data"]["presence"] == {"ids": ["7"], "hash": {"7": {"n": 1}}, "count": 1}
    wrong_sig = peer.subscribe("presence-s", {"user_id": "u"}, auth=sign("1.1:presence-s:{}"))
    assert wrong_sig["data"]["type"] == "AuthError"
    no_data = peer.send("pusher:subscribe", {"channel": "presence-t", "auth": sign("x")})[0]
    assert no_data["data"] == {"type": "AuthError", "error": "Presence channels need channel_data.", "status": 401}
    no_uid = peer.subscribe("presence-u", {"user_info": {}})
    assert (no_uid["data"]["type"], no_uid["data"]["status"]) == ("AuthError", 400)
    long_uid = peer.subscribe("presence-v", {"user_id": "x" * 129})
    assert long_uid["data"]["type"] == "LimitReached" and "128" in long_uid["data"]["error"]


async def test_server_to_user_only_for_its_own_user() -> None:
    peer = Peer(make_core()).open()
    refused = peer.subscribe("#server-to-user-bob")
    assert (refused["event"], refused["data"]["status"]) == ("pusher:subscription_error", 403)
    peer.signin({"id": "bob"})
    assert peer.subscribe("#server-to-user-bob")["event"] == "pusher_internal:subscription_succeeded"
    assert peer.subscribe("#server-to-user-ann")["data"]["status"] == 403


async def test_presence_member_events_one_per_user() -> None:
    core = make_core()
    watcher, tab1, tab2 = Peer(core).open(), Peer(core).open(), Peer(core).open()
    watcher.subscribe("presence-room", {"user_id": "w"})
    tab1.subscribe("presence-room", {"user_id": "u", "user_info": {"tab": 1}})
    tab2.subscribe("presence-room", {"user_id": "u", "user_info": {"tab": 2}})
    added = watcher.events("pusher_internal:member_added")
    assert [m["data"] for m in added] == [{"user_id": "u", "user_info": {"tab": 1}}]
    assert tab1.events("pusher_internal:member_added") == []  # the joiner never hears itself
    assert tab2.events("pusher_internal:subscription_succeeded")[0]["data"]["presence"]["count"] == 2
    tab1.send("pusher:unsubscribe", {"channel": "presence-room"})
    assert watcher.events("pusher_internal:member_removed") == []  # u is still there (tab2)
    tab2._close(1000, "")
    core.outbox.flush()
    assert [m["data"] for m in watcher.events("pusher_internal:member_removed")] == [{"user_id": "u"}]
    assert await core.presence_users(APP, "presence-room") == ["w"]


async def test_presence_channel_full() -> None:
    core = make_core(SOKETI_PRESENCE_MAX_MEMBERS="1")
    a, b = Peer(core).open(), Peer(core).open()
    a.subscribe("presence-one", {"user_id": "a"})
    full = b.subscribe("presence-one", {"user_id": "b"})
    assert full["data"]["type"] == "LimitReached"
    assert b.subscribe("presence-one", {"user_id": "a"})["event"] == "pusher_internal:subscription_succeeded"
    assert (await core.channel(APP, "presence-one"))["user_count"] == 1


async def test_per_connection_channel_limit() -> None:
    core = make_core()
    core.subscriptions.max_per_connection = 3
    peer = Peer(core).open()
    for i in range(3):
        assert peer.subscribe(f"c{i}")["event"] == "pusher_internal:subscription_succeeded"
    refused = peer.subscribe("c3")
    assert refused["event"] == "pusher:subscription_error"
    assert refused["data"]["type"] == "LimitReached" and refused["data"]["status"] == 400
    assert "3 channels" in refused["data"]["error"]
    assert peer.subscribe("c1")["event"] == "pusher_internal:subscription_succeeded"  # already in: fine
    peer.send("pusher:unsubscribe", {"channel": "c0"})
    assert peer.subscribe("c3")["event"] == "pusher_internal:subscription_succeeded"


async def test_channel_limit_read_from_config() -> None:
    config = load_config(None, environ={"SOKETI_DEFAULT_APP_KEY": KEY, "SOKETI_DEFAULT_APP_SECRET": SECRET})
    config.max_channels_per_connection = 2
    core = PusherServer(config, Router(), clock=FakeClock())
    assert core.subscriptions.max_per_connection == 2


async def test_many_channels_then_close_frees_everything() -> None:
    core = make_core()
    core.subscriptions.max_per_connection = -1
    peer = Peer(core).open()
    for i in range(3000):
        core.router.feed("message", peer.conn, orjson.dumps(
            {"event": "pusher:subscribe", "data": {"channel": f"ch-{i}"}}
        ))
    core.outbox.flush()
    sock = peer.conn.state
    assert sock.channel_count() == 3000 and len(core.apps[APP].table) == 3000
    peer.send("pusher:unsubscribe", {"channel": "ch-5"})
    assert sock.channel_count() == 2999 and not sock.in_channel("ch-5")
    peer._close(1000, "")
    assert len(core.apps[APP].table) == 0 and len(core.apps[APP].sockets) == 0


# ---------------------------------------------------------------- client events


async def test_client_event_rules() -> None:
    core = make_core()
    a, b = Peer(core).open(), Peer(core).open()
    for p in (a, b):
        p.subscribe("private-c")
        p.subscribe("private-encrypted-e")
        p.subscribe("public")
        p.subscribe("presence-p", {"user_id": f"user-{p is a}"})
    assert a.send("client-x", {"m": 1}, "private-c") == []  # never echoed
    core.outbox.flush()
    assert b.events("client-x")[0]["data"] == {"m": 1}
    a.send("client-y", {"m": 2}, "presence-p")
    core.outbox.flush()
    assert b.events("client-y")[0]["user_id"] == "user-True"
    for channel in ("public", "private-encrypted-e", "private-not-mine"):
        err = a.send("client-z", {}, channel)[0]
        assert (err["event"], err["data"]["code"]) == ("pusher:error", 4301), channel
    assert b.events("client-z") == []


async def test_client_event_rate_limit_4301_keeps_the_connection() -> None:
    clock = FakeClock()
    core = make_core(clock, SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC="2")
    a, b = Peer(core).open(), Peer(core).open()
    for p in (a, b):
        p.subscribe("private-c")
    assert a.send("client-1", {}, "private-c") == [] and a.send("client-2", {}, "private-c") == []
    limited = a.send("client-3", {}, "private-c")
    assert limited[0]["data"]["code"] == 4301 and "2 per second" in limited[0]["data"]["message"]
    await a.settle()
    assert a.closed_with is None and not a.conn.closed and not a.conn.state.closing
    clock.advance(1.0)  # a new second: allowed again
    assert a.send("client-4", {}, "private-c") == []
    core.outbox.flush()
    assert [m["event"] for m in b.got[2:]] == ["client-1", "client-2", "client-4"]
    # The same settle() does observe a close when there is one (so the check above can fail).
    a.send("pusher:signin", {"auth": "k:00", "user_data": '{"id":"1"}'})
    await a.settle()
    assert a.closed_with == 4009


# ---------------------------------------------------------------- users


async def test_signin_watchlist_online_offline() -> None:
    core = make_core()
    alice, bob = Peer(core).open(), Peer(core).open()
    got = alice.signin({"id": "alice", "watchlist": ["bob", "carol"]})
    assert got[0]["event"] == "pusher:signin_success"
    assert got[1]["data"] == {"events": [{"name": "offline", "user_ids": ["bob", "carol"]}]}
    bob.signin({"id": "bob"})
    assert alice.events("pusher_internal:watchlist_events")[-1]["data"]["events"] == [
        {"name": "online", "user_ids": ["bob"]}
    ]
    await core.trigger(APP, ["#server-to-user-bob"], "hi", "{}")
    core.outbox.flush()
    assert bob.events("hi") and not alice.events("hi")
    bob._close(1000, "")
    core.outbox.flush()
    assert alice.events("pusher_internal:watchlist_events")[-1]["data"]["events"] == [
        {"name": "offline", "user_ids": ["bob"]}
    ]


@pytest.mark.parametrize(
    "user, words",
    [
        ({"id": "x" * 129}, "128"),
        ({"id": "ok", "watchlist": [str(i) for i in range(101)]}, "100"),
        ({"name": "no id"}, "id"),
    ],
)
async def test_signin_limits_close_4009(user: dict[str, Any], words: str) -> None:
    core = make_core()
    peer = Peer(core).open()
    err = peer.signin(user)[0]
    assert err["event"] == "pusher:error" and err["data"]["code"] == 4009 and words in err["data"]["message"]
    assert await closed_with(peer) == 4009
    assert core.apps[APP].users == {}


async def test_signin_at_the_limits_is_accepted() -> None:
    peer = Peer(make_core()).open()
    got = peer.signin({"id": "x" * 128, "watchlist": [str(i) for i in range(100)]})
    assert got[0]["event"] == "pusher:signin_success"


async def test_user_authentication_deadline_4009() -> None:
    clock = FakeClock()
    core = make_core(clock, SOKETI_DEFAULT_APP_USER_AUTHENTICATION="true", SOKETI_USER_AUTHENTICATION_TIMEOUT="2000")
    silent, signed, private = Peer(core).open(), Peer(core).open(), Peer(core).open()
    signed.signin({"id": "u"})
    private.subscribe("private-x")  # an authorized subscription counts too
    clock.advance(1.9)
    core.sweep_once()
    await silent.settle()
    assert silent.closed_with is None
    clock.advance(0.2)
    core.sweep_once()
    assert await closed_with(silent) == 4009
    await signed.settle()
    assert signed.closed_with is None and private.closed_with is None


# ---------------------------------------------------------------- time: cache, silence


async def test_cache_hit_miss_and_expiry() -> None:
    clock = FakeClock()
    core = make_core(clock, SOKETI_CHANNEL_CACHE_TTL="10")
    a = Peer(core).open()
    got = [a.subscribe("cache-x")] + a.got[-1:]
    assert [m["event"] for m in got] == ["pusher_internal:subscription_succeeded", "pusher:cache_miss"]
    await core.trigger(APP, ["cache-x"], "e", '{"n":1}')
    b = Peer(core).open()
    b.subscribe("cache-x")
    assert b.got[-1]["event"] == "e" and b.got[-1]["data"] == {"n": 1}
    assert (await core.channel(APP, "cache-x"))["cache"]["event"] == "e"
    clock.advance(11)
    c = Peer(core).open()
    c.subscribe("cache-x")
    assert c.got[-1]["event"] == "pusher:cache_miss"


async def test_expired_cache_entries_are_freed_by_the_sweep() -> None:
    clock = FakeClock()
    core = make_core(clock, SOKETI_CHANNEL_CACHE_TTL="5")
    for i in range(50):
        await core.trigger(APP, [f"cache-{i}"], "e", "x" * 1000)
    app = core.apps[APP]
    assert len(app.cache) == 50
    clock.advance(4)
    core.sweep_once()
    assert len(app.cache) == 50
    clock.advance(2)
    core.sweep_once()
    assert app.cache == {}  # freed, not only replaced


async def test_silent_client_pinged_then_closed_4201() -> None:
    clock = FakeClock()
    core = make_core(clock, SOKETI_ACTIVITY_TIMEOUT="30", SOKETI_PONG_TIMEOUT="10")
    peer = Peer(core).open()
    clock.advance(29)
    core.sweep_once()
    core.outbox.flush()
    assert peer.events("pusher:ping") == []
    clock.advance(2)
    core.sweep_once()
    core.outbox.flush()
    assert len(peer.events("pusher:ping")) == 1
    clock.advance(9)
    core.sweep_once()
    await peer.settle()
    assert peer.closed_with is None
    clock.advance(2)
    core.sweep_once()
    assert await closed_with(peer) == 4201


async def test_any_frame_counts_as_activity() -> None:
    clock = FakeClock()
    core = make_core(clock, SOKETI_ACTIVITY_TIMEOUT="30", SOKETI_PONG_TIMEOUT="10")
    talker, pinger = Peer(core).open(), Peer(core).open()
    for _ in range(5):
        clock.advance(25)
        talker.send("pusher:pong", {})
        pinger.conn.state.touch()  # what a host does on a WebSocket ping frame
        core.sweep_once()
    core.outbox.flush()
    assert talker.events("pusher:ping") == [] and pinger.events("pusher:ping") == []
    # touch() after the server's ping also clears the pending pong
    clock.advance(31)
    core.sweep_once()
    clock.advance(5)
    pinger.conn.state.touch()
    clock.advance(6)
    core.sweep_once()
    assert await closed_with(talker) == 4201  # pinged, silent past the pong timeout
    await pinger.settle()
    assert pinger.closed_with is None


async def test_shutdown_closes_4200_and_refuses_new() -> None:
    core = make_core()
    peers = [Peer(core).open() for _ in range(3)]
    await core.shutdown(0)
    assert [await closed_with(p) for p in peers] == [4200] * 3
    late = Peer(core).open()
    assert await closed_with(late) == 4200


async def test_membership_costs_nothing_without_channels() -> None:
    peer = Peer(make_core()).open()
    sock = peer.conn.state
    assert sock._channels is None  # no container until the first channel
    peer.subscribe("a")
    assert sock._channels == "a"  # one channel: the name itself
    peer.subscribe("b")
    assert sock.channels() == ["a", "b"]
    for name in ("a", "b"):
        peer.send("pusher:unsubscribe", {"channel": name})
    assert sock._channels is None and sock.channel_count() == 0
    peer.send("pusher:unsubscribe", {"channel": "never"})  # harmless
    assert sock.channel_count() == 0


# ---------------------------------------------------------------- found by tools/mutate.py


async def test_unsubscribing_from_a_channel_never_joined_changes_nothing() -> None:
    """With one subscription held (stored as a plain name, not a dict), an unsubscribe
    from another channel must not count as leaving anything."""
    core = make_core()
    a, b = Peer(core).open(), Peer(core).open()
    a.subscribe("news")
    b.subscribe("news")
    a.send("pusher:unsubscribe", {"channel": "weather"})
    a.send("pusher:unsubscribe", {"channel": "weather"})
    app = core.apps[APP]
    assert app.table.count("news") == 2 and app.table.count("weather") == 0
    await core.trigger(APP, ["news"], "still-here", "{}")
    core.outbox.flush()
    assert a.events("still-here") and b.events("still-here")
    a.send("pusher:unsubscribe", {"channel": "news"})
    assert app.table.count("news") == 1


async def test_a_cached_event_is_freed_the_moment_it_expires() -> None:
    """``lookup`` treats an entry as expired once its deadline is reached; the sweep
    frees it at that same moment, not one sweep later."""
    from soketi_impl.pusher import cache

    clock = FakeClock()
    core = make_core(clock, SOKETI_CHANNEL_CACHE_TTL="30")
    await core.trigger(APP, ["cache-x"], "ev", "{}")
    app = core.apps[APP]
    assert "cache-x" in app.cache
    clock.advance(29.5)
    assert cache.sweep(app) == 0 and "cache-x" in app.cache
    clock.advance(0.5)  # exactly the deadline
    assert cache.sweep(app) == 1 and app.cache == {}


@pytest.mark.parametrize(
    ("socket_id", "timeout"), [("123.456", 120), ("1.1", 0), ("999999999.12345678", 30), ("not-an-id\"", 120), ("1.2", 1.5)]
)
def test_connection_established_fast_form_is_encode_events(socket_id: str, timeout: Any) -> None:
    """The frame put together from constant parts is byte for byte the encoded one."""
    from soketi_impl.pusher import messages
    from soketi_impl.twins._protocol import encode_event

    expected = encode_event(
        "pusher:connection_established", None,
        orjson.dumps({"socket_id": socket_id, "activity_timeout": timeout}).decode(),
    )
    assert messages.connection_established(socket_id, timeout) == expected


def test_protocol_version_and_socket_id_as_parse_qs_and_the_regex_read_them() -> None:
    """The per-connection shortcuts agree with ``parse_qs`` and ``SOCKET_ID`` on odd input."""
    from urllib.parse import parse_qs

    from soketi_impl.pusher.state import SOCKET_ID, is_socket_id, protocol_version

    queries = ["", "protocol=7&client=js", "client=js&protocol=5&protocol=6", "protocol=&protocol=6", "protocol",
               "protocol=a=b", "&&protocol=8&", "protocol=%37", "protocol=+7", "x=1;protocol=6"]
    for query in queries:
        assert protocol_version(query) == parse_qs(query).get("protocol", ["7"])[0], query
    for text in ["1.2", "12.", ".3", "1.2.3", "", "١٢.٣", "²1.2", "1.2\n", " 1.2", "abc"]:
        assert is_socket_id(text) == (SOCKET_ID.fullmatch(text) is not None), text
    assert not is_socket_id(12)
