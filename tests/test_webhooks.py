"""Outgoing webhooks against a real aiohttp receiver on the loopback.

Bodies and signatures are checked with the official Python ``pusher`` SDK's
``validate_webhook``. Nothing of the HTTP client is mocked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pusher
import pytest
from aiohttp import web

from soketi_impl.signing import webhook_signature
from soketi_impl.webhooks import WebhookSender

KEY = "app-key"
SECRET = "app-secret"
WAIT = 10.0  # generous upper bound for anything awaited; never a timing assertion


@dataclass
class Webhook:
    url: str
    event_types: list[str]
    headers: dict[str, str] = field(default_factory=dict)
    filter_starts_with: str | None = None
    filter_ends_with: str | None = None


@dataclass
class App:
    id: str = "1"
    key: str = KEY
    secret: str = SECRET
    webhooks: list[Webhook] = field(default_factory=list)


ALL = [
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
    "cache_miss",
    "subscription_count",
]


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events of a body that the official SDK accepts as signed by us."""
        client = pusher.Pusher(app_id="1", key=KEY, secret=SECRET)
        data = client.validate_webhook(
            self.headers["X-Pusher-Key"], self.headers["X-Pusher-Signature"], self.body.decode()
        )
        assert data is not None, "validate_webhook rejected the request"
        assert isinstance(data["time_ms"], int)
        events: list[dict[str, Any]] = data["events"]
        return events


