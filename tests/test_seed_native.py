"""How Connection drives a native socket: detection, text and binary, failures, the queue bound.

Stand-ins here shape each framework's methods (the real libraries run in
``test_seed_frameworks.py``); what is checked is what reaches them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from types import SimpleNamespace
from typing import Any

import pytest

from soketi_impl import Connection
from soketi_impl.connection import MAX_PENDING_BYTES, OVER_CAPACITY


class AiohttpLike:
    """aiohttp's WebSocketResponse shape: no send(); close takes keywords only."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def send_str(self, data: str) -> None:
        self.calls.append(("text", data))

    async def send_bytes(self, data: bytes) -> None:
        self.calls.append(("binary", data))

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        self.calls.append(("close", code, message))
        return True


class StarletteLike:
    """Starlette's WebSocket shape: send() takes ASGI dicts, so it must not be used."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def send(self, message: dict[str, Any]) -> None:
        raise AssertionError("send() takes ASGI messages, not str/bytes")

    async def send_text(self, data: str) -> None:
        self.calls.append(("text", data))

    async def send_bytes(self, data: bytes) -> None:
        self.calls.append(("binary", data))

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.calls.append(("close", code, reason))


class Plain:
    """Anything with send() and close() (the websockets library's shape)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def send(self, message: str | bytes) -> None:
        self.calls.append(("text" if isinstance(message, str) else "binary", message))

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.calls.append(("close", code, reason))


async def _settle(conn: Connection) -> None:
    """Wait until the queued sends went out (the queue task is done), by events only."""
    q = conn._queue
    if q is not None and q.task is not None:
        await asyncio.wait_for(asyncio.shield(q.task), 5)


@pytest.mark.parametrize("cls", [AiohttpLike, StarletteLike, Plain])
async def test_text_and_binary_frames(cls: type[Any]) -> None:
    native = cls()
    conn = Connection(7, native)
    assert conn.send_text_nowait(b'{"event":"x"}')
    assert conn.send_nowait(b"\x00")
    assert await conn.send("s")
    assert conn.send_text_nowait("already text")
    await _settle(conn)
    assert native.calls == [
        ("text", '{"event":"x"}'), ("binary", b"\x00"), ("text", "s"), ("text", "already text"),
    ]
    await conn.close(4200, "restart")
    expected = ("close", 4200, b"restart") if cls is AiohttpLike else ("close", 4200, "restart")
    assert native.calls[-1] == expected


@pytest.mark.parametrize("cls", [AiohttpLike, Plain])
async def test_long_close_reason_is_cut_to_fit_a_frame(cls: type[Any]) -> None:
    native = cls()
    await Connection(1, native).close(4000, "é" * 100)  # 200 bytes of UTF-8
    reason = native.calls[-1][2]
    data = reason if isinstance(reason, bytes) else reason.encode()
    assert len(data) == 122 and data.decode() == "é" * 61  # no half character


async def test_close_without_code_uses_the_native_default() -> None:
    native = AiohttpLike()
    await Connection(1, native).close()
    assert native.calls == [("close", 1000, b"")]


def test_native_without_send_or_close_is_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match="object has no send\\(\\), send_str"):
        Connection(1, object())
    with pytest.raises(TypeError, match="SimpleNamespace has no close\\(\\)"):
        Connection(1, SimpleNamespace(send=print))
    # a send_bytes alone is not enough to know how to send text
    with pytest.raises(TypeError, match="has no send"):
        Connection(1, SimpleNamespace(send_bytes=print, close=print))


async def test_instance_attributes_and_overrides() -> None:
    got: list[Any] = []
    ns = SimpleNamespace(send=got.append, close=lambda code=None, reason=None: got.append((code, reason)))
    conn = Connection("ns", ns)
    assert await conn.send("a")
    await conn.close(4000, "r")
    assert got == ["a", (4000, "r")]
    split = SimpleNamespace(send_text=got.append, send_bytes=lambda b: got.append(("b", b)), close=print)
    conn = Connection("split", split)
    assert conn.send_nowait("t") and conn.send_nowait(b"b")
    assert got[-2:] == ["t", ("b", b"b")]
    # an instance that shadows its class's send, after the class was seen
    Connection("seen", Plain())
    shadowed = Plain()
    shadowed.send = got.append  # type: ignore[method-assign]
    assert Connection("shadow", shadowed).send_nowait("mine") and got[-1] == "mine"
    assert shadowed.calls == []
    # send= overrides the native's send; close still goes to the native
    native = StarletteLike()
    conn = Connection("o", native, send=got.append)
    assert conn.send_nowait(b"raw")
    await conn.close(1001)
    assert got[-1] == b"raw" and native.calls == [("close", 1001, "")]


