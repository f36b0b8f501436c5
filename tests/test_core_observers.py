"""The core tells its observers what happens, and an observer that raises never breaks delivery."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest

from soketi_impl.config import AppConfig
from soketi_impl.pusher import Observer
from test_core_protocol import APP, Peer, make_core


class Recorder(Observer):
    """Records every call as (event, args without the app config)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def _rec(self, name: str, app: AppConfig, *args: Any) -> None:
        assert isinstance(app, AppConfig) and app.id == APP
        self.calls.append((name, *args))

    def connection_opened(self, app: AppConfig, socket_id: str) -> None:
        self._rec("connection_opened", app, "sid")

    def connection_closed(self, app: AppConfig, socket_id: str, code: int | None, reason: str | None) -> None:
        self._rec("connection_closed", app, "sid", code)

    def subscribed(self, app: AppConfig, socket_id: str, channel: str) -> None:
        self._rec("subscribed", app, channel)

    def unsubscribed(self, app: AppConfig, socket_id: str, channel: str) -> None:
        self._rec("unsubscribed", app, channel)

    def channel_occupied(self, app: AppConfig, channel: str) -> None:
        self._rec("channel_occupied", app, channel)

    def channel_vacated(self, app: AppConfig, channel: str) -> None:
        self._rec("channel_vacated", app, channel)

    def subscription_count(self, app: AppConfig, channel: str, count: int) -> None:
        self._rec("subscription_count", app, channel, count)

    def member_added(self, app: AppConfig, channel: str, user_id: str, user_info: Any) -> None:
        self._rec("member_added", app, channel, user_id, user_info)

    def member_removed(self, app: AppConfig, channel: str, user_id: str) -> None:
        self._rec("member_removed", app, channel, user_id)

    def client_event(
        self, app: AppConfig, channel: str, event: str, data: Any, socket_id: str, user_id: str | None
    ) -> None:
        self._rec("client_event", app, channel, event, data, user_id)

    def cache_miss(self, app: AppConfig, channel: str) -> None:
        self._rec("cache_miss", app, channel)

    def signed_in(self, app: AppConfig, socket_id: str, user_id: str) -> None:
        self._rec("signed_in", app, user_id)

    def published(self, app: AppConfig, channel: str, event: str, size: int) -> None:
        self._rec("published", app, channel, event)


async def test_every_event_is_told() -> None:
    core = make_core()
    rec = core.add_observer(Recorder())
    assert isinstance(rec, Recorder)
    a = Peer(core).open()
    a.subscribe("news")
    b = Peer(core).open()
    b.subscribe("news")
    a.subscribe("presence-p", {"user_id": "ann", "user_info": {"n": 1}})
    b.subscribe("presence-p", {"user_id": "bob"})
    a.send("client-hi", {"x": 1}, "presence-p")
    a.subscribe("cache-c")
    a.signin({"id": "ann"})
    a.subscribe("#server-to-user-ann")
    await core.trigger(APP, ["news"], "ev", "{}")
    b.send("pusher:unsubscribe", {"channel": "news"})
    a._close(1000, "bye")
    assert rec.calls == [
        ("connection_opened", "sid"),
        # occupied and the count are decided together, on the cluster total
        ("channel_occupied", "news"), ("subscription_count", "news", 1), ("subscribed", "news"),
        ("connection_opened", "sid"),
        ("subscription_count", "news", 2), ("subscribed", "news"),
        ("member_added", "presence-p", "ann", {"n": 1}),
        ("channel_occupied", "presence-p"), ("subscription_count", "presence-p", 1), ("subscribed", "presence-p"),
        ("member_added", "presence-p", "bob", None),
        ("subscription_count", "presence-p", 2), ("subscribed", "presence-p"),
        ("client_event", "presence-p", "client-hi", {"x": 1}, "ann"),
        ("channel_occupied", "cache-c"), ("subscription_count", "cache-c", 1), ("cache_miss", "cache-c"),
        ("subscribed", "cache-c"),
        ("signed_in", "ann"),
        ("subscribed", "#server-to-user-ann"),  # never a subscription_count for it
        ("published", "news", "ev"),
        ("unsubscribed", "news"), ("subscription_count", "news", 1),
        # a closes: it leaves each channel in order, then the connection is gone
        ("unsubscribed", "news"), ("channel_vacated", "news"), ("subscription_count", "news", 0),
        ("member_removed", "presence-p", "ann"),
        ("unsubscribed", "presence-p"), ("subscription_count", "presence-p", 1),
        ("unsubscribed", "cache-c"), ("channel_vacated", "cache-c"), ("subscription_count", "cache-c", 0),
        ("unsubscribed", "#server-to-user-ann"),
        ("connection_closed", "sid", 1000),
    ]


class Broken(Observer):
    def subscribed(self, app: AppConfig, socket_id: str, channel: str) -> None:
        raise RuntimeError("observer bug")

    def published(self, app: AppConfig, channel: str, event: str, size: int) -> None:
        raise RuntimeError("observer bug")


async def test_a_raising_observer_never_breaks_delivery(caplog: pytest.LogCaptureFixture) -> None:
    core = make_core()
    core.add_observer(Broken())
    rec = core.add_observer(Recorder())
    peers = [Peer(core).open() for _ in range(3)]
    with caplog.at_level(logging.ERROR, logger="soketi_impl.pusher"):
        for p in peers:
            assert p.subscribe("news")["event"] == "pusher_internal:subscription_succeeded"
        assert await core.trigger(APP, ["news"], "ev", "{}") == 3
    core.outbox.flush()
    assert all(p.events("ev") for p in peers)
    assert [c for c in rec.calls if c[0] == "subscribed"] == [("subscribed", "news")] * 3  # the next observer runs
    lines = [r for r in caplog.records if "observer Broken.subscribed" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None  # once, rate-limited, no traceback
    assert core.observers.errors == 4


class OldWebhooks:
    """Duck-typed, as a webhook sender is: only some of the methods."""

    def __init__(self) -> None:
        self.occupied: list[str] = []

    def channel_occupied(self, app: AppConfig, channel: str) -> None:
        self.occupied.append(channel)


async def test_webhooks_kwarg_is_an_observer() -> None:
    from soketi_impl import Router
    from soketi_impl.config import load_config
    from soketi_impl.pusher import PusherServer

    hooks = OldWebhooks()
    config = load_config(None, environ={"SOKETI_DEFAULT_APP_ID": APP, "SOKETI_DEFAULT_APP_KEY": "k"})
    core = PusherServer(config, Router(), webhooks=hooks)
    assert any(o is cast(object, hooks) for o in core.observers)
    Peer(core).open().subscribe("room")
    assert hooks.occupied == ["room"]
