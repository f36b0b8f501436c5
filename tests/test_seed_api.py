"""Connection, Connections and Router: the seed API, on both loops."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from soketi_impl import (
    Connection,
    Connections,
    DuplicateConnection,
    Router,
    UnknownProtocol,
    default_router,
)


class SyncNative:
    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.closed_with: list[tuple[Any, Any]] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.closed_with.append((code, reason))


class AsyncNative(SyncNative):
    """Each send yields to the loop first, like a real async framework."""

    async def send(self, message: Any) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        self.sent.append(message)

    async def close(self, code: int | None = None, reason: str | None = None) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        self.closed_with.append((code, reason))


class BrokenNative(SyncNative):
    def send(self, message: Any) -> None:
        raise ConnectionResetError("gone")

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        raise OSError("already closed")


@pytest.mark.parametrize("native_cls", [SyncNative, AsyncNative], ids=["sync", "async"])
async def test_connection_send_and_close(native_cls: type[SyncNative]) -> None:
    native = native_cls()
    conn = Connection("1.1", native)
    assert await conn.send("Hello!") is True
    assert await conn.send(b"\x01") is True
    assert await conn.send_json({"a": [1, 2]}) is True
    assert native.sent == ["Hello!", b"\x01", '{"a":[1,2]}']
    await conn.close(4200, "restart")
    assert conn.closed and native.closed_with == [(4200, "restart")]
    await conn.close(4200, "again")  # closing twice reaches the native once
    assert native.closed_with == [(4200, "restart")]
    assert await conn.send("late") is False
    assert native.sent[-1] == '{"a":[1,2]}'


async def test_connection_from_callables() -> None:
    got: list[Any] = []
    conn = Connection("x", send=got.append, close=lambda *a: got.append(("close", a)))
    await conn.send("m")
    await conn.close()
    assert got == ["m", ("close", ())]
    with pytest.raises(TypeError):
        Connection("y")


async def test_failing_native_never_raises() -> None:
    conn = Connection("b", BrokenNative())
    assert await conn.send("x") is False
    assert conn.closed
    await conn.close(1000)  # the native's error is swallowed and logged
    assert conn.send_nowait("y") is False


async def test_send_nowait_keeps_order_with_async_native() -> None:
    native = AsyncNative()
    conn = Connection("o", native)
    for i in range(20):
        assert conn.send_nowait(str(i))
    done = asyncio.get_running_loop().create_future()

    def check() -> None:
        if len(native.sent) == 20:
            done.set_result(None)
        else:
            asyncio.get_running_loop().call_soon(check)

    check()
    await asyncio.wait_for(done, 5)
    assert native.sent == [str(i) for i in range(20)]


async def test_connections_tracker() -> None:
    conns = Connections()
    a, b = Connection("a", SyncNative()), Connection("b", SyncNative())
    await conns.new_connection(a)
    await conns.new_connection(b)
    assert len(conns) == 2 and a in conns and "b" in conns
    assert conns.connections.get("a") is a and conns.get("b") is b
    assert {c.id for c in conns} == {"a", "b"}
    with pytest.raises(DuplicateConnection, match="'a'"):
        await conns.new_connection(Connection("a", SyncNative()))
    for conn in conns:
        await conn.send("Hello!")
    assert await conns.remove_connection(a) is True
    assert await conns.remove_connection(a) is False
    assert a not in conns and len(conns) == 1 and "a" not in conns.connections
    # an impostor with the same id does not remove the tracked one
    assert await conns.remove_connection(Connection("b", SyncNative())) is False
    assert conns.discard("b") is True and len(conns) == 0


async def test_router_every_event_on_an_instance() -> None:
    r = Router()
    seen: list[Any] = []

    @r.on_new_connection
    async def new(conn: Connection) -> None:
        seen.append(("new", conn.id))

    @r.on_message
    def msg(conn: Connection, message: Any) -> None:
        seen.append(("message", message))

    @r.on_connection_closed
    async def closed(conn: Connection, code: int | None, message: str | None) -> None:
        seen.append(("closed", code, message))

    conn = Connection("r1", SyncNative())
    await r.handle_new_connection(conn)
    await r.handle_message(conn, "hi")
    await r.handle_connection_closed(conn, 1000, "bye")
    assert seen == [("new", "r1"), ("message", "hi"), ("closed", 1000, "bye")]


async def test_router_custom_handlers() -> None:
    r = Router()
    native = SyncNative()
    conn = Connection("p", native)

    @r.register_handler("onPing")
    async def ping(c: Connection) -> str:
        await c.send("Pong!")
        return "ok"

    r.register_handler("sum", lambda a, b: a + b)
    assert await r.get_protocol("onPing").handle(conn) == "ok"
    assert native.sent == ["Pong!"]
    assert await r.get_protocol("sum").handle(2, 3) == 5
    with pytest.raises(UnknownProtocol, match="'nope'.*onPing"):
        r.get_protocol("nope")


async def test_router_error_routing() -> None:
    r = Router()
    errors: list[tuple[Any, str]] = []

    @r.on_message
    async def bad_async(conn: Connection, message: Any) -> None:
        raise ValueError("async " + message)

    @r.on_message
    def bad_sync(conn: Connection, message: Any) -> None:
        raise KeyError("sync")

    @r.on_message
    def good(conn: Connection, message: Any) -> None:
        errors.append((conn.id, "good ran"))

    @r.on_error
    async def on_err(conn: Connection | None, err: BaseException) -> None:
        errors.append((conn.id if conn else None, repr(err)))

    r.register_handler("boom", lambda c: 1 / 0)
    conn = Connection("e", SyncNative())
    await r.handle_message(conn, "x")
    assert await r.get_protocol("boom").handle(conn) is None
    assert errors == [
        ("e", "ValueError('async x')"),
        ("e", "KeyError('sync')"),
        ("e", "good ran"),
        ("e", "ZeroDivisionError('division by zero')"),
    ]


async def test_router_error_without_handler_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    r = Router()
    r.on_new_connection(lambda c: 1 / 0)

    def failing_error_handler(conn: Any, err: BaseException) -> None:
        raise RuntimeError("handler broke")

    with caplog.at_level(logging.ERROR, logger="soketi_impl.router"):
        await r.handle_new_connection(Connection("l", SyncNative()))
        assert "ZeroDivisionError" in caplog.text
        r.on_error(failing_error_handler)
        await r.handle_new_connection(Connection("l2", SyncNative()))
        assert "handler broke" in caplog.text


async def test_router_feed_sync_and_async() -> None:
    r = Router()
    got: list[Any] = []
    errors: list[str] = []
    done = asyncio.get_running_loop().create_future()
    r.on_message(lambda c, m: got.append(("sync", m)))

    async def later(c: Connection, m: Any) -> None:
        got.append(("async", m))
        raise RuntimeError("late")

    r.on_message(later)
    r.on_error(lambda c, e: (errors.append(str(e)), done.set_result(None)))
    r.feed("message", Connection("f", SyncNative()), "m1")
    assert got == [("sync", "m1")]  # the sync handler ran inside feed()
    await asyncio.wait_for(done, 5)
    assert got == [("sync", "m1"), ("async", "m1")] and errors == ["late"]


async def test_static_style_uses_the_default_router() -> None:
    saved = Router._default
    Router._default = None
    try:
        native = SyncNative()
        Router.on_new_connection(lambda c: c.send_nowait("Hello!"))
        Router.register_handler("onPing", lambda c: c.send("Pong!"))
        conn = Connection("s", native)
        await Router.handle_new_connection(conn)
        await Router.get_protocol("onPing").handle(conn)
        assert native.sent == ["Hello!", "Pong!"]
        assert default_router() is Router.default()
        # a fresh instance shares nothing with the default router
        with pytest.raises(UnknownProtocol):
            Router().get_protocol("onPing")
    finally:
        Router._default = saved


@pytest.mark.parametrize("native_cls", [SyncNative, AsyncNative], ids=["sync", "async"])
async def test_send_text_nowait_sends_str(native_cls: type[SyncNative]) -> None:
    native = native_cls()
    conn = Connection(3, native)
    assert conn.send_text_nowait(b'{"event":"e","data":"\xc3\xa9"}')
    assert conn.send_text_nowait("already str")
    assert await conn.send(b"\x02")  # after the two above, whatever the native's speed
    q = conn._queue
    if q is not None and q.task is not None:
        await asyncio.wait_for(asyncio.shield(q.task), 5)
    assert native.sent == ['{"event":"e","data":"é"}', "already str", b"\x02"]
    with pytest.raises(UnicodeDecodeError):
        conn.send_text_nowait(b"\xff")


async def test_connections_with_numeric_ids() -> None:
    conns = Connections()
    a, b = Connection(81234, SyncNative()), Connection(("node-2", 5), SyncNative())
    await conns.new_connection(a)
    await conns.new_connection(b)
    assert conns.get(81234) is a and 81234.0 in conns and ("node-2", 5) in conns
    assert await conns.remove_connection(81234) is True
    assert conns.discard(("node-2", 5)) is True and conns.discard(("node-2", 5)) is False
    assert len(conns) == 0 and conns.discard(7) is False
