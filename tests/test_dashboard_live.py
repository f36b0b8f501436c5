"""The dashboard served by a running server: the token over HTTP, the live feed (SSE)
with a real Pusher protocol client, test events, channel lists, a page that does not
read, shutdown with a page open, every host, and two nodes over Redis."""

from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp
import pytest

from conftest import HOSTS, run_server
from dashboard_util import BEARER, TIMEOUT, TOKEN, dash_config, pusher_client, start_dash
from soketi_impl.dashboard.auth import COOKIE

pytestmark = pytest.mark.timeout(60)


async def test_401_without_token_and_login_cookie() -> None:
    async with start_dash() as d:
        for path in ("", "/", "/api/feed", "/api/info", "/api/channels"):
            async with d.http.get(d.base + path) as r:
                assert r.status == 401, path
                assert "WWW-Authenticate" in r.headers
                body = await r.text()
                assert "123456" not in body  # no app, no data: at most the login form
        async with d.http.get(d.base) as r:
            assert 'name="token"' in await r.text()
        async with d.http.post(d.base + "/api/trigger", json={}) as r:
            assert r.status == 401
        # static files carry no data and are served to the login form
        async with d.http.get(d.base + "/static/dashboard.css") as r:
            assert r.status == 200 and r.content_type == "text/css"
        for name in ("index.html", "login.html", "../web.py", "nope.js"):
            async with d.http.get(d.base + "/static/" + name) as r:
                assert r.status == 404, name
        # the login form
        async with d.http.post(d.base + "/login", data={"token": "wrong"}, allow_redirects=False) as r:
            assert r.status == 401 and "Wrong token" in await r.text()
        async with d.http.post(d.base + "/login", data={"token": TOKEN}, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/dashboard/"
            cookie = r.cookies[COOKIE]
            assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/dashboard"
            assert TOKEN not in cookie.value
        async with d.http.get(d.base + "/api/info", headers={"Cookie": f"{COOKIE}={cookie.value}"}) as r:
            assert r.status == 200 and (await r.json())["apps"] == ["123456"]
        async with d.http.get(d.base + "/", headers=BEARER) as r:
            page = await r.text()
            assert r.status == 200 and 'id="log"' in page and "https://" not in page and "http://" not in page
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        # not the metrics port's other paths
        async with d.http.get(d.base.replace("/dashboard", "/ready")) as r:
            assert r.status == 200


async def test_feed_shows_a_client_and_api_messages() -> None:
    async with start_dash() as d:
        feed = await d.feed()
        event, hello = await feed.next()
        assert event == "hello" and hello["apps"] == ["123456"] and not hello["cluster"]
        ws, sid = await pusher_client(d.ws_url, "news")
        opened = await feed.entry(lambda e: e["kind"] == "connection" and e["socket_id"] == sid)
        assert opened["client"] == "js 8.6.0" and opened["app"] == "123456"
        await feed.entry(lambda e: e["kind"] == "subscribed" and e["channel"] == "news")
        await d.server.service.trigger("123456", "news", "update", {"n": 1})
        msg = await feed.entry(lambda e: e["kind"] == "api_message")
        assert msg["channel"] == "news" and msg["event"] == "update" and msg["size"] > 20
        await ws.close(1000)
        closed = await feed.entry(lambda e: e["kind"] == "disconnection" and e["socket_id"] == sid)
        assert closed["code"] == 1000
        # a sample with this app's counters comes at least once a second
        while True:
            event, data = await feed.next()
            if event == "sample":
                assert set(data["apps"]["123456"]) >= {"connected", "ws_messages_sent", "http_calls"}
                break
        # a page opened now gets the recent entries first
        late = await d.feed()
        _, hello = await late.next()
        assert [e["kind"] for e in hello["recent"]][:2] == ["connection", "occupied"]
        feed.close()
        late.close()


async def test_errors_sent_to_a_client_are_in_the_feed() -> None:
    """A refused subscription and a refused client event: the code and why, per socket."""
    async with start_dash() as d:
        feed = await d.feed()
        ws, sid = await pusher_client(d.ws_url, "news")
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": "k:bad"}}))
        refused = await feed.entry(lambda e: e["kind"] == "error" and e["channel"] == "private-x")
        assert refused["socket_id"] == sid and refused["code"] in (401, 403)
        assert refused["message"].startswith("AuthError")
        await ws.send(json.dumps({"event": "client-x", "channel": "news", "data": {}}))
        denied = await feed.entry(lambda e: e["kind"] == "error" and e["code"] == 4301)
        assert denied["socket_id"] == sid and denied["channel"] is None
        feed.close()
        await ws.close()


async def test_test_event_and_its_checks() -> None:
    async with start_dash() as d:
        ws, _ = await pusher_client(d.ws_url, "news")
        url = d.base + "/api/trigger"
        body = {"channel": "news", "event": "hi", "data": '{"a":1}'}
        async with d.http.post(url, json=body, headers=BEARER) as r:
            assert r.status == 200 and await r.json() == {"ok": True, "delivered": 1}
        got = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert got == {"event": "hi", "channel": "news", "data": '{"a":1}'}
        cases = [
            ({**body, "channel": "bad name!"}, {}, 400, "invalid channel name"),
            ({**body, "event": ""}, {}, 400, "name must be"),
            ({**body, "app": "nope"}, {}, 404, "No such app"),
            ({**body, "data": "x" * 200_000}, {}, 413, "limit"),
            ({**body, "channel": "private-encrypted-x"}, {}, 400, "master key"),
            (body, {"Origin": "http://evil.example"}, 403, "dashboard page"),
        ]
        for payload, headers, status, text in cases:
            async with d.http.post(url, json=payload, headers={**BEARER, **headers}) as r:
                assert r.status == status, (payload, r.status)
                assert text in (await r.json())["error"]
        async with d.http.post(url, data="channel=news", headers=BEARER) as r:
            assert r.status == 415
        async with d.http.post(url, data=b"{", headers={**BEARER, "Content-Type": "application/json"}) as r:
            assert r.status == 400
        await ws.close()


async def test_channels_with_presence_members() -> None:
    async with start_dash() as d:
        core = d.server.service.core
        ws, sid = await pusher_client(d.ws_url, "news", "other")
        # a presence member, signed as an app's auth endpoint would
        from soketi_impl import authorize_channel

        data = json.dumps({"user_id": "u7", "user_info": {"n": 1}})
        auth = authorize_channel("test-key", "test-secret", sid, "presence-room", data)
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "presence-room", **auth}}))
        while await core.presence_users("123456", "presence-room") != ["u7"]:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        async with d.http.get(d.base + "/api/channels", headers=BEARER) as r:
            body = await r.json()
        rows = {row["name"]: row for row in body["channels"]}
        assert body["app"] == "123456" and body["total"] == 3 and not body["cluster"]
        assert rows["news"] == {"name": "news", "subscription_count": 1}
        assert rows["presence-room"]["members"] == ["u7"] and rows["presence-room"]["user_count"] == 1
        async with d.http.get(d.base + "/api/channels?app=nope", headers=BEARER) as r:
            assert r.status == 404
        await ws.close()