class Receiver:
    """A webhook endpoint. ``fail_first`` answers 500 that many times first;
    ``always_fail`` always answers 500; ``hang`` never answers until closed."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.attempts = 0
        self.fail_first = 0
        self.always_fail = False
        self.hang = False
        self._arrived = asyncio.Condition()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.attempts += 1
        status = 200
        if self.always_fail or self.attempts <= self.fail_first:
            status = 500
        elif not self.hang:
            self.hits.append(Hit(request.path, dict(request.headers), body))
        async with self._arrived:
            self._arrived.notify_all()
        if self.hang:
            await self._release.wait()
        return web.Response(status=status, text="ok" if status == 200 else "no")

    async def wait_hits(self, n: int) -> list[Hit]:
        """Wait (bounded) until ``n`` successful requests have arrived."""

        async def until() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.hits) >= n)

        await asyncio.wait_for(until(), WAIT)
        return self.hits

    async def wait_attempts(self, n: int) -> None:
        async def until() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: self.attempts >= n)

        await asyncio.wait_for(until(), WAIT)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.close()


def all_events(hits: list[Hit]) -> list[dict[str, Any]]:
    return [e for h in hits for e in h.events]


async def started(**kwargs: Any) -> WebhookSender:
    sender = WebhookSender(**kwargs)
    await sender.start()
    return sender


# -- payloads and headers ---------------------------------------------------------


async def test_each_immediate_event_type_is_signed_and_shaped(receiver: Receiver) -> None:
    app = App(webhooks=[Webhook(receiver.url(), ALL)])
    sender = await started()
    try:
        sender.channel_occupied(app, "ch-1")
        sender.member_added(app, "presence-room", "u1", None)
        sender.client_event(app, "private-chat", "client-typing", '{"a":1}', "123.456", None)
        sender.client_event(app, "presence-room", "client-hi", {"x": [1]}, "1.2", "u1")
        sender.cache_miss(app, "cache-news")
        sender.subscription_count(app, "ch-1", 7)
        hits = await receiver.wait_hits(6)
        await asyncio.wait_for(sender.wait_idle(), WAIT)
    finally:
        await sender.close(1.0)

    events = all_events(hits)
    assert len(hits) == 6  # no batching: one request per event
    def key(e: object) -> str:
        return json.dumps(e, sort_keys=True)

    assert sorted(events, key=key) == sorted(
        [
            {"name": "channel_occupied", "channel": "ch-1"},
            {"name": "member_added", "channel": "presence-room", "user_id": "u1"},
            {
                "name": "client_event",
                "channel": "private-chat",
                "event": "client-typing",
                "data": '{"a":1}',
                "socket_id": "123.456",
            },
            {
                "name": "client_event",
                "channel": "presence-room",
                "event": "client-hi",
                "data": {"x": [1]},
                "socket_id": "1.2",
                "user_id": "u1",
            },
            {"name": "cache_miss", "channel": "cache-news"},
            {"name": "subscription_count", "channel": "ch-1", "subscription_count": 7},
        ],
        key=key,
    )
    for hit in hits:
        assert hit.headers["Content-Type"] == "application/json"
        assert hit.headers["X-Pusher-Key"] == KEY
        assert hit.headers["X-Pusher-Signature"] == webhook_signature(SECRET, hit.body)
    assert sender.stats == {
        "queue_depth": 0, "queue_bytes": 0, "sent": 6, "failed": 0, "retries": 0, "dropped": 0
    }


async def test_debounced_events_are_sent_after_the_window(receiver: Receiver) -> None:
    app = App(webhooks=[Webhook(receiver.url(), ALL)])
    sender = await started(debounce_s=0.05)
    try:
        sender.channel_vacated(app, "ch-1")
        sender.member_removed(app, "presence-room", "u1")
        assert sender.debouncing == 2
        hits = await receiver.wait_hits(2)
    finally:
        await sender.close(1.0)
    names = sorted((e["name"], e.get("user_id")) for e in all_events(hits))
    assert names == [("channel_vacated", None), ("member_removed", "u1")]
    assert sender.debouncing == 0


async def test_only_wanted_event_types_are_sent(receiver: Receiver) -> None:
    app = App(webhooks=[Webhook(receiver.url(), ["cache_miss"])])
    sender = WebhookSender()
    assert sender.wants(app, "cache_miss")
    assert not sender.wants(app, "client_event")
    assert not sender.wants(App(), "cache_miss")
    sender.channel_occupied(app, "ch")
    sender.client_event(app, "ch", "client-x", "{}", "1.1", None)
    sender.subscription_count(app, "ch", 1)
    assert sender.queue_depth == 0  # never queued
    sender.cache_miss(app, "cache-a")
    assert sender.queue_depth == 1
    await sender.start()
    try:
        hits = await receiver.wait_hits(1)
        await asyncio.wait_for(sender.wait_idle(), WAIT)
    finally:
        await sender.close(1.0)
    assert all_events(hits) == [{"name": "cache_miss", "channel": "cache-a"}]


async def test_channel_filters_combine_with_and(receiver: Receiver) -> None:
    app = App(
        webhooks=[
            Webhook(
                receiver.url("/both"),
                ["channel_occupied"],
                filter_starts_with="beta-",
                filter_ends_with="-app",
            ),
            Webhook(receiver.url("/start"), ["channel_occupied"], filter_starts_with="beta-"),
            Webhook(receiver.url("/end"), ["channel_occupied"], filter_ends_with="-app"),
        ]
    )
    sender = await started()
    try:
        for ch in ("chat-room", "beta-chat-room", "chat-room-app", "beta-chat-room-app"):
            sender.channel_occupied(app, ch)
        # /both: 1, /start: 2, /end: 2
        hits = await receiver.wait_hits(5)
        await asyncio.wait_for(sender.wait_idle(), WAIT)
    finally:
        await sender.close(1.0)
    got: dict[str, set[str]] = {}
    for hit in hits:
        for e in hit.events:
            got.setdefault(hit.path, set()).add(e["channel"])
    assert got == {
        "/both": {"beta-chat-room-app"},
        "/start": {"beta-chat-room", "beta-chat-room-app"},
        "/end": {"chat-room-app", "beta-chat-room-app"},
    }
    assert len(hits) == 5


async def test_custom_headers_are_sent_but_cannot_override_the_signature(
    receiver: Receiver,
) -> None:
    headers = {"Authorization": "Bearer t0k3n", "X-Custom": "yes", "X-Pusher-Signature": "forged"}
    app = App(webhooks=[Webhook(receiver.url(), ["channel_occupied"], headers=headers)])
    sender = await started()
    try:
        sender.channel_occupied(app, "ch")
        (hit,) = await receiver.wait_hits(1)
    finally:
        await sender.close(1.0)
    assert hit.headers["Authorization"] == "Bearer t0k3n"
    assert hit.headers["X-Custom"] == "yes"
    assert hit.events == [{"name": "channel_occupied", "channel": "ch"}]


async def test_time_ms_comes_from_the_clock(receiver: Receiver) -> None:
    app = App(webhooks=[Webhook(receiver.url(), ["cache_miss"])])
    sender = await started(clock=lambda: 1700000000.123)
    try:
        sender.cache_miss(app, "cache-x")
        (hit,) = await receiver.wait_hits(1)
    finally:
        await sender.close(1.0)
    assert json.loads(hit.body)["time_ms"] == 1700000000123


# -- retries -----------------------------------------------------------------------


async def test_retries_until_the_receiver_accepts(receiver: Receiver) -> None:
    receiver.fail_first = 2
    app = App(webhooks=[Webhook(receiver.url(), ["channel_occupied"])])
    sender = await started(first_retry_s=0.05, retry_for_s=30.0)
    try:
        sender.channel_occupied(app, "ch")
        (hit,) = await receiver.wait_hits(1)
        await asyncio.wait_for(sender.wait_idle(), WAIT)
    finally:
        await sender.close(1.0)
    assert receiver.attempts == 3
    assert hit.events == [{"name": "channel_occupied", "channel": "ch"}]
    assert sender.retries == 2
    assert sender.sent == 1
    assert sender.failed == 0


async def test_default_backoff_doubles_from_1_s_up_to_60_s(receiver: Receiver) -> None:
    """The default schedule, pinned without waiting it out: the waits are recorded
    (and skipped); the receiver refuses nine times."""
    receiver.fail_first = 9
    app = App(webhooks=[Webhook(receiver.url(), ["channel_occupied"])])
    sender = await started()
    waits: list[float] = []

    async def record(delay: float) -> None:
        waits.append(delay)

    sender._backoff = record  # type: ignore[method-assign]
    try:
        sender.channel_occupied(app, "ch")
        await receiver.wait_hits(1)
        await asyncio.wait_for(sender.wait_idle(), WAIT)
    finally:
        await sender.close(1.0)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert sender.retries == 9 and sender.sent == 1


async def test_gives_up_after_retry_for_s(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.always_fail = True
    app = App(webhooks=[Webhook(receiver.url(), ["channel_occupied"])])
    sender = await started(first_retry_s=0.02, retry_for_s=0.2)
    try:
        sender.channel_occupied(app, "ch")
        await receiver.wait_attempts(1)
        await asyncio.wait_for(sender.wait_idle(), WAIT)
    finally:
        await sender.close(1.0)
    assert receiver.attempts >= 2  # it did retry
    assert receiver.hits == []
    assert sender.failed == 1
    assert sender.sent == 0
    assert sender.retries == receiver.attempts - 1
    assert sender.queue_depth == 0
    assert "giving up" in caplog.text


async def test_network_errors_are_retried_then_given_up() -> None:
    # a port nobody listens on: connection refused on every attempt
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    app = App(webhooks=[Webhook(f"http://127.0.0.1:{port}/hook", ["channel_occupied"])])
    sender = await started(first_retry_s=0.02, retry_for_s=0.1)
    try:
        sender.channel_occupied(app, "ch")
        await asyncio.wait_for(sender.wait_idle(), WAIT)
    finally:
        await sender.close(1.0)
    assert sender.failed == 1
    assert sender.retries >= 1


# -- debounce ------------------------------------------------------------------------


async def test_vacated_then_occupied_sends_nothing(receiver: Receiver) -> None:
    app = App(webhooks=[Webhook(receiver.url(), ALL)])
    sender = await started(debounce_s=60.0)
    try:
        sender.channel_occupied(app, "ch")  # first join: sent at once
        await receiver.wait_hits(1)
        sender.channel_vacated(app, "ch")  # page reload...
        sender.channel_occupied(app, "ch")  # ...and back within the window
        sender.member_removed(app, "presence-r", "u1")
        sender.member_added(app, "presence-r", "u1", None)
        assert sender.debouncing == 0
        assert sender.queue_depth == 0
    finally:
        # close releases debounced events: none must be left to release
        await sender.close(2.0)
    assert all_events(receiver.hits) == [{"name": "channel_occupied", "channel": "ch"}]


async def test_other_member_or_channel_does_not_cancel_the_leave(receiver: Receiver) -> None:
    app = App(webhooks=[Webhook(receiver.url(), ALL)])
    sender = await started(debounce_s=0.05)
    try:
        sender.member_removed(app, "presence-r", "u1")
        sender.member_added(app, "presence-r", "u2", None)  # a different user
        sender.channel_vacated(app, "a")
        sender.channel_occupied(app, "b")  # a different channel
        hits = await receiver.wait_hits(4)
        await asyncio.wait_for(sender.wait_idle(), WAIT)
    finally:
        await sender.close(1.0)
    names = sorted((e["name"], e["channel"], e.get("user_id")) for e in all_events(hits))
    assert names == [
        ("channel_occupied", "b", None),
        ("channel_vacated", "a", None),
        ("member_added", "presence-r", "u2"),
        ("member_removed", "presence-r", "u1"),
    ]


async def test_vacated_only_wanted_by_occupied_hooks_still_suppresses(receiver: Receiver) -> None:
    # a receiver that only tracks occupancy must not see a second occupied on a reload
    app = App(webhooks=[Webhook(receiver.url(), ["channel_occupied"])])
    sender = await started(debounce_s=60.0)
    try:
        sender.channel_vacated(app, "ch")
        sender.channel_occupied(app, "ch")
        sender.cache_miss(app, "cache-x")  # not wanted either
        assert sender.queue_depth == 0
    finally:
        await sender.close(1.0)
    assert receiver.attempts == 0


# -- batching ------------------------------------------------------------------------


async def test_batching_puts_events_of_one_url_in_one_request(receiver: Receiver) -> None:
    app = App(
        webhooks=[
            Webhook(receiver.url("/a"), ["channel_occupied", "client_event"]),
            Webhook(receiver.url("/b"), ["channel_occupied"]),
        ]
    )
    sender = await started(batching=True, batching_ms=50)
    try:
        sender.channel_occupied(app, "ch-1")
        sender.channel_occupied(app, "ch-2")
        sender.client_event(app, "ch-1", "client-x", "{}", "1.1", None)
        hits = await receiver.wait_hits(2)
        await asyncio.wait_for(sender.wait_idle(), WAIT)
    finally:
        await sender.close(1.0)
    assert len(hits) == 2
    by_path = {h.path: h.events for h in hits}
    assert by_path["/a"] == [
        {"name": "channel_occupied", "channel": "ch-1"},
        {"name": "channel_occupied", "channel": "ch-2"},
        {
            "name": "client_event",
            "channel": "ch-1",
            "event": "client-x",
            "data": "{}",
            "socket_id": "1.1",
        },
    ]
    assert by_path["/b"] == [
        {"name": "channel_occupied", "channel": "ch-1"},
        {"name": "channel_occupied", "channel": "ch-2"},
    ]
    assert sender.sent == 5


async def test_batching_keeps_apps_apart(receiver: Receiver) -> None:
    other_secret = "other-secret"
    a = App(webhooks=[Webhook(receiver.url(), ["cache_miss"])])
    b = App(
        id="2", key="key-2", secret=other_secret, webhooks=[Webhook(receiver.url(), ["cache_miss"])]
    )
    sender = await started(batching=True, batching_ms=20)
    try:
        sender.cache_miss(a, "cache-a")
        sender.cache_miss(b, "cache-b")
        hits = await receiver.wait_hits(2)
    finally:
        await sender.close(1.0)
    by_key = {h.headers["X-Pusher-Key"]: h for h in hits}
    assert set(by_key) == {KEY, "key-2"}
    b_hit = by_key["key-2"]
    checker = pusher.Pusher(app_id="2", key="key-2", secret=other_secret)
    data = checker.validate_webhook(
        "key-2", b_hit.headers["X-Pusher-Signature"], b_hit.body.decode()
    )
    assert data is not None and data["events"] == [{"name": "cache_miss", "channel": "cache-b"}]
    assert by_key[KEY].events == [{"name": "cache_miss", "channel": "cache-a"}]


# -- bounds, close ---------------------------------------------------------------------


async def test_overflow_drops_the_oldest(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    app = App(webhooks=[Webhook(receiver.url(), ["client_event"])])
    sender = WebhookSender(max_queue=3)
    for i in range(5):
        sender.client_event(app, "ch", f"client-{i}", "{}", "1.1", None)
    assert sender.queue_depth == 3
    assert sender.dropped == 2
    assert caplog.text.count("queue full") == 1  # rate-limited: one line for both
    await sender.start()
    try:
        hits = await receiver.wait_hits(3)
        await asyncio.wait_for(sender.wait_idle(), WAIT)
    finally:
        await sender.close(1.0)
    assert sorted(e["event"] for e in all_events(hits)) == ["client-2", "client-3", "client-4"]
    assert sender.sent == 3


async def test_overflow_counts_requests_waiting_for_a_retry(receiver: Receiver) -> None:
    receiver.always_fail = True
    app = App(webhooks=[Webhook(receiver.url(), ["client_event"])])
    sender = await started(max_queue=2, first_retry_s=30.0, retry_for_s=300.0)
    try:
        sender.client_event(app, "ch", "client-0", "{}", "1.1", None)
        sender.client_event(app, "ch", "client-1", "{}", "1.1", None)
        await receiver.wait_attempts(2)  # both failed once, now waiting 30 s
        assert sender.queue_depth == 2
        sender.client_event(app, "ch", "client-2", "{}", "1.1", None)
        assert sender.queue_depth == 2
        assert sender.dropped == 1
    finally:
        await asyncio.wait_for(sender.close(0.0), WAIT)
    assert sender.dropped == 3  # the oldest on overflow, two left at close
    assert sender.queue_depth == 0


async def test_close_flushes_queued_and_debounced_events(receiver: Receiver) -> None:
    app = App(webhooks=[Webhook(receiver.url(), ALL)])
    sender = await started(debounce_s=60.0)
    for i in range(5):
        sender.client_event(app, "ch", f"client-{i}", "{}", "1.1", None)
    sender.member_removed(app, "presence-r", "u1")  # would wait a minute
    sender.channel_vacated(app, "ch")
    await asyncio.wait_for(sender.close(5.0), WAIT)
    # everything arrived before close returned
    names = sorted(e.get("event", e["name"]) for e in all_events(receiver.hits))
    assert names == ["channel_vacated", *(f"client-{i}" for i in range(5)), "member_removed"]
    assert sender.sent == 7
    assert sender.dropped == 0
    # events after close are ignored
    sender.channel_occupied(app, "late")
    assert sender.queue_depth == 0


async def test_close_does_not_hang_on_a_stuck_receiver(receiver: Receiver) -> None:
    receiver.hang = True
    app = App(webhooks=[Webhook(receiver.url(), ["channel_occupied"])])
    sender = await started(timeout_s=60.0)
    sender.channel_occupied(app, "ch")
    await receiver.wait_attempts(1)
    await asyncio.wait_for(sender.close(0.05), WAIT)
    assert sender.dropped == 1
    assert sender.sent == 0
    assert sender.queue_depth == 0


async def test_a_receiver_that_does_not_answer_in_time_is_a_failure(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.hang = True
    app = App(webhooks=[Webhook(receiver.url(), ["channel_occupied"])])
    sender = await started(timeout_s=0.1, first_retry_s=0.05, retry_for_s=0.12)
    try:
        with caplog.at_level(logging.WARNING):
            sender.channel_occupied(app, "ch")
            await receiver.wait_attempts(1)
            await asyncio.wait_for(sender.wait_idle(), WAIT)
    finally:
        await sender.close(0.1)
    assert (sender.sent, sender.failed) == (0, 1)
    assert any("no answer within 0.1 s" in r.getMessage() for r in caplog.records)


async def test_a_second_close_returns_after_the_first(receiver: Receiver) -> None:
    """Two stop paths (a signal and the host's shutdown) may both close the sender:
    the second returns only once the first is done, not while requests are in flight."""
    receiver.hang = True
    app = App(webhooks=[Webhook(receiver.url(), ["channel_occupied"])])
    sender = await started(timeout_s=60.0)
    sender.channel_occupied(app, "ch")
    await receiver.wait_attempts(1)
    first = asyncio.ensure_future(sender.close(0.3))
    await asyncio.sleep(0)  # the first close has begun
    await asyncio.wait_for(sender.close(5.0), WAIT)
    assert first.done() and sender.dropped == 1
    await first


async def test_close_without_start_drops_the_queue() -> None:
    app = App(webhooks=[Webhook("http://127.0.0.1:9/none", ["cache_miss"])])
    sender = WebhookSender()
    sender.cache_miss(app, "cache-x")
    await asyncio.wait_for(sender.close(1.0), WAIT)
    assert sender.dropped == 1
    with pytest.raises(RuntimeError):
        await sender.start()


async def test_unencodable_data_does_not_stop_the_sender(receiver: Receiver) -> None:
    app = App(webhooks=[Webhook(receiver.url(), ["client_event", "cache_miss"])])
    sender = await started()
    try:
        sender.client_event(app, "ch", "client-x", object(), "1.1", None)
        sender.cache_miss(app, "cache-ok")
        hits = await receiver.wait_hits(1)
        await asyncio.wait_for(sender.wait_idle(), WAIT)
    finally:
        await sender.close(1.0)
    assert all_events(hits) == [{"name": "cache_miss", "channel": "cache-ok"}]
    assert sender.failed == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        WebhookSender(max_queue=0)
    with pytest.raises(ValueError):
        WebhookSender(concurrency=0)


async def test_concurrent_close_calls_both_return(receiver: Receiver) -> None:
    app = App(webhooks=[Webhook(receiver.url(), ["cache_miss"])])
    sender = await started()
    sender.cache_miss(app, "cache-x")
    await asyncio.wait_for(asyncio.gather(sender.close(2.0), sender.close(2.0)), WAIT)
    assert sender.sent == 1
    await sender.close(1.0)  # and again, after the fact
