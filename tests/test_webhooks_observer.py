"""The webhook sender as the core's observer, its debounce on a fake clock, its byte bound and shutdown.

The debounce is pinned with a scheduler whose time the test moves by hand: no
sleeps decide anything. Deliveries go to the real aiohttp receiver of
test_webhooks.py and are checked with the official SDK there.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from soketi_impl.pusher.events import Observer
from soketi_impl.pusher.observing import Observers
from soketi_impl.webhooks import DEFAULT_MAX_QUEUE_BYTES, WebhookSender
from test_webhooks import ALL, WAIT, App, Receiver, Webhook, all_events, receiver  # noqa: F401


class FakeTimers:
    """``call_later`` on a clock that only moves when the test says so."""

    class Handle:
        def __init__(self, when: float, callback: Callable[..., None], args: tuple[Any, ...]) -> None:
            self.when, self.callback, self.args, self.cancelled = when, callback, args, False

        def cancel(self) -> None:
            self.cancelled = True

    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[FakeTimers.Handle] = []

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> FakeTimers.Handle:
        handle = self.Handle(self.now + delay, callback, args)
        self.handles.append(handle)
        return handle

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [h for h in self.handles if h.when <= self.now and not h.cancelled]
        self.handles = [h for h in self.handles if h not in due]
        for h in sorted(due, key=lambda h: h.when):
            h.callback(*h.args)


def _app(url: str = "http://127.0.0.1:9/none") -> App:
    return App(webhooks=[Webhook(url, ALL)])


# -- the debounce, pinned to 3 s -------------------------------------------------------


@pytest.mark.parametrize("event", ["channel_vacated", "member_removed"])
def test_leave_is_sent_after_three_seconds_and_not_before(event: str) -> None:
    timers = FakeTimers()
    sender = WebhookSender(call_later=timers.call_later)  # the default debounce
    app = _app()
    if event == "channel_vacated":
        sender.channel_vacated(app, "ch")
    else:
        sender.member_removed(app, "presence-r", "u1")
    timers.advance(2.5)
    assert sender.queue_depth == 0 and sender.debouncing == 1
    timers.advance(0.49)
    assert sender.queue_depth == 0
    timers.advance(0.01)  # 3.0 s
    assert sender.queue_depth == 1 and sender.debouncing == 0


def test_coming_back_at_2_9_s_cancels_both() -> None:
    timers = FakeTimers()
    sender = WebhookSender(call_later=timers.call_later)
    app = _app()
    sender.channel_vacated(app, "ch")
    sender.member_removed(app, "presence-r", "u1")
    timers.advance(2.9)
    sender.channel_occupied(app, "ch")
    sender.member_added(app, "presence-r", "u1", {"name": "Ada"})
    timers.advance(10.0)
    assert sender.queue_depth == 0 and sender.debouncing == 0


def test_a_second_leave_restarts_the_window() -> None:
    timers = FakeTimers()
    sender = WebhookSender(call_later=timers.call_later)
    app = _app()
    sender.channel_vacated(app, "ch")
    timers.advance(2.0)
    sender.channel_occupied(app, "ch")  # back: nothing pending
    sender.channel_vacated(app, "ch")  # gone again at t=2
    timers.advance(2.5)  # t=4.5: 2.5 s into the new window
    assert sender.queue_depth == 0
    timers.advance(0.5)
    assert sender.queue_depth == 1


# -- a vacate confirmed with the cluster when its window ends -----------------------------


async def test_a_vacate_is_sent_only_when_the_cluster_confirms_it() -> None:
    timers = FakeTimers()
    sender = WebhookSender(call_later=timers.call_later)
    answers: list[asyncio.Future[bool]] = []

    async def still_vacated(app: Any, channel: str) -> bool:
        answers.append(asyncio.get_running_loop().create_future())
        return await answers[-1]

    sender.still_vacated = still_vacated
    app = _app()
    sender.channel_vacated(app, "gone")
    sender.channel_vacated(app, "back")
    sender.channel_vacated(app, "returns")
    timers.advance(3.0)
    await asyncio.sleep(0)
    assert len(answers) == 3 and sender.queue_depth == 0 and sender.debouncing == 3
    sender.channel_occupied(app, "returns")  # back while the cluster is asked: nothing at all
    answers[0].set_result(True)
    answers[1].set_result(False)  # occupied on another node
    answers[2].set_result(True)
    for _ in range(3):
        await asyncio.sleep(0)
    assert sender.queue_depth == 1 and sender.debouncing == 0
    await sender.close(0.1)


async def test_a_vacate_that_cannot_be_confirmed_is_sent(caplog: pytest.LogCaptureFixture) -> None:
    timers = FakeTimers()
    sender = WebhookSender(call_later=timers.call_later)

    async def broken(app: Any, channel: str) -> bool:
        raise ConnectionError("no cluster")

    sender.still_vacated = broken
    sender.channel_vacated(_app(), "ch")
    timers.advance(3.0)
    for _ in range(3):
        await asyncio.sleep(0)
    assert sender.queue_depth == 1
    assert any("could not confirm channel_vacated of ch" in r.getMessage() for r in caplog.records)
    await sender.close(0.1)


# -- the observer interface ------------------------------------------------------------


def _observer_methods() -> list[str]:
    return [n for n, v in vars(Observer).items() if inspect.isfunction(v) and not n.startswith("_")]


@pytest.mark.parametrize("name", _observer_methods())
def test_every_observer_method_takes_the_observers_arguments(name: str) -> None:
    want = list(inspect.signature(getattr(Observer, name)).parameters)
    sig = inspect.signature(getattr(WebhookSender, name))
    sig.bind(*want)  # self and every parameter of the interface, positionally
    assert list(sig.parameters)[: len(want)] == want


def test_the_core_tells_it_through_observers() -> None:
    """As the core calls it: Observers.tell with the interface's arguments; nothing raises."""
    timers = FakeTimers()
    sender = WebhookSender(call_later=timers.call_later)
    assert isinstance(sender, Observer)
    observers = Observers()
    observers.append(sender)
    app = _app()
    observers.tell("connection_opened", app, "1.1")
    observers.tell("subscribed", app, "1.1", "presence-r")
    observers.tell("channel_occupied", app, "presence-r")
    observers.tell("member_added", app, "presence-r", "u1", {"name": "Ada"})
    observers.tell("subscription_count", app, "presence-r", 1)
    observers.tell("client_event", app, "presence-r", "client-x", {"a": 1}, "1.1", "u1")
    observers.tell("cache_miss", app, "cache-a")
    observers.tell("signed_in", app, "1.1", "u1")
    observers.tell("published", app, "presence-r", "ev", 10)
    observers.tell("connection_closed", app, "1.1", 1000, None)
    assert observers.errors == 0
    assert sender.queue_depth == 5


