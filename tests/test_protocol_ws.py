"""The Pusher protocol over raw WebSockets (the ``websockets`` client), both builds:
connection, errors, channels, presence, client events, users and cache channels.

One server per build serves the whole module; its config file defines several apps,
one per limit under test (see ``APPS``), so that no test needs its own server. Tests
that need a server-wide setting (activity timeout) get a second module server.

Bad input gets a ``pusher:error`` or the right close code, and a bystander
connection on the same server keeps being served (it gets a pong afterwards).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from conftest import APP_ID, APP_KEY, APP_SECRET, ServerProcess, run_server
from soketi_impl.twins import _speedups

pytestmark = pytest.mark.timeout(60)

WAIT = 5.0

#: Apps of the module server, beside the default test app (app 0, from the environment).
APPS: list[dict[str, Any]] = [
    {"id": "0", "key": "overridden", "secret": "overridden"},
    {
        "id": "2", "key": "limits-key", "secret": "limits-secret", "enableClientMessages": True,
        "maxClientEventsPerSecond": 3, "maxPresenceMembersPerChannel": 2, "maxPresenceMemberSizeInKb": 1,
        "maxEventPayloadInKb": 1, "maxChannelNameLength": 50,
    },
    {"id": "3", "key": "disabled-key", "secret": "disabled-secret", "enabled": False},
    {"id": "4", "key": "maxconn-key", "secret": "maxconn-secret", "maxConnections": 1},
    {"id": "5", "key": "userauth-key", "secret": "userauth-secret", "enableUserAuthentication": True},
    {"id": "6", "key": "noclient-key", "secret": "noclient-secret"},
]
SECRETS = {APP_KEY: APP_SECRET, **{a["key"]: a["secret"] for a in APPS[1:]}}
USER_AUTH_TIMEOUT_MS = 1500  # long enough to sign in first on a loaded machine


def _server(request: pytest.FixtureRequest, tmp: Path, env: dict[str, str]) -> Iterator[ServerProcess]:
    if request.param == "c" and _speedups.NO_EXTENSIONS:
        pytest.skip("SOKETI_IMPL_NO_EXTENSIONS is set")
    config = tmp / "config.json"
    config.write_text(json.dumps({"appManager.array.apps": APPS}))
    with run_server(request.param, env=env, config_file=str(config)) as srv:
        yield srv


@pytest.fixture(scope="module", params=["c", "py"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The module server: the apps of ``APPS`` and a short user-authentication timeout."""
    yield from _server(
        request, tmp_path_factory.mktemp("cfg"),
        {"SOKETI_USER_AUTHENTICATION_TIMEOUT": str(USER_AUTH_TIMEOUT_MS)},
    )


