"""Public hooks: handlers run off the delivery path, from a bounded queue.

The first tests drive :class:`Hooks` as the core does (calling its Observer methods);
the last ones run an in-process server with a real pusher-js client and prove that a
hook blocked on an event does not delay what the client receives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import soketi_impl.hooks as hooks_module
from conftest import APP_ID, base_env
from pjs_listen import Listener
from soketi_impl import AppConfig, HookEvent, Hooks, Observer, Pusher, Server, load_config
from soketi_impl.hooks import HOOK_KINDS

APP = AppConfig(id="7", key="k", secret="s")


def test_hooks_is_an_observer_and_every_kind_has_a_decorator() -> None:
    hooks = Hooks()
    assert isinstance(hooks, Observer)
    for kind in HOOK_KINDS:
        assert callable(getattr(Observer, kind)), kind  # the core tells each kind
        assert callable(getattr(hooks, f"on_{kind}")), kind
        assert callable(getattr(Pusher, f"on_{kind}")), kind
    with pytest.raises(ValueError, match="unknown hook kind"):
        hooks.on("subscribe", print)


async def test_handlers_get_typed_events_in_order_sync_and_async() -> None:
    hooks, seen = Hooks(), []

    @hooks.on_subscribed
    def sync_handler(ev: HookEvent) -> None:
        seen.append(("sync", ev))

    @hooks.on_subscribed
    @hooks.on_client_event
    async def async_handler(ev: HookEvent) -> None:
        await asyncio.sleep(0)
        seen.append(("async", ev))

    hooks.start()
    hooks.subscribed(APP, "1.1", "news")
    hooks.client_event(APP, "private-a", "client-x", {"n": 1}, "1.1", None)
    hooks.unsubscribed(APP, "1.1", "news")  # nobody listens: not even queued
    assert hooks.stats() == {"queued": 2, "dropped": 0, "failed": 0, "handled": 0, "pending": 2}
    await hooks.stop()
    assert [(who, ev.kind) for who, ev in seen] == [
        ("sync", "subscribed"), ("async", "subscribed"), ("async", "client_event"),
    ]
    sub, ce = seen[0][1], seen[2][1]
    assert (sub.app_id, sub.socket_id, sub.channel, sub.event) == ("7", "1.1", "news", None)
    assert (ce.channel, ce.event, ce.data, ce.socket_id, ce.user_id) == ("private-a", "client-x", {"n": 1}, "1.1", None)
    with pytest.raises(AttributeError):
        sub.channel = "other"  # type: ignore[misc]  # frozen
    assert not hasattr(sub, "__dict__")  # slots
    assert hooks.handled == 3


async def test_a_raising_handler_is_logged_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(hooks_module, "monotonic", lambda: now[0])
    hooks, after = Hooks(), []

    @hooks.on_member_added
    def broken(ev: HookEvent) -> None:
        raise RuntimeError(f"boom {ev.user_id}")

    @hooks.on_member_added
    def next_one(ev: HookEvent) -> None:
        after.append(ev.user_id)

    caplog.set_level(logging.ERROR, "soketi_impl.hooks")
    hooks.start()
    for i in range(Hooks.LOG_BURST + 5):
        hooks.member_added(APP, "presence-room", f"u{i}", {"name": "x"})
    await hooks.stop()
    assert after == [f"u{i}" for i in range(Hooks.LOG_BURST + 5)]
    assert hooks.failed == Hooks.LOG_BURST + 5
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == Hooks.LOG_BURST  # rate limited
    assert "broken" in tracebacks[0].getMessage() and "member_added" in tracebacks[0].getMessage()
    assert "boom u0" in str(tracebacks[0].exc_info[1])  # type: ignore[index]
    # After the window, the first failure logs its traceback again and says how many were not.
    now[0] += Hooks.LOG_WINDOW_S
    hooks.start()
    hooks.member_added(APP, "presence-room", "late", None)
    await hooks.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert "5 more hook handler failures were not logged" in messages
    assert str([r for r in caplog.records if r.exc_info][-1].exc_info[1]) == "boom late"  # type: ignore[index]


async def test_full_queue_drops_the_newest_and_counts_it(caplog: pytest.LogCaptureFixture) -> None:
    hooks, seen = Hooks(maxsize=3), []
    hooks.on_channel_occupied(lambda ev: seen.append(ev.channel))
    for i in range(5):  # consumer not started: the queue fills
        hooks.channel_occupied(APP, f"ch{i}")
    assert (hooks.queued, hooks.dropped, hooks.pending) == (3, 2, 3)
    assert [r.getMessage() for r in caplog.records if "queue full" in r.getMessage()] == [
        "hooks queue full (3 events): dropping the newest (1 dropped so far)"
    ]  # once, not once per drop
    hooks.start()
    await hooks.stop()
    assert seen == ["ch0", "ch1", "ch2"]
    assert hooks.stats() == {"queued": 3, "dropped": 2, "failed": 0, "handled": 3, "pending": 0}


async def test_stop_drains_within_its_bound() -> None:
    hooks, seen, stuck = Hooks(drain_timeout=0.2), [], asyncio.Event()

    @hooks.on_connection_closed
    async def slow(ev: HookEvent) -> None:
        if ev.code == 4200:
            await stuck.wait()  # never set: stop must give up on it
        seen.append((ev.socket_id, ev.code, ev.reason))

    hooks.start()
    hooks.connection_closed(APP, "1.1", 1000, "bye")
    hooks.connection_closed(APP, "1.2", 4200, "restart")
    hooks.connection_closed(APP, "1.3", 4201, None)
    await asyncio.wait_for(hooks.stop(), 5)
    assert seen == [("1.1", 1000, "bye")]
    assert not hooks.running
    assert hooks.dropped == 1  # 1.3 never ran; 1.2 was cancelled in its handler
    assert hooks.pending == 0


# ---------------------------------------------------------------- a real server and pusher-js


@pytest.fixture
async def service(node_modules: Path) -> AsyncIterator[Server]:
    server = Server(pusher=Pusher(load_config(None, environ=base_env(0))))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


async def _get(queue: asyncio.Queue[HookEvent], kind: str) -> HookEvent:
    while True:
        ev = await asyncio.wait_for(queue.get(), 10)
        if ev.kind == kind:
            return ev


@pytest.mark.timeout(60)
async def test_a_blocked_hook_does_not_delay_delivery(service: Server) -> None:
    pusher, got = service.service, asyncio.Queue[HookEvent]()
    entered, release = asyncio.Event(), asyncio.Event()

    @pusher.on_subscribed
    async def slow(ev: HookEvent) -> None:
        entered.set()
        await release.wait()
        got.put_nowait(ev)

    @pusher.on_client_event
    def client_event(ev: HookEvent) -> None:
        got.put_nowait(ev)

    class ClientEventSeen(Observer):  # told synchronously by the core, not through the hooks
        def __init__(self) -> None:
            self.seen = asyncio.Event()

        def client_event(self, *args: Any) -> None:
            self.seen.set()

    core_saw = ClientEventSeen()
    pusher.core.add_observer(core_saw)
    client = await Listener.start(
        service.port, channels=["news", "private-chat"], until="done",
        clientEvents=[{"channel": "private-chat", "event": "client-hi", "data": {"n": 1}}],
    )
    try:
        await client.until("ready")
        await asyncio.wait_for(entered.wait(), 10)
        await asyncio.wait_for(core_saw.seen.wait(), 10)
        # The hook is stuck; events published now still reach the client.
        for i in range(3):
            await pusher.trigger(APP_ID, "news", "tick", {"i": i})
        await pusher.trigger(APP_ID, "news", "done", {})
        await client.until("done")
        assert [e["data"] for e in client.events() if e["event"] == "tick"] == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert not release.is_set() and got.empty()
        assert pusher.hooks.pending >= 2  # what happened meanwhile waits its turn
    finally:
        await client.close()
    release.set()
    first, second = await _get(got, "subscribed"), await _get(got, "subscribed")
    assert {first.channel, second.channel} == {"news", "private-chat"}
    assert first.socket_id == second.socket_id and first.app_id == APP_ID
    ce = await _get(got, "client_event")
    assert (ce.channel, ce.event, ce.socket_id) == ("private-chat", "client-hi", first.socket_id)
    assert ce.data == {"n": 1}


@pytest.mark.timeout(60)
async def test_every_kind_from_a_real_client(service: Server) -> None:
    pusher, events = service.service, list[HookEvent]()
    arrived = {kind: asyncio.Event() for kind in HOOK_KINDS}

    def record(ev: HookEvent) -> None:
        events.append(ev)
        arrived[ev.kind].set()

    async def first(kind: str) -> HookEvent:
        await asyncio.wait_for(arrived[kind].wait(), 10)
        return next(e for e in events if e.kind == kind)

    for kind in HOOK_KINDS:
        getattr(pusher, f"on_{kind}")(record)
    assert pusher.hooks.running  # registered after start: started with the first hook
    client = await Listener.start(
        service.port, channels=["presence-room", "cache-feed"], until="done",
        user={"user_id": "u1", "user_info": {"name": "Ann"}}, userData={"id": "u1"},
    )
    try:
        await client.until("ready")
        sid = (await first("connection_opened")).socket_id
        signed = await first("signed_in")
        assert (signed.socket_id, signed.user_id) == (sid, "u1")
        added = await first("member_added")
        assert (added.channel, added.user_id, added.user_info) == ("presence-room", "u1", {"name": "Ann"})
        assert (await first("cache_miss")).channel == "cache-feed"
        await first("subscribed")
    finally:
        await client.close()  # the TCP connection drops without a close frame
    closed = await first("connection_closed")
    assert closed.socket_id == sid
    removed = await first("member_removed")
    assert (removed.channel, removed.user_id) == ("presence-room", "u1")
    await first("channel_vacated")
    by_kind: dict[str, set[Any]] = {}
    for ev in events:
        by_kind.setdefault(ev.kind, set()).add(ev.channel)
    for kind in ("subscribed", "unsubscribed", "channel_occupied", "channel_vacated"):
        # pusher-js also subscribes to #server-to-user-u1 once signed in, when it gets to it.
        assert by_kind[kind] - {"#server-to-user-u1"} == {"presence-room", "cache-feed"}, kind
    kinds = [ev.kind for ev in events]
    assert kinds[0] == "connection_opened" and kinds[-1] == "connection_closed"
    assert {ev.app_id for ev in events} == {APP_ID}
