"""The dashboard in a real browser: headless Chromium, a pusher-js client, the Python SDK.

A ``soketi-impl start`` process (both builds) serves the dashboard on its metrics
port. Chromium (tests/browser/cdp.py) logs in with the token and watches a pusher-js
client (tests/js/dashboard_driver.js) connect, subscribe and send a client event; an
event triggered with the official Python SDK appears in the console; a test event
sent from the page reaches the pusher-js client. Without the token the page and
its feed answer 401.

Set ``SOKETI_IMPL_DASHBOARD_SCREENSHOT=path.png`` to keep the screenshot (the one in
docs/ was taken so); it always goes to the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pusher
import pytest

from browser.cdp import Chromium, find_chromium
from conftest import APP_ID, APP_KEY, APP_SECRET, JS_DIR, ServerProcess, free_port, run_server

pytestmark = [pytest.mark.clients, pytest.mark.timeout(240)]

TOKEN = "dash-Token-4711"
DRIVER = JS_DIR / "dashboard_driver.js"


class Driver:
    """tests/js/dashboard_driver.js as an asyncio subprocess; lines are awaited, not polled."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, port: int, **params: Any) -> Driver:
        node = shutil.which("node")
        assert node is not None, "node is needed"
        args = {"port": port, "key": APP_KEY, "secret": APP_SECRET, "appId": APP_ID, **params}
        proc = await asyncio.create_subprocess_exec(
            node, str(DRIVER), json.dumps(args), cwd=JS_DIR, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def until(self, pred: Any, what: str, timeout: float = 15) -> dict[str, Any]:
        for rec in self.lines:
            if pred(rec):
                return rec
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            assert line, f"driver ended while waiting for {what}: {self.lines[-5:]}"
            rec: dict[str, Any] = json.loads(line)
            self.lines.append(rec)
            assert rec["t"] != "fail", f"driver failed: {rec['reason']}"
            if pred(rec):
                return rec

    async def bye(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"bye\n")
        await self.proc.stdin.drain()
        await asyncio.wait_for(self.proc.wait(), 10)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
def dash_server(server_mode: str) -> Iterator[tuple[ServerProcess, int]]:
    """A server with the dashboard on (token ``TOKEN``); yields it and its metrics port."""
    find_chromium()  # fail early, with the install command, when there is no browser
    metrics_port = free_port()
    env = {
        "SOKETI_DASHBOARD_ENABLED": "true",
        "SOKETI_DASHBOARD_TOKEN": TOKEN,
        "SOKETI_METRICS_SERVER_PORT": str(metrics_port),
        "SOKETI_METRICS_HOST": "127.0.0.1",
    }
    with run_server(server_mode, env) as server:
        yield server, metrics_port


def row_with(kind: str, *texts: str) -> str:
    """JS: the console row of ``kind`` whose text contains every one of ``texts``."""
    needles = json.dumps(list(texts))
    return (
        f"[...document.querySelectorAll('#log .entry.kind-{kind}')]"
        f".find((e) => {needles}.every((t) => e.textContent.includes(t)))"
    )


def set_value(selector: str, value: str) -> str:
    """JS: type ``value`` into a field and tell the page (an input event)."""
    return (
        f"(() => {{ const el = document.querySelector({json.dumps(selector)}); "
        f"el.value = {json.dumps(value)}; el.dispatchEvent(new Event('input')); return true; }})()"
    )


async def unauthorized_everywhere(base: str) -> None:
    """Page, feed, API: 401 without the token, with a wrong one and with a forged cookie."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": "soketi_dashboard=forged"}):
            for path in ("/dashboard", "/dashboard/", "/dashboard/api/feed", "/dashboard/api/info",
                         "/dashboard/api/channels"):
                async with http.get(base + path, headers=headers) as r:
                    body = await r.text()
                    assert r.status == 401, (path, headers, r.status)
                    assert 'id="log"' not in body and "samples" not in body
            async with http.post(base + "/dashboard/api/trigger", headers=headers,
                                 json={"channel": "x", "event": "e", "data": "{}"}) as r:
                assert r.status == 401
        # with the token the feed opens (server-sent events)
        async with http.get(base + "/dashboard/api/feed", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            first = await asyncio.wait_for(r.content.readline(), 10)
            assert first == b"event: hello\n"


async def scenario(server: ServerProcess, metrics_port: int, profile: Path, shot: Path) -> None:
    base = f"http://127.0.0.1:{metrics_port}"
    await unauthorized_everywhere(base)
    browser = await Chromium.launch(profile)
    driver: Driver | None = None
    try:
        # -- no token: the login form and nothing else
        await browser.goto(base + "/dashboard")
        await browser.wait("document.querySelector('#token')", "the login form")
        assert await browser.js("document.querySelector('#log') === null")
        assert await browser.js("fetch('/dashboard/api/feed').then((r) => r.status)") == 401
        # a wrong token is refused
        await browser.js(set_value("#token", "not-it"))
        loaded = browser.expect("Page.loadEventFired")
        await browser.js("document.querySelector('form').submit(), true")
        await asyncio.wait_for(loaded, 15)
        await browser.wait("document.querySelector('#login-error').textContent.includes('Wrong token')", "wrong token")

        # -- log in with the token
        await browser.js(set_value("#token", TOKEN))
        loaded = browser.expect("Page.loadEventFired")
        await browser.js("document.querySelector('form').submit(), true")
        await asyncio.wait_for(loaded, 15)
        await browser.wait("document.querySelector('#status.ok')", "the live feed")
        scope = await browser.js("document.querySelector('#scope').textContent")
        assert "Single node" in scope

        # -- a pusher-js client connects, subscribes, sends a client event
        driver = await Driver.start(
            server.port, channels=["dash-news", "presence-dash", "private-dash"],
            user={"user_id": "u-dash", "user_info": {"name": "Dee"}},
            clientEvent={"channel": "private-dash", "event": "client-ping", "data": {"x": 1}},
        )
        sid = (await driver.until(lambda r: r["t"] == "connected", "connected"))["socket_id"]
        await driver.until(lambda r: r["t"] == "ready", "ready")
        await browser.wait(row_with("connection", sid, "js"), "the connection in the console")
        await browser.wait(row_with("subscribed", sid, "dash-news"), "the subscription")
        await browser.wait(row_with("member_added", "u-dash", "presence-dash"), "the member")
        await browser.wait(row_with("client_event", "client-ping", "private-dash"), "the client event")

        # -- an event triggered with the official Python SDK
        sdk = pusher.Pusher(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host="127.0.0.1",
                            port=server.port, ssl=False, timeout=10)
        await asyncio.to_thread(sdk.trigger, "dash-news", "sdk-hello", {"n": 1})
        await browser.wait(row_with("api_message", "sdk-hello", "dash-news"), "the API message")
        await driver.until(lambda r: r.get("event") == "sdk-hello", "sdk-hello at the client")

        # payload on click: the client event's data
        await browser.js(f"({row_with('client_event', 'client-ping')}).click(), true")
        detail = await browser.wait(
            f"(({row_with('client_event', 'client-ping')}).querySelector('pre') || {{}}).textContent",
            "the payload",
        )
        assert '"x": 1' in detail and sid in detail

        # filters: by event name, then by socket id
        await browser.js(set_value("#f-event", "sdk-hello"))
        texts = await browser.js("[...document.querySelectorAll('#log .entry')].map((e) => e.textContent)")
        assert texts and all("sdk-hello" in t for t in texts)
        await browser.js(set_value("#f-event", ""))
        await browser.js(set_value("#f-socket", "1.1"))
        assert await browser.js("document.querySelectorAll('#log .entry').length") == 0
        await browser.js(set_value("#f-socket", sid))
        assert await browser.js("document.querySelectorAll('#log .entry').length") >= 4
        await browser.js(set_value("#f-socket", ""))

        # pause holds entries back; resume shows them, newest on top
        await browser.js("document.querySelector('#pause').click(), true")
        await asyncio.to_thread(sdk.trigger, "dash-news", "while-paused", {"n": 2})
        await browser.wait("document.querySelector('#drops').textContent.includes('1 held')", "one held entry")
        assert not await browser.js(f"!!{row_with('api_message', 'while-paused')}")
        await browser.js("document.querySelector('#pause').click(), true")
        await browser.wait(row_with("api_message", "while-paused"), "the held entry after resume")
        assert "while-paused" in await browser.js("document.querySelector('#log .entry').textContent")

        # channels with subscriber counts and presence members
        await browser.wait(
            "[...document.querySelectorAll('#channels tr')].find((r) => r.cells[0].textContent === 'presence-dash'"
            " && r.cells[1].textContent === '1' && r.cells[2].textContent === '1' && r.cells[3].textContent.includes('u-dash'))",
            "the presence channel and its member",
        )
        await browser.wait(
            "[...document.querySelectorAll('#channels tr')].find((r) => r.cells[0].textContent === 'dash-news'"
            " && r.cells[1].textContent === '1')", "dash-news with one subscriber",
        )

        # -- a test event from the page reaches the pusher-js client
        await browser.js(set_value("#t-channel", "dash-news"))
        await browser.js(set_value("#t-event", "page-hello"))
        await browser.js(set_value("#t-data", '{"from":"page"}'))
        await browser.js("document.querySelector('#t-send').click(), true")
        await browser.wait("document.querySelector('#t-result').textContent.includes('delivered to 1')", "sent")
        got = await driver.until(lambda r: r.get("event") == "page-hello", "page-hello at the client")
        assert got["data"] == {"from": "page"} and got["channel"] == "dash-news"
        await browser.wait(row_with("test_event", "page-hello", "dash-news"), "the test event in the console")
        # a refused test event says why
        await browser.js(set_value("#t-channel", "bad channel!"))
        await browser.js("document.querySelector('#t-send').click(), true")
        await browser.wait("document.querySelector('#t-result').textContent.includes('refused (400)')", "refused")

        # numbers and charts: one connection now
        await browser.wait("document.querySelector('#n-connected').textContent === '1'", "one connection")
        png = await browser.screenshot()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000
        shot.write_bytes(png)
        extra = os.environ.get("SOKETI_IMPL_DASHBOARD_SCREENSHOT")
        if extra:
            Path(extra).write_bytes(png)

        # -- the client leaves: the close and its code
        await driver.bye()
        await browser.wait(row_with("disconnection", sid, "closed with"), "the disconnection")
        await browser.wait(row_with("member_removed", "u-dash"), "the member leaving")

        # -- sign out: the page and the feed are closed again
        loaded = browser.expect("Page.loadEventFired")
        await browser.js("document.querySelector('header form').submit(), true")
        await asyncio.wait_for(loaded, 15)
        await browser.wait("document.querySelector('#token')", "the login form after signing out")
        assert await browser.js("fetch('/dashboard/api/feed').then((r) => r.status)") == 401
        errors = [line for line in browser.console if line.startswith("exception")]
        assert not errors, errors
    finally:
        if driver is not None:
            await driver.kill()
        await browser.close()


def test_dashboard_in_browser(
    dash_server: tuple[ServerProcess, int], node_modules: Path, tmp_path: Path
) -> None:
    """Log in, watch pusher-js and the Python SDK in the console, send a test event (sync test:
    the browser runs its own loop, so it is not repeated for each test loop)."""
    server, metrics_port = dash_server
    asyncio.run(asyncio.wait_for(
        scenario(server, metrics_port, tmp_path / "profile", tmp_path / "dashboard.png"), 200,
    ))


def test_missing_browser_fails_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """No chromium on PATH: the browser tests fail (never skip) and say how to install it."""
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        find_chromium()