@pytest.mark.parametrize("cls", [Plain, AiohttpLike, StarletteLike])
def test_no_per_connection_objects_for_a_class_native(cls: type[Any]) -> None:
    """Two connections over natives of one class share every object but id and native."""
    a, b = cls(), cls()
    ca, cb = Connection("a", a, raw_write=print), Connection("b", b, raw_write=print)
    own_a = {id(x) for x in gc.get_referents(ca)} - {id(ca.id), id(a)}
    own_b = {id(x) for x in gc.get_referents(cb)} - {id(cb.id), id(b)}
    assert own_a == own_b


class Failing:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def send(self, message: Any) -> None:
        await asyncio.sleep(0)
        raise self.exc

    def close(self, code: int = 1000, reason: str = "") -> None:
        raise OSError("close failed too")


async def test_async_send_failure_warns_once_and_closes(caplog: pytest.LogCaptureFixture) -> None:
    conn = Connection(99, Failing(ConnectionResetError("peer gone")))
    with caplog.at_level(logging.DEBUG, logger="soketi_impl.connection"):
        assert conn.send_nowait("a") and conn.send_nowait("b")  # b queues behind a
        await _settle(conn)
        assert conn.closed and conn.send_nowait("c") is False
        await conn.close(1000)  # fails too: told at debug, not a second warning
    levels = [r.levelname for r in caplog.records]
    assert levels == ["WARNING", "DEBUG"], caplog.text
    assert "send on connection 99 failed" in caplog.records[0].getMessage()
    assert "peer gone" in caplog.records[0].getMessage()


async def test_close_failure_alone_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="soketi_impl.connection"):
        await Connection(1, Failing(RuntimeError())).close(4000)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "close on connection 1 failed" in caplog.text


class Stuck:
    """A native whose send never completes: a reader that stopped reading."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.closed: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    async def send(self, message: Any) -> None:
        self.sent.append(message)
        self.started.set()
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed.set_result((code, reason))


async def test_queue_past_its_bound_closes_with_4100() -> None:
    native = Stuck()
    conn = Connection(5, native, max_pending_bytes=1000)
    assert conn.send_nowait("first")
    await asyncio.wait_for(native.started.wait(), 5)  # in flight, forever
    for _ in range(10):
        assert conn.send_text_nowait(b"x" * 100)  # 1000 bytes waiting: at the bound
    assert conn.send_nowait("one more") is False  # past it
    assert conn.closed
    assert await asyncio.wait_for(native.closed, 5) == (OVER_CAPACITY, "Over capacity")
    await asyncio.wait_for(native.cancelled.wait(), 5)  # the stuck send was given up
    assert native.sent == ["first"] and conn.send_nowait("after") is False
    assert conn._queue is None or len(conn._queue) == 0  # the queue was dropped


async def test_bound_reached_within_one_loop_iteration() -> None:
    """The fan-out flush sends to everyone in one go: the first send never even started."""
    native = Stuck()
    conn = Connection(5, native, max_pending_bytes=100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert conn.send_nowait("first")
        assert conn.send_nowait(b"y" * 101) is False
        assert await asyncio.wait_for(native.closed, 5) == (OVER_CAPACITY, "Over capacity")
        gc.collect()
    assert native.sent == [] and not [w for w in caught if "never awaited" in str(w.message)]


async def test_awaited_sends_count_against_the_bound_too() -> None:
    native = Stuck()
    conn = Connection(6, native, max_pending_bytes=10)
    assert conn.send_nowait("in flight")
    assert await conn.send("0123456789")
    assert await conn.send("!") is False
    assert await asyncio.wait_for(native.closed, 5) == (OVER_CAPACITY, "Over capacity")


def test_default_bound_is_4_mib() -> None:
    assert MAX_PENDING_BYTES == 4 * 1024 * 1024
    assert Connection(1, Plain())._queue is None  # the default costs no memory


async def test_idle_connection_keeps_no_queue() -> None:
    native = StarletteLike()
    conn = Connection(1, native)
    conn.send_nowait("a")
    conn.send_nowait("b")
    await _settle(conn)
    assert native.calls == [("text", "a"), ("text", "b")]
    assert conn._queue is None