def test_apps_without_webhooks_cost_nothing() -> None:
    sender = WebhookSender()
    app = App()  # no webhooks
    sender.channel_occupied(app, "ch")
    sender.channel_vacated(app, "ch")  # not even debounced: no loop needed
    sender.member_removed(app, "presence-r", "u1")
    sender.client_event(app, "private-a", "client-x", "{}", "1.1", None)
    sender.subscription_count(app, "ch", 3)
    assert sender.queue_depth == 0 and sender.debouncing == 0


# -- the byte bound ---------------------------------------------------------------------


def test_default_byte_bound() -> None:
    assert WebhookSender().max_queue_bytes == DEFAULT_MAX_QUEUE_BYTES == 64 * 1024 * 1024
    with pytest.raises(ValueError):
        WebhookSender(max_queue_bytes=0)


async def test_queue_bounded_in_bytes_drops_the_oldest(
    receiver: Receiver, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    app = App(webhooks=[Webhook(receiver.url(), ["client_event"])])
    sender = WebhookSender(max_queue_bytes=5000)  # events of about 1.1 KB: 4 fit
    data = "x" * 1000
    for i in range(10):
        sender.client_event(app, "private-a", f"client-{i}", data, "1.1", None)
        assert sender.queue_bytes <= 5000
    assert sender.queue_depth == 4
    assert sender.dropped == 6
    assert caplog.text.count("queue full") == 1  # one line, then a counter
    await sender.start()
    try:
        hits = await receiver.wait_hits(4)
        await asyncio.wait_for(sender.wait_idle(), WAIT)
    finally:
        await sender.close(1.0)
    assert sorted(e["event"] for e in all_events(hits)) == [f"client-{i}" for i in range(6, 10)]
    assert sender.queue_bytes == 0


def test_one_event_over_the_byte_bound_is_dropped_alone() -> None:
    app = _app()
    sender = WebhookSender(max_queue_bytes=500)
    sender.client_event(app, "private-a", "client-small", "s", "1.1", None)
    sender.client_event(app, "private-a", "client-big", "x" * 1000, "1.1", None)
    assert sender.queue_depth == 0 and sender.dropped == 2  # the small one made room in vain


async def test_requests_waiting_for_a_retry_count_their_bytes(receiver: Receiver) -> None:  # noqa: F811
    receiver.always_fail = True
    app = App(webhooks=[Webhook(receiver.url(), ["client_event"])])
    sender = WebhookSender(max_queue_bytes=2500, first_retry_s=60.0)
    await sender.start()
    try:
        sender.client_event(app, "private-a", "client-0", "x" * 1000, "1.1", None)
        sender.client_event(app, "private-a", "client-1", "x" * 1000, "1.1", None)
        await receiver.wait_attempts(2)  # both in flight, waiting a minute to retry
        assert sender.queue_depth == 2 and sender.queue_bytes > 2000
        sender.client_event(app, "private-a", "client-2", "x" * 1000, "1.1", None)
        assert sender.dropped == 1 and sender.queue_depth == 2
    finally:
        await asyncio.wait_for(sender.close(0.0), WAIT)


# -- shutdown -----------------------------------------------------------------------------


async def test_close_retries_at_once_within_the_grace(receiver: Receiver) -> None:  # noqa: F811
    """A request waiting a minute for its retry goes out during the grace period."""
    receiver.fail_first = 1
    app = App(webhooks=[Webhook(receiver.url(), ["cache_miss"])])
    sender = WebhookSender(first_retry_s=60.0)
    await sender.start()
    sender.cache_miss(app, "cache-a")
    await receiver.wait_attempts(1)
    await asyncio.wait_for(sender.close(5.0), WAIT)
    assert sender.sent == 1 and sender.dropped == 0
    assert all_events(receiver.hits) == [{"name": "cache_miss", "channel": "cache-a"}]


async def test_what_cannot_go_out_is_logged_at_shutdown(
    receiver: Receiver, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    receiver.hang = True
    app = App(webhooks=[Webhook(receiver.url(), ["cache_miss", "channel_vacated"])])
    sender = WebhookSender(timeout_s=60.0, debounce_s=60.0)
    await sender.start()
    sender.cache_miss(app, "cache-a")
    await receiver.wait_attempts(1)
    sender.cache_miss(app, "cache-b")
    sender.channel_vacated(app, "ch")  # debounced: released by close, then stuck too
    await asyncio.wait_for(sender.close(0.1), WAIT)
    assert sender.dropped == 3
    assert "3 undelivered event(s) dropped at shutdown" in caplog.text
