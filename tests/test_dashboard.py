"""The dashboard's parts without a browser: feed bounds, payload cutting, the token,
the configuration, the sampler on both twins, and the webhook sender telling the feed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest
from aiohttp import web

from conftest import base_env
from soketi_impl import Pusher
from soketi_impl.config import WebhookConfig, load_config
from soketi_impl.dashboard import Dashboard, Feed
from soketi_impl.dashboard.auth import COOKIE, TokenAuth
from soketi_impl.dashboard.feed import MAX_PAYLOAD, client_of, preview
from soketi_impl.dashboard.sampler import COUNTERS, Sampler
from soketi_impl.errors import ConfigError
from soketi_impl.pusher.events import Observer
from soketi_impl.webhooks import WebhookSender


@dataclass
class App:
    id: str = "app1"
    key: str = "key1"
    secret: str = "secret1"
    webhooks: list[Any] = field(default_factory=list)


# ---------------------------------------------------------------- the feed


def test_feed_implements_every_observer_event() -> None:
    # subscription_count is left out on purpose: subscribed/unsubscribed say the same,
    # and the channel list has the counts
    names = [n for n in vars(Observer) if not n.startswith("_") and n != "subscription_count"]
    assert names and all(n in vars(Feed) for n in names), set(names) - set(vars(Feed))


def test_page_queue_is_bounded_and_counts_drops() -> None:
    feed = Feed(history=5, queue_size=10)
    page = feed.subscribe()
    for i in range(25):
        feed.add("app1", "api_message", channel=f"c{i}")
    assert len(feed.recent) == 5 and feed.recent[-1]["channel"] == "c24"
    assert page.dropped == 15 and feed.dropped == 15
    items = asyncio.run(page.take(0.01))
    # the newest survive, in order
    assert [item["channel"] for _, item in items] == [f"c{i}" for i in range(15, 25)]


def test_too_many_pages_and_close() -> None:
    feed = Feed(max_pages=2)
    a, b = feed.subscribe(), feed.subscribe()
    with pytest.raises(Exception, match="2 dashboard pages"):
        feed.subscribe()
    feed.unsubscribe(a)
    c = feed.subscribe()
    feed.close()
    assert b.closed and c.closed and not feed.pages
    assert asyncio.run(c.take(5)) == []  # a closed page's writer does not wait


def test_payloads_are_cut() -> None:
    feed = Feed()
    app = App()
    feed.client_event(app, "private-a", "client-big", {"blob": "x" * 10_000}, "1.1", None)  # type: ignore[arg-type]
    entry = feed.recent[-1]
    assert len(entry["data"]) == MAX_PAYLOAD and entry["truncated"] == entry["size"] > 10_000
    feed.member_added(app, "presence-a", "u1", {"name": "Al"})  # type: ignore[arg-type]
    assert feed.recent[-1]["data"] == '{"name":"Al"}' and "truncated" not in feed.recent[-1]
    assert preview("abc") == ("abc", 3)
    assert preview(object())[0].startswith('"<object')


def test_entries_have_what_the_page_shows() -> None:
    feed = Feed(clock=lambda: 12.5, socket_info=lambda app_id, sid: "js 8.6.0")
    app = App()
    feed.connection_opened(app, "1.2")  # type: ignore[arg-type]
    feed.connection_closed(app, "1.2", 4009, "bye")  # type: ignore[arg-type]
    feed.published(app, "news", "ev", 42)  # type: ignore[arg-type]
    feed.webhook("failed", "app1", "http://x/hook", 2, "HTTP 500")
    feed.error_sent(app, "1.2", 4301, "Client events are not allowed here.", None)  # type: ignore[arg-type]
    got = [(e["kind"], e.get("client"), e.get("code"), e.get("size"), e.get("error")) for e in feed.recent]
    assert got == [
        ("connection", "js 8.6.0", None, None, None),
        ("disconnection", None, 4009, None, None),
        ("api_message", None, None, 42, None),
        ("webhook_failed", None, None, None, "HTTP 500"),
        ("error", None, 4301, None, None),
    ]
    assert all(e["ts"] == 12500 and e["app"] == "app1" for e in feed.recent)
    assert [e["id"] for e in feed.recent] == [1, 2, 3, 4, 5]


def test_client_of() -> None:
    assert client_of("/app/k?protocol=7&client=js&version=8.6.0") == "js 8.6.0"
    assert client_of("/app/k?protocol=7") is None and client_of(None) is None
    assert client_of("/app/k?client=" + "z" * 500) == "z" * 40


# ---------------------------------------------------------------- the token


def test_token_checks() -> None:
    now = [0.0]
    auth = TokenAuth("s3cret", max_failures=3, window_s=60, clock=lambda: now[0])
    assert auth.check({}, {}) == "missing"
    assert auth.check({"Authorization": "Bearer s3cret"}, {}) == "ok"
    assert auth.check({"Authorization": "bearer s3cret"}, {}) == "ok"
    assert auth.check({}, {COOKIE: auth.session}) == "ok"
    assert auth.session != "s3cret" and "s3cret" not in auth.session
    assert auth.check({"Authorization": "Bearer s3cre"}, {}) == "wrong"
    assert auth.check({}, {COOKIE: "forged"}) == "wrong"
    assert auth.login("nope") == "wrong"
    # three failures in the window: even the right token waits
    assert auth.login("s3cret") == "throttled"
    assert auth.check({"Authorization": "Bearer s3cret"}, {}) == "throttled"
    now[0] = 61.0
    assert auth.login("s3cret") == "ok"
    assert auth.check({"Authorization": "Bearer \u00e9"}, {}) == "wrong"  # non-ASCII is no crash
    with pytest.raises(ValueError):
        TokenAuth("")


def test_session_changes_with_the_token() -> None:
    assert TokenAuth("a").session != TokenAuth("b").session


# ---------------------------------------------------------------- configuration


def test_config_needs_a_token_when_enabled() -> None:
    with pytest.raises(ConfigError, match="SOKETI_DASHBOARD_TOKEN"):
        load_config(None, environ=base_env(0, SOKETI_DASHBOARD_ENABLED="true"))
    cfg = load_config(None, environ=base_env(0, SOKETI_DASHBOARD_ENABLED="true", SOKETI_DASHBOARD_TOKEN="zz9"))
    assert cfg.dashboard_enabled and cfg.dashboard_token == "zz9" and "zz9" not in repr(cfg)
    off = load_config(None, environ=base_env(0))
    assert not off.dashboard_enabled and Pusher(off).dashboard is None


def test_cli_exits_2_without_token(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from soketi_impl.cli import main

    for name, value in base_env(0, SOKETI_DASHBOARD_ENABLED="true").items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SOKETI_DASHBOARD_TOKEN", raising=False)
    monkeypatch.chdir("/")  # no .env of the working directory
    assert main(["start"]) == 2
    assert "SOKETI_DASHBOARD_TOKEN" in capsys.readouterr().err


def test_dashboard_without_token_is_a_config_error() -> None:
    pusher = Pusher(load_config(None, environ=base_env(0)))
    with pytest.raises(ConfigError, match="SOKETI_DASHBOARD_TOKEN"):
        Dashboard(pusher)
    dash = Dashboard(pusher, token="x")
    assert dash.feed in pusher.core.observers and not dash.cluster


def test_cluster_is_said_with_redis() -> None:
    pusher = Pusher(load_config(None, environ=base_env(0, SOKETI_ADAPTER_DRIVER="redis",
                                                        SOKETI_DASHBOARD_ENABLED="true",
                                                        SOKETI_DASHBOARD_TOKEN="x")))
    assert pusher.dashboard is not None
    info = pusher.dashboard.info()
    assert info["cluster"] is True and info["adapter"] == "redis"


# ---------------------------------------------------------------- the sampler


def test_sampler_reads_both_twins(twin: Callable[[str], ModuleType]) -> None:
    stats = twin("fanout").Stats()
    stats.connected = 3
    stats.ws_messages_received = 7
    got: list[dict[str, Any]] = []
    sampler = Sampler(lambda: {"a1": stats}, lambda: 5, got.append, keep=2, clock=lambda: 1.0)
    for _ in range(3):
        sampler.take()
    assert len(sampler.history) == 2 and len(got) == 3
    assert got[0] == {
        "t": 1000, "webhook_queue": 5,
        "apps": {"a1": {**dict.fromkeys(COUNTERS, 0), "connected": 3, "ws_messages_received": 7}},
    }


async def test_sampler_runs_and_stops() -> None:
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sampler = Sampler(lambda: {}, lambda: None, got.put_nowait, interval=0.01)
    sampler.start()
    await asyncio.wait_for(got.get(), 5)
    await asyncio.wait_for(got.get(), 5)
    await sampler.stop()


# ---------------------------------------------------------------- webhooks told to the feed


async def test_webhook_outcomes_reach_the_feed() -> None:
    """A receiver that fails once, then accepts: the feed sees retried then sent."""
    calls: list[int] = []

    async def hook(request: web.Request) -> web.Response:
        calls.append(1)
        return web.Response(status=500 if len(calls) == 1 else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/hook"
    feed = Feed()
    sender = WebhookSender(first_retry_s=0.01)
    sender.listener = feed.webhook
    target = App(webhooks=[WebhookConfig(url=url, event_types=["channel_occupied"])])
    try:
        await sender.start()
        sender.channel_occupied(target, "news")
        await asyncio.wait_for(sender.wait_idle(), 10)
    finally:
        with contextlib.suppress(Exception):
            await sender.close(1)
        await runner.cleanup()
    kinds = [(e["kind"], e["app"], e["url"], e["events"]) for e in feed.recent]
    assert kinds == [("webhook_retried", "app1", url, 1), ("webhook_sent", "app1", url, 1)]
    assert feed.recent[0]["error"] == "HTTP 500"


def test_the_page_files_are_in_the_package() -> None:
    """What index.html and login.html load ships with the package (package-data, git)."""
    pusher = Pusher(load_config(None, environ=base_env(0)))
    names = Dashboard(pusher, token="x").static_names
    assert {"index.html", "login.html", "dashboard.js", "charts.js", "dashboard.css"} <= names
