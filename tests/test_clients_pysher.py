"""The pysher client (Python, protocol 6, computes auth itself from the secret) on every host.

The server runs on each :data:`conftest.HOST_MATRIX` entry (picows with both builds,
ASGI under uvicorn, aiohttp).

pysher runs its own thread; every wait here is on a condition with a timeout.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pusher
import pysher
import pytest

from conftest import APP_ID, APP_KEY, APP_SECRET, HOST_MATRIX, ServerProcess, serve_host

pytestmark = [pytest.mark.clients, pytest.mark.timeout(60)]

WAIT = 5.0


@pytest.fixture(scope="module", params=HOST_MATRIX)
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """One server per host and build for the whole module (client events on)."""
    with serve_host(request.param) as srv:
        yield srv


class Recorder:
    """Everything one pysher client received, as (event, channel, data); waitable."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None, Any]] = []
        self.cond = threading.Condition()

    def add(self, event: str, channel: str | None, data: Any) -> None:
        with self.cond:
            self.seen.append((event, channel, data))
            self.cond.notify_all()

    def wait(self, pred: Callable[[str, str | None, Any], bool], what: str) -> tuple[str, str | None, Any]:
        with self.cond:
            for _ in range(2):
                for item in self.seen:
                    if pred(*item):
                        return item
                if not self.cond.wait_for(lambda: any(pred(*i) for i in self.seen), WAIT):
                    break
            pytest.fail(f"pysher: timed out waiting for {what}; seen: {self.seen}")

    def event(self, event: str, channel: str | None = None) -> tuple[str, str | None, Any]:
        return self.wait(lambda e, c, d: e == event and (channel is None or c == channel), f"{event} on {channel}")

    def count(self, event: str, channel: str | None = None) -> int:
        with self.cond:
            return sum(1 for e, c, _ in self.seen if e == event and (channel is None or c == channel))


class Client:
    """A connected pysher client whose every received event is recorded."""

    def __init__(self, server: ServerProcess, user_data: dict[str, Any] | None = None) -> None:
        self.rec = Recorder()
        self.pusher = pysher.Pusher(
            APP_KEY, custom_host=server.host, port=server.port, secure=False, secret=APP_SECRET,
            user_data=user_data, log_level=logging.WARNING,
        )
        conn = self.pusher.connection
        # Record channel events before pysher dispatches them: pysher registers a
        # Channel only after sending its subscribe, so a fast reply could be missed.
        handler = conn.event_handler

        def record(event: str, data: Any, channel: str) -> None:
            self.rec.add(event, channel, data)
            handler(event, data, channel)

        conn.event_handler = record
        for name in ("pusher:connection_established", "pusher:pong", "pusher:error"):
            conn.bind(name, lambda data, name=name: self.rec.add(name, None, data))
        self.pusher.connect()
        _, _, data = self.rec.event("pusher:connection_established")
        self.socket_id: str = json.loads(data)["socket_id"]

    def subscribe(self, channel: str) -> Any:
        ch = self.pusher.subscribe(channel)
        self.rec.wait(
            lambda e, c, d: c == channel and e in ("pusher_internal:subscription_succeeded", "pusher:subscription_error"),
            f"subscription to {channel}",
        )
        assert self.rec.count("pusher:subscription_error", channel) == 0, self.rec.seen
        return ch

    def close(self) -> None:
        # pysher's thread sits in select() for up to its 100 s ping_timeout after the
        # close handshake (websocket-client 1.9 closes from the caller's thread), so
        # do not join it: it is a daemon.
        self.pusher.disconnect(timeout=0)


@pytest.fixture
def clients(server: ServerProcess) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(user_data: dict[str, Any] | None = None) -> Client:
        c = Client(server, user_data)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def sdk(server: ServerProcess) -> pusher.Pusher:
    return pusher.Pusher(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host=server.host, port=server.port, ssl=False)


def test_connect_protocol_6(clients: Callable[..., Client]) -> None:
    c = clients()
    assert re.fullmatch(r"\d+\.\d+", c.socket_id)
    # pysher pings (with "data": "") as soon as the socket opens: it gets a pong
    c.rec.event("pusher:pong")
    assert c.pusher.connection.state == "connected"
    assert c.rec.count("pusher:error") == 0


def test_public_subscribe_and_server_event(clients: Callable[..., Client], server: ServerProcess) -> None:
    c = clients()
    got: list[Any] = []
    done = threading.Event()
    ch = c.subscribe("news")

    def on_update(data: Any) -> None:
        got.append(data)
        done.set()

    ch.bind("update", on_update)
    sdk(server).trigger("news", "update", {"n": 1})
    assert done.wait(WAIT)
    assert [json.loads(d) for d in got] == [{"n": 1}]


def test_private_subscribe_and_client_event(clients: Callable[..., Client]) -> None:
    a, b = clients(), clients()
    cha = a.subscribe("private-chat")
    chb = b.subscribe("private-chat")
    cha.trigger("client-msg", {"text": "hi"})
    _, _, data = b.rec.event("client-msg", "private-chat")
    assert json.loads(data) == {"text": "hi"}
    # b answers; when a has the answer, it would have had its own event back already
    chb.trigger("client-reply", {"ok": True})
    a.rec.event("client-reply", "private-chat")
    assert a.rec.count("client-msg") == 0
    assert b.rec.count("client-reply") == 0


def test_private_subscribe_with_wrong_secret_fails(server: ServerProcess) -> None:
    rec = Recorder()
    p = pysher.Pusher(
        APP_KEY, custom_host=server.host, port=server.port, secure=False, secret="wrong", log_level=logging.WARNING
    )
    p.connection.event_handler = lambda e, d, c: rec.add(e, c, d)
    p.connection.bind("pusher:connection_established", lambda d: rec.add("established", None, d))
    p.connect()
    try:
        rec.event("established")
        p.subscribe("private-chat")
        _, _, data = rec.event("pusher:subscription_error", "private-chat")
        assert data["type"] == "AuthError" and data["status"] == 401
    finally:
        p.disconnect(timeout=0)


def test_presence_subscribe_numeric_user_id(clients: Callable[..., Client]) -> None:
    a = clients({"user_id": 7, "user_info": {"name": "Seven"}})
    a.subscribe("presence-lobby")
    _, _, data = a.rec.event("pusher_internal:subscription_succeeded", "presence-lobby")
    presence = json.loads(data)["presence"]
    assert presence == {"ids": ["7"], "hash": {"7": {"name": "Seven"}}, "count": 1}
    b = clients({"user_id": "u8", "user_info": {}})
    chb = b.subscribe("presence-lobby")
    _, _, added = a.rec.event("pusher_internal:member_added", "presence-lobby")
    assert json.loads(added) == {"user_id": "u8", "user_info": {}}
    _, _, data = b.rec.event("pusher_internal:subscription_succeeded", "presence-lobby")
    assert json.loads(data)["presence"]["count"] == 2
    chb.trigger("client-wave", {"from": "u8"})
    _, _, wave = a.rec.event("client-wave", "presence-lobby")
    assert json.loads(wave) == {"from": "u8"}
    b.close()
    _, _, removed = a.rec.event("pusher_internal:member_removed", "presence-lobby")
    assert json.loads(removed) == {"user_id": "u8"}