@pytest.fixture(scope="module", params=["c", "py"])
def quick_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with a 1 s activity timeout (the server-side ping) and a 1 s cache TTL."""
    env = {
        "SOKETI_ACTIVITY_TIMEOUT": "1",
        "SOKETI_CHANNEL_CACHE_TTL": "1",
        # not a setting yet (the pong timeout is fixed at 30 s): see test_silent_client_closed_4201
        "SOKETI_PONG_TIMEOUT": "1",
    }
    yield from _server(request, tmp_path_factory.mktemp("cfg"), env)


# ---------------------------------------------------------------- helpers


def url(server: ServerProcess, key: str = APP_KEY, query: str = "protocol=7&client=js&version=8.6.0") -> str:
    return f"ws://{server.host}:{server.port}/app/{key}" + (f"?{query}" if query else "")


def sign(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def channel_auth(key: str, sid: str, channel: str, channel_data: str | None = None) -> str:
    text = f"{sid}:{channel}" if channel_data is None else f"{sid}:{channel}:{channel_data}"
    return f"{key}:{sign(SECRETS[key], text)}"


class Client:
    """One raw connection: JSON in and out, and waits with timeouts."""

    def __init__(self, ws: ClientConnection, key: str) -> None:
        self.ws = ws
        self.key = key
        self.socket_id = ""
        self.established: dict[str, Any] = {}

    async def send(self, event: str, data: Any = None, channel: str | None = None) -> None:
        msg: dict[str, Any] = {"event": event}
        if data is not None:
            msg["data"] = data
        if channel is not None:
            msg["channel"] = channel
        await self.ws.send(json.dumps(msg))

    async def recv(self, skip_pings: bool = True) -> dict[str, Any]:
        """The next message, parsed; server pings are skipped unless asked for."""
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), WAIT)
            msg = json.loads(raw)
            if skip_pings and msg.get("event") == "pusher:ping":
                continue
            return msg  # type: ignore[no-any-return]

    async def expect(self, event: str, channel: str | None = None) -> dict[str, Any]:
        """The next message, which must be ``event`` (on ``channel``)."""
        msg = await self.recv()
        assert msg.get("event") == event, msg
        if channel is not None:
            assert msg.get("channel") == channel, msg
        return msg

    async def error(self, code: int | None = None) -> dict[str, Any]:
        """The next message must be ``pusher:error`` (with ``code``); returns its data."""
        msg = await self.expect("pusher:error")
        data = msg["data"]
        assert isinstance(data, dict) and isinstance(data.get("message"), str) and data["message"], msg
        if code is not None:
            assert data["code"] == code, msg
        return data

    async def alive(self) -> None:
        """A ping gets a pong: the connection is open and served."""
        await self.send("pusher:ping", {})
        await self.expect("pusher:pong")

    async def closed(self, abort_ok: bool = False) -> int | None:
        """Wait for the server to close; returns the close code.

        ``abort_ok``: the client was still sending when the server closed, so the
        server's kernel may reset the connection (unread data) and the close frame
        can be lost: ``None`` then.
        """
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(self.ws.recv(), WAIT)
        if info.value.rcvd is None and abort_ok:
            return None
        assert info.value.rcvd is not None, "the server closed without a close frame"
        return info.value.rcvd.code

    async def subscribe(self, channel: str, auth: str | None = None, channel_data: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"channel": channel}
        if auth is not None:
            data["auth"] = auth
        if channel_data is not None:
            data["channel_data"] = channel_data
        await self.send("pusher:subscribe", data)
        return await self.recv()

    async def subscribe_ok(self, channel: str, user: dict[str, Any] | None = None) -> dict[str, Any]:
        """Subscribe with a valid signature (presence: as ``user``); returns the succeeded data."""
        auth = channel_data = None
        if channel.startswith("presence-"):
            channel_data = json.dumps(user or {"user_id": "u", "user_info": {}})
            auth = channel_auth(self.key, self.socket_id, channel, channel_data)
        elif channel.startswith("private-"):
            auth = channel_auth(self.key, self.socket_id, channel)
        msg = await self.subscribe(channel, auth, channel_data)
        assert msg["event"] == "pusher_internal:subscription_succeeded" and msg["channel"] == channel, msg
        assert isinstance(msg["data"], str), msg  # a JSON-encoded string, as clients expect
        return json.loads(msg["data"])  # type: ignore[no-any-return]

    async def signin(self, user: dict[str, Any]) -> None:
        user_data = json.dumps(user)
        auth = f"{self.key}:{sign(SECRETS[self.key], f'{self.socket_id}::user::{user_data}')}"
        await self.send("pusher:signin", {"auth": auth, "user_data": user_data})


@contextlib.asynccontextmanager
async def client(server: ServerProcess, key: str = APP_KEY, **kw: Any) -> AsyncIterator[Client]:
    """A connection that got ``pusher:connection_established``."""
    async with connect(url(server, key, **kw), max_size=None, open_timeout=WAIT, close_timeout=1) as ws:
        c = Client(ws, key)
        msg = await c.expect("pusher:connection_established")
        assert isinstance(msg["data"], str), msg
        c.established = json.loads(msg["data"])
        c.socket_id = c.established["socket_id"]
        yield c


@contextlib.asynccontextmanager
async def raw(server: ServerProcess, key: str = APP_KEY, **kw: Any) -> AsyncIterator[Client]:
    """A connection without reading anything yet (for refused connections)."""
    async with connect(url(server, key, **kw), max_size=None, open_timeout=WAIT, close_timeout=1) as ws:
        yield Client(ws, key)


@contextlib.asynccontextmanager
async def bystander(server: ServerProcess) -> AsyncIterator[Client]:
    """A connection that must still be served when the test is over."""
    async with client(server) as c:
        await c.alive()
        yield c
        await c.alive()


# ---------------------------------------------------------------- 1. connection


async def test_connection_established(server: ServerProcess) -> None:
    async with client(server) as c:
        assert re.fullmatch(r"\d+\.\d+", c.socket_id)
        assert c.established["activity_timeout"] == 30
        async with client(server) as d:
            assert d.socket_id != c.socket_id


@pytest.mark.parametrize("query", ["protocol=5", "protocol=6&client=python", "protocol=7", ""])
async def test_protocol_versions_accepted(server: ServerProcess, query: str) -> None:
    async with client(server, query=query) as c:
        await c.alive()


async def test_unsupported_protocol_refused(server: ServerProcess) -> None:
    async with raw(server, query="protocol=99") as c:
        assert (await c.error())["code"] == 4007
        assert await c.closed() == 4007


@pytest.mark.parametrize("data", [{}, "", None, "{}"])
async def test_ping_pong(server: ServerProcess, data: Any) -> None:
    async with client(server) as c:
        await c.send("pusher:ping", data)
        msg = await c.expect("pusher:pong")
        assert msg == {"event": "pusher:pong", "data": "{}"}


async def test_websocket_ping_frame_gets_pong_frame(server: ServerProcess) -> None:
    async with client(server) as c:
        pong = await c.ws.ping(b"hello")
        await asyncio.wait_for(pong, WAIT)
        await c.alive()


async def test_ping_before_reading_established(server: ServerProcess) -> None:
    """pysher pings before connection_established arrives: it gets its pong after it."""
    async with raw(server, query="protocol=6") as c:
        await c.send("pusher:ping", "")
        first = await c.recv()
        assert first["event"] == "pusher:connection_established"
        await c.expect("pusher:pong")


# ---------------------------------------------------------------- 2. error and close codes


async def test_unknown_app_key_4001(server: ServerProcess) -> None:
    async with bystander(server), raw(server, key="no-such-key") as c:
        assert (await c.error())["code"] == 4001
        assert await c.closed() == 4001


async def test_disabled_app_4003(server: ServerProcess) -> None:
    async with bystander(server), raw(server, key="disabled-key") as c:
        assert (await c.error())["code"] == 4003
        assert await c.closed() == 4003


async def test_max_connections_4004(server: ServerProcess) -> None:
    async with client(server, key="maxconn-key") as first:
        async with raw(server, key="maxconn-key") as second:
            assert (await second.error())["code"] == 4004
            assert await second.closed() == 4004
        await first.alive()


async def test_client_close_is_answered(server: ServerProcess) -> None:
    async with client(server) as c:
        await c.ws.close(1000)
        assert c.ws.close_code == 1000


# ---------------------------------------------------------------- 3. channels and authorization


async def test_public_subscribe_and_unsubscribe(server: ServerProcess) -> None:
    async with client(server) as a, client(server) as b:
        assert await a.subscribe_ok("news") == {}
        await a.subscribe_ok("private-also")
        await b.subscribe_ok("private-also")
        assert await a.subscribe_ok("news") == {}  # twice is harmless
        await a.send("pusher:unsubscribe", {"channel": "news"})
        await a.send("pusher:unsubscribe", {"channel": "never-subscribed"})  # ignored
        await a.alive()  # the unsubscribes were handled in order, silently


@pytest.mark.parametrize("prefix", ["private-", "private-encrypted-", "private-cache-", "private-encrypted-cache-"])
async def test_private_auth(server: ServerProcess, prefix: str) -> None:
    channel = prefix + "room"
    async with client(server) as a, client(server) as other:
        good = channel_auth(APP_KEY, a.socket_id, channel)
        bad_cases = [
            None,  # no auth at all
            "",
            good + "0",
            channel_auth(APP_KEY, other.socket_id, channel),  # signed for another socket
            channel_auth(APP_KEY, a.socket_id, channel + "x"),  # for another channel
            "other-key:" + good.partition(":")[2],  # wrong key part
            good.partition(":")[2],  # no key part
            12345,
        ]
        for auth in bad_cases:
            msg = await a.subscribe(channel, auth)  # type: ignore[arg-type]
            assert msg["event"] == "pusher:subscription_error" and msg["channel"] == channel, (auth, msg)
            assert msg["data"]["type"] == "AuthError" and msg["data"]["status"] == 401, msg
        msg = await a.subscribe(channel, good)
        assert msg == {"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": "{}"}


async def test_prefix_matched_at_start_only(server: ServerProcess) -> None:
    async with client(server) as c:
        # not private: no auth needed
        assert await c.subscribe_ok("xprivate-room") == {}
        assert await c.subscribe_ok("my-presence-room") == {}


@pytest.mark.parametrize(
    "name",
    ["bad name", "ünïcode", "a" * 201, "#server-to-user-", "#other", "tab\tchar", "new\nline", "name$", "star*"],
)
async def test_invalid_channel_names(server: ServerProcess, name: str) -> None:
    async with client(server) as c:
        msg = await c.subscribe(name)
        assert msg["event"] == "pusher:subscription_error", msg
        assert msg["channel"] == name and msg["data"]["type"] == "InvalidChannel", msg
        assert msg["data"]["status"] == 400
        await c.alive()


async def test_channel_name_limit_is_per_app(server: ServerProcess) -> None:
    async with client(server, key="limits-key") as c:  # maxChannelNameLength 50
        assert await c.subscribe_ok("a" * 50) == {}
        msg = await c.subscribe("a" * 51)
        assert msg["event"] == "pusher:subscription_error" and msg["data"]["type"] == "InvalidChannel"


async def test_allowed_name_characters(server: ServerProcess) -> None:
    async with client(server) as c:
        name = "AZaz09_-=@,.;"
        assert await c.subscribe_ok(name) == {}
        assert await c.subscribe_ok("a" * 200) == {}


# ---------------------------------------------------------------- 4. presence


async def test_presence_members_and_numeric_user_id(server: ServerProcess) -> None:
    ch = "presence-numbers"
    async with client(server) as a, client(server) as b, client(server) as b2:
        first = await a.subscribe_ok(ch, {"user_id": 7, "user_info": {"name": "Seven"}})
        assert first == {"presence": {"ids": ["7"], "hash": {"7": {"name": "Seven"}}, "count": 1}}
        second = await b.subscribe_ok(ch, {"user_id": "u8"})
        assert second["presence"]["count"] == 2 and sorted(second["presence"]["ids"]) == ["7", "u8"]
        assert second["presence"]["hash"]["7"] == {"name": "Seven"}
        added = await a.expect("pusher_internal:member_added", ch)
        assert isinstance(added["data"], str)
        assert json.loads(added["data"]) == {"user_id": "u8", "user_info": None}
        # a second tab of u8: no member_added for anyone
        third = await b2.subscribe_ok(ch, {"user_id": "u8"})
        assert third["presence"]["count"] == 2
        # a's client event proves nothing came before it
        await b2.send("client-x", {"n": 1}, ch)
        got = await a.expect("client-x", ch)
        assert got["user_id"] == "u8"
        # the user's other tab gets it too: only the sending connection is left out
        assert (await b.expect("client-x", ch))["user_id"] == "u8"
        # first tab leaves: still a member
        await b.send("pusher:unsubscribe", {"channel": ch})
        await b.alive()
        await b2.send("client-x", {"n": 2}, ch)
        assert json.loads((await a.expect("client-x", ch))["data"]) == {"n": 2}
        # last tab leaves
        await b2.ws.close()
        removed = await a.expect("pusher_internal:member_removed", ch)
        assert json.loads(removed["data"]) == {"user_id": "u8"}


@pytest.mark.parametrize(
    "channel_data, kind",
    [
        (None, "AuthError"),  # no channel_data
        ("not json", "AuthError"),
        ("[]", "AuthError"),
        ('{"user_info":{}}', "AuthError"),  # no user_id
        ('{"user_id":""}', "AuthError"),
        ('{"user_id":true}', "AuthError"),
        ('{"user_id":null}', "AuthError"),
        ('{"user_id":{"a":1}}', "AuthError"),
        (json.dumps({"user_id": "x" * 129}), "LimitReached"),
    ],
)
async def test_presence_bad_channel_data(server: ServerProcess, channel_data: str | None, kind: str) -> None:
    ch = "presence-bad"
    async with client(server) as c:
        auth = channel_auth(APP_KEY, c.socket_id, ch, channel_data) if channel_data is not None else None
        msg = await c.subscribe(ch, auth, channel_data)
        assert msg["event"] == "pusher:subscription_error" and msg["channel"] == ch, msg
        assert msg["data"]["type"] == kind, msg
        await c.alive()


async def test_presence_bad_signature(server: ServerProcess) -> None:
    ch = "presence-sig"
    async with client(server) as c:
        data = json.dumps({"user_id": "1"})
        signed_other = channel_auth(APP_KEY, c.socket_id, ch, json.dumps({"user_id": "2"}))
        for auth in (None, channel_auth(APP_KEY, c.socket_id, ch), signed_other):
            msg = await c.subscribe(ch, auth, data)
            assert msg["event"] == "pusher:subscription_error" and msg["data"]["status"] == 401, msg


async def test_presence_limits(server: ServerProcess) -> None:
    ch = "presence-full"
    key = "limits-key"  # 2 members, 1 KB per member
    async with client(server, key) as a, client(server, key) as b, client(server, key) as c, client(server, key) as b2:
        await a.subscribe_ok(ch, {"user_id": "a"})
        await b.subscribe_ok(ch, {"user_id": "b"})
        data = json.dumps({"user_id": "c"})
        msg = await c.subscribe(ch, channel_auth(key, c.socket_id, ch, data), data)
        assert msg["event"] == "pusher:subscription_error" and msg["data"]["type"] == "LimitReached", msg
        # another tab of a member is not a new member
        assert (await b2.subscribe_ok(ch, {"user_id": "b"}))["presence"]["count"] == 2
        big = json.dumps({"user_id": "d", "user_info": {"bio": "x" * 1100}})
        msg = await c.subscribe("presence-other", channel_auth(key, c.socket_id, "presence-other", big), big)
        assert msg["event"] == "pusher:subscription_error" and msg["data"]["type"] == "LimitReached", msg
        await c.alive()


# ---------------------------------------------------------------- 5. client events


async def test_client_events_private(server: ServerProcess) -> None:
    ch = "private-chat"
    async with client(server) as a, client(server) as b:
        await a.subscribe_ok(ch)
        await b.subscribe_ok(ch)
        await a.send("client-hi", {"text": "yo"}, ch)
        got = await b.expect("client-hi", ch)
        assert json.loads(got["data"]) == {"text": "yo"} and "user_id" not in got
        await a.send("client-str", "plain string", ch)
        assert (await b.expect("client-str", ch))["data"] == "plain string"
        await a.alive()  # nothing was echoed to a before its pong


async def test_client_event_data_forwarded_unchanged(server: ServerProcess) -> None:
    ch = "private-bigint"
    async with client(server) as a, client(server) as b:
        await a.subscribe_ok(ch)
        await b.subscribe_ok(ch)
        await a.ws.send('{"event":"client-n","channel":"' + ch + '","data":{"id":123456789012345678901234567890}}')
        got = await b.expect("client-n", ch)
        assert json.loads(got["data"]) == {"id": 123456789012345678901234567890}


@pytest.mark.parametrize(
    "key, channel, subscribe, event, data",
    [
        ("noclient-key", "private-c", True, "client-x", {}),  # not enabled for the app
        (APP_KEY, "private-c", False, "client-x", {}),  # not subscribed
        (APP_KEY, "public-c", True, "client-x", {}),  # public channel
        (APP_KEY, "private-encrypted-c", True, "client-x", {}),  # encrypted channel
        (APP_KEY, None, False, "client-x", {}),  # no channel
        (APP_KEY, "private-c", True, "client-" + "x" * 200, {}),  # name too long
        ("limits-key", "private-c", True, "client-x", {"blob": "x" * 2000}),  # over 1 KB
    ],
)
async def test_client_event_rejected_4301_no_close(
    server: ServerProcess, key: str, channel: str | None, subscribe: bool, event: str, data: Any
) -> None:
    async with client(server, key) as a, client(server, key) as b:
        if subscribe and channel is not None:
            await a.subscribe_ok(channel)
            await b.subscribe_ok(channel)
        await a.send(event, data, channel)
        assert (await a.error())["code"] == 4301
        await a.alive()
        await b.alive()  # b got nothing before its pong


async def test_client_event_rate_limit(server: ServerProcess) -> None:
    key, ch = "limits-key", "private-rate"  # 3 per second
    async with client(server, key) as a, client(server, key) as b:
        await a.subscribe_ok(ch)
        await b.subscribe_ok(ch)
        for i in range(10):
            await a.send("client-n", {"i": i}, ch)
        await a.send("pusher:ping", {})
        errors = 0
        while (msg := await a.recv())["event"] != "pusher:pong":
            assert msg["event"] == "pusher:error" and msg["data"]["code"] == 4301, msg
            errors += 1
        await b.send("pusher:ping", {})
        delivered = []
        while (msg := await b.recv())["event"] != "pusher:pong":
            delivered.append(json.loads(msg["data"])["i"])
        # the burst may straddle a second boundary: at most two windows of 3
        assert 3 <= len(delivered) <= 6 and errors == 10 - len(delivered), (delivered, errors)
        assert delivered == sorted(delivered)
        await a.alive()


# ---------------------------------------------------------------- 6. user authentication


async def test_signin_and_server_to_user_channel(server: ServerProcess) -> None:
    async with client(server) as a, client(server) as b:
        user = {"id": "42", "user_info": {"name": "Ann"}}
        await a.signin(user)
        ok = await a.expect("pusher:signin_success")
        assert json.loads(ok["data"]) == {"user_data": json.dumps(user)}
        assert await a.subscribe_ok("#server-to-user-42") == {}
        msg = await a.subscribe("#server-to-user-43")
        assert msg["event"] == "pusher:subscription_error" and msg["data"]["type"] == "AuthError", msg
        # b is not signed in: nobody's channel
        msg = await b.subscribe("#server-to-user-42")
        assert msg["event"] == "pusher:subscription_error", msg
        await a.alive()


async def test_signin_numeric_id(server: ServerProcess) -> None:
    async with client(server) as a:
        await a.signin({"id": 42})
        await a.expect("pusher:signin_success")
        assert await a.subscribe_ok("#server-to-user-42") == {}


@pytest.mark.parametrize("case", ["bad-signature", "no-id", "empty-id", "not-json", "not-object", "wrong-socket"])
async def test_signin_failure_4009(server: ServerProcess, case: str) -> None:
    async with bystander(server), client(server) as a:
        user_data = {"no-id": '{"name":"x"}', "empty-id": '{"id":""}', "not-json": "{", "not-object": "[1]"}.get(
            case, '{"id":"1"}'
        )
        sid = "1.1" if case == "wrong-socket" else a.socket_id
        signature = sign(APP_SECRET, f"{sid}::user::{user_data}")
        if case == "bad-signature":
            signature = signature[::-1]
        await a.send("pusher:signin", {"auth": f"{APP_KEY}:{signature}", "user_data": user_data})
        assert (await a.error())["code"] == 4009
        assert await a.closed() == 4009


async def test_user_authentication_timeout_4009(server: ServerProcess) -> None:
    key = "userauth-key"
    async with client(server, key) as signed, client(server, key) as private, client(server, key) as idle:
        await signed.signin({"id": "1"})
        await signed.expect("pusher:signin_success")
        await private.subscribe_ok("private-ok")
        await idle.subscribe_ok("public-is-not-enough")
        # idle was connected last: once it is closed, the others' timers have run out too
        assert (await idle.error())["code"] == 4009
        assert await idle.closed() == 4009
        await signed.alive()
        await private.alive()


async def test_watchlist_events(server: ServerProcess) -> None:
    async with client(server) as w, client(server) as u:
        await w.signin({"id": "w", "watchlist": ["wu1", "wu2"]})
        await w.expect("pusher:signin_success")
        first = await w.expect("pusher_internal:watchlist_events")
        assert json.loads(first["data"]) == {"events": [{"name": "offline", "user_ids": ["wu1", "wu2"]}]}
        await u.signin({"id": "wu2"})
        await u.expect("pusher:signin_success")
        online = await w.expect("pusher_internal:watchlist_events")
        assert json.loads(online["data"]) == {"events": [{"name": "online", "user_ids": ["wu2"]}]}
        await u.ws.close()
        offline = await w.expect("pusher_internal:watchlist_events")
        assert json.loads(offline["data"]) == {"events": [{"name": "offline", "user_ids": ["wu2"]}]}


async def test_server_to_user_event_reaches_every_connection_of_the_user(server: ServerProcess) -> None:
    import pusher

    sdk = pusher.Pusher(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host=server.host, port=server.port, ssl=False)
    async with client(server) as a1, client(server) as a2, client(server) as other:
        for c, uid in ((a1, "s2u"), (a2, "s2u"), (other, "s2u-not")):
            await c.signin({"id": uid})
            await c.expect("pusher:signin_success")
        await asyncio.to_thread(sdk.trigger, "#server-to-user-s2u", "note", {"for": "s2u"})
        for c in (a1, a2):
            msg = await c.expect("note", "#server-to-user-s2u")
            assert json.loads(msg["data"]) == {"for": "s2u"}
        await other.alive()  # nothing for another user
        await asyncio.to_thread(sdk.terminate_user_connections, "s2u")
        for c in (a1, a2):
            assert (await c.error())["code"] == 4009
            assert await c.closed() == 4009
        await other.alive()


async def test_watchlist_user_online_while_any_connection_is(server: ServerProcess) -> None:
    async with client(server) as w, client(server) as u1, client(server) as u2:
        await w.signin({"id": "w2", "watchlist": ["multi"]})
        await w.expect("pusher:signin_success")
        await w.expect("pusher_internal:watchlist_events")  # offline: multi
        for u in (u1, u2):
            await u.signin({"id": "multi"})
            await u.expect("pusher:signin_success")
        online = await w.expect("pusher_internal:watchlist_events")
        assert json.loads(online["data"])["events"] == [{"name": "online", "user_ids": ["multi"]}]
        await u1.ws.close()
        await u2.alive()
        await w.alive()  # still online: nothing before the pong
        await u2.ws.close()
        offline = await w.expect("pusher_internal:watchlist_events")
        assert json.loads(offline["data"])["events"] == [{"name": "offline", "user_ids": ["multi"]}]


async def test_second_signin_replaces_watchlist(server: ServerProcess) -> None:
    async with client(server) as w, client(server) as x, client(server) as y:
        await w.signin({"id": "rw", "watchlist": ["rx1"]})
        await w.expect("pusher:signin_success")
        await w.expect("pusher_internal:watchlist_events")
        await w.signin({"id": "rw2", "watchlist": ["rx2"]})
        await w.expect("pusher:signin_success")
        state = await w.expect("pusher_internal:watchlist_events")
        assert json.loads(state["data"]) == {"events": [{"name": "offline", "user_ids": ["rx2"]}]}
        await x.signin({"id": "rx1"})  # no longer watched by w
        await x.expect("pusher:signin_success")
        await y.signin({"id": "rx2"})
        await y.expect("pusher:signin_success")
        online = await w.expect("pusher_internal:watchlist_events")
        assert json.loads(online["data"]) == {"events": [{"name": "online", "user_ids": ["rx2"]}]}
        # the old identity is gone: its own channel is not w's any more
        msg = await w.subscribe("#server-to-user-rw")
        assert msg["event"] == "pusher:subscription_error", msg
        assert await w.subscribe_ok("#server-to-user-rw2") == {}


# ---------------------------------------------------------------- 7. cache channels


@pytest.mark.parametrize("channel", ["cache-empty", "private-cache-empty", "presence-cache-empty"])
async def test_cache_miss(server: ServerProcess, channel: str) -> None:
    async with client(server) as c:
        await c.subscribe_ok(channel)
        msg = await c.recv()
        assert msg == {"event": "pusher:cache_miss", "channel": channel}


async def test_cache_keeps_last_http_event(server: ServerProcess) -> None:
    import pusher

    sdk = pusher.Pusher(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host=server.host, port=server.port, ssl=False)
    channel = "cache-last-" + str(id(sdk))
    await asyncio.to_thread(sdk.trigger, channel, "tick", {"n": 1})
    await asyncio.to_thread(sdk.trigger, channel, "tick", {"n": 2})
    async with client(server) as c:
        await c.subscribe_ok(channel)
        msg = await c.expect("tick", channel)
        assert json.loads(msg["data"]) == {"n": 2}
        await c.alive()  # and only the last one


async def test_client_events_are_not_cached(server: ServerProcess) -> None:
    ch = "private-cache-client"
    async with client(server) as a, client(server) as b:
        await a.subscribe_ok(ch)
        await a.expect("pusher:cache_miss", ch)
        await a.send("client-x", {"n": 1}, ch)
        await a.alive()
        await b.subscribe_ok(ch)
        await b.expect("pusher:cache_miss", ch)


async def test_cache_expires_after_ttl(quick_server: ServerProcess) -> None:
    import pusher

    sdk = pusher.Pusher(
        app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host=quick_server.host, port=quick_server.port, ssl=False
    )
    channel = "cache-ttl-" + str(id(sdk))
    await asyncio.to_thread(sdk.trigger, channel, "tick", {"n": 1})
    async with client(quick_server) as a:
        await a.subscribe_ok(channel)
        await a.expect("tick", channel)
        # the server pings after 1 s of silence from a, which began after the trigger:
        # by then the 1 s TTL is over (a clock we can wait on instead of sleeping)
        assert (await a.recv(skip_pings=False))["event"] == "pusher:ping"
        async with client(quick_server) as b:
            await b.subscribe_ok(channel)
            await b.expect("pusher:cache_miss", channel)


# ---------------------------------------------------------------- activity


async def test_server_pings_a_silent_client(quick_server: ServerProcess) -> None:
    async with client(quick_server) as c:
        assert c.established["activity_timeout"] == 1
        msg = await c.recv(skip_pings=False)
        assert msg["event"] == "pusher:ping", msg
        await c.send("pusher:pong", {})
        await c.alive()


async def test_silent_client_closed_4201(quick_server: ServerProcess) -> None:
    async with client(quick_server) as c:
        await c.recv(skip_pings=False)  # the server's ping, left unanswered
        code = await asyncio.wait_for(c.closed(), 3)
        assert code == 4201


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "{",
        "[]",
        "null",
        '"event"',
        "42",
        "{}",
        '{"event": 1}',
        '{"event": null}',
        '{"event": ""}',
        '{"event": ["pusher:ping"]}',
        '{"event": "pusher:subscribe"}',
        '{"event": "pusher:subscribe", "data": 1}',
        '{"event": "pusher:subscribe", "data": []}',
        '{"event": "pusher:subscribe", "data": "not json"}',
        '{"event": "pusher:subscribe", "data": {"channel": 5}}',
        '{"event": "pusher:subscribe", "data": {"channel": null}}',
        '{"event": "pusher:subscribe", "data": {"channel": ""}}',
        '{"event": "pusher:subscribe", "data": {"channel": ["a"]}}',
        '{"event": "pusher:unsubscribe", "data": {}}',
        '{"event": "pusher:unsubscribe", "data": 7}',
        '{"event": "pusher:signin", "data": []}',
        '{"event": "pusher:signin", "data": "x"}',
        '{"event": "client-x", "channel": 5, "data": {}}',
        '{"event": "client-x", "channel": {"a": 1}, "data": {}}',
        '{"event": "pusher:unknown"}',
        '{"event": "pusher_internal:subscription_succeeded", "channel": "x"}',
        '{"event": "whatever", "data": {}}',
        '{"event": "' + "e" * 5000 + '"}',
    ],
)
async def test_bad_frames_get_pusher_error(server: ServerProcess, frame: str) -> None:
    async with bystander(server), client(server) as c:
        await c.ws.send(frame)
        data = await c.error()
        assert len(data["message"]) < 1000  # a huge input is not echoed back
        await c.alive()


async def test_subscribe_data_as_json_string(server: ServerProcess) -> None:
    """Some clients send ``data`` as a JSON-encoded string: accepted."""
    async with client(server) as c:
        await c.send("pusher:subscribe", json.dumps({"channel": "stringly"}))
        assert (await c.expect("pusher_internal:subscription_succeeded"))["channel"] == "stringly"


async def test_binary_frame_is_parsed_as_text(server: ServerProcess) -> None:
    """As uWebSockets (and so soketi) does: a binary frame of JSON is a message."""
    async with bystander(server), client(server) as c:
        await c.ws.send(b'{"event":"pusher:ping","data":{}}')
        assert (await c.recv())["event"] == "pusher:pong"


async def test_invalid_utf8_closes_1007(server: ServerProcess) -> None:
    async with bystander(server), client(server) as c:
        await c.ws.send(b'{"event":"pusher:ping","data":"\xff\xfe"}', text=True)
        assert await c.closed() == 1007


async def test_message_over_the_size_limit(server: ServerProcess) -> None:
    """Up to the frame limit the parser refuses it (pusher:error); above, the close is 1009."""
    async with bystander(server):
        async with client(server) as c:
            filler = "x" * (100 * 1024 + 100)
            await c.send("pusher:ping", {"filler": filler})
            data = await c.error()
            assert "too large" in data["message"].lower()
            await c.alive()
        async with client(server) as c:
            with contextlib.suppress(ConnectionClosed):
                await c.send("pusher:ping", {"filler": "x" * (2 * 1024 * 1024)})
            assert await c.closed(abort_ok=True) in (1009, None)


async def test_huge_channel_names(server: ServerProcess) -> None:
    async with bystander(server):
        async with client(server) as c:  # fits in a frame: refused without echoing it
            await c.send("pusher:subscribe", {"channel": "a" * 90_000})
            msg = await c.recv()
            assert msg["event"] in ("pusher:error", "pusher:subscription_error"), msg
            assert len(json.dumps(msg)) < 2000
            await c.alive()
        async with client(server) as c:  # 10 MB: over the frame limit
            with contextlib.suppress(ConnectionClosed):
                await c.send("pusher:subscribe", {"channel": "a" * 10_000_000})
            assert await c.closed(abort_ok=True) in (1009, None)


async def test_fragmented_message(server: ServerProcess) -> None:
    """A message in several frames (legal WebSocket, no Pusher client does it): served or refused, never misread."""
    async with bystander(server), client(server) as c:
        await c.ws.send(['{"event":"pusher:subscribe",', '"data":{"channel":"frag"}}'])
        try:
            msg = await c.recv()
        except ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 1009, exc
        else:
            assert msg == {"event": "pusher_internal:subscription_succeeded", "channel": "frag", "data": "{}"}, msg
            await c.alive()
    async with bystander(server), client(server) as c:
        # fragments add up to more than the message limit: refused as a whole
        with contextlib.suppress(ConnectionClosed):
            await c.ws.send(['{"event":"pusher:ping","data":"', "x" * 60_000, "x" * 60_000, '"}'])
        assert await c.closed(abort_ok=True) in (1009, None)


async def test_slow_reader_is_dropped_not_buffered(server: ServerProcess) -> None:
    """A subscriber that stops reading is closed (4100, over capacity) instead of
    growing the server's memory; the sender and others are not held up."""
    ch, n = "private-flood", 300
    blob = "x" * 90_000
    # max_queue=1: once one message waits unread, the slow client stops reading the socket
    slow_ws = connect(url(server), max_size=None, max_queue=1, open_timeout=WAIT, close_timeout=1)
    async with bystander(server), client(server) as sender, slow_ws as ws:
        slow = Client(ws, APP_KEY)
        slow.established = json.loads((await slow.expect("pusher:connection_established"))["data"])
        slow.socket_id = slow.established["socket_id"]
        await slow.subscribe_ok(ch)
        await sender.subscribe_ok(ch)
        for i in range(n):
            await sender.send("client-blob", {"i": i, "blob": blob}, ch)
        await sender.alive()  # 27 MB later the sender is still served
        received = 0
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                msg = await slow.recv()
                assert msg["event"] == "client-blob", msg
                received += 1
        assert received < n
        # the close is an abort (the peer is not reading): a close frame, if any, says 4100
        rcvd = closed.value.rcvd
        assert rcvd is None, rcvd