async def test_a_page_that_does_not_read_never_slows_delivery() -> None:
    """The page's queue overflows (drops counted); every client still gets every event."""
    async with start_dash() as d:
        feed = d.server.service.dashboard.feed
        feed.queue_size = 50
        page = await d.feed()  # opened, then never read
        while not feed.pages:
            await asyncio.sleep(0)  # the handler registers the page on its first run
        ws, _ = await pusher_client(d.ws_url, "news")
        n = 2000
        for i in range(n):
            await d.server.service.trigger("123456", "news", "e", str(i))
        got = 0
        while got < n:
            msg = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if msg["event"] == "e":
                assert msg["data"] == str(got)
                got += 1
        (sub,) = feed.pages
        assert sub.dropped > 0 and len(sub._queue) <= 50
        page.close()
        await ws.close()


async def test_stop_with_a_page_open() -> None:
    async with start_dash() as d:
        feed = await d.feed()
        await feed.next()
        await asyncio.wait_for(d.server.stop(0), TIMEOUT)
        with pytest.raises((AssertionError, aiohttp.ClientError, asyncio.TimeoutError)):
            while True:
                await feed.next(5)


async def test_page_limit_answers_503() -> None:
    async with start_dash() as d:
        d.server.service.dashboard.feed.max_pages = 1
        first = await d.feed()
        async with d.http.get(d.base + "/api/feed", headers=BEARER) as r:
            assert r.status == 503 and "pages are open" in (await r.json())["error"]
        async with d.http.head(d.base + "/api/feed", headers=BEARER) as r:
            assert r.status == 200  # a HEAD takes no page's place
        first.close()


@pytest.mark.parametrize("host", HOSTS)
def test_every_host_serves_it(host: str) -> None:
    """picows, ASGI under uvicorn and aiohttp: the dashboard comes with the ``Pusher``."""
    from conftest import free_port

    port = free_port()
    env = {"SOKETI_DASHBOARD_ENABLED": "true", "SOKETI_DASHBOARD_TOKEN": TOKEN,
           "SOKETI_METRICS_SERVER_PORT": str(port), "SOKETI_METRICS_HOST": "127.0.0.1"}

    async def check() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http:
            base = f"http://127.0.0.1:{port}/dashboard"
            async with http.get(base + "/api/info") as r:
                assert r.status == 401
            async with http.get(base + "/api/info", headers=BEARER) as r:
                assert r.status == 200 and (await r.json())["apps"] == ["123456"]

    with run_server("c", env, host=host):
        asyncio.run(check())


async def test_two_nodes_channels_cluster_wide_feed_local() -> None:
    """Over Redis: node B lists node A's channel; B's feed does not show A's client."""
    prefix = f"soketi-impl-test-dash-{uuid.uuid4().hex[:10]}:"
    extra = {"SOKETI_ADAPTER_DRIVER": "redis", "SOKETI_DB_REDIS_KEY_PREFIX": prefix,
             "SOKETI_ADAPTER_REDIS_PREFIX": prefix}
    async with start_dash(dash_config(**extra)) as a, start_dash(dash_config(**extra)) as b:
        feed_b = await b.feed()
        _, hello = await feed_b.next()
        assert hello["cluster"] is True
        ws, sid = await pusher_client(a.ws_url, "cluster-news")
        async with b.http.get(b.base + "/api/channels", headers=BEARER) as r:
            body = await r.json()
        assert body["cluster"] and [c["name"] for c in body["channels"]] == ["cluster-news"]
        # B's own traffic shows in B's feed; A's client never does
        ws_b, sid_b = await pusher_client(b.ws_url, "local-b")
        await feed_b.entry(lambda e: e["kind"] == "connection" and e["socket_id"] == sid_b)
        assert not [e for e in feed_b.seen if e.get("socket_id") == sid]
        feed_b.close()
        await ws.close()
        await ws_b.close()