async def test_deeply_nested_json(server: ServerProcess) -> None:
    async with bystander(server), client(server) as c:
        await c.ws.send('{"event":"pusher:ping","data":' + "[" * 5000 + "]" * 5000 + "}")
        await c.error()
        await c.alive()


def _masked(opcode: int, payload: bytes) -> bytes:
    """One client frame (FIN, masked)."""
    mask = b"\x01\x02\x03\x04"
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split the server's bytes after the HTTP head into (opcode, payload) frames."""
    frames = []
    while len(data) >= 2:
        opcode, n, i = data[0] & 0x0F, data[1] & 0x7F, 2
        if n == 126:
            n, i = int.from_bytes(data[2:4], "big"), 4
        elif n == 127:
            n, i = int.from_bytes(data[2:10], "big"), 10
        frames.append((opcode, data[i:i + n]))
        data = data[i + n:]
    return frames


async def _raw_exchange(server: ServerProcess, after_handshake: bytes) -> list[tuple[int, bytes]]:
    """Send a handshake and ``after_handshake`` in one write; return every frame until EOF."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = (
        f"GET /app/{APP_KEY}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    writer.write(head + after_handshake)
    data = await asyncio.wait_for(reader.read(-1), WAIT)
    writer.close()
    status, _, rest = data.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 101"), status
    return _frames(rest)


@pytest.mark.parametrize(
    "case",
    ["protocol-error", "close-after-ping"],
)
async def test_nothing_is_sent_after_the_close_frame(server: ServerProcess, case: str) -> None:
    """RFC 6455 5.5.1: after a close frame, no data frame may follow (queued replies are dropped)."""
    async with bystander(server):
        if case == "protocol-error":
            tail = b"\x81\x05hello"  # unmasked client frame: 1002
        else:
            ping = json.dumps({"event": "pusher:ping", "data": {}}).encode()
            tail = _masked(0x1, ping) + _masked(0x8, (1000).to_bytes(2, "big"))
        frames = await _raw_exchange(server, tail)
        opcodes = [op for op, _ in frames]
        assert 0x8 in opcodes, frames
        assert opcodes.index(0x8) == len(opcodes) - 1, f"frames after the close frame: {frames}"


async def test_subscribe_storm_burst(server: ServerProcess) -> None:
    n = 100  # the default per-connection channel limit (SOKETI_CHANNEL_LIMITS_MAX_PER_CONNECTION)
    async with bystander(server), client(server) as c:
        frames = [json.dumps({"event": "pusher:subscribe", "data": {"channel": f"storm-{i}"}}) for i in range(n)]
        await asyncio.gather(*(c.ws.send(f) for f in frames))
        await c.send("pusher:ping", {})
        got = set()
        while (msg := await c.recv())["event"] != "pusher:pong":
            assert msg["event"] == "pusher_internal:subscription_succeeded", msg
            got.add(msg["channel"])
        assert len(got) == n


# ---------------------------------------------------------------- fuzz

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_events = st.sampled_from(
    ["pusher:subscribe", "pusher:unsubscribe", "pusher:ping", "pusher:pong", "client-x", "pusher:x", "other", ""]
)
_channels = st.sampled_from(["news", "private-a", "presence-a", "private-encrypted-a", "#server-to-user-1", "bad name"])
_data = _json | st.fixed_dictionaries(
    {"channel": _channels | _json}, optional={"auth": _json | st.text(max_size=80), "channel_data": _json | st.text()}
)
_frames_st = st.lists(
    st.fixed_dictionaries({"event": _events | _json}, optional={"channel": _channels | _json, "data": _data}),
    min_size=1, max_size=15,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=_frames_st)
async def test_fuzzed_frames_never_break_the_connection(server: ServerProcess, frames: list[dict[str, Any]]) -> None:
    """Any mix of well-formed JSON frames (no sign-in, which closes on failure by design)
    leaves the connection open and served."""
    async with client(server) as c:
        for frame in frames:
            await c.ws.send(json.dumps(frame))
        await c.send("pusher:ping", {"last": True})
        while True:
            msg = await c.recv()
            if msg["event"] == "pusher:pong":
                break
            assert msg["event"] in (
                "pusher:error", "pusher:subscription_error", "pusher_internal:subscription_succeeded",
                "pusher:cache_miss",
            ), msg
            if msg["event"] == "pusher:error":
                assert msg["data"]["code"] in (None, 4301), msg


# ---------------------------------------------------------------- shutdown


@pytest.mark.parametrize("mode", ["c", "py"])
async def test_shutdown_closes_everyone_with_4200(mode: str) -> None:
    """SIGTERM: every connection gets pusher:error 4200 and the close code 4200 (reconnect now)."""
    if mode == "c" and _speedups.NO_EXTENSIONS:
        pytest.skip("SOKETI_IMPL_NO_EXTENSIONS is set")
    with run_server(mode) as srv:
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(client(srv)) for _ in range(12)]
            await clients[0].subscribe_ok("presence-bye", {"user_id": "1"})
            srv.proc.terminate()
            for c in clients:
                msg = await c.recv()
                assert msg["event"] == "pusher:error" and msg["data"]["code"] == 4200, msg
                assert await c.closed() == 4200
        assert await asyncio.to_thread(srv.proc.wait, 15) == 0
